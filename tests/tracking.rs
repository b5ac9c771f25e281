//! Tracking and lineage end to end: a real server and worker over loopback run a three-step
//! pipeline (ingest writes a dataset from its `seed` param, prep transforms it, train writes a
//! model unique to its run and a `metrics.json` whose `rmse` is the `lr` param). Two runs on
//! the same seed share the dataset's digest, and lineage from either model walks back to it;
//! a third seed makes other data; downstream from the dataset lists what both runs made from
//! it; MetricHistory lists each run's rmse, oldest first.

use std::time::Duration;

use weir_proto::v1;
use weir_tests::{Cluster, step};

const MINUTE: Duration = Duration::from_secs(60);

pub const YAML: &str = r#"name: lineage-demo
params:
  seed: 1
  lr: 0.1
steps:
  ingest:
    run: echo "rows for seed $WEIR_PARAM_SEED" > $WEIR_OUTPUTS/data.csv
    outputs: [data.csv]
  prep:
    needs: [ingest]
    run: tr a-z A-Z < $WEIR_INPUTS/ingest/data.csv > $WEIR_OUTPUTS/features.csv
    outputs: [features.csv]
  train:
    needs: [prep]
    run: |
      (cat $WEIR_INPUTS/prep/features.csv; echo "$WEIR_RUN_ID") > $WEIR_OUTPUTS/model.bin
      echo "{\"rmse\": $WEIR_PARAM_LR}" > $WEIR_OUTPUTS/metrics.json
    outputs: [model.bin, metrics.json]
"#;

/// The digest of `path` among the outputs of instance `name`.
fn output(got: &v1::GetRunResponse, name: &str, path: &str) -> String {
    let files = &step(got, name).outputs.as_ref().expect("outputs").files;
    files.iter().find(|f| f.path == path).unwrap_or_else(|| panic!("{name} made no {path}: {files:?}")).digest.clone()
}

