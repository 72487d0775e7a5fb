//! Database and collection names, checked before they reach the server or
//! the file system.
//!
//! The rules are the MongoDB manual's ("MongoDB Limits and Thresholds",
//! Naming Restrictions, for servers on Unix and Linux): a database name is
//! not empty, shorter than 64 bytes, and holds none of `/\. "$` or NUL; a
//! collection name is not empty, holds no `$` or NUL and does not begin
//! with the reserved prefix `system.`; a namespace (`<database>.<collection>`)
//! is at most 255 bytes. The recorder also writes `<collection>.chain`, so
//! that namespace must fit too. A server would refuse most of these at the
//! first insert (some stand-ins accept them); refused here, a typo is a
//! clear error at start-up instead of batches spooled and retried.
//!
//! The spool directory is named after both (`default_spool_dir`): a
//! collection name may hold `/` (MongoDB allows it), so that name is
//! encoded for the file system ([`file_name`]), never used as a path.

use crate::chain::COLLECTION_SUFFIX;

/// A database or collection name MongoDB does not accept. Its message
/// quotes the name escaped, cut to 64 characters (a hostile name is not
/// echoed whole).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} name {}: {reason}", shown(name))]
pub struct NameError {
    /// `"database"` or `"collection"`.
    pub what: &'static str,
    /// The name, as given.
    pub name: String,
    /// The rule it breaks.
    pub reason: &'static str,
}

/// `name` escaped as `{:?}` does, its first 64 characters and its length
/// when longer.
fn shown(name: &str) -> String {
    const SHOWN: usize = 64;
    match name.char_indices().nth(SHOWN) {
        None => format!("{name:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &name[..cut], name.len()),
    }
}

/// Longest namespace (`<database>.<collection>`), in bytes.
pub const MAX_NAMESPACE_BYTES: usize = 255;
/// A database name is shorter than this, in bytes.
pub const DATABASE_NAME_LIMIT: usize = 64;

/// Checks `database` and `collection` against MongoDB's naming rules,
/// counting the chain's collection (`<collection>.chain`) in the namespace
/// length.
pub fn check_names(database: &str, collection: &str) -> Result<(), NameError> {
    let database_error = |reason| NameError {
        what: "database",
        name: database.to_owned(),
        reason,
    };
    let collection_error = |reason| NameError {
        what: "collection",
        name: collection.to_owned(),
        reason,
    };
    if database.is_empty() {
        return Err(database_error("empty"));
    }
    if database.len() >= DATABASE_NAME_LIMIT {
        return Err(database_error("64 bytes or longer"));
    }
    if database.contains(['/', '\\', '.', ' ', '"', '$', '\0']) {
        return Err(database_error(
            "holds one of / \\ . space \" $ or NUL, which MongoDB refuses",
        ));
    }
    if collection.is_empty() {
        return Err(collection_error("empty"));
    }
    if collection.contains(['$', '\0']) {
        return Err(collection_error("holds $ or NUL, which MongoDB refuses"));
    }
    if collection.starts_with("system.") {
        return Err(collection_error(
            "begins with system., a prefix MongoDB reserves",
        ));
    }
    if database.len() + 1 + collection.len() + COLLECTION_SUFFIX.len() > MAX_NAMESPACE_BYTES {
        return Err(collection_error(
            "too long: <database>.<collection>.chain exceeds MongoDB's 255-byte namespace",
        ));
    }
    Ok(())
}

/// `name` as one file name: bytes other than ASCII letters, digits, `.`,
/// `_` and `-` are written `%XX`, so no name (`/`, `..`, NUL) makes a path
/// of more than one component; names of those bytes alone are unchanged.
pub(crate) fn file_name(name: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    // `.` and `..` alone are path components of their own.
    match out.as_str() {
        "." => "%2E".into(),
        ".." => "%2E%2E".into(),
        _ => out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_manual_allows_pass() {
        for (db, coll) in [
            ("spanrec", "spans"),
            ("a", "b"),
            ("audit-2026_x", "spans.v2"),
            ("d", "a/b"),
            ("d", "Ünïcode"),
            (&"d".repeat(63) as &str, "c"),
        ] {
            assert_eq!(check_names(db, coll), Ok(()), "{db:?} {coll:?}");
        }
    }

    #[test]
    fn names_the_manual_forbids_fail() {
        let long_db = "d".repeat(64);
        let long_coll = "c".repeat(MAX_NAMESPACE_BYTES);
        for (db, coll) in [
            ("", "spans"),
            (long_db.as_str(), "spans"),
            ("a/b", "spans"),
            ("a\\b", "spans"),
            ("a.b", "spans"),
            ("a b", "spans"),
            ("a\"b", "spans"),
            ("a$b", "spans"),
            ("a\0b", "spans"),
            ("spanrec", ""),
            ("spanrec", "a$b"),
            ("spanrec", "$cmd"),
            ("spanrec", "a\0b"),
            ("spanrec", "system.users"),
            ("spanrec", long_coll.as_str()),
        ] {
            let e = check_names(db, coll).expect_err(&format!("{db:?} {coll:?}"));
            let message = e.to_string();
            assert!(message.len() < 200, "{message}");
            assert!(!message.contains('\0'), "{message}");
        }
    }

    /// The longest collection that fits with its chain collection.
    #[test]
    fn the_namespace_limit_counts_the_chain_collection() {
        let fits = MAX_NAMESPACE_BYTES - "db.".len() - COLLECTION_SUFFIX.len();
        assert_eq!(check_names("db", &"c".repeat(fits)), Ok(()));
        assert!(check_names("db", &"c".repeat(fits + 1)).is_err());
    }

    #[test]
    fn file_names_are_one_component() {
        assert_eq!(file_name("spanrec.spans"), "spanrec.spans");
        assert_eq!(file_name("d.a/../../x"), "d.a%2F..%2F..%2Fx");
        assert_eq!(file_name("d.a\\b"), "d.a%5Cb");
        assert_eq!(file_name(".."), "%2E%2E");
        assert_eq!(file_name("."), "%2E");
        assert_eq!(file_name("d.\u{e9}"), "d.%C3%A9");
        for name in ["a/b", "../..", "x\0y", "/abs", "..", "."] {
            let f = file_name(name);
            let path = std::path::Path::new(&f);
            assert_eq!(path.components().count(), 1, "{name:?} -> {f:?}");
            assert!(
                matches!(
                    path.components().next(),
                    Some(std::path::Component::Normal(_))
                ),
                "{name:?} -> {f:?}"
            );
        }
    }
}
