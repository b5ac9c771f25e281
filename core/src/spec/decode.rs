//! Typed reads from the spanned YAML tree that record a diagnostic instead of failing, so one
//! pass over a file finds every problem. Each read names the field by its path
//! (`steps.train.timeout`), says what was expected and what was found.

use crate::diag::{Diagnostic, Span, did_you_mean};
use crate::spec::yaml::{Doc, Kind, NodeId, Scalar};

pub(crate) struct Cx<'a> {
    pub doc: &'a Doc,
    pub source: &'a str,
    pub diags: Vec<Diagnostic>,
}

/// The entries of a mapping after the unknown-key check, in file order.
pub(crate) struct Fields<'a> {
    pub entries: Vec<(&'a str, NodeId, NodeId)>,
    pub span: Span,
}

impl<'a> Fields<'a> {
    pub fn get(&self, name: &str) -> Option<NodeId> {
        self.entries.iter().find(|(k, _, _)| *k == name).map(|(_, _, v)| *v)
    }

    pub fn key_span(&self, cx: &Cx<'_>, name: &str) -> Option<Span> {
        self.entries.iter().find(|(k, _, _)| *k == name).map(|(_, k, _)| cx.span(*k))
    }
}

impl<'a> Cx<'a> {
    pub fn span(&self, id: NodeId) -> Span {
        self.doc.node(id).span
    }

    pub fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    /// "`path` must be X" at the node, labelled with what was found.
    pub fn expected(&mut self, id: NodeId, path: &str, expected: &str) {
        let found = self.doc.describe(id);
        let mut d = Diagnostic::error(format!("{} must be {expected}", quote_path(path)))
            .at(self.span(id), format!("found {found}"));
        if let Some(text) = self.doc.text(id) {
            let yaml11 = ["yes", "no", "on", "off", "y", "n", "Yes", "No", "On", "Off", "YES", "NO", "ON", "OFF"];
            if expected.contains("`true`") && yaml11.contains(&text) {
                let word = if ["yes", "on", "y", "Yes", "On", "YES", "ON"].contains(&text) { "true" } else { "false" };
                d = d.help(format!("YAML 1.2 reads `{text}` as a string: write `{word}`"));
            }
        }
        self.diags.push(d);
    }

