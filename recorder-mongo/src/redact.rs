//! Connection strings whose secrets never reach output: `RedactedUri`.

use crate::secret_mask::SecretMask;
use std::fmt;

/// A connection string whose secrets never reach `Debug`, `Display`, a log
/// or an error: the user-info password and the value of every
/// credential-bearing option ([`SECRET_OPTIONS`]), as written and
/// percent-decoded.
#[derive(Clone)]
pub struct RedactedUri {
    uri: String,
    /// Every secret as it may appear in text (as written, each part of a
    /// list value, percent-decoded).
    mask: SecretMask,
}

/// Connection-string options whose values are credentials (matched
/// case-insensitively, as the driver does): private-key passwords, AWS
/// session tokens inside `authMechanismProperties`, proxy passwords.
pub const SECRET_OPTIONS: &[&str] = &[
    "authMechanismProperties",
    "tlsCertificateKeyFilePassword",
    "sslPEMKeyPassword",
    "sslClientCertificateKeyPassword",
    "proxyPassword",
    "password",
];

impl RedactedUri {
    /// Wraps `uri`.
    pub fn new(uri: &str) -> Self {
        let mut secrets = Vec::new();
        let (rest, query) = match uri.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (uri, None),
        };
        // The password: between the first ':' of the user info and the
        // last '@' before the host list.
        if let Some((_, after_scheme)) = rest.split_once("://") {
            if let Some((userinfo, _)) = after_scheme.rsplit_once('@') {
                if let Some((_, pw)) = userinfo.split_once(':') {
                    secrets.push(pw.to_string());
                }
            }
        }
        for pair in query.into_iter().flat_map(|q| q.split(['&', ';'])) {
            if let Some((key, value)) = pair.split_once('=') {
                if SECRET_OPTIONS.iter().any(|o| o.eq_ignore_ascii_case(key)) {
                    secrets.push(value.to_string());
                    // Each part of a list value (`AWS_SESSION_TOKEN:…`).
                    for part in value.split([',', ':']) {
                        secrets.push(part.to_string());
                    }
                }
            }
        }
        // As the driver may show them: percent-decoded too.
        let decoded: Vec<String> = secrets.iter().map(|s| percent_decoded(s)).collect();
        secrets.extend(decoded);
        secrets.sort_unstable();
        secrets.dedup();
        RedactedUri {
            uri: uri.to_string(),
            mask: SecretMask::new(secrets.iter().map(String::as_str)),
        }
    }

    /// The real connection string, for the driver only.
    pub fn expose(&self) -> &str {
        &self.uri
    }

    /// `text` with every occurrence of every secret masked: each run of
    /// text that occurrences cover (overlapping ones together) becomes
    /// `****`. Linear in `text` (`secret_mask.rs`).
    pub fn scrub(&self, text: &str) -> String {
        self.mask.apply(text)
    }
}

/// `%XX` escapes decoded (others kept); lossy on invalid UTF-8.
fn percent_decoded(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl fmt::Display for RedactedUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.scrub(&self.uri))
    }
}

impl fmt::Debug for RedactedUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedactedUri({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every URI with its secrets: none may appear in `Display`, `Debug`,
    /// or a scrubbed message that quotes the secret raw or decoded.
    #[test]
    fn no_secret_survives_any_output() {
        let cases: &[(&str, &[&str])] = &[
            ("mongodb://u:s3cr3t-pw@h:27017/db", &["s3cr3t-pw"]),
            ("mongodb://u:p%40ss%3Aw0rd@h/", &["p%40ss%3Aw0rd", "p@ss:w0rd"]),
            ("mongodb+srv://user:pw@cluster.example.net/?retryWrites=true", &["pw"]),
            (
                "mongodb://u:p@h/?tlsCertificateKeyFilePassword=hunter2",
                &["hunter2"],
            ),
            (
                "mongodb://h/?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:FwoGZXIvYXdz%2Btoken",
                &["FwoGZXIvYXdz%2Btoken", "FwoGZXIvYXdz+token"],
            ),
            ("mongodb://h/?proxyHost=p&proxyPassword=prox-secret&tls=true", &["prox-secret"]),
            ("mongodb://h/?TLSCERTIFICATEKEYFILEPASSWORD=upper-case", &["upper-case"]),
            ("mongodb://h/?sslPEMKeyPassword=legacy;w=1", &["legacy"]),
            ("mongodb://a:b@c:d@h/", &["b@c:d"]),
            ("mongodb://u:abcX@h/?proxyPassword=Xdef", &["abcX", "Xdef"]),
        ];
        for (uri, secrets) in cases {
            let r = RedactedUri::new(uri);
            let message = format!("failed at {} with {}", uri, secrets.join(" and "));
            for text in [format!("{r}"), format!("{r:?}"), r.scrub(&message)] {
                for secret in *secrets {
                    assert!(!text.contains(secret), "{secret:?} in {text:?}");
                }
            }
            assert_eq!(r.expose(), *uri);
        }
        // Two secrets overlapping in a message ("abcX" + "Xdef" sharing
        // the X): masking one after the other left "def" visible.
        let r = RedactedUri::new("mongodb://u:abcX@h/?proxyPassword=Xdef");
        assert_eq!(r.scrub("auth abcXdef failed"), "auth **** failed");
        // Nothing to hide: unchanged.
        let plain = RedactedUri::new("mongodb://127.0.0.1:27017/?w=majority");
        assert_eq!(plain.to_string(), "mongodb://127.0.0.1:27017/?w=majority");
    }
}
