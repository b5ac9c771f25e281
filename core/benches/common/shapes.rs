//! Pipeline text for the benchmark shapes, generated in memory. Shared by `benches/plan.rs` and
//! `examples/plan_memory.rs` (included with `#[path]`) so both measure exactly the same text.
//! `pipelines/bench/generate.py` writes the same shapes at small sizes as files.

use std::fmt::Write;

/// The shapes a benchmark pipeline can have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `s0 -> s1 -> ... -> s(n-1)`: each step needs the one before it.
    Chain,
    /// `root -> (n - 2 plain steps, each needing root) -> sink`, the sink needing all of them.
    Fanout,
    /// `start -> work[i=0..n-2) -> end`: one matrix step with `n - 2` values on one axis.
    Matrix,
}

impl Shape {
    pub fn name(self) -> &'static str {
        match self {
            Shape::Chain => "chain",
            Shape::Fanout => "fanout",
            Shape::Matrix => "matrix",
        }
    }
}

/// The text of a pipeline of `steps` step instances (after matrix expansion) of shape `shape`.
/// Every step runs `true`. Fan-out shapes need `steps >= 3`.
pub fn pipeline(shape: Shape, steps: usize) -> String {
    let width = (steps.max(2) - 1).to_string().len().max(4);
    let mut t = String::with_capacity(steps * 48 + 256);
    let _ = writeln!(t, "name: {}-{steps}", shape.name());
    let _ = writeln!(t, "description: {} of {steps} step instances (benchmark)", shape.name());
    t.push_str("steps:\n");
    match shape {
        Shape::Chain => {
            for i in 0..steps {
                let _ = writeln!(t, "  s{i:0width$}:");
                if i > 0 {
                    let _ = writeln!(t, "    needs: s{:0width$}", i - 1);
                }
                t.push_str("    run: \"true\"\n");
            }
        }
        Shape::Fanout => {
            assert!(steps >= 3, "a fan-out has at least 3 steps");
            t.push_str("  root:\n    run: \"true\"\n");
            for i in 1..steps - 1 {
                let _ = writeln!(t, "  w{i:0width$}:\n    needs: root\n    run: \"true\"");
            }
            t.push_str("  sink:\n    needs: [");
            flow_list(&mut t, (1..steps - 1).map(|i| format!("w{i:0width$}")), 13);
            t.push_str("]\n    run: \"true\"\n");
        }
        Shape::Matrix => {
            assert!(steps >= 3, "a fan-out has at least 3 steps");
            t.push_str("  start:\n    run: \"true\"\n");
            t.push_str("  work:\n    needs: start\n    matrix:\n      i: [");
            flow_list(&mut t, (0..steps - 2).map(|i| i.to_string()), 10);
            t.push_str("]\n    run: \"true\"\n");
            t.push_str("  end:\n    needs: work\n    run: \"true\"\n");
        }
    }
    t
}

/// Items separated by `, `, a line break (continuation indented by `indent`) every 10 items.
fn flow_list(t: &mut String, items: impl Iterator<Item = String>, indent: usize) {
    for (k, item) in items.enumerate() {
        if k > 0 {
            t.push(',');
            if k % 10 == 0 {
                t.push('\n');
                t.extend(std::iter::repeat_n(' ', indent));
            } else {
                t.push(' ');
            }
        }
        t.push_str(&item);
    }
}