    pub fn map(&mut self, id: NodeId, path: &str) -> Option<&'a [(NodeId, NodeId)]> {
        let doc: &'a Doc = self.doc;
        match &doc.node(id).kind {
            Kind::Map(entries) => Some(entries),
            _ => {
                self.expected(id, path, "a mapping");
                None
            }
        }
    }

    /// A mapping whose keys must come from `allowed`; unknown keys are reported with a
    /// "did you mean". `what` names the kind of object ("step", "param").
    pub fn fields(&mut self, id: NodeId, path: &str, what: &str, allowed: &[&str]) -> Option<Fields<'a>> {
        let entries = self.map(id, path)?;
        let mut out = Fields { entries: Vec::with_capacity(entries.len()), span: self.span(id) };
        for &(k, v) in entries {
            let doc: &'a Doc = self.doc;
            let key = doc.text(k).unwrap_or("");
            if allowed.contains(&key) {
                out.entries.push((key, k, v));
                continue;
            }
            // Steps and `defaults:` (both allow `runtime`): container options that would hand a
            // step the host get their own refusal, not "unknown field".
            if allowed.contains(&"runtime")
                && let Some(d) = refused_option(key, path, self.span(k))
            {
                self.push(d);
                continue;
            }
            let mut d = Diagnostic::error(format!("unknown field `{key}` in {}", quote_path(path)))
                .at(self.span(k), format!("not a {what} field"));
            d = match (key, did_you_mean(key, allowed.iter().copied())) {
                ("on", _) if allowed.contains(&"runs_on") => {
                    d.help("use `runs_on:` for worker labels (YAML 1.1 readers take `on` for a boolean)")
                }
                ("<<", _) => {
                    d.note("merge keys (`<<`) are YAML 1.1, not YAML 1.2; use `defaults:` for values shared by steps")
                }
                (_, Some(help)) => d.help(help),
                (_, None) => d.note(format!("expected one of: {}", allowed.join(", "))),
            };
            self.push(d);
        }
        Some(out)
    }

    /// The mapping key at `k` when it is an identifier (`[A-Za-z_][A-Za-z0-9_]*`); otherwise
    /// reports "invalid {what} `key`" and gives `None`.
    pub fn ident_key(&mut self, k: NodeId, what: &str) -> Option<String> {
        let key = self.doc.text(k).unwrap_or("");
        if is_ident(key) {
            return Some(key.to_string());
        }
        self.push(
            Diagnostic::error(format!("invalid {what} `{key}`"))
                .at(self.span(k), "expected letters, digits and `_`, not starting with a digit"),
        );
        None
    }

    /// A required field; reports it missing at `at` (the key of the mapping that lacks it).
    pub fn require(&mut self, fields: &Fields<'_>, name: &str, path: &str, expected: &str, at: Span) -> Option<NodeId> {
        let found = fields.get(name);
        if found.is_none() {
            self.push(
                Diagnostic::error(format!("missing field `{name}` in {}", quote_path(path)))
                    .at(at, format!("`{name}` is required here"))
                    .help(format!("add `{name}:` with {expected}")),
            );
        }
        found
    }

    pub fn string(&mut self, id: NodeId, path: &str) -> Option<&'a str> {
        let doc: &'a Doc = self.doc;
        match doc.scalar(id) {
            Some(Scalar::Str(s)) => Some(s),
            _ => {
                self.expected(id, path, "a string");
                None
            }
        }
    }

    /// A scalar taken as text whatever its type (`3` -> "3"); null and collections are errors.
    pub fn text(&mut self, id: NodeId, path: &str) -> Option<&'a str> {
        let doc: &'a Doc = self.doc;
        match doc.scalar(id) {
            Some(Scalar::Null) | None => {
                self.expected(id, path, "a string");
                None
            }
            Some(_) => doc.text(id),
        }
    }

    pub fn bool(&mut self, id: NodeId, path: &str) -> Option<bool> {
        match self.doc.scalar(id) {
            Some(Scalar::Bool(b)) => Some(b),
            _ => {
                self.expected(id, path, "`true` or `false`");
                None
            }
        }
    }

    pub fn int(&mut self, id: NodeId, path: &str) -> Option<i64> {
        match self.doc.scalar(id) {
            Some(Scalar::Int(i)) => Some(i),
            _ => {
                self.expected(id, path, "an integer");
                None
            }
        }
    }

    /// An integer in `min..=max`.
    pub fn int_in(&mut self, id: NodeId, path: &str, min: i64, max: i64) -> Option<i64> {
        let v = self.int(id, path)?;
        if v < min || v > max {
            self.push(
                Diagnostic::error(format!("`{path}` must be between {min} and {max}"))
                    .at(self.span(id), format!("found {v}")),
            );
            return None;
        }
        Some(v)
    }

    pub fn number(&mut self, id: NodeId, path: &str) -> Option<f64> {
        match self.doc.scalar(id) {
            Some(Scalar::Int(i)) => Some(i as f64),
            Some(Scalar::Float(f)) if f.is_finite() => Some(f),
            _ => {
                self.expected(id, path, "a finite number");
                None
            }
        }
    }

    pub fn seq(&mut self, id: NodeId, path: &str) -> Option<&'a [NodeId]> {
        let doc: &'a Doc = self.doc;
        match &doc.node(id).kind {
            Kind::Seq(items) => Some(items),
            _ => {
                self.expected(id, path, "a list");
                None
            }
        }
    }

    /// A value parsed by `parse` from its text, reported with `help` when it fails.
    pub fn parsed<T>(
        &mut self,
        id: NodeId,
        path: &str,
        what: &str,
        help: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Option<T> {
        let text = self.text(id, path)?;
        match parse(text) {
            Ok(v) => Some(v),
            Err(e) => {
                self.push(
                    Diagnostic::error(format!("`{path}` must be {what}")).at(self.span(id), e).help(help.to_string()),
                );
                None
            }
        }
    }

    /// Span of `len` characters at `offset` inside the scalar at `id`.
    pub fn sub_span(&self, id: NodeId, offset: usize, len: usize, needle: &str) -> Span {
        self.doc.sub_span(self.source, id, offset, len, needle)
    }
}

