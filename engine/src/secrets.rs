//! The key that seals step secrets at rest, and sealing itself. `weir server --secrets-key FILE`
//! reads the key once at start: 32 random bytes (`head -c 32 /dev/urandom > FILE`) or their 64
//! hex digits (`openssl rand -hex 32 > FILE`), in a file no one but its owner may read. Each
//! value is sealed with XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`) under a fresh
//! random 24-byte nonce, with the secret's name as associated data, so a sealed value copied
//! under another name does not open. Two more keys are derived from it with BLAKE3's
//! `derive_key`, never the key itself: the key id stored beside each value (so a server given
//! another key file says so) and the key of the fingerprints that stand for values in cache
//! keys (a keyed hash: no one without the key file can test a guess against a cache key).
//!
//! The key, the values and the plaintext never reach a log, an error or a `Debug`: errors name
//! the file and the secret, never what either holds. No I/O but reading the key file.

use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::store::SecretRecord;
use weir_core::run::Millis;

/// The longest value a secret may hold.
pub const MAX_VALUE: usize = 64 * 1024;

const KEY_ID_CONTEXT: &str = "weir 2026-12 step secrets: key id";
const FINGERPRINT_CONTEXT: &str = "weir 2026-12 step secrets: cache key fingerprints";

/// The server's secrets key, loaded from its file.
#[derive(Clone)]
pub struct SecretsKey {
    cipher: XChaCha20Poly1305,
    fingerprint_key: [u8; 32],
    id: String,
    file: PathBuf,
}

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretsKey").field("file", &self.file).field("id", &self.id).finish_non_exhaustive()
    }
}

/// Why a key file is refused, or a value does not seal or open. Never holds key or value bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("cannot read the secrets key file {}: {reason}", file.display())]
    Read { file: PathBuf, reason: String },
    #[error(
        "the secrets key file {} can be read by group or others (mode {mode:03o}): run `chmod 600 {}`",
        file.display(),
        file.display()
    )]
    Exposed { file: PathBuf, mode: u32 },
    #[error(
        "the secrets key file {} holds {len} bytes: expected exactly 32 random bytes (`head -c 32 \
         /dev/urandom > FILE`) or 64 hex digits (`openssl rand -hex 32 > FILE`)",
        file.display()
    )]
    Shape { file: PathBuf, len: usize },
    #[error(
        "secret `{name}` was sealed with another key (key id {stored}, this server's is {ours}): start the \
         server with the --secrets-key file it was set with, or set it again"
    )]
    OtherKey { name: String, stored: String, ours: String },
    #[error("secret `{name}` does not open: its stored record is damaged; set it again with `weir secrets set {name}`")]
    Damaged { name: String },
}

impl SecretsKey {
    /// Reads and checks the key file: owner-only permissions, 32 bytes or 64 hex digits.
    pub fn load(file: &Path) -> Result<SecretsKey, Error> {
        let read_err = |e: std::io::Error| Error::Read { file: file.to_path_buf(), reason: e.to_string() };
        let meta = std::fs::metadata(file).map_err(read_err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(Error::Exposed { file: file.to_path_buf(), mode });
            }
        }
        if meta.len() > 1024 {
            return Err(Error::Shape { file: file.to_path_buf(), len: meta.len() as usize });
        }
        let bytes = std::fs::read(file).map_err(read_err)?;
        SecretsKey::from_bytes(&bytes, file)
    }

    /// A key from the contents of `file`: 32 raw bytes, or 64 hex digits and an optional newline.
    pub fn from_bytes(bytes: &[u8], file: &Path) -> Result<SecretsKey, Error> {
        let key: [u8; 32] = match bytes.len() {
            32 => bytes.try_into().expect("32 bytes"),
            64 | 65 => {
                let hex = bytes.strip_suffix(b"\n").unwrap_or(bytes);
                decode_hex(hex)
                    .and_then(|k| <[u8; 32]>::try_from(k).ok())
                    .ok_or(Error::Shape { file: file.to_path_buf(), len: bytes.len() })?
            }
            len => return Err(Error::Shape { file: file.to_path_buf(), len }),
        };
        let id = blake3::derive_key(KEY_ID_CONTEXT, &key);
        Ok(SecretsKey {
            cipher: XChaCha20Poly1305::new(&key.into()),
            fingerprint_key: blake3::derive_key(FINGERPRINT_CONTEXT, &key),
            id: hex(&id[..8]),
            file: file.to_path_buf(),
        })
    }

    /// Which key this is, as stored beside each value (a derived hash, never the key).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals `value` of secret `name` under a fresh random nonce; `created_at` is kept from the
    /// record it replaces, if any.
    pub fn seal(&self, name: &str, value: &str, created_at: Millis, now: Millis) -> SecretRecord {
        let mut nonce = [0u8; 24];
        // The operating system's generator; without it no nonce is safe, and a server that
        // cannot read it cannot do much else either.
        getrandom::fill(&mut nonce).expect("the operating system's random number generator failed");
        let sealed = self
            .cipher
            .encrypt(&XNonce::from(nonce), Payload { msg: value.as_bytes(), aad: name.as_bytes() })
            .expect("XChaCha20-Poly1305 encrypts any value under 256 GiB");
        SecretRecord { nonce: hex(&nonce), sealed: hex(&sealed), key_id: self.id.clone(), created_at, updated_at: now }
    }

    /// The value of secret `name` from its record.
    pub fn open(&self, name: &str, record: &SecretRecord) -> Result<String, Error> {
        if record.key_id != self.id {
            return Err(Error::OtherKey {
                name: name.to_string(),
                stored: record.key_id.clone(),
                ours: self.id.clone(),
            });
        }
        let damaged = || Error::Damaged { name: name.to_string() };
        let nonce: [u8; 24] =
            decode_hex(record.nonce.as_bytes()).and_then(|n| n.try_into().ok()).ok_or_else(damaged)?;
        let sealed = decode_hex(record.sealed.as_bytes()).ok_or_else(damaged)?;
        let plain = self
            .cipher
            .decrypt(&XNonce::from(nonce), Payload { msg: &sealed, aad: name.as_bytes() })
            .map_err(|_| damaged())?;
        String::from_utf8(plain).map_err(|_| damaged())
    }

    /// What stands for the value of secret `name` in a cache key: a BLAKE3 hash keyed with a
    /// key derived from this one, over the name and the value. Equal values give equal
    /// fingerprints (a changed secret voids the cache entry), and the value cannot be tested
    /// against it without the key file.
    pub fn fingerprint(&self, name: &str, value: &str) -> String {
        let mut h = blake3::Hasher::new_keyed(&self.fingerprint_key);
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(value.as_bytes());
        format!("keyed blake3 {}", &h.finalize().to_hex()[..32])
    }
}

