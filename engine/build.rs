//! Turns `SPANREC_LOOM_MUTANT` into `--cfg spanrec_loom_mutant="…"` for the
//! model-checking and race-detector builds (`ci/loom.sh`, `ci/race.sh`).
//!
//! A mutant weakens one ordering or deletes one check, to prove the models
//! catch it. Passing it in `RUSTFLAGS` works too, but a changed `RUSTFLAGS`
//! rebuilds every dependency; this variable rebuilds only this crate and its
//! dependents. It is honoured only in builds that are already test builds
//! (`--cfg spanrec_loom` or `--cfg spanrec_valgrind`): a stray variable in a
//! production build changes nothing, and says so.

fn main() {
    println!("cargo::rerun-if-env-changed=SPANREC_LOOM_MUTANT");
    let Some(mutant) = std::env::var_os("SPANREC_LOOM_MUTANT") else {
        return;
    };
    let mutant = mutant.to_string_lossy();
    if mutant.is_empty() {
        return;
    }
    let test_build = std::env::var_os("CARGO_CFG_SPANREC_LOOM").is_some()
        || std::env::var_os("CARGO_CFG_SPANREC_VALGRIND").is_some();
    if !test_build {
        println!(
            "cargo::warning=SPANREC_LOOM_MUTANT={mutant} ignored: mutants build only with \
             --cfg spanrec_loom or --cfg spanrec_valgrind"
        );
        return;
    }
    println!("cargo::rustc-cfg=spanrec_loom_mutant=\"{mutant}\"");
}
