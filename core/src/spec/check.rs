//! Cross-checks over all steps once each has been read: `needs` resolve, no self-dependency,
//! no cycle (each reported as its chain `a -> b -> a`), templates and expressions refer only
//! to declared params, matrix keys and upstream metrics, and the expanded pipeline fits the
//! limits. Reports every problem; returns the steps only when there is none.

use std::collections::HashMap;

use petgraph::algo::kosaraju_scc;
use petgraph::graph::{DiGraph, NodeIndex};

use crate::diag::{Diagnostic, did_you_mean};
use crate::expr::{self, Type};
use crate::spec::Limits;
use crate::spec::decode::Cx;
use crate::spec::load::StepDraft;
use crate::spec::model::*;
use crate::spec::yaml::NodeId;
use crate::template::Ref;

pub(crate) fn steps(
    cx: &mut Cx<'_>,
    drafts: Vec<StepDraft>,
    params: &[Param],
    declared: &[String],
    limits: &Limits,
) -> Option<Vec<Step>> {
    let before = cx.diags.len();
    let index: HashMap<&str, usize> = drafts.iter().enumerate().map(|(i, d)| (d.step.name.as_str(), i)).collect();
    let names: Vec<&str> = drafts.iter().map(|d| d.step.name.as_str()).collect();

    // needs -> indices
    let mut needs_idx: Vec<Vec<usize>> = Vec::with_capacity(drafts.len());
    for d in &drafts {
        let mut resolved = Vec::with_capacity(d.step.needs.len());
        let mut seen: HashMap<&str, NodeId> = HashMap::new();
        for (i, (need, &node)) in d.step.needs.iter().zip(&d.needs_nodes).enumerate() {
            // Short lists (nearly all) are scanned; long fan-in lists are hashed.
            let first = if d.step.needs.len() <= 16 {
                d.step.needs[..i].iter().position(|n| n == need).map(|j| d.needs_nodes[j])
            } else {
                seen.get(need.as_str()).copied()
            };
            if let Some(first) = first {
                cx.push(
                    Diagnostic::error(format!("step `{}` lists `{need}` twice in `needs`", d.step.name))
                        .at(cx.span(node), "duplicate")
                        .related(cx.span(first), "first listed here"),
                );
                continue;
            }
            if d.step.needs.len() > 16 {
                seen.insert(need, node);
            }
            if *need == d.step.name {
                cx.push(
                    Diagnostic::error(format!("step `{need}` needs itself"))
                        .at(cx.span(node), "a step cannot wait for its own completion"),
                );
                continue;
            }
            match index.get(need.as_str()) {
                Some(&i) => resolved.push(i),
                None => cx.push(
                    Diagnostic::error(format!("step `{}` needs `{need}`, which is not a step", d.step.name))
                        .at(cx.span(node), "unknown step")
                        .help_opt(did_you_mean(need, names.iter().copied().filter(|n| *n != d.step.name))),
                ),
            }
        }
        needs_idx.push(resolved);
    }

    // cycles: one report per strongly connected component, printed as a real cycle
    let mut graph: DiGraph<usize, ()> = DiGraph::with_capacity(drafts.len(), 0);
    let nodes: Vec<NodeIndex> = (0..drafts.len()).map(|i| graph.add_node(i)).collect();
    for (i, needs) in needs_idx.iter().enumerate() {
        for &n in needs {
            graph.add_edge(nodes[n], nodes[i], ());
        }
    }
    let mut cyclic = false;
    let mut sccs: Vec<Vec<usize>> = kosaraju_scc(&graph)
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|c| {
            let mut c: Vec<usize> = c.into_iter().map(|n| graph[n]).collect();
            c.sort_unstable();
            c
        })
        .collect();
    sccs.sort();
    for scc in sccs {
        cyclic = true;
        let chain = cycle_in(&scc, &needs_idx);
        // A long cycle is shown by its ends; the count says how long it is.
        let steps = chain.len() - 1;
        const SHOWN: usize = 40;
        let text: Vec<&str> = if steps > SHOWN {
            let head = chain[..10].iter().map(|&i| names[i]);
            head.chain(["..."]).chain(chain[chain.len() - 5..].iter().map(|&i| names[i])).collect()
        } else {
            chain.iter().map(|&i| names[i]).collect()
        };
        let of = if steps > SHOWN { format!(" of {steps} steps") } else { String::new() };
        // Point at the first step's `needs` entry that leads along the cycle.
        let first = chain[0];
        let next = chain[1];
        let d = &drafts[first];
        let at = d
            .step
            .needs
            .iter()
            .zip(&d.needs_nodes)
            .find(|(n, _)| index.get(n.as_str()) == Some(&next))
            .map(|(_, &node)| cx.span(node))
            .unwrap_or(d.step.span);
        let mut diag = Diagnostic::error(format!("steps form a cycle{of}: {}", text.join(" -> ")))
            .at(at, format!("`{}` needs `{}` here", names[first], names[next]));
        if scc.len() > steps {
            diag = diag.note(if scc.len() > SHOWN {
                format!("{} steps all wait on each other, through more than this cycle", scc.len())
            } else {
                let all: Vec<&str> = scc.iter().map(|&i| names[i]).collect();
                format!("these steps all wait on each other: {}", all.join(", "))
            });
        }
        cx.push(
            diag.note(format!("`{0} -> {1}` reads \"{0} needs {1}\"", names[first], names[next]))
                .help("remove one of the `needs` entries in the cycle"),
        );
    }

    // templates, expressions, per-step rules
    let by_name: HashMap<&str, &StepDraft> = drafts.iter().map(|d| (d.step.name.as_str(), d)).collect();
    let upstream = if cyclic { None } else { Some(ancestors(&needs_idx)) };
    for (i, d) in drafts.iter().enumerate() {
        check_templates(cx, d, declared);
        super::script::check(cx, d, params);
        let ups = upstream.as_ref().map(|u| &u[i]);
        if let (Some(e), Some(node)) = (&d.step.when, d.when_node) {
            check_expr(cx, d, e, node, "when", (params, declared), &by_name, ups, &names);
        }
        if let (Some(e), Some(node)) = (&d.step.gate, d.gate_node) {
            check_expr(cx, d, e, node, "gate", (params, declared), &by_name, ups, &names);
        }
        if d.step.runtime == Runtime::Docker && d.step.image.is_none() && !d.image_given {
            let span = d.runtime_node.map(|n| cx.span(n)).unwrap_or(d.step.span);
            cx.push(
                Diagnostic::error(format!("step `{}` runs in docker but names no image", d.step.name))
                    .at(span, "`runtime: docker` needs `image`")
                    .help("add `image:` to the step or to `defaults`"),
            );
        }
        if let (Some(r), Some(node)) = (&d.step.register, d.register_node) {
            if let (Some(e), Some(when)) = (&r.when, field_value(cx, node, "when")) {
                check_expr(cx, d, e, when, "register.when", (params, declared), &by_name, ups, &names);
            }
            if d.step.is_matrix() {
                cx.push(
                    Diagnostic::error(format!("step `{}` has a matrix and `register`", d.step.name))
                        .at(cx.span(node), "every instance would register a version")
                        .note("the instances would race for one model and one alias")
                        .help("select one instance's output in a plain step that needs this one, and register there"),
                );
            }
        }
        if let (Some(r), Some(node)) = (&d.step.register, d.register_node)
            && !d.step.outputs.contains(&r.file)
        {
            let node = field_value(cx, node, "file").unwrap_or(node);
            cx.push(
                Diagnostic::error(format!(
                    "step `{}` registers `{}`, which is not one of its outputs",
                    d.step.name, r.file
                ))
                .at(cx.span(node), "`register.file` must name an output")
                .help_opt(did_you_mean(&r.file, d.step.outputs.iter().map(String::as_str))),
            );
        }
    }

    // limits after expansion
    // A rejected matrix was reported already; count it as one instance, not again here.
    let counts: Vec<usize> =
        drafts.iter().map(|d| if d.matrix_rejected { 1 } else { d.step.instance_count() }).collect();
    let total: usize = counts.iter().fold(0usize, |a, c| a.saturating_add(*c));
    // The step that contributes most is where a reader should look first.
    let biggest = |weight: &dyn Fn(usize) -> usize| (0..drafts.len()).max_by_key(|&i| (weight(i), usize::MAX - i));
    if total > limits.max_steps {
        let mut d = Diagnostic::error(format!(
            "the pipeline expands to {total} step instances, more than the limit of {}",
            limits.max_steps
        ))
        .help("split the pipeline, or raise the limit with `--max-steps`");
        if let Some(i) = biggest(&|i| counts[i]) {
            d = d
                .at(drafts[i].step.span, format!("`{}` alone expands to {} instances", drafts[i].step.name, counts[i]));
        }
        cx.push(d);
    }
    let edges = needs_idx
        .iter()
        .enumerate()
        .map(|(i, needs)| {
            needs.iter().map(|&n| counts[n].saturating_mul(counts[i])).fold(0usize, usize::saturating_add)
        })
        .fold(0usize, usize::saturating_add);
    if edges > limits.max_edges {
        let mut d = Diagnostic::error(format!(
            "the expanded pipeline has {edges} dependencies between instances, more than the limit of {}",
            limits.max_edges
        ))
        .note("a matrix step that needs another matrix step waits for every one of its instances")
        .help("put a plain step between two large matrix steps, or raise the limit with `--max-edges`");
        let incoming = |i: usize| {
            needs_idx[i].iter().fold(0usize, |acc, &n| acc.saturating_add(counts[n].saturating_mul(counts[i])))
        };
        if let Some(i) = biggest(&incoming) {
            d = d.at(
                drafts[i].step.span,
                format!("`{}` alone waits on {} dependencies", drafts[i].step.name, incoming(i)),
            );
        }
        cx.push(d);
    }

    if cx.diags.len() > before {
        return None;
    }
    Some(
        drafts
            .into_iter()
            .zip(needs_idx)
            .map(|(mut d, idx)| {
                d.step.needs_idx = idx;
                d.step
            })
            .collect(),
    )
}

