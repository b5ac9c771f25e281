//! The backup file (`weir backup`, `weir restore`): one stream a running server writes and an
//! offline restore reads, framed by `frame`:
//!
//! 1. the magic line `weir-backup\n`;
//! 2. a header section (JSON [`Header`]: format version, weir version, creation time);
//! 3. one records section: every record of the store as `weir store export` JSON lines
//!    (`store/export.rs`), read at one point in time (see `server/backup.rs`);
//! 4. one section per blob those records name (step outputs, pipeline bundles), named by its
//!    digest, in digest order;
//! 5. a trailer section (JSON [`Trailer`]): the counts and the BLAKE3 of every byte before it.
//!
//! Every section ends with the BLAKE3 of its payload, so [`verify`] names the section and
//! byte offset of a flipped byte, and a truncated file is refused with where it ends. A simple
//! frame rather than tar: nothing in it needs a path, a mode or an owner, and the checksums
//! would have to be added to tar anyway. Nothing here holds more than one chunk in memory.
//! It reads no clock (the creation time is the caller's) and knows no gRPC.

mod frame;
pub mod restore;

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};
use weir_core::run::Millis;
use weir_data::artifact::{self, Digest};

pub use frame::MAGIC;
use frame::{FrameReader, FrameWriter, Kind};
pub use restore::{Restored, restore};

/// The format this weir writes, and the newest it reads.
pub const FORMAT: u32 = 1;

/// What a backup file is and where it came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub format: u32,
    /// The `weir` version that wrote it.
    pub weir_version: String,
    /// When its records were read (milliseconds since the Unix epoch).
    pub created_at: Millis,
}

impl Header {
    pub fn new(created_at: Millis) -> Header {
        Header { format: FORMAT, weir_version: env!("CARGO_PKG_VERSION").to_string(), created_at }
    }
}

/// The last section: what the file holds, to check it is whole.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trailer {
    /// Store records (JSON lines).
    pub records: u64,
    /// Bytes of the records section.
    pub record_bytes: u64,
    /// Blob sections.
    pub blobs: u64,
    /// Their bytes.
    pub blob_bytes: u64,
    /// Blobs a record names that the server did not have (already missing before the backup).
    #[serde(default)]
    pub missing: Vec<String>,
    /// BLAKE3 (hex) of every byte of the file before the trailer section.
    pub digest: String,
}

/// What a backup file holds, once every checksum was checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub header: Header,
    pub trailer: Trailer,
    /// The file's length.
    pub bytes: u64,
}

/// Why a backup could not be written, read or restored. Messages name what is wrong and where.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not a weir backup file (it does not start with `weir-backup`)")]
    NotABackup,
    #[error(
        "the backup was written by a newer weir (format {found}); this weir reads format {FORMAT}: restore it with that weir"
    )]
    NewerFormat { found: u32 },
    #[error("the backup is truncated: it ends inside {at} (at byte {offset}); was its writing interrupted?")]
    Truncated { at: String, offset: u64 },
    #[error(
        "the backup ends after {sections} sections without its trailer: it is truncated (was its writing interrupted?)"
    )]
    NoTrailer { sections: u64 },
    #[error("the backup is damaged: {section} (at byte {offset}): {reason}")]
    Damaged { section: String, offset: u64, reason: String },
    #[error("cannot {what}: {source}")]
    Io { what: &'static str, source: io::Error },
    #[error("{0}")]
    Target(String),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error(transparent)]
    Artifact(#[from] artifact::Error),
}

impl Error {
    fn io(what: &'static str, source: io::Error) -> Error {
        Error::Io { what, source }
    }
}

/// What the engine hands [`write`]: records already read at one instant, and the blobs.
pub struct Contents<'a> {
    pub header: Header,
    /// The records section's bytes (`weir store export` lines) and how many lines.
    pub records: &'a mut dyn Read,
    pub record_bytes: u64,
    pub record_count: u64,
    pub blobs: &'a artifact::Store,
    /// The blobs to copy, in the order written.
    pub digests: &'a [Digest],
}

/// How far a backup got, for progress lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub blobs_done: u64,
    pub blobs_total: u64,
    pub bytes: u64,
}

