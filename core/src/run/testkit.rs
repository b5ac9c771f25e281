//! Test support for the run machine (compiled only for tests): a [`Driver`] that builds a run
//! from pipeline YAML and feeds it one-line events (`leased train.1 w1`, `tick 2000`), rendering
//! effects as short lines (`ready b.1`, `b -> skipped: upstream failed: a`) so tests read as
//! event sequences with their expected effects. Attempts are written `NAME.NUMBER`.

use std::collections::BTreeMap;

use crate::plan::{plan, resolve_params};
use crate::spec::{Limits, load};

use super::{AttemptId, Effect, Event, Millis, RunMachine};

pub(super) struct Driver {
    pub machine: RunMachine,
    pub now: Millis,
}

impl Driver {
    pub fn new(yaml: &str) -> Driver {
        Driver::with_params(yaml, &[])
    }

    pub fn with_params(yaml: &str, overrides: &[(&str, &str)]) -> Driver {
        let pipeline = load(yaml, &Limits::default()).unwrap_or_else(|d| panic!("{d:#?}"));
        let overrides: Vec<(String, String)> = overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let params = resolve_params(&pipeline, &overrides).unwrap_or_else(|d| panic!("{d:#?}"));
        let plan = plan(&pipeline, &params, "run-1");
        Driver { machine: RunMachine::new(&pipeline, &plan), now: Millis(0) }
    }

    /// Applies one scripted event (optionally prefixed `@MILLIS `) and renders what came out.
    pub fn send(&mut self, line: &str) -> Vec<String> {
        let mut line = line.trim();
        if let Some(rest) = line.strip_prefix('@') {
            let (at, rest) = rest.split_once(' ').unwrap_or((rest, ""));
            self.now = Millis(at.parse().expect("@MILLIS"));
            line = rest;
        }
        let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
        let (target, arg) = rest.split_once(' ').unwrap_or((rest, ""));
        if verb == "ok" {
            let mut out = Vec::new();
            for step in [format!("leased {target} w"), format!("started {target}"), format!("succeeded {rest}")] {
                let effects = self.send(&step);
                let refused = effects.iter().any(|e| e.starts_with("rejected"));
                out.extend(effects);
                if refused {
                    break;
                }
            }
            return out;
        }
        let event = match verb {
            "start" => Event::Start,
            "cancel" => Event::Cancel,
            "tick" => {
                self.now = Millis(target.parse().expect("tick MILLIS"));
                Event::Tick
            }
            "leased" => Event::Leased { attempt: self.attempt(target), worker: arg.to_string() },
            "started" => Event::Started { attempt: self.attempt(target) },
            "succeeded" => Event::Succeeded { attempt: self.attempt(target), metrics: metrics(arg) },
            "failed" => Event::Failed { attempt: self.attempt(target), reason: arg.to_string(), permanent: false },
            "failed!" => Event::Failed { attempt: self.attempt(target), reason: arg.to_string(), permanent: true },
            "lost" => Event::Lost { attempt: self.attempt(target) },
            "released" => Event::Released { attempt: self.attempt(target) },
            // `cached a.1 r0 rmse=0.2`: supplied by run r0 with those metrics.
            "cached" => {
                let (from, metrics_text) = arg.split_once(' ').unwrap_or((arg, ""));
                Event::Cached { attempt: self.attempt(target), metrics: metrics(metrics_text), from: from.to_string() }
            }
            // `approve deploy alice looks good` / `reject deploy bob too risky`
            "approve" | "reject" => {
                let instance = self.machine.find(target).unwrap_or_else(|| panic!("no instance `{target}`"));
                let (by, comment) = arg.split_once(' ').unwrap_or((arg, ""));
                let (by, comment) = (by.to_string(), comment.to_string());
                if verb == "approve" {
                    Event::Approved { instance, by, comment }
                } else {
                    Event::ApprovalRejected { instance, by, comment }
                }
            }
            other => panic!("unknown scripted event `{other}`"),
        };
        match self.machine.apply(event, self.now) {
            Ok(effects) => effects.iter().map(|e| self.render(e)).collect(),
            Err(rejected) => vec![format!("rejected: {rejected}")],
        }
    }

    /// Sends `line` and asserts the rendered effects.
    #[track_caller]
    pub fn check(&mut self, line: &str, expected: &[&str]) {
        assert_eq!(self.send(line), expected, "after `{line}`");
    }

    /// `name=state/attempts` for every instance, in plan order.
    pub fn states(&self) -> String {
        let m = &self.machine;
        let all: Vec<String> =
            m.instances().map(|i| format!("{}={}/{}", m.name(i), m.state(i), m.attempts(i))).collect();
        all.join(" ")
    }

    /// `state/attempts` of one instance.
    pub fn state(&self, name: &str) -> String {
        let i = self.machine.find(name).unwrap_or_else(|| panic!("no instance `{name}`"));
        format!("{}/{}", self.machine.state(i), self.machine.attempts(i))
    }

    fn attempt(&self, text: &str) -> AttemptId {
        let (name, number) = text.rsplit_once('.').expect("NAME.NUMBER");
        let instance = self.machine.find(name).unwrap_or_else(|| panic!("no instance `{name}`"));
        AttemptId { instance, number: number.parse().expect("attempt number") }
    }

    fn render(&self, effect: &Effect) -> String {
        let attempt = |a: &AttemptId| format!("{}.{}", self.machine.name(a.instance), a.number);
        match effect {
            Effect::Ready { attempt: a } => format!("ready {}", attempt(a)),
            Effect::Stop { attempt: a, reason } => format!("stop {}: {reason}", attempt(a)),
            Effect::WakeAt { at } => format!("wake {}", at.0),
            Effect::StepChanged { instance, state, message: None } => {
                format!("{} -> {state}", self.machine.name(*instance))
            }
            Effect::StepChanged { instance, state, message: Some(m) } => {
                format!("{} -> {state}: {m}", self.machine.name(*instance))
            }
            Effect::RunFinished { state } => format!("run {state}"),
            Effect::ApprovalRequested { instance, message } => {
                format!("approval requested for {}: {message}", self.machine.name(*instance))
            }
        }
    }
}

/// `rmse=0.5 acc=0.9` as metrics.
fn metrics(text: &str) -> BTreeMap<String, f64> {
    text.split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("NAME=NUMBER");
            (k.to_string(), v.parse().expect("a number"))
        })
        .collect()
}
