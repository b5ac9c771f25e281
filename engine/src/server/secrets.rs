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
