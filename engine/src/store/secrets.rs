//! The `secrets` tree: step secrets by name, each value sealed by `crate::secrets` (the
//! XChaCha20-Poly1305 ciphertext and its nonce, hex) before it reaches this module, so no
//! plaintext value is ever handed to sled, an export or a backup. It neither encrypts nor
//! decrypts: it stores what it is given, flushed before it returns.
//!
//! Key: the secret's name (`[A-Za-z_][A-Za-z0-9_]*`, checked by the caller).

use serde::{Deserialize, Serialize};

use super::Error;
use super::db::{Store, TreeId};
use super::envelope::decode;
use weir_core::run::Millis;

/// One stored secret: its sealed value and when it was set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRecord {
    /// The 24-byte XChaCha20 nonce, lowercase hex.
    pub nonce: String,
    /// The ciphertext with its 16-byte Poly1305 tag, lowercase hex; the name is the associated
    /// data, so a value moved under another name does not open.
    pub sealed: String,
    /// Which key sealed it (a keyed hash of the key, never the key): a server started with
    /// another key file says so instead of "damaged".
    pub key_id: String,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl Store {
    /// Creates or replaces secret `name`; flushed before it returns.
    pub fn put_secret(&self, name: &str, record: &SecretRecord) -> Result<(), Error> {
        self.put(TreeId::Secrets, name.as_bytes().to_vec(), record)
    }

    /// Secret `name`, sealed, if it is set.
    pub fn secret(&self, name: &str) -> Result<Option<SecretRecord>, Error> {
        self.get(TreeId::Secrets, name.as_bytes())
    }

    /// Every secret, in name order.
    pub fn secrets(&self) -> Result<Vec<(String, SecretRecord)>, Error> {
        self.reading("listing secrets", || {
            let mut out = Vec::new();
            for kv in self.tree(TreeId::Secrets)?.iter() {
                let (k, v) = kv?;
                out.push((String::from_utf8_lossy(&k).into_owned(), decode(TreeId::Secrets.name(), &k, &v)?));
            }
            Ok(out)
        })
    }

    /// Forgets secret `name`; whether it was set. Flushed before it returns.
    pub fn remove_secret(&self, name: &str) -> Result<bool, Error> {
        let removed =
            self.writing("removing a secret", || Ok(self.tree(TreeId::Secrets)?.remove(name.as_bytes())?))?;
        self.flush()?;
        Ok(removed.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testkit;

    fn record(sealed: &str, at: u64) -> SecretRecord {
        SecretRecord {
            nonce: "00".repeat(24),
            sealed: sealed.into(),
            key_id: "k".into(),
            created_at: Millis(1),
            updated_at: Millis(at),
        }
    }

    #[test]
    fn secrets_read_back_after_a_reopen_in_name_order_and_go_when_removed() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.put_secret("B", &record("bb", 2)).unwrap();
            s.put_secret("A", &record("aa", 3)).unwrap();
            s.put_secret("B", &record("cc", 4)).unwrap();
        }
        let s = testkit::reopen(dir.path());
        let names: Vec<(String, String)> = s.secrets().unwrap().into_iter().map(|(n, r)| (n, r.sealed)).collect();
        assert_eq!(names, [("A".to_string(), "aa".to_string()), ("B".to_string(), "cc".to_string())]);
        assert_eq!(s.secret("B").unwrap(), Some(record("cc", 4)));
        assert!(s.remove_secret("A").unwrap());
        assert!(!s.remove_secret("A").unwrap());
        drop(s);
        let s = testkit::reopen(dir.path());
        assert_eq!(s.secret("A").unwrap(), None);
        assert_eq!(s.secrets().unwrap().len(), 1);
    }
}
