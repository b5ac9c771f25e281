//! Saving a downloaded file (`weir models get`, `weir artifacts get`): the bytes go to a
//! `.NAME.PID.partial` file beside the target and are renamed into place only once their
//! size and BLAKE3 digest match what the server said, so a damaged or cut download never
//! replaces anything. `-` writes to stdout (unchecked until the end, so a mismatch is
//! reported after the bytes went out).

use std::io::Write;
use std::path::{Path, PathBuf};

use tonic::Status;
use weir_proto::v1;

/// Why a download was not saved.
pub(super) enum SaveError {
    /// The stream failed.
    Stream(Status),
    /// Writing or renaming failed: the message says which file.
    Io(String),
    /// The bytes did not match: what arrived instead. Nothing was put in place.
    Damaged { size: u64, digest: String },
}

/// `.NAME.PID.partial` beside `output`, so the rename stays on one file system.
fn temp_beside(output: &Path) -> PathBuf {
    let name = output.file_name().map_or_else(|| "download".into(), |n| n.to_string_lossy().into_owned());
    output.with_file_name(format!(".{name}.{}.partial", std::process::id()))
}

/// A download's bytes, a chunk at a time (`None` at the end); other messages are skipped.
pub(super) trait Chunks {
    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, Status>;
}

impl Chunks for tonic::Streaming<v1::GetArtifactResponse> {
    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, Status> {
        use v1::get_artifact_response::Part;
        loop {
            match self.message().await? {
                Some(v1::GetArtifactResponse { part: Some(Part::Chunk(c)) }) => return Ok(Some(c)),
                Some(_) => {}
                None => return Ok(None),
            }
        }
    }
}

impl Chunks for tonic::Streaming<v1::GetModelArtifactResponse> {
    async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, Status> {
        use v1::get_model_artifact_response::Part;
        loop {
            match self.message().await? {
                Some(v1::GetModelArtifactResponse { part: Some(Part::Chunk(c)) }) => return Ok(Some(c)),
                Some(_) => {}
                None => return Ok(None),
            }
        }
    }
}

/// Writes the chunks of `source` to `target`, checked against `size` and `digest`.
pub(super) async fn save(target: &Path, size: u64, digest: &str, source: &mut impl Chunks) -> Result<(), SaveError> {
    let to_stdout = target.as_os_str() == "-";
    let temp = temp_beside(target);
    let mut out: Box<dyn Write> = if to_stdout {
        Box::new(std::io::stdout())
    } else {
        Box::new(
            std::fs::File::create(&temp)
                .map_err(|e| SaveError::Io(format!("cannot create {}: {e}", temp.display())))?,
        )
    };
    let cleanup = || {
        if !to_stdout {
            let _ = std::fs::remove_file(&temp);
        }
    };
    let mut hasher = blake3::Hasher::new();
    let mut got = 0u64;
    loop {
        match source.next_chunk().await {
            Ok(Some(chunk)) => {
                hasher.update(&chunk);
                got += chunk.len() as u64;
                if let Err(e) = out.write_all(&chunk) {
                    cleanup();
                    return Err(SaveError::Io(format!("cannot write {}: {e}", target.display())));
                }
            }
            Ok(None) => break,
            Err(s) => {
                cleanup();
                return Err(SaveError::Stream(s));
            }
        }
    }
    let arrived = hasher.finalize().to_hex().to_string();
    if arrived != digest || got != size {
        cleanup();
        return Err(SaveError::Damaged { size: got, digest: arrived });
    }
    let _ = out.flush();
    drop(out);
    if !to_stdout {
        let done = std::fs::File::open(&temp).and_then(|f| f.sync_all()).and_then(|()| std::fs::rename(&temp, target));
        if let Err(e) = done {
            cleanup();
            return Err(SaveError::Io(format!("cannot put the file at {}: {e}", target.display())));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes a server could send, damaged in flight: a fault a real server does not produce.
    struct Sent(Vec<Vec<u8>>);

    impl Chunks for Sent {
        async fn next_chunk(&mut self) -> Result<Option<Vec<u8>>, Status> {
            Ok(if self.0.is_empty() { None } else { Some(self.0.remove(0)) })
        }
    }

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    #[test]
    fn a_download_is_put_in_place_only_when_it_matches() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("model.json");
        std::fs::write(&target, "the old file").unwrap();
        let good = b"hello weir".to_vec();
        let digest = blake3::hash(&good).to_hex().to_string();

        let damaged = block_on(save(&target, 10, &digest, &mut Sent(vec![b"hello".to_vec(), b"WEIR!".to_vec()])));
        assert!(matches!(damaged, Err(SaveError::Damaged { size: 10, .. })));
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "the old file", "nothing replaced");
        let cut = block_on(save(&target, 10, &digest, &mut Sent(vec![b"hello".to_vec()])));
        assert!(matches!(cut, Err(SaveError::Damaged { size: 5, .. })));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no partial file left behind");

        block_on(save(&target, 10, &digest, &mut Sent(vec![b"hello".to_vec(), b" weir".to_vec()]))).ok().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), good);
    }
}
