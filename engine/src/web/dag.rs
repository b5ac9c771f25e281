//! A DAG as SVG: nodes placed by `weir_core::layout` (columns by stage, left to right), each
//! a box with its name and, for a run, its state by colour, icon and text; edges for `needs`
//! as curves with arrowheads. The text in it is escaped; the markup is built here and nowhere
//! else. `data-node` on each node lets the page's script change its state live.

use std::fmt::Write as _;

use maud::{Markup, PreEscaped};
use weir_core::layout::{self, Node};

use super::page::{escape, icon};

/// One box of the graph.
#[derive(Clone, Debug, Default)]
#[allow(dead_code)]
pub(crate) struct DagNode {
    /// What the script finds the node by (an instance or a step name).
    pub key: String,
    pub label: String,
    pub stage: Option<String>,
    /// A state name (`succeeded`, …) for a run's graph; `None` for a pipeline's.
    pub state: Option<String>,
    /// A second line: counts for a group, the attempt, a duration.
    pub detail: String,
    pub href: Option<String>,
}

const NODE_W: usize = 190;
const NODE_H: usize = 46;
const COL_W: usize = 250;
const ROW_H: usize = 62;
const TOP: usize = 34;
const LEFT: usize = 16;
/// Labels longer than this are cut (the full name is the node's tooltip).
const LABEL_MAX: usize = 24;

/// The graph of `nodes` with `edges` (`from` → `to`, indices into `nodes`).
#[allow(dead_code)] // drawn by the run and pipeline pages
pub(crate) fn svg(nodes: &[DagNode], edges: &[(usize, usize)]) -> Markup {
    let placed: Vec<Node> = nodes.iter().map(|n| Node { stage: n.stage.clone() }).collect();
    let l = layout::layout(&placed, edges);
    let width = LEFT * 2 + l.columns.max(1) * COL_W - (COL_W - NODE_W);
    let height = TOP + l.rows.max(1) * ROW_H + 10;
    let xy = |i: usize| (LEFT + l.at[i].0 * COL_W, TOP + l.at[i].1 * ROW_H);
    let mut s = String::with_capacity(256 + nodes.len() * 400);
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="the pipeline's steps and their dependencies">"#
    );
    s.push_str(
        r##"<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#9aa5b1"/></marker></defs>"##,
    );
    for (stage, from, _) in &l.stages {
        if let Some(name) = stage {
            let _ =
                write!(s, r#"<text class="stage-label" x="{}" y="18">{}</text>"#, LEFT + from * COL_W, escape(name));
        }
    }
    for &(a, b) in edges {
        if a >= nodes.len() || b >= nodes.len() || a == b {
            continue;
        }
        let ((ax, ay), (bx, by)) = (xy(a), xy(b));
        let (x1, y1, x2, y2) = (ax + NODE_W, ay + NODE_H / 2, bx, by + NODE_H / 2);
        let mid = (x1 + x2) / 2;
        let _ = write!(s, r#"<path class="edge" d="M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}"/>"#);
    }
    for (i, n) in nodes.iter().enumerate() {
        let (x, y) = xy(i);
        let state = n.state.as_deref();
        let class = state.map(|st| format!("node st-{st}")).unwrap_or_else(|| "node".to_string());
        let _ = write!(s, r#"<g class="{class}" data-node="{}""#, escape(&n.key));
        if let Some(st) = state {
            let _ = write!(s, r#" data-state="{st}""#);
        }
        s.push('>');
        if let Some(href) = &n.href {
            let _ = write!(s, r#"<a href="{}">"#, escape(href));
        }
        let _ = write!(s, "<title>{}</title>", escape(&n.label));
        let _ = write!(s, r#"<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="6"/>"#);
        let label = cut(&n.label);
        let _ = write!(s, r#"<text x="{}" y="{}">{}</text>"#, x + 10, y + 18, escape(&label));
        let second = match state {
            Some(st) => format!(
                "{} {st}{}",
                icon(st),
                if n.detail.is_empty() { String::new() } else { format!(" · {}", n.detail) }
            ),
            None => n.detail.clone(),
        };
        let _ = write!(s, r#"<text class="state" x="{}" y="{}">{}</text>"#, x + 10, y + 36, escape(&second));
        if n.href.is_some() {
            s.push_str("</a>");
        }
        s.push_str("</g>");
    }
    s.push_str("</svg>");
    PreEscaped(s)
}

fn cut(label: &str) -> String {
    if label.chars().count() <= LABEL_MAX {
        return label.to_string();
    }
    let mut out: String = label.chars().take(LABEL_MAX - 1).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_carry_state_by_text_and_names_are_escaped() {
        let nodes = vec![
            DagNode { key: "a".into(), label: "ingest".into(), state: Some("succeeded".into()), ..Default::default() },
            DagNode {
                key: "b<x>".into(),
                label: "train[lr=<0.1>]".into(),
                state: Some("running".into()),
                href: Some("/runs/r/steps/b".into()),
                ..Default::default()
            },
        ];
        let svg = svg(&nodes, &[(0, 1)]).into_string();
        assert!(svg.contains("✓ succeeded") && svg.contains("▶ running"), "{svg}");
        assert!(svg.contains("train[lr=&lt;0.1&gt;]") && !svg.contains("<0.1>"), "{svg}");
        assert!(svg.contains(r#"data-node="b&lt;x&gt;""#));
        assert_eq!(svg.matches("class=\"edge\"").count(), 1);
    }
}
