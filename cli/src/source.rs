//! Reading a pipeline file from disk for the core: never more than the size limit plus one byte,
//! so an enormous file is refused without being read whole. What the bytes mean (over the limit,
//! not UTF-8) is the core's `spec::source_text`.

use std::io::Read;
use std::path::Path;

use weir_core::diag::Diagnostic;
use weir_core::spec::{self, Limits};

/// The text of the pipeline file at `path`, or a diagnostic naming the file.
#[allow(clippy::result_large_err)] // a Diagnostic travels only on the error path, built once
pub fn read(path: &Path, limits: &Limits) -> Result<String, Diagnostic> {
    let cannot = |e: std::io::Error| Diagnostic::error(format!("cannot read `{}`: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(cannot)?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut bytes = Vec::new();
    file.take(limits.max_file_bytes as u64 + 1).read_to_end(&mut bytes).map_err(cannot)?;
    spec::source_text(bytes, len, limits)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn a_file_over_the_limit_is_refused_with_its_size_and_one_at_the_limit_is_read() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&[b'#'; 1000]).unwrap();
        file.flush().unwrap();
        let limits = Limits { max_file_bytes: 999, ..Limits::default() };
        let d = read(file.path(), &limits).expect_err("over the limit");
        assert_eq!(d.message, "the file is 1000 bytes, more than the limit of 999 bytes");
        let limits = Limits { max_file_bytes: 1000, ..Limits::default() };
        assert_eq!(read(file.path(), &limits).expect("at the limit").len(), 1000);
    }

    #[test]
    fn a_missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let d = read(&dir.path().join("absent.yaml"), &Limits::default()).expect_err("missing");
        assert!(d.message.starts_with("cannot read `"), "{}", d.message);
        assert!(d.message.contains("absent.yaml"), "{}", d.message);
    }
}
