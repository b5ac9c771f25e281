//! Step secrets as services: set, list and delete them (`weir secrets`), and what a lease and
//! a cache key need of them: the values of a step's secrets for the worker that runs it, and
//! their keyed fingerprints. Values are sealed by `crate::secrets` before the store sees them and
//! opened only for an Assignment; no answer, record, event, error or log line holds one.
//!
//! Without `--secrets-key` the server keeps no secrets: the calls refuse with how to enable
//! them, and a step naming a secret fails with the same words. A secret reaches a worker only
//! when the server's transport may carry it ([`ServerSecrets::plaintext_ok`]: TLS, loopback or
//! `--insecure`); otherwise the step fails saying so, and so does `SetSecret`.

use std::collections::BTreeMap;

use weir_core::run::Millis;

use super::core::Engine;
use super::error::ApiError;
use crate::secrets::{MAX_VALUE, SecretsKey};

/// What the server holds for step secrets.
#[derive(Clone, Debug)]
pub struct ServerSecrets {
    /// The key values are sealed with; `None`: secrets are off.
    pub key: Option<SecretsKey>,
    /// Whether secrets may travel over this server's transport (`ServerConfig::secrets_over_plaintext_ok`).
    pub plaintext_ok: bool,
}

impl Default for ServerSecrets {
    fn default() -> Self {
        ServerSecrets { key: None, plaintext_ok: true }
    }
}

/// A secret as listed: never its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretInfo {
    pub name: String,
    pub created_at: Millis,
    pub updated_at: Millis,
}

const DISABLED: &str = "this server keeps no secrets: start it with `--secrets-key FILE` (make the file with \
                        `head -c 32 /dev/urandom > FILE && chmod 600 FILE`; docs/secrets.md)";

const PLAINTEXT: &str = "secrets travel only over TLS: this server listens in plaintext off loopback; serve TLS, \
                         listen on 127.0.0.1, or start it with --insecure if the network is trusted";

impl ServerSecrets {
    fn key(&self) -> Result<&SecretsKey, ApiError> {
        self.key.as_ref().ok_or_else(|| ApiError::Precondition(DISABLED.to_string()))
    }
}

fn check_name(name: &str) -> Result<(), ApiError> {
    weir_core::spec::secrets::check_name(name).map_err(|why| ApiError::Invalid(format!("secret name `{name}`: {why}")))
}

impl Engine {
    /// Creates or replaces secret `name` (flushed before the answer); whether it replaced one.
    pub(crate) fn set_secret(&self, name: &str, value: &str) -> Result<bool, ApiError> {
        check_name(name)?;
        let key = self.secrets.key()?;
        if !self.secrets.plaintext_ok {
            return Err(ApiError::Precondition(PLAINTEXT.to_string()));
        }
        if value.is_empty() || value.len() > MAX_VALUE {
            return Err(ApiError::Invalid(format!(
                "secret `{name}`: a value holds 1 to {MAX_VALUE} bytes, this one {}",
                value.len()
            )));
        }
        let now = self.clock.now();
        let before = self.store.secret(name)?;
        let created = before.as_ref().map_or(now, |r| r.created_at);
        self.store.put_secret(name, &key.seal(name, value, created, now))?;
        tracing::info!(secret = name, replaced = before.is_some(), "secret set");
        Ok(before.is_some())
    }

    /// Every secret's name and times, in name order.
    pub(crate) fn list_secrets(&self) -> Result<Vec<SecretInfo>, ApiError> {
        self.secrets.key()?;
        Ok(self
            .store
            .secrets()?
            .into_iter()
            .map(|(name, r)| SecretInfo { name, created_at: r.created_at, updated_at: r.updated_at })
            .collect())
    }

    /// Forgets secret `name`.
    pub(crate) fn delete_secret(&self, name: &str) -> Result<(), ApiError> {
        check_name(name)?;
        self.secrets.key()?;
        if !self.store.remove_secret(name)? {
            return Err(ApiError::NotFound(format!("no secret `{name}`: `weir secrets list` shows those set")));
        }
        tracing::info!(secret = name, "secret deleted");
        Ok(())
    }

    /// The values of `names` for the worker about to run a step, or why the step cannot have
    /// them (naming the secret, never a value): the reason its attempt fails.
    pub(crate) fn secret_values(&self, names: &[String]) -> Result<BTreeMap<String, String>, String> {
        if names.is_empty() {
            return Ok(BTreeMap::new());
        }
        let Some(key) = &self.secrets.key else {
            return Err(format!("the step needs secret `{}`, but {DISABLED}", names[0]));
        };
        if !self.secrets.plaintext_ok {
            return Err(format!("the step needs secret `{}`, but {PLAINTEXT}", names[0]));
        }
        let mut out = BTreeMap::new();
        for name in names {
            let record = match self.store.secret(name) {
                Ok(Some(r)) => r,
                Ok(None) => {
                    return Err(format!(
                        "secret `{name}` is not set on the server: set it with `weir secrets set {name}`, then retry \
                         the run"
                    ));
                }
                Err(e) => return Err(format!("secret `{name}` cannot be read: {e}")),
            };
            out.insert(name.clone(), key.open(name, &record).map_err(|e| e.to_string())?);
        }
        Ok(out)
    }

