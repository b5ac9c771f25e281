//! The signing secrets a server holds for `notify:` entries, by name: read once at start from
//! `weir server --notify-secrets FILE` (`NAME = SECRET` lines, `#` comments, blank lines), never
//! logged, never shown (their `Debug` prints names only), never stored.

use std::collections::BTreeMap;

/// Named secrets.
#[derive(Clone, Default)]
pub struct Secrets(BTreeMap<String, Vec<u8>>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// A line of a secrets file that does not read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {reason}")]
pub struct SecretsError {
    pub line: usize,
    pub reason: String,
}

impl Secrets {
    /// Parses a secrets file's text. Errors name the line and what was expected, never a secret.
    pub fn parse(text: &str) -> Result<Secrets, SecretsError> {
        let mut out = BTreeMap::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |reason: String| SecretsError { line: n + 1, reason };
            let Some((name, secret)) = line.split_once('=') else {
                return Err(err("expected `NAME = SECRET`".to_string()));
            };
            let (name, secret) = (name.trim(), secret.trim());
            weir_core::spec::check_name(name).map_err(|e| err(format!("invalid secret name `{name}`: {e}")))?;
            if secret.len() < 16 {
                return Err(err(format!(
                    "the secret of `{name}` is shorter than 16 characters: generate one with `openssl rand -hex 32`"
                )));
            }
            if out.insert(name.to_string(), secret.as_bytes().to_vec()).is_some() {
                return Err(err(format!("`{name}` is named twice")));
            }
        }
        Ok(Secrets(out))
    }

    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0.get(name).map(Vec::as_slice)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_read_by_name_and_bad_lines_say_which_without_the_secret() {
        let s = Secrets::parse("# hooks\n\nops = 0123456789abcdef0123\n ml=fedcba9876543210 \n").unwrap();
        assert_eq!(s.get("ops"), Some(&b"0123456789abcdef0123"[..]));
        assert_eq!(s.get("ml"), Some(&b"fedcba9876543210"[..]));
        assert_eq!(format!("{s:?}"), r#"{"ml", "ops"}"#);
        let e = |t: &str| Secrets::parse(t).unwrap_err();
        assert_eq!(e("ops\n").line, 1);
        assert!(e("x = short-secret-1\ny = tooshort\n").reason.contains("shorter than 16"));
        assert!(!e("y = tooshort\n").to_string().contains("tooshort"));
        assert!(e("a b = 0123456789abcdef\n").reason.contains("invalid secret name"));
        assert!(e("a = 0123456789abcdef\na = 0123456789abcdef\n").reason.contains("twice"));
    }
}
