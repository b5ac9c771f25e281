//! Property tests of `needs` graphs, end to end through pipeline text.
//!
//! Random graphs of steps `s0..s{n-1}` with random `needs` edges (in any direction, so cycles
//! happen) are rendered as pipeline YAML and loaded. The test decides acyclicity with its own
//! depth-first search and finds strongly connected components with its own Kosaraju, never
//! with petgraph, so it checks the engine against an independent oracle:
//!
//! - an acyclic graph loads, and the plan orders every step once, dependencies first;
//! - a cyclic graph is rejected with exactly one "steps form a cycle" diagnostic per
//!   non-trivial strongly connected component, each naming a real cycle inside it, and nothing
//!   else;
//! - every self-edge gives exactly one "needs itself" error;
//! - matrix steps fan out to the product of their axes, with unique instance names, and a
//!   step that needs a matrix step comes after all of its instances (fan-in).
//!
//! Edges are stored as `needs[i] = [j, ...]`: step `i` needs step `j`, so `j` runs first.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;

use proptest::prelude::*;
use proptest::sample::subsequence;
use weir_core::diag::Diagnostic;
use weir_core::plan;
use weir_core::spec::{self, Limits, Pipeline};

const CYCLE: &str = "steps form a cycle: ";
const CASES: u32 = 256;

/// `needs[i]` lists the steps that step `i` needs, without duplicates.
type Needs = Vec<Vec<usize>>;

fn dedup(n: usize, edges: impl IntoIterator<Item = (usize, usize)>) -> Needs {
    let mut needs: Needs = vec![Vec::new(); n];
    for (from, to) in edges {
        if !needs[from].contains(&to) {
            needs[from].push(to);
        }
    }
    needs
}

/// Any graph without self-edges: random pairs, each `a needs b`. Cycles are common.
fn any_graph(max: usize) -> impl Strategy<Value = Needs> {
    (1..max)
        .prop_flat_map(|n| (Just(n), prop::collection::vec((0..n, 0..n), 0..=2 * n)))
        .prop_map(|(n, pairs)| dedup(n, pairs.into_iter().filter(|(a, b)| a != b)))
}

/// An acyclic graph whose topological order is a random permutation of the file order, so
/// dependencies are often declared after their dependents.
fn dag(max: usize) -> impl Strategy<Value = Needs> {
    (1..max)
        .prop_flat_map(|n| {
            let ranks = Just((0..n).collect::<Vec<usize>>()).prop_shuffle();
            (Just(n), ranks, prop::collection::vec((0..n, 0..n), 0..=2 * n))
        })
        .prop_map(|(n, rank, pairs)| {
            // A step may only need steps of lower rank.
            dedup(n, pairs.into_iter().filter(|&(a, b)| rank[b] < rank[a]))
        })
}

/// Half arbitrary graphs (mostly cyclic), half DAGs.
fn graph(max: usize) -> impl Strategy<Value = Needs> {
    prop_oneof![any_graph(max), dag(max)]
}

fn name(i: usize) -> String {
    format!("s{i}")
}

/// Pipeline text for the graph; `self_edges` adds `s{i}` to the needs of each listed step,
/// at a random position given by the paired number. Returns the text and, per step, the line
/// on which its `needs` list sits.
fn render(needs: &Needs, self_edges: &[(usize, usize)]) -> (String, Vec<u32>) {
    let mut text = String::from("name: prop\nsteps:\n");
    let mut lines = Vec::with_capacity(needs.len());
    for (i, deps) in needs.iter().enumerate() {
        let mut list: Vec<String> = deps.iter().map(|&d| name(d)).collect();
        if let Some(&(_, at)) = self_edges.iter().find(|(s, _)| *s == i) {
            list.insert(at % (list.len() + 1), name(i));
        }
        let _ = writeln!(text, "  {}:", name(i));
        lines.push(text.lines().count() as u32 + 1);
        let _ = writeln!(text, "    needs: [{}]", list.join(", "));
        let _ = writeln!(text, "    run: \"true\"");
    }
    (text, lines)
}