/// A cycle through the smallest step of a strongly connected component: `[a, b, ..., a]`.
fn cycle_in(scc: &[usize], needs: &[Vec<usize>]) -> Vec<usize> {
    // Follow `needs` edges backwards (i needs n: walk i -> n) staying inside the component;
    // breadth-first from the start gives a shortest cycle back to it.
    let start = scc[0];
    let inside: std::collections::HashSet<usize> = scc.iter().copied().collect();
    let mut prev: HashMap<usize, usize> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(cur) = queue.pop_front() {
        for &n in &needs[cur] {
            if !inside.contains(&n) {
                continue;
            }
            if n == start {
                let mut path = vec![start];
                let mut at = cur;
                while at != start {
                    path.push(at);
                    at = prev[&at];
                }
                path.push(start);
                // path is start <- ... ; we walked "needs" so read it as start needs x needs ...
                let mut chain: Vec<usize> = vec![start];
                chain.extend(path[1..path.len() - 1].iter().rev());
                chain.push(start);
                return chain;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = prev.entry(n) {
                e.insert(cur);
                queue.push_back(n);
            }
        }
    }
    vec![start, start]
}

/// For each step, the set of steps it transitively needs (bitsets would be smaller; pipelines
/// whose expressions name upstream steps are small, so this is computed lazily per query).
fn ancestors(needs: &[Vec<usize>]) -> Vec<Ancestors<'_>> {
    (0..needs.len()).map(|i| Ancestors { needs, of: i }).collect()
}

