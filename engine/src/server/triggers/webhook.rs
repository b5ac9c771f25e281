//! The `webhook` trigger's service: a delivery (the body and the headers that matter) is
//! checked against the pipeline's secret (`crate::signing`: HMAC-SHA256 over the timestamp
//! and body, a timestamp at most five minutes away), its payload mapped onto the pipeline's
//! typed params (`weir_core::trigger::webhook_params`, then the declarations), and it starts
//! one run per idempotency key. The secrets come from a file given at start (`weir server
//! --webhook-secrets`), never from the pipeline file (which the store keeps and shows), and
//! never reach a log or an answer.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::signing::{self, Refused};
use crate::store::Trigger;

use super::super::core::Engine;
use super::super::error::ApiError;

/// The shortest secret accepted.
pub const MIN_SECRET_LEN: usize = 16;
/// The longest idempotency key accepted.
pub const MAX_KEY_LEN: usize = 200;

/// Webhook secrets by pipeline name. Its `Debug` shows the names only.
#[derive(Clone, Default)]
pub struct Secrets(BTreeMap<String, Vec<u8>>);

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Why a secrets file is refused: the line and what was expected, never the secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("line {line}: expected `PIPELINE = SECRET`")]
    Syntax { line: usize },
    #[error("line {line}: `{name}` is not a pipeline name: {why}")]
    Name { line: usize, name: String, why: String },
    #[error(
        "line {line}: the secret for `{name}` is shorter than {MIN_SECRET_LEN} characters: generate one with `openssl rand -hex 32`"
    )]
    Weak { line: usize, name: String },
    #[error("line {line}: `{name}` has a secret already (line {first})")]
    Duplicate { line: usize, name: String, first: usize },
}

impl Secrets {
    /// Reads `PIPELINE = SECRET` lines; `#` starts a comment line, blank lines are skipped.
    pub fn parse(text: &str) -> Result<Secrets, SecretsError> {
        let mut out = BTreeMap::new();
        let mut lines: BTreeMap<String, usize> = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let l = raw.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let Some((name, secret)) = l.split_once('=') else { return Err(SecretsError::Syntax { line }) };
            let (name, secret) = (name.trim(), secret.trim());
            if let Err(why) = weir_core::spec::check_name(name) {
                return Err(SecretsError::Name { line, name: name.into(), why });
            }
            if secret.len() < MIN_SECRET_LEN {
                return Err(SecretsError::Weak { line, name: name.into() });
            }
            if let Some(first) = lines.insert(name.to_string(), line) {
                return Err(SecretsError::Duplicate { line, name: name.into(), first });
            }
            out.insert(name.to_string(), secret.as_bytes().to_vec());
        }
        Ok(Secrets(out))
    }

    /// How many pipelines have a secret.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no pipeline has one.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One webhook delivery as the adapter received it.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub pipeline: String,
    /// `X-Weir-Signature`.
    pub signature: Option<String>,
    /// `X-Weir-Timestamp`.
    pub timestamp: Option<String>,
    /// `Idempotency-Key`.
    pub key: Option<String>,
    pub body: Vec<u8>,
}

/// Why a delivery starts nothing.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WebhookError {
    /// Not signed as the pipeline's secret signs (or too old): 401.
    #[error("{0}")]
    Refused(#[from] Refused),
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl Engine {
    /// Checks `d` and starts its run, once per idempotency key: the run id and whether this
    /// delivery created it (a retried delivery gets the first one's run).
    pub(crate) fn deliver_webhook(self: &Arc<Self>, d: &Delivery) -> Result<(String, bool), WebhookError> {
        let no_hook = || ApiError::NotFound(format!("no webhook for pipeline {}", d.pipeline));
        // The same answer whether the pipeline exists or not, to anyone without its secret.
        let secret = self.triggers.secrets.0.get(&d.pipeline).ok_or_else(no_hook)?;
        let now = self.clock.calendar().timestamp();
        signing::verify(secret, d.signature.as_deref(), d.timestamp.as_deref(), &d.body, now)?;
        self.accept_delivery(&d.pipeline, d.key.as_deref().unwrap_or_default(), &d.body).map_err(WebhookError::Api)
    }

    /// Starts the run of an authenticated delivery to `pipeline`'s webhook trigger (a signed
    /// POST, or the FireWebhook call with the client token), once per idempotency `key`.
    pub(crate) fn accept_delivery(
        self: &Arc<Self>,
        pipeline: &str,
        key: &str,
        body: &[u8],
    ) -> Result<(String, bool), ApiError> {
        let key = key.trim();
        if key.is_empty() || key.len() > MAX_KEY_LEN || key.chars().any(char::is_control) {
            return Err(ApiError::Invalid(format!(
                "Idempotency-Key: give each delivery a key of 1 to {MAX_KEY_LEN} printable characters (a retry sends the same one)"
            )));
        }
        let no_hook = || ApiError::NotFound(format!("no webhook for pipeline {pipeline}"));
        let version = self.store.pipeline(pipeline)?.ok_or_else(no_hook)?.latest;
        let (parsed, _) = self.pipeline(&mut self.lock(), &version)?;
        let Some((trigger, hook)) = parsed.webhook() else {
            return Err(ApiError::NotFound(format!(
                "pipeline {pipeline} has no `webhook` trigger in its latest version: add `on: {{webhook: {{}}}}`"
            )));
        };
        let payload: serde_json::Value = if body.iter().all(u8::is_ascii_whitespace) {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(body).map_err(|e| ApiError::Invalid(format!("the payload is not JSON: {e}")))?
        };
        let overrides = weir_core::trigger::webhook_params(hook, &payload)
            .map_err(|diags| self.params_error(&version, pipeline, diags))?;
        let trigger = Trigger::Webhook { trigger: trigger.name.clone(), key: key.to_string() };
        self.start_triggered(pipeline, &version, trigger, &overrides)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_files_read_and_refuse_with_the_line_never_the_secret() {
        let s = Secrets::parse("# hooks\n\nretrain = 0123456789abcdef0123\n  etl=abcdefabcdefabcdef \n").unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(format!("{s:?}"), r#"{"etl", "retrain"}"#);
        let cases = [
            ("retrain 0123456789abcdef", "line 1: expected `PIPELINE = SECRET`"),
            ("bad name = 0123456789abcdef0123", "line 1: `bad name` is not a pipeline name"),
            ("\nretrain = short1", "line 2: the secret for `retrain` is shorter"),
            ("a = 0123456789abcdef\na = 0123456789abcdeg", "line 2: `a` has a secret already (line 1)"),
        ];
        for (text, want) in cases {
            let e = Secrets::parse(text).unwrap_err().to_string();
            assert!(e.starts_with(want), "{text}: {e}");
            assert!(!e.contains("0123456789abcde") && !e.contains("short1"), "{e}");
        }
    }
}