async fn lineage(c: &mut Cluster, target: &str, down: bool) -> v1::GetLineageResponse {
    let req = v1::GetLineageRequest { target: target.into(), down, depth: 0 };
    c.client.get_lineage(req).await.expect("lineage").into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_data_has_one_digest_and_lineage_walks_to_it_both_ways() {
    let mut c = Cluster::start(1, 2).await;
    let version = c.submit(YAML, None).await;
    let mut runs = Vec::new();
    for (seed, lr) in [("1", "0.5"), ("1", "0.4"), ("2", "0.6")] {
        let id = c.start_run(&version, &[("seed", seed), ("lr", lr)]).await;
        let got = c.wait(&id, MINUTE).await;
        assert_eq!(got.run.as_ref().unwrap().state(), v1::RunState::Succeeded, "{:#?}", got.steps);
        runs.push((id, got));
    }
    let data: Vec<String> = runs.iter().map(|(_, g)| output(g, "ingest", "data.csv")).collect();
    assert_eq!(data[0], data[1], "the same seed makes the same dataset");
    assert_ne!(data[0], data[2], "another seed, another dataset");
    let features = output(&runs[1].1, "prep", "features.csv");
    assert_eq!(features, output(&runs[0].1, "prep", "features.csv"));
    let models: Vec<String> = runs.iter().map(|(_, g)| output(g, "train", "model.bin")).collect();
    assert_ne!(models[0], models[1], "each model holds its run id");

    // Upstream from the second run's model: its own prep and ingest, down to the shared data.
    for (i, model) in models.iter().enumerate().take(2) {
        let up = lineage(&mut c, model, false).await;
        let chain: Vec<(&str, &str, &str)> =
            up.nodes.iter().map(|n| (n.digest.as_str(), n.path.as_str(), n.step.as_str())).collect();
        assert_eq!(
            chain,
            [
                (model.as_str(), "model.bin", "train"),
                (features.as_str(), "features.csv", "prep"),
                (data[0].as_str(), "data.csv", "ingest")
            ]
        );
        assert!(up.nodes.iter().all(|n| n.run_id == runs[i].0), "each node names the run that made it: {up:?}");
        assert!(up.nodes[2].links.is_empty() && !up.truncated, "the ingested data is where it ends");
    }
    let other = lineage(&mut c, &models[2][..12], false).await;
    assert_eq!(other.digest, models[2], "a unique prefix names the artifact");
    assert_eq!(other.nodes.last().unwrap().digest, data[2]);

    // Downstream from the shared dataset: the features, then both runs' models and metrics.
    let down = lineage(&mut c, &data[0], true).await;
    let reached: Vec<&str> = down.nodes.iter().map(|n| n.digest.as_str()).collect();
    assert_eq!(reached[..2], [data[0].as_str(), features.as_str()]);
    for (_, got) in &runs[..2] {
        for path in ["model.bin", "metrics.json"] {
            assert!(reached.contains(&output(got, "train", path).as_str()), "{path} missing from {reached:?}");
        }
    }
    assert_eq!(reached.len(), 6, "nothing of the third run: {reached:?}");
    assert!(!reached.contains(&models[2].as_str()));

    let missing = c
        .client
        .get_lineage(v1::GetLineageRequest { target: "0000000000000000".into(), down: false, depth: 0 })
        .await
        .expect_err("nobody made it");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert!(missing.message().contains("weir status RUN"), "{}", missing.message());

    let history = c
        .client
        .metric_history(v1::MetricHistoryRequest {
            pipeline: "lineage-demo".into(),
            metric: "rmse".into(),
            step: String::new(),
            limit: 0,
        })
        .await
        .expect("history")
        .into_inner();
    let points: Vec<(&str, &str, f64)> =
        history.points.iter().map(|p| (p.run_id.as_str(), p.step.as_str(), p.value)).collect();
    assert_eq!(
        points,
        [(runs[0].0.as_str(), "train", 0.5), (runs[1].0.as_str(), "train", 0.4), (runs[2].0.as_str(), "train", 0.6)]
    );
    let unknown = c
        .client
        .metric_history(v1::MetricHistoryRequest {
            pipeline: "nope".into(),
            metric: "rmse".into(),
            ..Default::default()
        })
        .await
        .expect_err("no such pipeline");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    c.stop().await;
}

const MODEL_YAML: &str = r#"name: lineage-model
steps:
  ingest:
    run: echo "rows" > $WEIR_OUTPUTS/data.csv
    outputs: [data.csv]
  train:
    needs: [ingest]
    run: (cat $WEIR_INPUTS/ingest/data.csv; echo "$WEIR_RUN_ID") > $WEIR_OUTPUTS/model.bin
    outputs: [model.bin]
    register:
      model: churn
      file: model.bin
      alias: production
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lineage_of_a_model_alias_starts_at_its_run() {
    let mut c = Cluster::start(1, 2).await;
    let version = c.submit(MODEL_YAML, None).await;
    let id = c.start_run(&version, &[]).await;
    let got = c.wait(&id, MINUTE).await;
    assert_eq!(got.run.as_ref().unwrap().state(), v1::RunState::Succeeded, "{:#?}", got.steps);
    let up = lineage(&mut c, "churn@production", false).await;
    assert_eq!(up.model, "churn version 1");
    assert_eq!(up.digest, output(&got, "train", "model.bin"));
    assert_eq!((up.nodes[0].run_id.as_str(), up.nodes[0].step.as_str()), (id.as_str(), "train"));
    assert_eq!(up.nodes.last().unwrap().digest, output(&got, "ingest", "data.csv"));
    let latest = lineage(&mut c, "churn", false).await;
    assert_eq!(latest.digest, up.digest);
    let missing = c
        .client
        .get_lineage(v1::GetLineageRequest { target: "churn@staging".into(), down: false, depth: 0 })
        .await
        .expect_err("no such alias");
    assert_eq!(missing.code(), tonic::Code::NotFound, "{}", missing.message());
    c.stop().await;
}

const CACHED_YAML: &str = r#"name: lineage-cached
steps:
  ingest:
    run: echo "rows" > $WEIR_OUTPUTS/data.csv
    outputs: [data.csv]
    cache: true
  train:
    needs: [ingest]
    run: (cat $WEIR_INPUTS/ingest/data.csv; echo "$WEIR_RUN_ID") > $WEIR_OUTPUTS/model.bin
    outputs: [model.bin]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_step_is_in_its_own_runs_lineage() {
    let mut c = Cluster::start(1, 2).await;
    let version = c.submit(CACHED_YAML, None).await;
    let mut runs = Vec::new();
    for _ in 0..2 {
        let id = c.start_run(&version, &[]).await;
        let got = c.wait(&id, MINUTE).await;
        assert_eq!(got.run.as_ref().unwrap().state(), v1::RunState::Succeeded, "{:#?}", got.steps);
        runs.push((id, got));
    }
    assert_eq!(step(&runs[1].1, "ingest").state(), v1::StepState::Cached, "{:#?}", runs[1].1.steps);
    let model = output(&runs[1].1, "train", "model.bin");
    let up = lineage(&mut c, &model, false).await;
    let who: Vec<(&str, &str)> = up.nodes.iter().map(|n| (n.run_id.as_str(), n.step.as_str())).collect();
    assert_eq!(who, [(runs[1].0.as_str(), "train"), (runs[1].0.as_str(), "ingest")]);
    let data = output(&runs[0].1, "ingest", "data.csv");
    let consumers = lineage(&mut c, &data, true).await;
    assert_eq!(consumers.nodes.len(), 3, "both models: {consumers:?}");
    c.stop().await;
}

/// The example pipeline, twice on the same params: `churn@production` walks back through
/// deploy, validate, the four train instances and preprocess to ingest's `raw.csv`, and the
/// second run's version (its ingest, preprocess and train taken from the cache) reaches the very
/// same dataset digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_models_lineage_reaches_the_ingested_dataset_digest() {
    let mut c = Cluster::start(1, 2).await;
    let folder = weir_tests::root().join("pipelines/ml-retrain");
    let yaml = std::fs::read_to_string(folder.join("pipeline.yaml")).unwrap();
    let version = c.submit(&yaml, Some(&folder)).await;
    let mut datasets = Vec::new();
    for n in 1..=2 {
        let run = c.start_run(&version, &[("rows", "400")]).await;
        let got = c.wait(&run, MINUTE).await;
        assert_eq!(got.run.as_ref().unwrap().state(), v1::RunState::Succeeded, "{:#?}", got.steps);
        let raw = output(&got, "ingest", "raw.csv");
        // The second run's deploy writes the same model.json: the same file registers once,
        // so both runs' model is version 1.
        let target = "churn@1".to_string();
        let up = lineage(&mut c, &target, false).await;
        assert_eq!(up.digest, output(&got, "deploy", "model.json"), "{target} is this run's model");
        let steps: Vec<&str> = up.nodes.iter().map(|n| n.step.split('[').next().unwrap()).collect();
        for made_by in ["deploy", "validate", "train", "preprocess", "ingest"] {
            assert!(steps.contains(&made_by), "{made_by} missing from {target}'s lineage: {up:#?}");
        }
        let dataset = up.nodes.iter().find(|n| n.path == "raw.csv").expect("the dataset");
        assert_eq!((dataset.digest.as_str(), dataset.links.len()), (raw.as_str(), 0), "ingested from nothing");
        datasets.push(raw);
        if n == 2 {
            assert_eq!(step(&got, "ingest").state(), v1::StepState::Cached, "the second run's data is the first's");
        }
    }
    assert_eq!(datasets[0], datasets[1], "identical data, one digest");
    let m = c.client.get_model(v1::GetModelRequest { name: "churn".into() }).await.expect("model").into_inner();
    assert_eq!(m.versions.len(), 1, "the same model file twice is one version: {m:#?}");
    let production = lineage(&mut c, "churn@production", false).await;
    assert!(production.model.starts_with("churn version 1"), "{}", production.model);
    assert!(production.nodes.iter().any(|n| n.digest == datasets[0] && n.step == "ingest"), "{production:#?}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metric_several_steps_write_needs_its_step_named() {
    let mut c = Cluster::start(1, 2).await;
    let yaml = r#"name: two-rmse
steps:
  train:
    run: |
      echo '{"rmse": 0.5}' > $WEIR_OUTPUTS/metrics.json
    outputs: [metrics.json]
  validate:
    needs: [train]
    run: |
      echo '{"rmse": 0.4}' > $WEIR_OUTPUTS/metrics.json
    outputs: [metrics.json]
"#;
    let version = c.submit(yaml, None).await;
    let run = c.start_run(&version, &[]).await;
    c.wait(&run, MINUTE).await;
    let ask = |step: &str| v1::MetricHistoryRequest {
        pipeline: "two-rmse".into(),
        metric: "rmse".into(),
        step: step.into(),
        limit: 0,
    };
    let mixed = c.client.metric_history(ask("")).await.expect_err("two steps write rmse");
    assert_eq!(mixed.code(), tonic::Code::InvalidArgument);
    assert!(mixed.message().contains("written by several steps of two-rmse (train, validate)"), "{}", mixed.message());
    let one = c.client.metric_history(ask("validate")).await.unwrap().into_inner();
    let values: Vec<(&str, f64)> = one.points.iter().map(|p| (p.step.as_str(), p.value)).collect();
    assert_eq!(values, [("validate", 0.4)]);
    c.stop().await;
}
