//! The framing of a backup file: after the magic line, a sequence of sections, each
//! `[kind u8][name length u16 BE][name][payload length u64 BE][payload][BLAKE3 of the payload,
//! 32 bytes]`. [`FrameWriter`] streams sections out while hashing every byte it writes (the
//! trailer's overall digest); [`FrameReader`] reads them back, checking each checksum as the
//! payload streams through, and names the section and byte offset of whatever is wrong. It
//! knows nothing of what the sections hold (`mod.rs` does) and never holds a payload in memory
//! beyond one chunk.

use std::io::{self, Read, Write};

use super::Error;

/// The file's first bytes.
pub const MAGIC: &[u8; 12] = b"weir-backup\n";

/// Bytes copied per step.
const CHUNK: usize = 256 * 1024;

/// What a section holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The header: format version, weir version, creation time (JSON).
    Header,
    /// The store's records as `weir store export` JSON lines.
    Records,
    /// One blob; its name is the digest.
    Blob,
    /// Totals and the digest of every byte before it (JSON); the last section.
    Trailer,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Kind::Header => b'H',
            Kind::Records => b'R',
            Kind::Blob => b'B',
            Kind::Trailer => b'T',
        }
    }

    fn from_byte(b: u8) -> Option<Kind> {
        Some(match b {
            b'H' => Kind::Header,
            b'R' => Kind::Records,
            b'B' => Kind::Blob,
            b'T' => Kind::Trailer,
            _ => return None,
        })
    }
}

/// A section's head, as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub kind: Kind,
    pub name: String,
    pub len: u64,
    /// Where the section starts in the file.
    pub offset: u64,
}

impl Head {
    /// How errors name the section: `blob 3fa1…`, `records`.
    pub fn label(&self) -> String {
        match self.kind {
            Kind::Header => "the header".to_string(),
            Kind::Records => "the records".to_string(),
            Kind::Blob => format!("blob {}", self.name),
            Kind::Trailer => "the trailer".to_string(),
        }
    }
}

/// Writes sections to `out`, hashing every byte.
pub struct FrameWriter<W: Write> {
    out: W,
    overall: blake3::Hasher,
    written: u64,
}