/// Independent cycle check: depth-first search with three colours.
fn is_acyclic(needs: &Needs) -> bool {
    fn visit(v: usize, needs: &Needs, colour: &mut [u8]) -> bool {
        colour[v] = 1;
        for &w in &needs[v] {
            let c = colour[w];
            if c == 1 || (c == 0 && !visit(w, needs, colour)) {
                return false;
            }
        }
        colour[v] = 2;
        true
    }
    let mut colour = vec![0u8; needs.len()];
    (0..needs.len()).all(|v| colour[v] != 0 || visit(v, needs, &mut colour))
}

/// Kosaraju: component id of every node. Direction does not matter for the components.
fn sccs(needs: &Needs) -> Vec<usize> {
    let n = needs.len();
    let mut reverse: Needs = vec![Vec::new(); n];
    for (v, ws) in needs.iter().enumerate() {
        for &w in ws {
            reverse[w].push(v);
        }
    }
    fn finish(v: usize, g: &Needs, seen: &mut [bool], out: &mut Vec<usize>) {
        seen[v] = true;
        for &w in &g[v] {
            if !seen[w] {
                finish(w, g, seen, out);
            }
        }
        out.push(v);
    }
    fn assign(v: usize, g: &Needs, comp: &mut [usize], id: usize) {
        comp[v] = id;
        for &w in &g[v] {
            if comp[w] == usize::MAX {
                assign(w, g, comp, id);
            }
        }
    }
    let mut seen = vec![false; n];
    let mut post = Vec::with_capacity(n);
    for v in 0..n {
        if !seen[v] {
            finish(v, needs, &mut seen, &mut post);
        }
    }
    let mut comp = vec![usize::MAX; n];
    let mut id = 0;
    for &v in post.iter().rev() {
        if comp[v] == usize::MAX {
            assign(v, &reverse, &mut comp, id);
            id += 1;
        }
    }
    comp
}

/// Groups of nodes in components of more than one node, each sorted.
fn nontrivial_components(needs: &Needs) -> Vec<BTreeSet<usize>> {
    let comp = sccs(needs);
    let mut groups: HashMap<usize, BTreeSet<usize>> = HashMap::new();
    for (v, &c) in comp.iter().enumerate() {
        groups.entry(c).or_default().insert(v);
    }
    groups.into_values().filter(|g| g.len() > 1).collect()
}

fn step_index(text: &str) -> Result<usize, TestCaseError> {
    text.strip_prefix('s')
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| TestCaseError::fail(format!("`{text}` is not a generated step name")))
}

fn messages(diags: &[Diagnostic]) -> Vec<&str> {
    diags.iter().map(|d| d.message.as_str()).collect()
}

