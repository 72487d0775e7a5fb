//! Files named on the command line (`--uri-file`, `--checkpoint`), read
//! within bounds: a path mistyped to a device (`/dev/zero`), a log or a
//! binary file is a clear error, never read without end.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// The longest line accepted (a connection string, a checkpoint line).
pub const MAX_LINE_BYTES: usize = 64 << 10;
/// The most bytes read from one file.
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// The lines of `path` (without their line ends), at most `max_lines`.
pub fn lines(path: &Path, max_lines: usize) -> std::io::Result<Vec<String>> {
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut file = BufReader::new(std::fs::File::open(path)?).take(MAX_FILE_BYTES);
    let mut out = Vec::new();
    while out.len() < max_lines {
        let mut line = Vec::new();
        let n = (&mut file)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        } else if n > MAX_LINE_BYTES {
            return Err(invalid(format!(
                "a line longer than {MAX_LINE_BYTES} bytes: not a text file of this kind"
            )));
        }
        out.push(String::from_utf8(line).map_err(|_| invalid("not UTF-8 text".into()))?);
    }
    if out.len() < max_lines && file.limit() == 0 {
        return Err(invalid(format!("longer than {MAX_FILE_BYTES} bytes")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_and_binary_files_are_errors_not_endless_reads() {
        let err = lines(Path::new("/dev/zero"), usize::MAX).unwrap_err();
        assert!(err.to_string().contains("longer than"), "{err}");
        let dir = std::env::temp_dir().join(format!("spanrec-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("bin");
        std::fs::write(&f, b"ok\n\xff\xfe\n").unwrap();
        assert!(lines(&f, usize::MAX).is_err());
        assert_eq!(lines(&f, 1).unwrap(), ["ok"], "only what is asked is read");
        std::fs::write(&f, "a b c\r\n\nlast").unwrap();
        assert_eq!(lines(&f, usize::MAX).unwrap(), ["a b c", "", "last"]);
        let _ = std::fs::remove_dir_all(dir);
    }
}
