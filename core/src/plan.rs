//! Planning: a validated [`Pipeline`] plus parameter values becomes a petgraph DAG of step
//! instances. Matrix steps expand to one instance per combination (`train[lr=0.01,epochs=50]`),
//! a step that needs a matrix step waits for all its instances, templates render (references
//! to environment variables in `run:`, never values; whole argv items in `command:`), and the order is topological and stable: among
//! ready instances, the one declared first comes first. Pure: the run id comes in as an
//! argument; no clock, no I/O.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};
use serde::Serialize;

use crate::diag::{Diagnostic, did_you_mean};
use crate::spec::{Action, Pipeline, Value};
use crate::template::Ref;

/// Parameter values for one run: every declared param, in declaration order.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Params(Vec<(String, Value)>);

impl Params {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v))
    }
}

/// Resolves `name=value` overrides against the declared params: unknown names, values of the
/// wrong type, values outside `enum`/`min`/`max`/`pattern` and missing required params are
/// all reported, each pointing at the param's declaration where there is one.
pub fn resolve_params(pipeline: &Pipeline, overrides: &[(String, String)]) -> Result<Params, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    let mut given: HashMap<&str, Value> = HashMap::new();
    for (name, text) in overrides {
        match pipeline.param(name) {
            None => {
                let d = Diagnostic::error(format!("unknown param `{name}`"));
                let d = match did_you_mean(name, pipeline.params().iter().map(|p| p.name.as_str())) {
                    Some(h) => d.help(h),
                    None if pipeline.params().is_empty() => {
                        d.note(format!("pipeline `{}` declares no params", pipeline.name()))
                    }
                    None => {
                        let names: Vec<&str> = pipeline.params().iter().map(|p| p.name.as_str()).collect();
                        d.note(format!("declared params: {}", names.join(", ")))
                    }
                };
                errors.push(d);
            }
            Some(p) => match p.parse_value(text) {
                Ok(v) => {
                    given.insert(name.as_str(), v);
                }
                Err(e) => {
                    errors.push(Diagnostic::error(e).at(p.span, format!("`{}` is declared here as {}", p.name, p.kind)))
                }
            },
        }
    }
    let mut values = Vec::with_capacity(pipeline.params().len());
    for p in pipeline.params() {
        match given.remove(p.name.as_str()).or_else(|| p.default.clone()) {
            Some(v) => values.push((p.name.clone(), v)),
            None => errors.push(
                Diagnostic::error(format!("param `{}` is required", p.name))
                    .at(p.span, "declared here without a default")
                    .help(format!("pass it with `-p {}=VALUE`", p.name)),
            ),
        }
    }
    if errors.is_empty() { Ok(Params(values)) } else { Err(errors) }
}

/// What an instance runs, with every template rendered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Resolved {
    /// A script for `sh -c`.
    Run(String),
    /// An argv, run without a shell.
    Command(Vec<String>),
}

/// One schedulable unit: a plain step, or one combination of a matrix step.
#[derive(Clone, Debug, Serialize)]
pub struct Instance {
    /// `ingest`, or `train[lr=0.01,epochs=50]` for a matrix instance.
    pub name: String,
    /// Index of the step in [`Pipeline::steps`].
    #[serde(skip)]
    pub step: usize,
    /// The matrix values of this instance, in key order.
    pub matrix: Vec<(String, String)>,
    pub action: Resolved,
    /// The step's own environment (rendered); the run-wide `WEIR_PARAM_*` are in [`Plan::env`].
    pub env: Vec<(String, String)>,
    /// The variables the `run:` script refers to, each once, with the values they hold for
    /// this instance. The step's environment carries them (see `server::dispatch`).
    pub vars: Vec<(String, String)>,
    pub image: Option<String>,
}

/// The planned DAG of one run. Edges point from a dependency to its dependent.
#[derive(Clone, Debug)]
pub struct Plan {
    pub pipeline: String,
    pub pipeline_hash: String,
    pub run_id: String,
    pub params: Params,
    /// `WEIR_PARAM_<NAME>` for every param, the same for every instance.
    pub env: Vec<(String, String)>,
    pub graph: DiGraph<Instance, ()>,
    /// Every instance, dependencies first; ties broken by declaration order.
    pub order: Vec<NodeIndex>,
}

impl Plan {
    /// The instances an instance waits for.
    pub fn needs(&self, node: NodeIndex) -> impl Iterator<Item = &Instance> {
        let mut deps: Vec<NodeIndex> = self.graph.neighbors_directed(node, Direction::Incoming).collect();
        deps.sort_unstable();
        deps.into_iter().map(move |n| &self.graph[n])
    }

