//! Notifications, the parts that do not touch the store: what a delivery's body says
//! ([`Payload`], the Slack one-liner), how it is signed ([`sign`]: HMAC-SHA256 over
//! `timestamp + "." + body`, as Stripe signs), the server-held secrets ([`Secrets`], read from
//! `weir server --notify-secrets`, never logged or shown), the delivery terms ([`NotifyConfig`]:
//! attempts and backoff) and the HTTP POST itself (`http`). Which events make which deliveries,
//! and the durable outbox loop, are the server's (`server/notify.rs`, `server/outbox.rs`).

mod http;
mod secrets;

use std::time::Duration;

use serde::Serialize;

pub use http::{Sent, post};
pub use secrets::{Secrets, SecretsError};
use weir_core::spec::NotifyOn;

/// The header names every webhook delivery carries.
pub const DELIVERY_HEADER: &str = "x-weir-delivery";
pub const EVENT_HEADER: &str = "x-weir-event";
pub const TIMESTAMP_HEADER: &str = "x-weir-timestamp";
pub const SIGNATURE_HEADER: &str = "x-weir-signature";

/// How the engine delivers notifications.
#[derive(Clone, Debug)]
pub struct NotifyConfig {
    pub secrets: Secrets,
    /// The wait after the first failed attempt; doubled after each further one.
    pub backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
    /// Attempts before a delivery becomes a dead letter.
    pub attempts: u32,
    /// How long one attempt may take (connect, send, answer).
    pub timeout: Duration,
    /// The server's URL as people reach it (`weir server --public-url`): payloads link to the
    /// page they are about. `None`: no `url` field.
    pub public_url: Option<String>,
    /// Dead letters kept: beyond this many, the oldest are forgotten.
    pub keep_dead: usize,
}

impl Default for NotifyConfig {
    /// 1 s, 2 s, 4 s … capped at 5 minutes, 10 attempts (the last about 8.5 minutes after the first), 10 s each.
    fn default() -> NotifyConfig {
        NotifyConfig {
            secrets: Secrets::default(),
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            attempts: 10,
            timeout: Duration::from_secs(10),
            public_url: None,
            keep_dead: 1000,
        }
    }
}

impl NotifyConfig {
    /// The wait after failed attempt number `attempts` (1 for the first).
    pub fn backoff_after(&self, attempts: u32) -> Duration {
        let doubled = self.backoff.saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
        doubled.min(self.max_backoff)
    }
}

/// The JSON body of a webhook delivery (docs/notifications.md documents every field).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Payload {
    /// The delivery id, the same on every attempt.
    pub id: String,
    pub event: NotifyOn,
    /// When the event happened, RFC 3339 UTC.
    pub time: String,
    pub pipeline: String,
    pub run_id: String,
    /// The page it is about on the server's web UI, when the server knows its public URL
    /// (`weir server --public-url`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The run's state, or the step's for a step event.
    pub state: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelRef>,
}

/// The model version a `model_promoted` or `model_refused` is about.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelRef {
    pub name: String,
    pub version: u64,
    pub alias: String,
}

impl Payload {
    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The Slack-compatible body: `{"text": "..."}` with one readable line.
    pub fn slack(&self) -> String {
        let what = match self.event {
            NotifyOn::RunFailed => "run failed",
            NotifyOn::RunSucceeded => "run succeeded",
            NotifyOn::StepFailed => "step failed",
            NotifyOn::GateRefused => "gate refused",
            NotifyOn::ModelPromoted => "model promoted",
            NotifyOn::ModelRefused => "model promotion refused",
            NotifyOn::ApprovalRequested if self.model.is_some() => "alias move awaits approval",
            NotifyOn::ApprovalRequested => "approval requested",
            NotifyOn::SlaMissed => "SLA missed",
        };
        let mut text = format!("weir: {what}: {} run {}", self.pipeline, self.run_id);
        if let Some(step) = &self.step {
            text.push_str(&format!(" step {step}"));
        }
        if let Some(m) = &self.model {
            text.push_str(&format!(" (model {} v{} {})", m.name, m.version, m.alias));
        }
        if !self.message.is_empty() {
            let line = self.message.lines().next().unwrap_or_default();
            let short: String = line.chars().take(300).collect();
            text.push_str(&format!(": {short}"));
        }
        if let Some(url) = &self.url {
            text.push_str(&format!(" <{url}>"));
        }
        serde_json::json!({ "text": text }).to_string()
    }
}

/// `sha256=HEX` of HMAC-SHA256 with `secret` over `timestamp.body`: the `X-Weir-Signature`
/// (the one scheme of `crate::signing`, which also checks the webhooks weir receives).
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    crate::signing::sign(secret, i64::try_from(timestamp).unwrap_or(i64::MAX), body)
}

#[cfg(test)]
mod tests {
    use hmac::{KeyInit, Mac};

    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_dot_body() {
        let got = sign(b"Jefe", 1_700_000_000, b"{\"a\":1}");
        // What docs/notifications.md's Python check computes for the same input.
        assert_eq!(got, "sha256=fa5f6481efc59da48b19c9dc10196c9953e5651f8304b3a318b6b87d70272e0a");
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"1700000000.{\"a\":1}");
        let want: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(got, format!("sha256={want}"));
        // The RFC 4231 vector pins the primitive itself.
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let rfc: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(rfc, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        assert_ne!(sign(b"Jefe", 1_700_000_001, b"{\"a\":1}"), got, "the timestamp is signed");
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let c =
            NotifyConfig { backoff: Duration::from_secs(1), max_backoff: Duration::from_secs(5), ..Default::default() };
        let waits: Vec<u64> = (1..=5).map(|n| c.backoff_after(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 5, 5]);
        assert_eq!(c.backoff_after(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn the_slack_line_names_pipeline_run_step_and_the_first_line_of_the_message() {
        let p = Payload {
            id: "d-1".into(),
            event: NotifyOn::StepFailed,
            time: "2026-01-01T00:00:00Z".into(),
            pipeline: "train".into(),
            run_id: "train-1".into(),
            step: Some("fit".into()),
            state: "failed".into(),
            message: "exit status 3\nmore".into(),
            model: None,
            url: None,
        };
        let v: serde_json::Value = serde_json::from_str(&p.slack()).unwrap();
        assert_eq!(v["text"], "weir: step failed: train run train-1 step fit: exit status 3");
        let j: serde_json::Value = serde_json::from_str(&p.json()).unwrap();
        assert_eq!((j["event"].as_str(), j["step"].as_str(), j.get("model")), (Some("step_failed"), Some("fit"), None));
    }
}
