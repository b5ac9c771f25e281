//! Which instances a retry runs again and which it reuses from the run it retries. Without
//! `from`, every instance that succeeded in the earlier run (under the same instance name) is
//! reused and the rest run; with `from` (a step name), that step's instances and everything
//! downstream of them run again, and every other instance that succeeded is reused. Pure: the
//! engine loads the earlier run and performs the plan (`server/runs.rs`).

use petgraph::Direction;
use petgraph::graph::NodeIndex;

use super::InstanceId;
use crate::plan::Plan;
use crate::spec::Pipeline;

/// An instance of the run being retried, by its index there: its name and whether it
/// succeeded (or was cached).
#[derive(Clone, Copy, Debug)]
pub struct Earlier<'a> {
    pub name: &'a str,
    pub succeeded: bool,
}

/// What a retry does, instance by instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPlan {
    reuse: Vec<bool>,
    /// The instance names that run again, in plan order.
    pub rerun: Vec<String>,
    /// The instance names reused from the earlier run, in plan order.
    pub reused: Vec<String>,
}

impl RetryPlan {
    /// Whether instance `i` is reused from the earlier run.
    pub fn reuses(&self, i: InstanceId) -> bool {
        self.reuse.get(i.index()).copied().unwrap_or(false)
    }
}

/// The retry of a run planned as `plan` (of `pipeline`), whose instances were `earlier`, from
/// step `from` if given. A `from` that names no step of `pipeline` re-runs nothing more than
/// the failures: the caller checks the name first.
pub fn plan_retry(pipeline: &Pipeline, plan: &Plan, earlier: &[Earlier<'_>], from: Option<&str>) -> RetryPlan {
    // With `from`: the step's instances and everything reachable from them run again.
    let mut again = vec![from.is_none(); plan.graph.node_count()];
    if let Some(step) = from {
        let mut stack: Vec<NodeIndex> =
            plan.graph.node_indices().filter(|n| pipeline.steps()[plan.graph[*n].step].name == step).collect();
        while let Some(n) = stack.pop() {
            if !std::mem::replace(&mut again[n.index()], true) {
                stack.extend(plan.graph.neighbors_directed(n, Direction::Outgoing));
            }
        }
    }
    let mut reuse = vec![false; plan.graph.node_count()];
    let (mut rerun, mut reused) = (Vec::new(), Vec::new());
    for &n in &plan.order {
        let name = &plan.graph[n].name;
        let succeeded = earlier.get(n.index()).is_some_and(|e| e.succeeded && e.name == name.as_str());
        if succeeded && (from.is_none() || !again[n.index()]) {
            reuse[n.index()] = true;
            reused.push(name.clone());
        } else {
            rerun.push(name.clone());
        }
    }
    RetryPlan { reuse, rerun, reused }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{plan, resolve_params};
    use crate::spec::{Limits, load};

    const YAML: &str = "\
name: chain
steps:
  a:
    run: echo
  b:
    run: echo
    needs: [a]
  c:
    run: echo
    needs: [b]
  side:
    run: echo
";

    /// The retry of a run of `YAML` whose instances a, b, c, side ended `ok` (true: succeeded).
    fn check(ok: [bool; 4], from: Option<&str>, rerun: &[&str], reused: &[&str]) {
        let pipeline = load(YAML, &Limits::default()).unwrap();
        let params = resolve_params(&pipeline, &[]).unwrap();
        let plan = plan(&pipeline, &params, "r");
        let names: Vec<String> = plan.graph.node_indices().map(|n| plan.graph[n].name.clone()).collect();
        let earlier: Vec<Earlier> = names.iter().zip(ok).map(|(name, succeeded)| Earlier { name, succeeded }).collect();
        let got = plan_retry(&pipeline, &plan, &earlier, from);
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v
        };
        assert_eq!(
            (sorted(&got.rerun), sorted(&got.reused)),
            (
                rerun.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                reused.iter().map(|s| s.to_string()).collect::<Vec<_>>()
            )
        );
        for (i, name) in names.iter().enumerate() {
            assert_eq!(got.reuses(InstanceId(i as u32)), got.reused.contains(name), "{name}");
        }
    }

    #[test]
    fn without_from_the_successes_are_reused_and_the_rest_run() {
        check([true, false, false, true], None, &["b", "c"], &["a", "side"]);
        check([true, true, true, true], None, &[], &["a", "b", "c", "side"]);
        check([false, false, false, false], None, &["a", "b", "c", "side"], &[]);
    }

    #[test]
    fn from_a_step_runs_it_and_everything_downstream_again() {
        check([true, true, true, true], Some("b"), &["b", "c"], &["a", "side"]);
        check([true, true, true, true], Some("a"), &["a", "b", "c"], &["side"]);
        check([true, false, false, true], Some("c"), &["b", "c"], &["a", "side"]);
    }

    #[test]
    fn an_instance_renamed_since_is_not_reused() {
        let pipeline = load(YAML, &Limits::default()).unwrap();
        let plan = plan(&pipeline, &resolve_params(&pipeline, &[]).unwrap(), "r");
        let earlier = [Earlier { name: "other", succeeded: true }; 4];
        assert!(plan_retry(&pipeline, &plan, &earlier, None).reused.is_empty());
    }
}