    /// The environment `run:` scripts and commands of instance `node` read their values from,
    /// before the engine adds its own `WEIR_*` (run id, step, attempt, inputs): every param
    /// (`WEIR_PARAM_*`), the instance's matrix values (`WEIR_MATRIX_*`), the step's `env`, then
    /// what its script's references name.
    pub fn values_env(&self, node: NodeIndex) -> Vec<(String, String)> {
        let inst = &self.graph[node];
        let mut env = self.env.clone();
        env.extend(inst.matrix.iter().map(|(k, v)| (crate::template::matrix_var(k), v.clone())));
        env.extend(inst.env.iter().cloned());
        env.extend(inst.vars.iter().cloned());
        env
    }

    /// A JSON view for programs: the plan in order, with each instance's needs.
    pub fn to_json(&self) -> serde_json::Value {
        let steps: Vec<serde_json::Value> = self
            .order
            .iter()
            .map(|&n| {
                let mut v = serde_json::to_value(&self.graph[n]).unwrap_or_default();
                let needs: Vec<&str> = self.needs(n).map(|i| i.name.as_str()).collect();
                if let Some(obj) = v.as_object_mut() {
                    obj.insert("needs".into(), needs.into());
                }
                v
            })
            .collect();
        serde_json::json!({
            "pipeline": self.pipeline,
            "hash": self.pipeline_hash,
            "run_id": self.run_id,
            // An object, as clients read params (`.params.rows`); keys sorted.
            "params": self.params.iter().map(|(k, v)| (k.to_string(), serde_json::to_value(v).unwrap_or_default())).collect::<serde_json::Map<_, _>>(),
            "env": self.env.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            "steps": steps,
        })
    }
}

/// Expands and renders `pipeline` for one run. Infallible: validation already proved that
/// every reference resolves and that the expansion fits the limits.
pub fn plan(pipeline: &Pipeline, params: &Params, run_id: &str) -> Plan {
    let param_text: HashMap<&str, String> = params.iter().map(|(n, v)| (n, v.to_string())).collect();
    let env = pipeline
        .params()
        .iter()
        .filter_map(|p| param_text.get(p.name.as_str()).map(|v| (p.env_name(), v.clone())))
        .collect();

    let total = pipeline.instance_count();
    let mut graph: DiGraph<Instance, ()> = DiGraph::with_capacity(total, total);
    // Instances of each step, as a range of node indices (nodes are added in step order).
    let mut ranges: Vec<std::ops::Range<usize>> = Vec::with_capacity(pipeline.steps().len());
    let empty = String::new();
    for (si, step) in pipeline.steps().iter().enumerate() {
        let start = graph.node_count();
        // A script holds references, not values: the same text for every instance, rendered
        // once; only what its variables hold differs.
        let (script, refs): (String, Vec<(String, &Ref)>) = match &step.action {
            Action::Run(t) => {
                let mut refs: Vec<(String, &Ref)> = Vec::new();
                for r in t.refs() {
                    let var = r.reference.var();
                    if !refs.iter().any(|(v, _)| *v == var) {
                        refs.push((var, r.reference));
                    }
                }
                let integer = |r: &Ref| crate::spec::model::holds_integer(pipeline.params(), step, r);
                (t.render_script(&integer), refs)
            }
            Action::Command(_) => (String::new(), Vec::new()),
        };
        for combo in combinations(step) {
            let name = instance_name(&step.name, &combo);
            let lookup = |r: &Ref| -> &str {
                match r {
                    Ref::Param(p) => param_text.get(p.as_str()).map_or(empty.as_str(), String::as_str),
                    Ref::Matrix(k) => combo.iter().find(|(key, _)| key == k).map_or(empty.as_str(), |(_, v)| *v),
                    Ref::RunId => run_id,
                    Ref::StepName => name.as_str(),
                }
            };
            let vars: Vec<(String, String)> =
                refs.iter().map(|(var, r)| (var.clone(), lookup(r).to_string())).collect();
            let action = match &step.action {
                Action::Run(_) => Resolved::Run(script.clone()),
                Action::Command(argv) => Resolved::Command(argv.iter().map(|t| t.render_raw(&lookup)).collect()),
            };
            let env = step.env.iter().map(|(k, t)| (k.clone(), t.render_raw(&lookup))).collect();
            let image = step.image.as_ref().map(|t| t.render_raw(&lookup));
            let matrix = combo.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            graph.add_node(Instance { name, step: si, matrix, action, env, vars, image });
        }
        ranges.push(start..graph.node_count());
    }
    for (si, step) in pipeline.steps().iter().enumerate() {
        for &dep in &step.needs_idx {
            for from in ranges[dep].clone() {
                for to in ranges[si].clone() {
                    graph.add_edge(NodeIndex::new(from), NodeIndex::new(to), ());
                }
            }
        }
    }
    let order = stable_topo(&graph);
    Plan {
        pipeline: pipeline.name().to_string(),
        pipeline_hash: pipeline.hash().to_string(),
        run_id: run_id.to_string(),
        params: params.clone(),
        env,
        graph,
        order,
    }
}