/// Writes the backup of `contents` to `out`; calls `progress` after each section. A blob that
/// is not stored is left out and named in the trailer's `missing`.
pub fn write(out: impl Write, contents: Contents<'_>, progress: &mut dyn FnMut(Progress)) -> Result<Trailer, Error> {
    let werr = |e| Error::io("write the backup", e);
    let mut w = FrameWriter::new(out).map_err(werr)?;
    let header = serde_json::to_vec(&contents.header).map_err(|e| werr(e.into()))?;
    w.section(Kind::Header, "header", header.len() as u64, &header[..]).map_err(werr)?;
    w.section(Kind::Records, "records", contents.record_bytes, contents.records).map_err(werr)?;
    let mut trailer =
        Trailer { records: contents.record_count, record_bytes: contents.record_bytes, ..Trailer::default() };
    let total = contents.digests.len() as u64;
    progress(Progress { blobs_done: 0, blobs_total: total, bytes: w.written() });
    for (i, d) in contents.digests.iter().enumerate() {
        let file = match contents.blobs.open_blob(d) {
            Ok(f) => f,
            Err(artifact::Error::NotFound(_)) => {
                tracing::warn!(blob = %d, "a record names a blob that is not stored; the backup leaves it out");
                trailer.missing.push(d.to_string());
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let len = file.metadata().map_err(|e| Error::io("read a blob", e))?.len();
        let sum = w.section(Kind::Blob, &d.to_string(), len, file).map_err(werr)?;
        if Digest::from(sum) != *d {
            return Err(Error::Damaged {
                section: format!("stored blob {d}"),
                offset: 0,
                reason: format!("its content hashes to {} on the server", Digest::from(sum)),
            });
        }
        trailer.blobs += 1;
        trailer.blob_bytes += len;
        progress(Progress { blobs_done: i as u64 + 1, blobs_total: total, bytes: w.written() });
    }
    trailer.digest = w.digest().to_hex().to_string();
    let body = serde_json::to_vec(&trailer).map_err(|e| werr(e.into()))?;
    w.section(Kind::Trailer, "trailer", body.len() as u64, &body[..]).map_err(werr)?;
    w.finish().map_err(werr)?;
    Ok(trailer)
}

/// What a reader of a backup is given, section by section, once [`read`] checked it.
pub(crate) trait Visit {
    /// Where the records section's bytes go.
    fn records(&mut self) -> Result<&mut dyn Write, Error>;
    /// Takes the payload of blob `digest` (a reader of exactly its bytes, hashed as read).
    fn blob(&mut self, digest: &Digest, payload: &mut dyn Read) -> Result<(), Error>;
}

/// Reads a whole backup, checking the order of sections, every checksum, the totals and the
/// overall digest; hands records and blobs to `visit` as they pass.
pub(crate) fn read(input: impl Read, visit: &mut dyn Visit) -> Result<Summary, Error> {
    let mut r = FrameReader::new(input)?;
    let damaged =
        |head: &frame::Head, reason: String| Error::Damaged { section: head.label(), offset: head.offset, reason };
    let Some(head) = r.head()? else { return Err(Error::NoTrailer { sections: 0 }) };
    if head.kind != Kind::Header || head.name != "header" || head.len > 64 * 1024 {
        return Err(damaged(&head, "expected the header first".to_string()));
    }
    let mut bytes = Vec::new();
    r.body(&head, &mut bytes)?;
    let header: Header = serde_json::from_slice(&bytes).map_err(|e| damaged(&head, e.to_string()))?;
    if header.format > FORMAT {
        return Err(Error::NewerFormat { found: header.format });
    }
    let mut sections = 1u64;
    let mut seen = Trailer::default();
    let mut records = false;
    loop {
        let before = r.digest();
        let Some(head) = r.head()? else { return Err(Error::NoTrailer { sections }) };
        sections += 1;
        // The trailer's head is the one part no digest covers: its name is checked too.
        let expected = match head.kind {
            Kind::Records => Some("records"),
            Kind::Trailer => Some("trailer"),
            _ => None,
        };
        if expected.is_some_and(|e| e != head.name) {
            return Err(damaged(&head, format!("its name is {:?}", head.name)));
        }
        match head.kind {
            Kind::Header => return Err(damaged(&head, "a second header".to_string())),
            Kind::Records => {
                if records {
                    return Err(damaged(&head, "a second records section".to_string()));
                }
                records = true;
                seen.record_bytes = head.len;
                let sink = visit.records()?;
                r.body(&head, sink)?;
            }
            Kind::Blob => {
                let digest: Digest =
                    head.name.parse().map_err(|_| damaged(&head, "its name is not a blob digest".to_string()))?;
                let mut payload = r.payload(&head);
                let given = visit.blob(&digest, &mut payload);
                let mut tail = io::sink();
                // Whatever the visitor did not read is still checked.
                let rest = io::copy(&mut payload, &mut tail);
                let (truncated, hasher) = (payload.truncated, payload.hasher.clone());
                if truncated {
                    return Err(Error::Truncated { at: head.label(), offset: head.offset });
                }
                rest.map_err(|e| Error::io("read", e))?;
                let sum = r.check(&head, &hasher)?;
                given?;
                if Digest::from(sum) != digest {
                    return Err(damaged(&head, format!("its content hashes to {}", Digest::from(sum))));
                }
                seen.blobs += 1;
                seen.blob_bytes += head.len;
            }
            Kind::Trailer => {
                if head.len > 64 << 20 {
                    return Err(damaged(&head, "a trailer too large".to_string()));
                }
                let mut bytes = Vec::new();
                r.body(&head, &mut bytes)?;
                let trailer: Trailer = serde_json::from_slice(&bytes).map_err(|e| damaged(&head, e.to_string()))?;
                if !r.at_end()? {
                    return Err(damaged(&head, "bytes follow the trailer".to_string()));
                }
                if trailer.digest != before.to_hex().as_str() {
                    return Err(damaged(&head, "the digest of the file before it does not match".to_string()));
                }
                if !records {
                    return Err(damaged(&head, "no records section came before it".to_string()));
                }
                if (seen.blobs, seen.blob_bytes, seen.record_bytes)
                    != (trailer.blobs, trailer.blob_bytes, trailer.record_bytes)
                {
                    return Err(damaged(
                        &head,
                        format!(
                            "it counts {} blobs of {} bytes and {} bytes of records; the file holds {}, {} and {}",
                            trailer.blobs,
                            trailer.blob_bytes,
                            trailer.record_bytes,
                            seen.blobs,
                            seen.blob_bytes,
                            seen.record_bytes
                        ),
                    ));
                }
                return Ok(Summary { header, trailer, bytes: r.offset() });
            }
        }
    }
}

/// Checks every checksum, the totals and the digest of a backup, writing nothing.
pub fn verify(input: impl Read) -> Result<Summary, Error> {
    struct Nothing(io::Sink);
    impl Visit for Nothing {
        fn records(&mut self) -> Result<&mut dyn Write, Error> {
            Ok(&mut self.0)
        }
        fn blob(&mut self, _: &Digest, _: &mut dyn Read) -> Result<(), Error> {
            Ok(())
        }
    }
    read(input, &mut Nothing(io::sink()))
}

#[cfg(test)]
mod tests;
