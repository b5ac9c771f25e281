//! Renders a [`Plan`]'s DAG as Mermaid or Graphviz dot, instances grouped by stage. Pure:
//! returns text.

use std::fmt::Write as _;

use crate::plan::Plan;
use crate::spec::Pipeline;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Mermaid,
    Dot,
}

impl Format {
    /// Every format, by the name a user writes.
    pub const ALL: [(&'static str, Format); 2] = [("mermaid", Format::Mermaid), ("dot", Format::Dot)];
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Format, String> {
        Format::ALL
            .iter()
            .find(|(name, _)| *name == s)
            .map(|(_, f)| *f)
            .ok_or_else(|| format!("unknown graph format `{s}` (expected mermaid or dot)"))
    }
}

/// Stages in order of first appearance, each with its instances; `None` is "no stage".
fn by_stage<'a>(pipeline: &'a Pipeline, plan: &Plan) -> Vec<(Option<&'a str>, Vec<usize>)> {
    let mut groups: Vec<(Option<&str>, Vec<usize>)> = Vec::new();
    for &n in &plan.order {
        let stage = pipeline.steps()[plan.graph[n].step].stage.as_deref();
        match groups.iter_mut().find(|(s, _)| *s == stage) {
            Some((_, members)) => members.push(n.index()),
            None => groups.push((stage, vec![n.index()])),
        }
    }
    groups
}

pub fn render(pipeline: &Pipeline, plan: &Plan, format: Format) -> String {
    match format {
        Format::Mermaid => mermaid(pipeline, plan),
        Format::Dot => dot(pipeline, plan),
    }
}

fn mermaid_label(text: &str) -> String {
    text.replace('"', "#quot;")
}

fn mermaid(pipeline: &Pipeline, plan: &Plan) -> String {
    let mut out = String::from("flowchart LR\n");
    for (i, (stage, members)) in by_stage(pipeline, plan).into_iter().enumerate() {
        let indent = if stage.is_some() { "    " } else { "  " };
        if let Some(stage) = stage {
            let _ = writeln!(out, "  subgraph stage{i}[\"{}\"]", mermaid_label(stage));
        }
        for n in members {
            let _ = writeln!(out, "{indent}n{n}[\"{}\"]", mermaid_label(&plan.graph.raw_nodes()[n].weight.name));
        }
        if stage.is_some() {
            out.push_str("  end\n");
        }
    }
    for e in plan.graph.raw_edges() {
        let _ = writeln!(out, "  n{} --> n{}", e.source().index(), e.target().index());
    }
    out
}

fn dot_quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

fn dot(pipeline: &Pipeline, plan: &Plan) -> String {
    let mut out = format!("digraph {} {{\n  rankdir=LR;\n  node [shape=box];\n", dot_quote(pipeline.name()));
    for (i, (stage, members)) in by_stage(pipeline, plan).into_iter().enumerate() {
        let indent = if stage.is_some() { "    " } else { "  " };
        if let Some(stage) = stage {
            let _ = writeln!(out, "  subgraph cluster_{i} {{\n    label={};", dot_quote(stage));
        }
        for n in members {
            let _ = writeln!(out, "{indent}n{n} [label={}];", dot_quote(&plan.graph.raw_nodes()[n].weight.name));
        }
        if stage.is_some() {
            out.push_str("  }\n");
        }
    }
    for e in plan.graph.raw_edges() {
        let _ = writeln!(out, "  n{} -> n{};", e.source().index(), e.target().index());
    }
    out.push_str("}\n");
    out
}
