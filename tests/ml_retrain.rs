//! The example pipeline's step code really works with what the planner produces: every
//! planned instance of `pipelines/ml-retrain` runs in plan order with its resolved command,
//! the `WEIR_*` environment, cwd at the pipeline folder and the outputs of what it needs under
//! `$WEIR_INPUTS/<instance>/`; `when` and `gate` are evaluated with the expression language
//! over params and `metrics.json`. A stand-in for the engine until runs exist; it needs python3.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use weir_core::expr::{Ref, Value};
use weir_core::plan::{self, Resolved};
use weir_core::spec::{self, Limits};

fn pipeline_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("root").join("pipelines/ml-retrain")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

fn metrics(dir: &Path) -> HashMap<String, f64> {
    let text = std::fs::read_to_string(dir.join("metrics.json")).expect("metrics.json");
    let json: serde_json::Value = serde_json::from_str(&text).expect("metrics.json is JSON");
    json.as_object().expect("an object").iter().filter_map(|(k, v)| Some((k.clone(), v.as_f64()?))).collect()
}

#[test]
fn every_planned_step_runs_and_the_gate_passes() {
    let dir = pipeline_dir();
    let text = std::fs::read_to_string(dir.join("pipeline.yaml")).expect("read");
    let pipeline = spec::load(&text, &Limits::default()).expect("valid");
    let params = plan::resolve_params(&pipeline, &[("rows".into(), "600".into())]).expect("params");
    let plan = plan::plan(&pipeline, &params, "test-run");
    let work = tempfile::tempdir().expect("tempdir");
    let param = |name: &str| params.get(name).map(|v| v.to_expr());

    let mut ran = Vec::new();
    for &n in &plan.order {
        let inst = &plan.graph[n];
        let step = &pipeline.steps()[inst.step];
        let outputs = work.path().join("out").join(&inst.name);
        let inputs = work.path().join("in").join(&inst.name);
        std::fs::create_dir_all(&outputs).expect("mkdir");
        std::fs::create_dir_all(&inputs).expect("mkdir");
        for dep in plan.needs(n) {
            copy_dir(&work.path().join("out").join(&dep.name), &inputs.join(&dep.name));
        }
        let matrix: HashMap<&str, &str> = inst.matrix.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let lookup = |r: &Ref| -> Option<Value> {
            match r {
                Ref::Param(p) => param(p),
                Ref::Matrix(k) => matrix.get(k.as_str()).map(|v| Value::Str(v.to_string())),
                Ref::Metric(m) => metrics(&outputs).get(m).map(|v| Value::Float(*v)),
                Ref::StepMetric { .. } | Ref::CurrentMetric(_) | Ref::Explain { .. } => None,
            }
        };
        if let Some(when) = &step.when {
            assert!(when.eval_bool(&lookup).expect("when evaluates"), "{}: when is false", inst.name);
        }
        let mut cmd = match &inst.action {
            Resolved::Run(script) => {
                let mut c = Command::new("sh");
                c.arg("-c").arg(script);
                c
            }
            Resolved::Command(argv) => {
                let mut c = Command::new(&argv[0]);
                c.args(&argv[1..]);
                c
            }
        };
        cmd.current_dir(&dir)
            .envs(plan.values_env(n))
            .env("WEIR_INPUTS", &inputs)
            .env("WEIR_OUTPUTS", &outputs)
            .env("WEIR_RUN_ID", &plan.run_id)
            .env("WEIR_STEP", &inst.name);
        let out = cmd.output().expect("python3 and sh are installed");
        assert!(
            out.status.success(),
            "{} failed:\n{}\n{}",
            inst.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for file in &step.outputs {
            assert!(outputs.join(file).exists(), "{} did not write its output {file}", inst.name);
        }
        if let Some(gate) = &step.gate {
            let (passed, seen) = gate.eval_bool_traced(&lookup);
            assert!(passed.expect("gate evaluates"), "{}: gate `{}` failed with {seen:?}", inst.name, gate.source());
        }
        ran.push(inst.name.clone());
    }
    assert_eq!(ran.len(), 8);
    let best = metrics(&work.path().join("out/validate"));
    assert!(best["rmse"] < 0.5, "{best:?}");
    let deployed = metrics(&work.path().join("out/deploy"));
    assert_eq!(
        deployed["rmse"], best["rmse"],
        "deploy's metrics.json carries the selected model's rmse for the registry's gate"
    );
    let manifest = std::fs::read_to_string(work.path().join("out/deploy/manifest.json")).expect("manifest");
    assert!(manifest.contains("test-run") && manifest.contains("churn"), "{manifest}");
}