/// Opened secret values on their way to the worker that runs a step, by name. Its `Debug`
/// shows the names only, so no `{:?}` of an assignment can print a value.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Revealed(pub std::collections::BTreeMap<String, String>);

impl std::fmt::Debug for Revealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(text: &[u8]) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.chunks(2)
        .map(|pair| {
            let digit = |c: u8| (c as char).to_digit(16);
            Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SecretsKey {
        SecretsKey::from_bytes(&[byte; 32], Path::new("key")).unwrap()
    }

    #[test]
    fn a_value_opens_under_its_name_and_key_only() {
        let k = key(7);
        let r = k.seal("DB_PASSWORD", "hunter2-s3cr3t", Millis(1), Millis(2));
        assert_eq!(k.open("DB_PASSWORD", &r).unwrap(), "hunter2-s3cr3t");
        assert!(!r.sealed.contains(&hex(b"hunter2")), "the plaintext must not be in the record");
        assert_eq!((r.nonce.len(), r.sealed.len()), (48, 2 * (14 + 16)));
        // Fresh nonce per seal: the same value never seals the same twice.
        let again = k.seal("DB_PASSWORD", "hunter2-s3cr3t", Millis(1), Millis(3));
        assert_ne!((&again.nonce, &again.sealed), (&r.nonce, &r.sealed));
        // The name is the associated data: a value moved under another name does not open.
        assert_eq!(k.open("API_KEY", &r), Err(Error::Damaged { name: "API_KEY".into() }));
        // Another key is named as such, not as damage.
        assert!(matches!(key(8).open("DB_PASSWORD", &r), Err(Error::OtherKey { .. })));
        // A flipped bit is damage, never a wrong value.
        let mut bad = r.clone();
        let flipped = if bad.sealed.starts_with('0') { "1" } else { "0" };
        bad.sealed.replace_range(0..1, flipped);
        assert_eq!(k.open("DB_PASSWORD", &bad), Err(Error::Damaged { name: "DB_PASSWORD".into() }));
    }

    #[test]
    fn fingerprints_follow_the_value_and_the_key_and_hide_the_value() {
        let (a, b) = (key(1), key(2));
        assert_eq!(a.fingerprint("S", "v1"), a.fingerprint("S", "v1"));
        assert_ne!(a.fingerprint("S", "v1"), a.fingerprint("S", "v2"));
        assert_ne!(a.fingerprint("S", "v1"), b.fingerprint("S", "v1"));
        assert_ne!(a.fingerprint("S", "v1"), a.fingerprint("T", "v1"));
        assert!(!a.fingerprint("S", "v1").contains(&blake3::hash(b"v1").to_hex()[..32]));
    }

    #[test]
    fn key_files_must_be_private_and_32_bytes_or_64_hex_digits() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        let write = |bytes: &[u8], mode: u32| {
            std::fs::write(&file, bytes).unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write(&[3u8; 32], 0o600);
        let raw = SecretsKey::load(&file).unwrap();
        write(format!("{}\n", "03".repeat(32)).as_bytes(), 0o400);
        assert_eq!(SecretsKey::load(&file).unwrap().id(), raw.id());
        write(&[3u8; 32], 0o640);
        let err = SecretsKey::load(&file).unwrap_err();
        assert_eq!(err, Error::Exposed { file: file.clone(), mode: 0o640 });
        assert!(err.to_string().contains("chmod 600"), "{err}");
        write(b"short\n", 0o600);
        assert!(matches!(SecretsKey::load(&file), Err(Error::Shape { len: 6, .. })));
        write(&[b'g'; 64], 0o600);
        assert!(matches!(SecretsKey::load(&file), Err(Error::Shape { len: 64, .. })));
        let missing = SecretsKey::load(&dir.path().join("nope")).unwrap_err();
        assert!(missing.to_string().contains("cannot read the secrets key file"), "{missing}");
        // Neither the key nor its file's contents reach a Debug.
        assert!(!format!("{raw:?}").contains(&"03".repeat(4)), "{raw:?}");
    }
}