struct Ancestors<'a> {
    needs: &'a [Vec<usize>],
    of: usize,
}

impl Ancestors<'_> {
    fn contains(&self, target: usize) -> bool {
        let mut seen = vec![false; self.needs.len()];
        let mut stack = vec![self.of];
        while let Some(cur) = stack.pop() {
            for &n in &self.needs[cur] {
                if n == target {
                    return true;
                }
                if !seen[n] {
                    seen[n] = true;
                    stack.push(n);
                }
            }
        }
        false
    }
}

/// The value node of `key` in the mapping at `map`.
fn field_value(cx: &Cx<'_>, map: NodeId, key: &str) -> Option<NodeId> {
    match &cx.doc.node(map).kind {
        crate::spec::yaml::Kind::Map(entries) => {
            entries.iter().find(|(k, _)| cx.doc.text(*k) == Some(key)).map(|(_, v)| *v)
        }
        _ => None,
    }
}

fn check_templates(cx: &mut Cx<'_>, d: &StepDraft, declared: &[String]) {
    for (t, node) in &d.templates {
        let inherited = d.inherited.contains(node);
        for r in t.refs() {
            let problem = match r.reference {
                Ref::Param(name) if !declared.iter().any(|p| p == name) => Some((
                    format!("unknown param `{name}`"),
                    did_you_mean(name, declared.iter().map(String::as_str)),
                    "not declared under `params`",
                )),
                Ref::Matrix(key) if inherited && !d.step.matrix.iter().any(|a| a.key == *key) => Some((
                    format!(
                        "`matrix.{key}` in `defaults` reaches step `{}`, which has no matrix key `{key}`",
                        d.step.name
                    ),
                    Some("move it into the matrix steps that define it".into()),
                    "inherited from `defaults`",
                )),
                Ref::Matrix(key) if !d.step.is_matrix() => Some((
                    format!("`matrix.{key}` used in step `{}`, which has no matrix", d.step.name),
                    None,
                    "only matrix steps have matrix values",
                )),
                Ref::Matrix(key) if !d.step.matrix.iter().any(|a| a.key == *key) => Some((
                    format!("unknown matrix key `{key}` in step `{}`", d.step.name),
                    did_you_mean(key, d.step.matrix.iter().map(|a| a.key.as_str())),
                    "not a key of this step's matrix",
                )),
                _ => None,
            };
            if let Some((message, help, label)) = problem {
                let needle: String = t.source().chars().skip(r.offset).take(r.len).collect();
                let span = cx.sub_span(*node, r.offset, r.len, &needle);
                cx.push(Diagnostic::error(message).at(span, label).help_opt(help));
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn check_expr(
    cx: &mut Cx<'_>,
    d: &StepDraft,
    e: &expr::Expr,
    node: NodeId,
    field: &str,
    (params, declared): (&[Param], &[String]),
    steps: &HashMap<&str, &StepDraft>,
    upstream: Option<&Ancestors<'_>>,
    names: &[&str],
) {
    let path = format!("steps.{}.{field}", d.step.name);
    let source = e.source().to_string();
    let mut ok = true;
    for u in e.refs() {
        let needle: String = source.chars().skip(u.offset).take(u.len).collect();
        let span = cx.sub_span(node, u.offset, u.len, &needle);
        let problem: Option<(String, Option<String>)> = match &u.reference {
            expr::Ref::Param(name) => (!declared.iter().any(|p| p == name)).then(|| {
                (format!("unknown param `{name}` in `{path}`"), did_you_mean(name, declared.iter().map(String::as_str)))
            }),
            expr::Ref::Matrix(key) => {
                if !d.step.is_matrix() {
                    Some((format!("`matrix.{key}` used in `{path}`, but step `{}` has no matrix", d.step.name), None))
                } else {
                    (!d.step.matrix.iter().any(|a| a.key == *key)).then(|| {
                        (
                            format!("unknown matrix key `{key}` in `{path}`"),
                            did_you_mean(key, d.step.matrix.iter().map(|a| a.key.as_str())),
                        )
                    })
                }
            }
            expr::Ref::CurrentMetric(name) if field != "register.when" => Some((
                format!(
                    "`current.metrics.{name}` is the metric of a model version an alias holds, so `{field}` cannot use it"
                ),
                Some("use it in `register.when`, to compare with the version the alias holds now".into()),
            )),
            expr::Ref::CurrentMetric(_) => None,
            expr::Ref::Explain { .. } if field == "when" => Some((
                format!("`{}` is only known after the step ran, so `when` cannot use it", u.reference),
                Some("use it in `gate` (the step's own explain.json) or `register.when`".into()),
            )),
            expr::Ref::Explain { current: true, .. } if field != "register.when" => Some((
                format!("`{}` reads the model version an alias holds, so `{field}` cannot use it", u.reference),
                Some("use it in `register.when`, to compare with the version the alias holds now".into()),
            )),
            expr::Ref::Explain { item: expr::ExplainItem::RankShift, .. } if field != "register.when" => Some((
                format!("`{}` compares with the model version an alias holds, so `{field}` cannot use it", u.reference),
                Some("use it in `register.when`; a gate reads explain.top, explain.method, explain.importance.F, explain.rank.F".into()),
            )),
            expr::Ref::Explain { .. } if !d.step.outputs.iter().any(|o| o == crate::explain::FILE) => Some((
                format!("`{path}` reads `{}`, but step `{}` does not declare explain.json in `outputs`", u.reference, d.step.name),
                Some("add explain.json to its outputs and write it (docs/explainability.md)".into()),
            )),
            expr::Ref::Explain { .. } => None,
            expr::Ref::StepMetric { step, .. } if field == "register.when" => Some((
                format!("`{path}` reads metrics of step `{step}`; a promotion gate compares models only"),
                Some(
                    "use `metrics.NAME` (this step's) and `current.metrics.NAME` (the version the alias holds)".into(),
                ),
            )),
            expr::Ref::Metric(name) => {
                if field == "when" {
                    Some((
                        format!("`metrics.{name}` is only known after the step ran, so `{field}` cannot use it"),
                        Some("use it in `gate`, or name an upstream step's metrics: `steps.STEP.metrics.NAME`".into()),
                    ))
                } else {
                    // Any step may report metrics: `metrics.json` or its live `$WEIR_METRICS`
                    // series. One it never reported fails the gate when it is evaluated.
                    None
                }
            }
            expr::Ref::StepMetric { step, metric } => match steps.get(step.as_str()) {
                None => Some((
                    format!("`{path}` refers to step `{step}`, which does not exist"),
                    did_you_mean(step, names.iter().copied()),
                )),
                Some(up) if upstream.is_some_and(|a| !a.contains(index_of(names, step))) => Some((
                    format!("`{path}` reads metrics of `{step}`, which step `{}` does not need", d.step.name),
                    Some(format!("add `{}` to `needs`, directly or through another step", up.step.name)),
                )),
                Some(up) if up.step.is_matrix() => Some((
                    format!(
                        "`{path}` reads `steps.{step}.metrics.{metric}`, but `{step}` is a matrix step with one value per instance"
                    ),
                    Some("select a value in a fan-in step and read that step's metrics".into()),
                )),
                Some(_) => None,
            },
        };
        if let Some((message, help)) = problem {
            ok = false;
            cx.push(Diagnostic::error(message).at(span, "cannot resolve").help_opt(help));
        }
    }
    if !ok {
        return;
    }
    let types = |r: &expr::Ref| -> Option<Type> {
        match r {
            // A declared param with problems of its own types as anything: no second error.
            expr::Ref::Param(name) => {
                Some(params.iter().find(|p| p.name == *name).map_or(Type::Any, |p| match p.kind {
                    ParamType::Int => Type::Int,
                    ParamType::Float => Type::Float,
                    ParamType::Bool => Type::Bool,
                    ParamType::String => Type::Str,
                }))
            }
            expr::Ref::Matrix(key) => d.step.matrix.iter().find(|a| a.key == *key).map(|a| {
                let kinds: Vec<MatrixKind> = a.values.iter().map(|v| v.kind).collect();
                match kinds.first() {
                    Some(k) if kinds.iter().all(|x| x == k) => match k {
                        MatrixKind::Int => Type::Int,
                        MatrixKind::Float => Type::Float,
                        MatrixKind::Bool => Type::Bool,
                        MatrixKind::String => Type::Str,
                    },
                    _ => Type::Any,
                }
            }),
            expr::Ref::Metric(_) | expr::Ref::StepMetric { .. } | expr::Ref::CurrentMetric(_) => Some(Type::Float),
            expr::Ref::Explain { item, .. } => Some(item.type_of()),
        }
    };
    if let Err(t) = e.check_bool(&types) {
        let needle: String = source.chars().skip(t.offset).take(t.len).collect();
        let span = cx.sub_span(node, t.offset, t.len, &needle);
        cx.push(Diagnostic::error(format!("type error in `{path}`")).at(span, t.message));
    }
}

fn index_of(names: &[&str], step: &str) -> usize {
    names.iter().position(|n| *n == step).unwrap_or(usize::MAX)
}