/// Checks the cycle diagnostics among `diags` against the independent components of `needs`.
fn check_cycles(needs: &Needs, lines: &[u32], diags: &[&Diagnostic]) -> Result<(), TestCaseError> {
    let components = nontrivial_components(needs);
    let mut covered: HashSet<usize> = HashSet::new();
    for d in diags {
        let chain_text = d.message.strip_prefix(CYCLE).unwrap();
        let chain: Vec<usize> = chain_text.split(" -> ").map(step_index).collect::<Result<_, _>>()?;
        prop_assert!(chain.len() >= 3, "a cycle of distinct steps has at least two: {}", d.message);
        prop_assert_eq!(chain.first(), chain.last(), "the chain does not close: {}", d.message);
        let inner = &chain[..chain.len() - 1];
        let distinct: HashSet<usize> = inner.iter().copied().collect();
        prop_assert_eq!(distinct.len(), inner.len(), "the chain repeats a step: {}", d.message);
        for pair in chain.windows(2) {
            prop_assert!(
                needs[pair[0]].contains(&pair[1]),
                "`{}` does not need `{}`, yet the chain says so: {}",
                name(pair[0]),
                name(pair[1]),
                d.message
            );
        }
        let Some(c) = components.iter().position(|g| g.contains(&chain[0])) else {
            return Err(TestCaseError::fail(format!("{} starts outside every cycle", d.message)));
        };
        prop_assert!(inner.iter().all(|v| components[c].contains(v)), "{} leaves its component", d.message);
        prop_assert!(covered.insert(c), "component {:?} is reported twice", components[c]);
        // It points at the first step's `needs` list.
        let span = d.span.ok_or_else(|| TestCaseError::fail(format!("{} has no position", d.message)))?;
        prop_assert_eq!(span.line, lines[chain[0]], "{} points at the wrong line", d.message);
        // When the cycle does not cover the component, a note lists the whole component.
        if components[c].len() > inner.len() {
            let listed: Option<BTreeSet<usize>> = d.notes.iter().find_map(|n| {
                let rest = n.split_once(": ")?.1;
                rest.split(", ").map(|s| step_index(s).ok()).collect()
            });
            prop_assert_eq!(listed.as_ref(), Some(&components[c]), "{} should list its component", d.message);
        }
    }
    prop_assert_eq!(covered.len(), components.len(), "components {:?}, reported {:?}", components, messages_of(diags));
    Ok(())
}

fn messages_of<'a>(diags: &[&'a Diagnostic]) -> Vec<&'a str> {
    diags.iter().map(|d| d.message.as_str()).collect()
}