    /// What stands for each of `names` in a step's cache key: its keyed fingerprint, or `not
    /// set` (then the step fails when leased, and nothing is cached).
    pub(crate) fn secret_fingerprints(&self, names: &[String]) -> BTreeMap<String, String> {
        names
            .iter()
            .map(|name| {
                let value = self.secrets.key.as_ref().and_then(|key| {
                    let record = self.store.secret(name).ok().flatten()?;
                    key.open(name, &record).ok().map(|v| key.fingerprint(name, &v))
                });
                (name.clone(), value.unwrap_or_else(|| "not set".to_string()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::secrets::SecretsKey;
    use crate::server::testkit;
    use weir_core::run::{InstanceId, StepState};

    const VALUE: &str = "engine-test-secret-4b1f";
    const YAML: &str = "name: s\nsteps:\n  a:\n    run: 'echo \"$DB_PASSWORD\"'\n    secrets: [DB_PASSWORD]\n";

    fn key() -> SecretsKey {
        SecretsKey::from_bytes(&[5u8; 32], Path::new("key")).unwrap()
    }

    fn start(e: &Engine) -> String {
        testkit::start_run(e, YAML, Millis(1))
    }

    fn worker(e: &Engine) -> String {
        testkit::register(e).0
    }

    fn export(e: &Engine) -> String {
        let mut out = Vec::new();
        e.store.export(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_lease_carries_the_value_and_no_record_does() {
        let dir = tempfile::tempdir().unwrap();
        let mut e = testkit::engine(dir.path());
        e.secrets = ServerSecrets { key: Some(key()), plaintext_ok: true };
        assert!(!e.set_secret("DB_PASSWORD", "first").unwrap());
        assert!(e.set_secret("DB_PASSWORD", VALUE).unwrap());
        let listed = e.list_secrets().unwrap();
        assert_eq!(listed.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["DB_PASSWORD"]);
        assert!(listed[0].created_at <= listed[0].updated_at);
        let run = start(&e);
        let w = worker(&e);
        let a = e.try_lease(&w).unwrap().expect("the step is leased");
        assert_eq!(a.secrets.0.get("DB_PASSWORD").map(String::as_str), Some(VALUE));
        assert!(!format!("{a:?}").contains(VALUE), "an assignment's Debug shows names only");
        assert_eq!(e.lock().runs[&run].machine.state(InstanceId(0)), StepState::Leased);
        assert!(!export(&e).contains(VALUE), "the value is in a stored record");
        // The fingerprint follows the value and is not the value.
        let names = vec!["DB_PASSWORD".to_string()];
        let before = e.secret_fingerprints(&names);
        e.set_secret("DB_PASSWORD", "changed").unwrap();
        assert_ne!(e.secret_fingerprints(&names), before);
        assert!(!before["DB_PASSWORD"].contains(VALUE));
        e.delete_secret("DB_PASSWORD").unwrap();
        assert!(matches!(e.delete_secret("DB_PASSWORD"), Err(ApiError::NotFound(_))));
        assert_eq!(e.secret_fingerprints(&names)["DB_PASSWORD"], "not set");
        assert!(matches!(e.set_secret("WEIR_X", "v"), Err(ApiError::Invalid(_))));
        assert!(matches!(e.set_secret("A", ""), Err(ApiError::Invalid(_))));
    }

    #[test]
    fn a_step_whose_secret_cannot_be_delivered_fails_naming_it() {
        let cases: &[(Option<SecretsKey>, bool, bool, &str)] = &[
            (None, true, false, "--secrets-key"),
            (Some(key()), true, false, "is not set on the server: set it with `weir secrets set DB_PASSWORD`"),
            (Some(key()), false, true, "secrets travel only over TLS"),
        ];
        for (key, plaintext_ok, set_first, want) in cases {
            let dir = tempfile::tempdir().unwrap();
            let mut e = testkit::engine(dir.path());
            e.secrets = ServerSecrets { key: key.clone(), plaintext_ok: true };
            if *set_first {
                e.set_secret("DB_PASSWORD", VALUE).unwrap();
            }
            e.secrets.plaintext_ok = *plaintext_ok;
            let run = start(&e);
            let w = worker(&e);
            assert!(e.try_lease(&w).unwrap().is_none(), "{want}");
            assert_eq!(e.store.step(&run, InstanceId(0)).unwrap().unwrap().state, StepState::Failed, "{want}");
            let stored = export(&e);
            assert!(stored.contains(want) && stored.contains("DB_PASSWORD"), "{want}: {stored}");
            assert!(!stored.contains(VALUE));
            match e.set_secret("OTHER", "v") {
                Err(ApiError::Precondition(m)) => assert!(key.is_none() || !plaintext_ok, "{m}"),
                other => assert!(key.is_some() && *plaintext_ok, "{other:?}"),
            }
        }
    }

    #[test]
    fn plaintext_is_ok_on_loopback_or_when_insecure() {
        use crate::server::ServerConfig;
        for (listen, insecure, ok) in [
            ("127.0.0.1:0", false, true),
            ("[::1]:0", false, true),
            ("0.0.0.0:0", false, false),
            ("0.0.0.0:0", true, true),
        ] {
            let mut c = ServerConfig::new("/nowhere", listen.parse().unwrap());
            c.insecure = insecure;
            assert_eq!(c.secrets_over_plaintext_ok(), ok, "{listen} {insecure}");
        }
    }
}
