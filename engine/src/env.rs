//! Configuration from `SPANREC_*` environment variables, layered under the
//! builder: call [`TracerBuilder::env`] first, and builder calls after it
//! override what the environment said.
//!
//! | variable | value |
//! |---|---|
//! | `SPANREC_RING_CAPACITY` | spans per thread ring |
//! | `SPANREC_RING_MEMORY_BUDGET` | bytes of ring blocks, all threads |
//! | `SPANREC_ARENA_CHUNK_BYTES` | bytes |
//! | `SPANREC_BATCH_SIZE` | spans per recorder batch |
//! | `SPANREC_FLUSH_INTERVAL_MS` | milliseconds |
//! | `SPANREC_OVERFLOW` | `drop`, or `block:<milliseconds>` |
//! | `SPANREC_SAMPLER` | `always`, `never`, `ratio:<0..1>`, `parent:always`, `parent:never`, `parent:ratio:<0..1>` |
//! | `SPANREC_HONOR_REMOTE_SAMPLING` | `true` or `false` (default): whether a caller's "not sampled" stops this service's spans |
//! | `SPANREC_SERVICE_NAME` | the service name |
//!
//! (`SPANREC_MONGO_URI` is read by `spanrec-mongo`.) A set but invalid
//! variable (not UTF-8 included) is an [`EnvError`] naming it; the ranges are then checked by
//! [`TracerBuilder::build`] like any other setting.

use crate::builder::TracerBuilder;
use crate::config::{OverflowPolicy, Sampler};
use std::time::Duration;

/// A `SPANREC_*` variable that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("environment variable {variable}={value:?} is invalid: expected {expected}")]
pub struct EnvError {
    /// The variable's name.
    pub variable: &'static str,
    /// Its value.
    pub value: String,
    /// What would have been accepted.
    pub expected: &'static str,
}

/// The variable's value, trimmed; `None` when unset or blank. A value that
/// is not UTF-8 is an error, not "unset": the operator set something.
fn var(name: &'static str) -> Result<Option<String>, EnvError> {
    match std::env::var_os(name).map(|v| v.into_string()) {
        None => Ok(None),
        Some(Ok(v)) => {
            let v = v.trim();
            Ok((!v.is_empty()).then(|| v.to_string()))
        }
        Some(Err(raw)) => Err(EnvError {
            variable: name,
            value: raw.to_string_lossy().into_owned(),
            expected: "UTF-8 text",
        }),
    }
}

fn number<T: std::str::FromStr>(name: &'static str) -> Result<Option<T>, EnvError> {
    match var(name)? {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| EnvError {
            variable: name,
            value: v,
            expected: "a whole number",
        }),
    }
}

/// `always`, `never`, `ratio:<r>`, or one of those after `parent:`: one
/// level only (a parent-based sampler's root is not parent-based), so no
/// value, however long, recurses.
fn sampler(text: &str) -> Option<Sampler> {
    match text.strip_prefix("parent:") {
        Some(root) => Some(Sampler::ParentBased {
            root: Box::new(root_sampler(root)?),
        }),
        None => root_sampler(text),
    }
}

fn root_sampler(text: &str) -> Option<Sampler> {
    match text {
        "always" => Some(Sampler::Always),
        "never" => Some(Sampler::Never),
        _ => text
            .strip_prefix("ratio:")?
            .parse()
            .ok()
            .map(Sampler::Ratio),
    }
}

impl TracerBuilder {
    /// Applies the `SPANREC_*` variables that are set (see the table in
    /// this module's source docs, repeated in `docs/tuning.md`).
    pub fn env(mut self) -> Result<Self, EnvError> {
        if let Some(n) = number("SPANREC_RING_CAPACITY")? {
            self = self.ring_capacity(n);
        }
        if let Some(n) = number("SPANREC_RING_MEMORY_BUDGET")? {
            self = self.ring_memory_budget(n);
        }
        if let Some(n) = number("SPANREC_ARENA_CHUNK_BYTES")? {
            self = self.arena_chunk_bytes(n);
        }
        if let Some(n) = number("SPANREC_BATCH_SIZE")? {
            self = self.max_batch_size(n);
        }
        if let Some(ms) = number::<u64>("SPANREC_FLUSH_INTERVAL_MS")? {
            self = self.flush_interval(Duration::from_millis(ms));
        }
        if let Some(v) = var("SPANREC_OVERFLOW")? {
            let policy = match v.as_str() {
                "drop" => Some(OverflowPolicy::DropNewest),
                other => other
                    .strip_prefix("block:")
                    .and_then(|ms| ms.parse().ok())
                    .map(|ms| OverflowPolicy::Block {
                        timeout: Duration::from_millis(ms),
                    }),
            };
            let expected = "`drop` or `block:<milliseconds>`";
            self = self.overflow(policy.ok_or(EnvError {
                variable: "SPANREC_OVERFLOW",
                value: v,
                expected,
            })?);
        }
        if let Some(v) = var("SPANREC_SAMPLER")? {
            let expected = "always, never, ratio:<0..1>, or parent:<one of those>";
            let s = sampler(&v).ok_or(EnvError {
                variable: "SPANREC_SAMPLER",
                value: v,
                expected,
            })?;
            self = self.sampler(s);
        }
        if let Some(v) = var("SPANREC_HONOR_REMOTE_SAMPLING")? {
            let honor = match v.as_str() {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(EnvError {
                        variable: "SPANREC_HONOR_REMOTE_SAMPLING",
                        value: v,
                        expected: "`true` or `false`",
                    })
                }
            };
            self = self.honor_remote_sampling(honor);
        }
        if let Some(v) = var("SPANREC_SERVICE_NAME")? {
            self = self.service_name(v);
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samplers_parse() {
        assert_eq!(sampler("always"), Some(Sampler::Always));
        assert_eq!(sampler("ratio:0.25"), Some(Sampler::Ratio(0.25)));
        assert_eq!(
            sampler("parent:never"),
            Some(Sampler::ParentBased {
                root: Box::new(Sampler::Never)
            })
        );
        assert_eq!(sampler("sometimes"), None);
        assert_eq!(sampler("ratio:x"), None);
        // One level of `parent:`; a long chain is refused, not recursed.
        assert_eq!(sampler("parent:parent:always"), None);
        assert_eq!(sampler(&("parent:".repeat(1 << 20) + "always")), None);
    }
}