fn plan_of(pipeline: &Pipeline) -> plan::Plan {
    let params = plan::resolve_params(pipeline, &[]).expect("no params are declared");
    plan::plan(pipeline, &params, "prop")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn acyclic_loads_and_plans_cyclic_reports_each_component(needs in graph(40)) {
        let (text, lines) = render(&needs, &[]);
        let result = spec::load(&text, &Limits::default());
        if is_acyclic(&needs) {
            let pipeline = match result {
                Ok(p) => p,
                Err(d) => {
                    let why = format!("acyclic graph rejected: {:?}\n{text}", messages(&d));
                    return Err(TestCaseError::fail(why));
                }
            };
            let plan = plan_of(&pipeline);
            prop_assert_eq!(plan.order.len(), needs.len());
            let mut position = vec![usize::MAX; needs.len()];
            for (at, &node) in plan.order.iter().enumerate() {
                let step = step_index(&plan.graph[node].name)?;
                prop_assert_eq!(position[step], usize::MAX, "{} is ordered twice", name(step));
                position[step] = at;
            }
            for (i, deps) in needs.iter().enumerate() {
                for &d in deps {
                    prop_assert!(position[d] < position[i], "{} runs before {}, which it needs", name(i), name(d));
                }
            }
        } else {
            let diags = match result {
                Ok(_) => return Err(TestCaseError::fail(format!("cyclic graph accepted:\n{text}"))),
                Err(d) => d,
            };
            let others: Vec<&str> = messages(&diags).into_iter().filter(|m| !m.starts_with(CYCLE)).collect();
            prop_assert!(others.is_empty(), "unexpected errors: {:?}", others);
            let cycles: Vec<&Diagnostic> = diags.iter().collect();
            check_cycles(&needs, &lines, &cycles)?;
        }
    }

    #[test]
    fn each_self_edge_is_one_error(
        (needs, self_edges) in graph(30).prop_flat_map(|needs| {
            let n = needs.len();
            let picks = subsequence((0..n).collect::<Vec<_>>(), 1..=n);
            let positions = prop::collection::vec(any::<usize>(), n);
            (Just(needs), picks, positions)
        }).prop_map(|(needs, picks, positions)| {
            let edges: Vec<(usize, usize)> = picks.into_iter().map(|s| (s, positions[s])).collect();
            (needs, edges)
        })
    ) {
        let (text, lines) = render(&needs, &self_edges);
        let Err(diags) = spec::load(&text, &Limits::default()) else {
            return Err(TestCaseError::fail(format!("self-edges accepted:\n{text}")));
        };
        let mut selfish: Vec<usize> = Vec::new();
        let mut cycles: Vec<&Diagnostic> = Vec::new();
        for d in &diags {
            if let Some(step) = d.message.strip_prefix("step `").and_then(|r| r.strip_suffix("` needs itself")) {
                selfish.push(step_index(step)?);
                let line = d.span.map(|s| s.line);
                prop_assert_eq!(line, Some(lines[step_index(step)?]), "{} points at the wrong line", d.message);
            } else if d.message.starts_with(CYCLE) {
                cycles.push(d);
            } else {
                return Err(TestCaseError::fail(format!("unexpected error: {}", d.message)));
            }
        }
        selfish.sort_unstable();
        let mut expected: Vec<usize> = self_edges.iter().map(|(s, _)| *s).collect();
        expected.sort_unstable();
        prop_assert_eq!(selfish, expected);
        // Self-edges are dropped before the cycle search: the other cycles are reported as usual.
        check_cycles(&needs, &lines, &cycles)?;
    }

    #[test]
    fn matrix_fans_out_and_in(
        (needs, matrices) in dag(16).prop_flat_map(|needs| {
            let n = needs.len();
            (Just(needs), prop::collection::vec(prop::option::weighted(0.4, matrix()), n))
        })
    ) {
        let text = render_matrix(&needs, &matrices);
        let pipeline = match spec::load(&text, &Limits::default()) {
            Ok(p) => p,
            Err(d) => return Err(TestCaseError::fail(format!("rejected: {:?}\n{text}", messages(&d)))),
        };
        let plan = plan_of(&pipeline);
        let counts: Vec<usize> =
            matrices.iter().map(|m| m.as_ref().map_or(1, |axes| axes.iter().map(Vec::len).product())).collect();
        prop_assert_eq!(plan.graph.node_count(), counts.iter().sum::<usize>());
        prop_assert_eq!(plan.order.len(), plan.graph.node_count());
        let names: HashSet<&str> = plan.graph.node_weights().map(|i| i.name.as_str()).collect();
        prop_assert_eq!(names.len(), plan.graph.node_count(), "instance names repeat");

        // Per step: its instances' positions in the order, and their matrix combinations.
        let mut positions: Vec<Vec<usize>> = vec![Vec::new(); needs.len()];
        let mut combos: Vec<HashSet<Vec<(String, String)>>> = vec![HashSet::new(); needs.len()];
        for (at, &node) in plan.order.iter().enumerate() {
            let inst = &plan.graph[node];
            let base = inst.name.split('[').next().unwrap_or("");
            let step = step_index(base)?;
            prop_assert_eq!(inst.step, step);
            prop_assert_eq!(inst.name.len() > base.len(), matrices[step].is_some(), "{}", inst.name);
            positions[step].push(at);
            prop_assert!(combos[step].insert(inst.matrix.clone()), "{} repeats a combination", inst.name);
        }
        for (i, m) in matrices.iter().enumerate() {
            prop_assert_eq!(positions[i].len(), counts[i], "instances of {}", name(i));
            // Every combination of the axes appears (counts match and all are distinct, so
            // checking membership of each instance's values is enough).
            if let Some(axes) = m {
                for combo in &combos[i] {
                    prop_assert_eq!(combo.len(), axes.len());
                    for (a, (key, value)) in combo.iter().enumerate() {
                        prop_assert_eq!(key, &format!("k{a}"));
                        prop_assert!(axes[a].iter().any(|v| v.text == *value), "{} is not a value of k{}", value, a);
                    }
                }
            }
        }
        for (i, deps) in needs.iter().enumerate() {
            for &d in deps {
                let last_dep = positions[d].iter().max().copied().unwrap_or(0);
                let first = positions[i].iter().min().copied().unwrap_or(usize::MAX);
                prop_assert!(last_dep < first, "an instance of {} runs before all of {} finished", name(i), name(d));
            }
        }
        let edges: usize =
            needs.iter().enumerate().map(|(i, ds)| ds.iter().map(|&d| counts[d] * counts[i]).sum::<usize>()).sum();
        prop_assert_eq!(plan.graph.edge_count(), edges);
    }
}

