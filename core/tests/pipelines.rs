//! Every pipeline shipped under `pipelines/` validates, plans, and conforms to the JSON Schema
//! that `weir schema` prints; the committed `weir.schema.json` is that schema.

use std::path::{Path, PathBuf};

use weir_core::spec::{self, Limits};
use weir_core::{plan, schema};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn pipeline_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![root().join("pipelines")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read pipelines/") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn every_shipped_pipeline_validates_and_plans() {
    let files = pipeline_files();
    assert!(files.iter().any(|f| f.ends_with("ml-retrain/pipeline.yaml")), "{files:?}");
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let pipeline = spec::load(&text, &Limits::default()).unwrap_or_else(|diags| {
            let path = file.display().to_string();
            panic!("{}", weir_core::diag::Renderer { path: &path, source: &text, color: false }.render_all(&diags))
        });
        let params = plan::resolve_params(&pipeline, &[]).expect("defaults cover every param");
        let plan = plan::plan(&pipeline, &params, "test");
        assert_eq!(plan.order.len(), pipeline.instance_count(), "{}", file.display());
    }
}

#[test]
fn every_shipped_pipeline_conforms_to_the_json_schema() {
    let schema = schema::json_schema();
    let validator = jsonschema::draft7::new(&schema).expect("the schema compiles");
    for file in pipeline_files() {
        let text = std::fs::read_to_string(&file).expect("read");
        let json = spec::yaml_to_json(&text, &Limits::default()).expect("yaml");
        let errors: Vec<String> =
            validator.iter_errors(&json).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", file.display());
    }
}

#[test]
fn the_json_schema_rejects_what_the_validator_rejects() {
    let schema = schema::json_schema();
    let validator = jsonschema::draft7::new(&schema).expect("the schema compiles");
    let bad = [
        "name: x\nsteps:\n  a:\n    run: 'true'\n    neds: [b]\n",
        "name: x\nsteps:\n  a:\n    run: 'true'\n    command: ['true']\n",
        "name: x\nsteps:\n  a:\n    run: 'true'\n    timeout: 5 minutes\n",
        "name: x\nsteps:\n  a:\n    run: 'true'\n    outputs: [../up]\n",
    ];
    for text in bad {
        let json = spec::yaml_to_json(text, &Limits::default()).expect("yaml");
        assert!(!validator.is_valid(&json), "schema accepted:\n{text}");
        assert!(spec::load(text, &Limits::default()).is_err(), "validator accepted:\n{text}");
    }
}

#[test]
fn committed_schema_file_is_current() {
    let expected = serde_json::to_string_pretty(&schema::json_schema()).expect("json") + "\n";
    let path = root().join("weir.schema.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == expected,
        "weir.schema.json is stale: run `cargo run -p weir-engine --bin weir -- schema > weir.schema.json`"
    );
}
