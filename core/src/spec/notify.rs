//! What `notify:` means once validated: which run, step and model events ([`NotifyOn`]) go to
//! which receiver ([`NotifyTarget`]: a generic signed webhook or a Slack-compatible incoming
//! webhook), signed with which named secret. The secret itself never appears in a pipeline:
//! the engine holds it (`weir server --notify-secrets`). Also the one check of a receiver's
//! URL ([`check_url`]), which the loader and the engine share. Pure: it sends nothing.

use serde::{Deserialize, Serialize};

/// An event a `notify:` entry can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyOn {
    RunFailed,
    RunSucceeded,
    StepFailed,
    GateRefused,
    ModelPromoted,
    ModelRefused,
    ApprovalRequested,
    SlaMissed,
}

impl NotifyOn {
    pub const ALL: [NotifyOn; 8] = [
        NotifyOn::RunFailed,
        NotifyOn::RunSucceeded,
        NotifyOn::StepFailed,
        NotifyOn::GateRefused,
        NotifyOn::ModelPromoted,
        NotifyOn::ModelRefused,
        NotifyOn::ApprovalRequested,
        NotifyOn::SlaMissed,
    ];

    /// The name written in `on:` and sent as the payload's `event`.
    pub fn name(self) -> &'static str {
        match self {
            NotifyOn::RunFailed => "run_failed",
            NotifyOn::RunSucceeded => "run_succeeded",
            NotifyOn::StepFailed => "step_failed",
            NotifyOn::GateRefused => "gate_refused",
            NotifyOn::ModelPromoted => "model_promoted",
            NotifyOn::ModelRefused => "model_refused",
            NotifyOn::ApprovalRequested => "approval_requested",
            NotifyOn::SlaMissed => "sla_missed",
        }
    }

    pub fn from_name(name: &str) -> Option<NotifyOn> {
        NotifyOn::ALL.into_iter().find(|e| e.name() == name)
    }

    /// Whether a step's own `notify:` may ask for it (the run-wide events are the pipeline's).
    pub fn of_a_step(self) -> bool {
        !matches!(self, NotifyOn::RunFailed | NotifyOn::RunSucceeded | NotifyOn::SlaMissed)
    }
}

impl std::fmt::Display for NotifyOn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a notification goes, and in which shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyTarget {
    /// weir's JSON payload, signed when the entry names a secret.
    Webhook(String),
    /// `{"text": "..."}`, the shape Slack's (and Mattermost's, Rocket.Chat's) incoming webhooks take.
    Slack(String),
}

impl NotifyTarget {
    pub fn url(&self) -> &str {
        match self {
            NotifyTarget::Webhook(u) | NotifyTarget::Slack(u) => u,
        }
    }
}

/// One `notify:` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Notify {
    pub(crate) on: Vec<NotifyOn>,
    pub(crate) target: NotifyTarget,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) secret: Option<String>,
    /// Where `secret` was written: its field path (`notify[0].secret`) and span, so an engine
    /// that holds no such secret can say where (not part of the pipeline's meaning).
    #[serde(skip)]
    pub(crate) secret_site: Option<(String, crate::diag::Span)>,
}

impl Notify {
    /// The events it asks for, without repeats, in the order written.
    pub fn on(&self) -> &[NotifyOn] {
        &self.on
    }
    pub fn target(&self) -> &NotifyTarget {
        &self.target
    }
    /// The name of the engine-held secret that signs its deliveries, when set.
    pub fn secret(&self) -> Option<&str> {
        self.secret.as_deref()
    }
    /// Where the secret's name stands in the file: its field path and span.
    pub fn secret_site(&self) -> Option<(&str, crate::diag::Span)> {
        self.secret_site.as_ref().map(|(p, s)| (p.as_str(), *s))
    }
    pub fn wants(&self, event: NotifyOn) -> bool {
        self.on.contains(&event)
    }
}

/// The parts of a receiver's URL the engine connects with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receiver<'a> {
    pub host: &'a str,
    pub port: u16,
    /// The path and query, `/` at least.
    pub path: &'a str,
}

/// Checks a receiver URL: `http://HOST[:PORT][/PATH]`. `https://` is refused for now: this
/// build carries no TLS client (issue 17 brings one), and a notification sent in clear to a
/// URL that asked for TLS would leak what the receiver expected to be private.
pub fn check_url(url: &str) -> Result<Receiver<'_>, String> {
    if url.len() > 2048 {
        return Err("a URL of at most 2048 characters".to_string());
    }
    if url.starts_with("https://") {
        return Err("https is not supported yet: this weir has no TLS client (issue 17); use an http:// \
                    receiver, such as a relay on the engine's host"
            .to_string());
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Err("an http:// URL".to_string());
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("a URL without spaces or control characters".to_string());
    }
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], &rest[i..]),
        Some(_) => return Err("a `/` between the host and the query".to_string()),
        None => (rest, "/"),
    };
    if authority.contains('@') {
        return Err("a URL without user or password (`user@`): name a secret to sign with instead".to_string());
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
            let port =
                p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| format!("a port from 1 to 65535, not `{p}`"))?;
            (h, port)
        }
        _ => (authority, 80),
    };
    if host.is_empty() {
        return Err("a host after http://".to_string());
    }
    Ok(Receiver { host, port, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str, expect: Result<(&str, u16, &str), &str>) {
        match (check_url(url), expect) {
            (Ok(r), Ok((host, port, path))) => assert_eq!((r.host, r.port, r.path), (host, port, path), "{url}"),
            (Err(e), Err(text)) => assert!(e.contains(text), "{url}: {e}"),
            (got, expect) => panic!("{url}: {got:?} vs {expect:?}"),
        }
    }

    #[test]
    fn receiver_urls_are_plain_http_with_a_host() {
        check("http://127.0.0.1:8080/hook", Ok(("127.0.0.1", 8080, "/hook")));
        check("http://hooks.local", Ok(("hooks.local", 80, "/")));
        check("http://h/services/T0/B0/x?a=1", Ok(("h", 80, "/services/T0/B0/x?a=1")));
        check("http://[::1]:9000/", Ok(("[::1]", 9000, "/")));
        check("https://hooks.slack.com/services/x", Err("https is not supported yet"));
        check("ftp://x", Err("an http:// URL"));
        check("http://", Err("a host"));
        check("http://h:0/", Err("a port"));
        check("http://h:99999/", Err("a port"));
        check("http://u:p@h/", Err("without user"));
        check("http://h/a b", Err("without spaces"));
        check("http://h?x", Err("between the host and the query"));
    }

    #[test]
    fn event_names_round_trip_and_run_wide_ones_are_not_a_steps() {
        for e in NotifyOn::ALL {
            assert_eq!(NotifyOn::from_name(e.name()), Some(e));
            assert_eq!(serde_json::to_value(e).unwrap(), e.name());
        }
        assert!(!NotifyOn::SlaMissed.of_a_step() && NotifyOn::GateRefused.of_a_step());
    }
}
