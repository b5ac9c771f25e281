//! Pipeline text in, never a panic out: `spec::load` under the default limits; a valid pipeline
//! has its params resolved (no overrides) and is planned, and the plan must hold every instance
//! once, with every edge going forward in the order; an invalid one has its diagnostics rendered,
//! which exercises the span arithmetic of the renderer against arbitrary source text.

#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use weir_core::diag::Renderer;
use weir_core::graph::{self, Format};
use weir_core::plan;
use weir_core::spec::{self, Limits};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match spec::load(text, &Limits::default()) {
        Ok(pipeline) => {
            let params = match plan::resolve_params(&pipeline, &[]) {
                Ok(params) => params,
                Err(diags) => {
                    assert!(!diags.is_empty(), "resolve_params failed without saying why");
                    render(text, &diags);
                    return;
                }
            };
            let plan = plan::plan(&pipeline, &params, "fuzz-run");
            let count = plan.graph.node_count();
            assert_eq!(count, pipeline.instance_count(), "plan size differs from the instance count");
            assert_eq!(plan.order.len(), count, "the order misses or repeats instances");
            let mut position = vec![usize::MAX; count];
            for (i, n) in plan.order.iter().enumerate() {
                assert_eq!(position[n.index()], usize::MAX, "instance {} is ordered twice", n.index());
                position[n.index()] = i;
            }
            for e in plan.graph.raw_edges() {
                assert!(
                    position[e.source().index()] < position[e.target().index()],
                    "edge {} -> {} goes backwards in the order",
                    plan.graph[e.source()].name,
                    plan.graph[e.target()].name,
                );
            }
            let mut names = HashSet::with_capacity(count);
            for n in plan.graph.node_indices() {
                assert!(names.insert(plan.graph[n].name.as_str()), "duplicate instance {}", plan.graph[n].name);
            }
            if count <= 1000 {
                let _ = plan.to_json();
                let _ = graph::render(&pipeline, &plan, Format::Mermaid);
                let _ = graph::render(&pipeline, &plan, Format::Dot);
            }
        }
        Err(diags) => {
            assert!(!diags.is_empty(), "load failed without a diagnostic");
            render(text, &diags);
        }
    }
});

fn render(text: &str, diags: &[weir_core::diag::Diagnostic]) {
    let plain = Renderer { path: "fuzz.yaml", source: text, color: false }.render_all(diags);
    assert!(!plain.is_empty());
    let _ = Renderer { path: "fuzz.yaml", source: text, color: true }.render_all(diags);
}
