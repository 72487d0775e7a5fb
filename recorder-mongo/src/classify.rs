//! What a driver error means for a batch: retry it, count the documents
//! refused, or give up on it; and the retry backoff's jitter.

use mongodb::error::{Error as DriverError, ErrorKind};
use std::time::{Duration, Instant};

/// How an insert failed.
pub(crate) enum Failure {
    /// Worth retrying: network, not-primary, timeouts, write-concern
    /// errors, `RetryableWriteError` labels.
    Transient(String),
    /// Retrying cannot help (auth, validation, bad document).
    Permanent(String),
}

/// Server error codes that mean "try again" (network, elections, shutdown,
/// timeouts), from the MongoDB retryable-writes specification.
pub(crate) const TRANSIENT_CODES: &[i32] = &[
    6, 7, 50, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 63, 150, 13388, 234,
];
pub(crate) const DUPLICATE_KEY: i32 = 11000;
/// `Unauthorized`, `AuthenticationFailed`.
pub(crate) const AUTH_CODES: &[i32] = &[13, 18];

pub(crate) enum Classified {
    /// The insert ran; some documents hit errors: duplicate keys (the
    /// positions in the batch: delivered earlier, or a different span
    /// under the same `_id`) and `failed` others refused for good.
    Partial {
        duplicates: Vec<usize>,
        failed: Vec<usize>,
    },
    Failure(Failure),
}

pub(crate) fn classify(e: &DriverError) -> Classified {
    let message = e.to_string();
    if let ErrorKind::InsertMany(im) = &*e.kind {
        if im.write_concern_error.is_some() {
            // Written but not confirmed durable: retry; what was written
            // comes back as duplicates.
            return Classified::Failure(Failure::Transient(message));
        }
        if let Some(errors) = &im.write_errors {
            if errors.iter().any(|w| AUTH_CODES.contains(&w.code)) {
                // Not allowed now, perhaps allowed after an operator's fix:
                // retried and spooled, like an outage.
                return Classified::Failure(Failure::Transient(message));
            }
            let duplicates: Vec<usize> = errors
                .iter()
                .filter(|w| w.code == DUPLICATE_KEY)
                .map(|w| w.index)
                .collect();
            let failed: Vec<usize> = errors
                .iter()
                .filter(|w| w.code != DUPLICATE_KEY)
                .map(|w| w.index)
                .collect();
            return Classified::Partial { duplicates, failed };
        }
    }
    // Authentication and authorization failures are an operator's to fix
    // (credentials rotated, a role changed) and pass: spooled and retried,
    // never dropped.
    let auth = matches!(&*e.kind, ErrorKind::Authentication { .. })
        || matches!(&*e.kind, ErrorKind::Command(c) if AUTH_CODES.contains(&c.code))
        || matches!(
            &*e.kind,
            ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) if AUTH_CODES.contains(&w.code)
        );
    let transient = auth
        || e.contains_label("RetryableWriteError")
        || e.contains_label("NetworkError")
        || matches!(
            &*e.kind,
            ErrorKind::Io(_)
                | ErrorKind::ConnectionPoolCleared { .. }
                | ErrorKind::ServerSelection { .. }
                | ErrorKind::InvalidResponse { .. }
                | ErrorKind::Shutdown
        )
        || matches!(&*e.kind, ErrorKind::Command(c) if TRANSIENT_CODES.contains(&c.code))
        || matches!(
            &*e.kind,
            ErrorKind::Write(mongodb::error::WriteFailure::WriteConcernError(_))
        );
    if transient {
        Classified::Failure(Failure::Transient(message))
    } else {
        Classified::Failure(Failure::Permanent(message))
    }
}

/// A single-document write refused as a duplicate key.
pub(crate) fn is_duplicate_key(e: &DriverError) -> bool {
    matches!(
        &*e.kind,
        ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) if w.code == DUPLICATE_KEY
    )
}

/// `d` scaled by a factor in [0.5, 1.5), from a cheap per-call hash.
pub(crate) fn jitter(d: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    let unit = (h.finish() % 1000) as f64 / 1000.0;
    d.mul_f64(0.5 + unit)
}