/// `steps.a.timeout` in backticks; prose such as "the pipeline" as is.
pub(crate) fn quote_path(path: &str) -> String {
    if path.contains(' ') { path.to_string() } else { format!("`{path}`") }
}

/// Names of steps and pipelines: `[a-z0-9_-]`, 1 to 63 characters.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a name cannot be empty".into());
    }
    if name.len() > 63 {
        return Err(format!("`{name}` is longer than 63 characters"));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == '-'))
    {
        return Err(format!("`{bad}` is not allowed: use lowercase letters, digits, `_` and `-`"));
    }
    Ok(())
}

/// Identifiers of params and matrix keys: `[A-Za-z_][A-Za-z0-9_]*`.
pub(crate) fn is_ident(name: &str) -> bool {
    is_ident_text(name)
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
pub(crate) fn is_ident_text(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A suggested lowercase name for a step name that breaks the rules.
pub(crate) fn suggest_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' { c } else { '-' }
        })
        .collect();
    out.truncate(63);
    out
}

/// The refusal of a container option weir never grants a step, or `None` for any other key.
/// Each of these would let a step reach past its container into the host (or, through the
/// Docker socket, start containers of its own), so a pipeline asking for one is invalid rather
/// than quietly run without it.
fn refused_option(key: &str, path: &str, at: crate::diag::Span) -> Option<Diagnostic> {
    let (never, why, help) = match key {
        "privileged" => (
            "runs a step privileged",
            "a privileged container can do anything root on the host can",
            "drop the field; a step that needs a device asks for it in `resources` (`gpus: 1`)",
        ),
        "network" | "network_mode" | "net" => (
            "puts a step on the host's network",
            "the host network exposes every service bound to the worker's loopback",
            "drop the field; steps reach other services by address from their own network",
        ),
        "pid" | "ipc" | "uts" | "userns_mode" | "cgroup_parent" => (
            "shares the host's namespaces with a step",
            "a step sharing them can see or signal the worker and other steps",
            "drop the field",
        ),
        "volumes" | "mounts" | "binds" | "volume" | "mount" | "tmpfs" => (
            "mounts host paths into a step",
            "a host path (the Docker socket, `/`) hands the step the host",
            "pass files between steps with `outputs:` and `needs:` (they arrive under $WEIR_INPUTS)",
        ),
        "cap_add" | "cap_drop" | "caps" => (
            "adds capabilities to a step beyond its safe set",
            "capabilities such as SYS_ADMIN or NET_ADMIN reach past the container",
            "list what the step's container keeps in `capabilities:` (see docs/pipeline-format.md for the allowed names)",
        ),
        "devices" | "device" => (
            "passes host devices to a step",
            "raw devices bypass the worker's accounting and isolation",
            "ask for GPUs with `resources: {gpus: N}`; the worker assigns them",
        ),
        "security_opt" | "security_opts" | "seccomp" | "apparmor" => (
            "loosens a step's security options",
            "seccomp and AppArmor profiles are part of what keeps a step in its container",
            "drop the field",
        ),
        _ => return None,
    };
    Some(
        Diagnostic::error(format!("{} is refused: weir never {never}", quote_path(&format!("{path}.{key}"))))
            .at(at, why)
            .help(help),
    )
}