/// Kahn's algorithm with a min-heap on node index: dependencies first, then file order.
fn stable_topo(graph: &DiGraph<Instance, ()>) -> Vec<NodeIndex> {
    let mut indegree: Vec<usize> =
        graph.node_indices().map(|n| graph.neighbors_directed(n, Direction::Incoming).count()).collect();
    let mut ready: BinaryHeap<Reverse<usize>> =
        indegree.iter().enumerate().filter(|(_, d)| **d == 0).map(|(i, _)| Reverse(i)).collect();
    let mut order = Vec::with_capacity(graph.node_count());
    while let Some(Reverse(i)) = ready.pop() {
        let node = NodeIndex::new(i);
        order.push(node);
        for next in graph.neighbors_directed(node, Direction::Outgoing) {
            let d = &mut indegree[next.index()];
            *d -= 1;
            if *d == 0 {
                ready.push(Reverse(next.index()));
            }
        }
    }
    order
}

/// Every combination of a step's matrix, first key slowest; one empty combination for a
/// plain step.
fn combinations(step: &crate::spec::Step) -> Vec<Vec<(&str, &str)>> {
    let mut out: Vec<Vec<(&str, &str)>> = vec![Vec::new()];
    for axis in &step.matrix {
        let mut next = Vec::with_capacity(out.len() * axis.values.len());
        for combo in &out {
            for v in &axis.values {
                let mut c = combo.clone();
                c.push((axis.key.as_str(), v.text.as_str()));
                next.push(c);
            }
        }
        out = next;
    }
    out
}

