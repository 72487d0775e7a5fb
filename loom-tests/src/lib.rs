//! loom models of spanrec's lock-free protocols.
//!
//! Everything here builds only with `RUSTFLAGS="--cfg spanrec_loom"`, which
//! switches the engine's `sync` facade to loom's primitives; see
//! `ci/loom.sh` and `docs/architecture.md`. A plain build compiles an empty
//! crate.