impl<W: Write> FrameWriter<W> {
    /// Writes the magic line.
    pub fn new(mut out: W) -> io::Result<FrameWriter<W>> {
        out.write_all(MAGIC)?;
        let mut overall = blake3::Hasher::new();
        overall.update(MAGIC);
        Ok(FrameWriter { out, overall, written: MAGIC.len() as u64 })
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.overall.update(bytes);
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The BLAKE3 of every byte written so far.
    pub fn digest(&self) -> blake3::Hash {
        self.overall.finalize()
    }

    /// Writes one section of exactly `len` bytes read from `payload`; returns its checksum.
    /// A payload that yields more or fewer bytes is an error (the file stays unusable).
    pub fn section(&mut self, kind: Kind, name: &str, len: u64, mut payload: impl Read) -> io::Result<blake3::Hash> {
        let name_len = u16::try_from(name.len()).map_err(|_| io::Error::other("a section name is too long"))?;
        self.put(&[kind.byte()])?;
        self.put(&name_len.to_be_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&len.to_be_bytes())?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; CHUNK];
        let mut left = len;
        while left > 0 {
            let want = usize::try_from(left.min(CHUNK as u64)).unwrap_or(CHUNK);
            let n = match payload.read(&mut buf[..want]) {
                Ok(0) => {
                    return Err(io::Error::other(format!(
                        "{name}: {left} bytes fewer than the {len} announced (did it change while being copied?)"
                    )));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buf[..n]);
            self.put(&buf[..n])?;
            left -= n as u64;
        }
        if payload.read(&mut buf[..1])? != 0 {
            return Err(io::Error::other(format!("{name}: more bytes than the {len} announced")));
        }
        let checksum = hasher.finalize();
        self.put(checksum.as_bytes())?;
        Ok(checksum)
    }

    /// Flushes and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Reads sections from `input`, checking each checksum.
pub struct FrameReader<R: Read> {
    input: R,
    overall: blake3::Hasher,
    offset: u64,
}

impl<R: Read> FrameReader<R> {
    /// Checks the magic line.
    pub fn new(mut input: R) -> Result<FrameReader<R>, Error> {
        let mut magic = [0u8; MAGIC.len()];
        let got = read_full(&mut input, &mut magic).map_err(|e| Error::io("read", e))?;
        if got < MAGIC.len() || &magic != MAGIC {
            return Err(Error::NotABackup);
        }
        let mut overall = blake3::Hasher::new();
        overall.update(MAGIC);
        Ok(FrameReader { input, overall, offset: MAGIC.len() as u64 })
    }

    /// The BLAKE3 of every byte read so far.
    pub fn digest(&self) -> blake3::Hash {
        self.overall.finalize()
    }

    /// Bytes read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Whether the input holds no further byte.
    pub fn at_end(&mut self) -> Result<bool, Error> {
        let mut one = [0u8; 1];
        Ok(read_full(&mut self.input, &mut one).map_err(|e| Error::io("read", e))? == 0)
    }

    /// Fills `buf` or fails naming `what` ends early.
    fn take(&mut self, buf: &mut [u8], what: &dyn Fn() -> String) -> Result<(), Error> {
        let got = read_full(&mut self.input, buf).map_err(|e| Error::io("read", e))?;
        self.overall.update(&buf[..got]);
        self.offset += got as u64;
        if got < buf.len() {
            return Err(Error::Truncated { at: what(), offset: self.offset });
        }
        Ok(())
    }

    /// The next section's head; `None` at the clean end of the file.
    pub fn head(&mut self) -> Result<Option<Head>, Error> {
        let offset = self.offset;
        let mut kind = [0u8; 1];
        let got = read_full(&mut self.input, &mut kind).map_err(|e| Error::io("read", e))?;
        if got == 0 {
            return Ok(None);
        }
        self.overall.update(&kind);
        self.offset += 1;
        let Some(k) = Kind::from_byte(kind[0]) else {
            return Err(Error::Damaged {
                section: "a section".to_string(),
                offset,
                reason: format!("unknown section kind {:#04x}", kind[0]),
            });
        };
        let what = || "a section's head".to_string();
        let mut len2 = [0u8; 2];
        self.take(&mut len2, &what)?;
        let mut name = vec![0u8; usize::from(u16::from_be_bytes(len2))];
        self.take(&mut name, &what)?;
        let name = String::from_utf8(name).map_err(|_| Error::Damaged {
            section: "a section".to_string(),
            offset,
            reason: "its name is not UTF-8".to_string(),
        })?;
        let mut len8 = [0u8; 8];
        self.take(&mut len8, &what)?;
        Ok(Some(Head { kind: k, name, len: u64::from_be_bytes(len8), offset }))
    }

    /// Streams the payload of `head` into `sink` and checks its checksum; returns it.
    pub fn body(&mut self, head: &Head, sink: &mut dyn Write) -> Result<blake3::Hash, Error> {
        let mut payload = self.payload(head);
        let copied = io::copy(&mut payload, sink);
        let (truncated, hasher) = (payload.truncated, payload.hasher.clone());
        if truncated {
            return Err(Error::Truncated { at: head.label(), offset: self.offset });
        }
        copied.map_err(|e| Error::io("write", e))?;
        self.check(head, &hasher)
    }

    /// A reader of the payload of `head` (exactly its length); then [`FrameReader::check`].
    pub fn payload(&mut self, head: &Head) -> Payload<'_, R> {
        Payload { frame: self, left: head.len, hasher: blake3::Hasher::new(), truncated: false }
    }

    /// Reads the checksum after a payload hashed into `hasher` and compares.
    pub fn check(&mut self, head: &Head, hasher: &blake3::Hasher) -> Result<blake3::Hash, Error> {
        let mut stored = [0u8; 32];
        self.take(&mut stored, &|| head.label())?;
        let actual = hasher.finalize();
        if actual != blake3::Hash::from_bytes(stored) {
            return Err(Error::Damaged {
                section: head.label(),
                offset: head.offset,
                reason: "its checksum does not match its bytes".to_string(),
            });
        }
        Ok(actual)
    }
}

/// The payload of one section as a reader: ends after its length; an early end of the file
/// is an `UnexpectedEof` error and sets `truncated`.
pub struct Payload<'a, R: Read> {
    frame: &'a mut FrameReader<R>,
    left: u64,
    pub hasher: blake3::Hasher,
    pub truncated: bool,
}

impl<R: Read> Read for Payload<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = usize::try_from(self.left.min(buf.len() as u64)).unwrap_or(buf.len());
        let n = loop {
            match self.frame.input.read(&mut buf[..want]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            self.truncated = true;
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the backup file ends inside a section"));
        }
        self.frame.overall.update(&buf[..n]);
        self.frame.offset += n as u64;
        self.hasher.update(&buf[..n]);
        self.left -= n as u64;
        Ok(n)
    }
}

/// Reads until `buf` is full or the input ends; returns how many bytes.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match input.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}