/// `train[lr=0.01,epochs=50]`; a value holding `[],=`, quotes or spaces is written in quotes.
pub fn instance_name(step: &str, combo: &[(&str, &str)]) -> String {
    if combo.is_empty() {
        return step.to_string();
    }
    let parts: Vec<String> = combo
        .iter()
        .map(|(k, v)| {
            let plain =
                !v.is_empty() && !v.chars().any(|c| "[],=\"'".contains(c) || c.is_whitespace() || c.is_control());
            if plain { format!("{k}={v}") } else { format!("{k}={v:?}") }
        })
        .collect();
    format!("{step}[{}]", parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Limits, load};

    fn planned(yaml: &str, overrides: &[(&str, &str)]) -> Plan {
        let pipeline = load(yaml, &Limits::default()).unwrap_or_else(|d| panic!("{d:#?}"));
        let overrides: Vec<(String, String)> = overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let params = resolve_params(&pipeline, &overrides).unwrap_or_else(|d| panic!("{d:#?}"));
        plan(&pipeline, &params, "run-1")
    }

    fn order(p: &Plan) -> Vec<&str> {
        p.order.iter().map(|&n| p.graph[n].name.as_str()).collect()
    }

    #[test]
    fn matrix_expands_first_key_slowest_and_fans_in() {
        let p = planned(
            "name: m\nsteps:\n  prep:\n    run: 'true'\n  train:\n    needs: [prep]\n    matrix: {lr: [0.01, 0.1], epochs: [50, 200]}\n    command: [t, '--lr={{ matrix.lr }}', '{{ step.name }}']\n  pick:\n    needs: [train]\n    run: 'true'\n",
            &[],
        );
        assert_eq!(
            order(&p),
            [
                "prep",
                "train[lr=0.01,epochs=50]",
                "train[lr=0.01,epochs=200]",
                "train[lr=0.1,epochs=50]",
                "train[lr=0.1,epochs=200]",
                "pick"
            ]
        );
        let pick = p.order[5];
        assert_eq!(p.needs(pick).count(), 4, "fan-in waits for every instance");
        let first = &p.graph[p.order[1]];
        assert_eq!(
            first.action,
            Resolved::Command(vec!["t".into(), "--lr=0.01".into(), "train[lr=0.01,epochs=50]".into()])
        );
        assert_eq!(
            first.matrix,
            vec![("lr".to_string(), "0.01".to_string()), ("epochs".to_string(), "50".to_string())]
        );
    }

    #[test]
    fn order_is_topological_then_declaration_order() {
        // d is declared first but needs c; b and c are independent.
        let p = planned(
            "name: o\nsteps:\n  d:\n    needs: [c]\n    run: 'true'\n  a:\n    run: 'true'\n  c:\n    needs: [a]\n    run: 'true'\n  b:\n    needs: [a]\n    run: 'true'\n",
            &[],
        );
        assert_eq!(order(&p), ["a", "c", "d", "b"]);
        let again = planned(
            "name: o\nsteps:\n  d:\n    needs: [c]\n    run: 'true'\n  a:\n    run: 'true'\n  c:\n    needs: [a]\n    run: 'true'\n  b:\n    needs: [a]\n    run: 'true'\n",
            &[],
        );
        assert_eq!(order(&p), order(&again), "the same input plans the same way");
    }

    #[test]
    fn params_render_and_become_environment() {
        let p = planned(
            "name: e\nparams:\n  rows: 10\n  ratio: 0.5\n  tag: {type: string, default: a b}\n  on_: true\nsteps:\n  s:\n    env: {ROWS: '{{ params.rows }}', ID: '{{ run.id }}'}\n    run: echo {{ params.tag }} {{ params.ratio }} {{ params.on_ }}\n",
            &[("rows", "500")],
        );
        let s = &p.graph[p.order[0]];
        assert_eq!(
            s.action,
            Resolved::Run(r#"echo "${WEIR_PARAM_TAG}" "${WEIR_PARAM_RATIO}" "${WEIR_PARAM_ON_}""#.into())
        );
        assert_eq!(
            s.vars,
            [("WEIR_PARAM_TAG", "a b"), ("WEIR_PARAM_RATIO", "0.5"), ("WEIR_PARAM_ON_", "true")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert_eq!(s.env, vec![("ROWS".to_string(), "500".to_string()), ("ID".to_string(), "run-1".to_string())]);
        assert_eq!(
            p.env,
            [
                ("WEIR_PARAM_ROWS", "500"),
                ("WEIR_PARAM_RATIO", "0.5"),
                ("WEIR_PARAM_TAG", "a b"),
                ("WEIR_PARAM_ON_", "true")
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }

    #[test]
    fn overrides_are_checked_against_declarations() {
        let pipeline = load(
            "name: c\nparams:\n  n: {type: int, default: 1, min: 0, max: 10}\n  f: 0.5\n  b: false\n  s: {type: string, default: x, enum: [x, y]}\n  req: {type: string}\nsteps:\n  a:\n    run: 'true'\n",
            &Limits::default(),
        )
        .unwrap();
        let check = |overrides: &[(&str, &str)]| -> Result<Params, Vec<String>> {
            let o: Vec<(String, String)> = overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            resolve_params(&pipeline, &o).map_err(|d| d.into_iter().map(|d| d.message).collect())
        };
        let ok = check(&[("req", "r"), ("n", "10"), ("f", "2"), ("b", "true"), ("s", "y")]).unwrap();
        assert_eq!(ok.get("f"), Some(&Value::Float(2.0)));
        assert_eq!(ok.get("n"), Some(&Value::Int(10)));
        let cases: [(&[(&str, &str)], &str); 7] = [
            (&[("req", "r"), ("n", "x")], "param `n` expects an int, got `x`"),
            (&[("req", "r"), ("n", "11")], "param `n`: `11` is above the maximum 10"),
            (&[("req", "r"), ("f", "nan")], "param `f` expects a finite float, got `nan`"),
            (&[("req", "r"), ("b", "yes")], "param `b` expects `true` or `false`, got `yes`"),
            (&[("req", "r"), ("s", "z")], "param `s`: `z` is not one of `x`, `y`"),
            (&[("req", "r"), ("nn", "1")], "unknown param `nn`"),
            (&[], "param `req` is required"),
        ];
        for (overrides, expected) in cases {
            let errors = check(overrides).unwrap_err();
            assert_eq!(errors, vec![expected.to_string()], "{overrides:?}");
        }
    }

    #[test]
    fn instance_names_quote_awkward_values() {
        assert_eq!(instance_name("s", &[]), "s");
        assert_eq!(instance_name("s", &[("a", "1"), ("b", "x y")]), "s[a=1,b=\"x y\"]");
        assert_eq!(instance_name("s", &[("a", "p,q=r]")]), "s[a=\"p,q=r]\"]");
    }
}