/// One matrix value: how it is written in YAML and the text the engine keeps.
#[derive(Clone, Debug)]
struct Val {
    yaml: &'static str,
    text: &'static str,
}

const POOL: [Val; 8] = [
    Val { yaml: "1", text: "1" },
    Val { yaml: "2", text: "2" },
    Val { yaml: "0.5", text: "0.5" },
    Val { yaml: "true", text: "true" },
    Val { yaml: "adam", text: "adam" },
    Val { yaml: "\"a b\"", text: "a b" },
    Val { yaml: "'x,y=[z]'", text: "x,y=[z]" },
    Val { yaml: "\"-1e3\"", text: "-1e3" },
];

/// 1 to 3 axes of 1 to 4 distinct values each.
fn matrix() -> impl Strategy<Value = Vec<Vec<Val>>> {
    prop::collection::vec(subsequence(POOL.to_vec(), 1..=4).prop_shuffle(), 1..=3)
}

fn render_matrix(needs: &Needs, matrices: &[Option<Vec<Vec<Val>>>]) -> String {
    let mut text = String::from("name: prop-matrix\nsteps:\n");
    for (i, deps) in needs.iter().enumerate() {
        let _ = writeln!(text, "  {}:", name(i));
        match deps.as_slice() {
            [] => {}
            [one] => {
                let _ = writeln!(text, "    needs: {}", name(*one));
            }
            more => {
                let list: Vec<String> = more.iter().map(|&d| name(d)).collect();
                let _ = writeln!(text, "    needs: [{}]", list.join(", "));
            }
        }
        if let Some(axes) = &matrices[i] {
            let _ = writeln!(text, "    matrix:");
            for (a, values) in axes.iter().enumerate() {
                let list: Vec<&str> = values.iter().map(|v| v.yaml).collect();
                let _ = writeln!(text, "      k{a}: [{}]", list.join(", "));
            }
        }
        let _ = writeln!(text, "    run: \"true\"");
    }
    text
}

/// The generators themselves: the oracle must agree with obvious cases.
#[test]
fn oracle_sanity() {
    let line: Needs = vec![vec![], vec![0], vec![1]];
    assert!(is_acyclic(&line));
    assert!(nontrivial_components(&line).is_empty());
    let two_cycles: Needs = vec![vec![1], vec![0], vec![3], vec![4], vec![2, 0]];
    assert!(!is_acyclic(&two_cycles));
    let mut comps = nontrivial_components(&two_cycles);
    comps.sort();
    assert_eq!(comps, vec![BTreeSet::from([0, 1]), BTreeSet::from([2, 3, 4])]);
}

/// A fixed example of the cycle report: two components, one needing a note.
#[test]
fn reports_two_components() {
    // s0 <-> s1 and s2 -> s3 -> s2, s3 -> s4 -> s2 (a component of three, shortest cycle of two).
    let needs: Needs = vec![vec![1], vec![0], vec![3], vec![2, 4], vec![2]];
    let (text, lines) = render(&needs, &[]);
    let diags = spec::load(&text, &Limits::default()).expect_err("cyclic");
    assert_eq!(
        messages(&diags),
        vec!["steps form a cycle: s0 -> s1 -> s0", "steps form a cycle: s2 -> s3 -> s2"],
        "{text}"
    );
    let refs: Vec<&Diagnostic> = diags.iter().collect();
    check_cycles(&needs, &lines, &refs).unwrap();
}
