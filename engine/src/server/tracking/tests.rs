//! The lineage index and walk and the metric history against a real store in a temporary
//! folder: runs are created and driven through `Engine::apply` (leased, then succeeded with a
//! manifest), so the index is written by the real success hook inside the real batch.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::store::{PipelineVersion, Trigger};
use weir_core::run::Event;
use weir_data::artifact::Entry;

const YAML: &str = "\
name: ml
params:
  seed: {type: int, default: 1}
  lr: {type: float, default: 0.1}
steps:
  ingest:
    run: echo
  prep:
    run: echo
    needs: [ingest]
  train:
    run: echo
    needs: [prep]
";

fn engine(dir: &std::path::Path) -> Engine {
    let e = crate::server::testkit::engine_on(dir, crate::clock::Clock::at(Millis(1_800_000_000_000)));
    let version = PipelineVersion {
        name: "ml".into(),
        yaml: YAML.into(),
        bundle_digest: None,
        submitted_at: Millis(1),
        file: None,
    };
    e.store.put_pipeline_version("v1", &version).unwrap();
    e
}

fn manifest(files: &[(&str, &str)]) -> Manifest {
    Manifest::new(
        files
            .iter()
            .map(|(path, text)| Entry {
                path: path.to_string(),
                digest: Digest::of(text.as_bytes()),
                size: text.len() as u64,
                executable: false,
            })
            .collect(),
    )
    .unwrap()
}

/// Leases and succeeds instance `name` of `run` with `files` and `metrics`.
fn succeed(e: &Engine, run: &str, name: &str, files: &[(&str, &str)], metrics: &[(&str, f64)]) {
    let mut st = e.lock();
    let live = st.runs.get(run).unwrap();
    let i = live.machine.find(name).unwrap();
    let attempt = live.machine.live_attempt(i).unwrap();
    e.apply(&mut st, run, Event::Leased { attempt, worker: "w".into() }, None).unwrap();
    let metrics: BTreeMap<String, f64> = metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    e.apply(&mut st, run, Event::Succeeded { attempt, metrics }, Some(&manifest(files))).unwrap();
}

/// A whole run: ingest writes a dataset from `seed`, prep a feature file from it, train a
/// model unique to the run (its id is in it) and an `rmse`.
fn run(e: &Engine, seed: &str, lr: &str, rmse: f64) -> (String, [Digest; 3]) {
    // Runs are ordered by creation time in milliseconds: give each its own.
    e.clock.advance(Duration::from_millis(3));
    let id = {
        let mut st = e.lock();
        let overrides = vec![("seed".to_string(), seed.to_string()), ("lr".to_string(), lr.to_string())];
        e.create_run(&mut st, "v1", &overrides, Trigger::Manual { user: None }, false, None).unwrap()
    };
    let data = format!("rows of seed {seed}");
    let features = format!("features of {data}");
    let model = format!("model of {id}");
    succeed(e, &id, "ingest", &[("data.csv", &data)], &[]);
    succeed(e, &id, "prep", &[("features.csv", &features), ("stats.json", &stats(seed))], &[]);
    succeed(e, &id, "train", &[("model.bin", &model)], &[("rmse", rmse), ("acc", 0.9)]);
    e.commit().unwrap();
    assert_eq!(e.store.run(&id).unwrap().unwrap().state, weir_core::run::RunState::Succeeded);
    (id, [Digest::of(data.as_bytes()), Digest::of(features.as_bytes()), Digest::of(model.as_bytes())])
}

fn stats(seed: &str) -> String {
    format!("{{\"seed\": {seed}}}")
}

fn lineage(e: &Engine, target: &str, down: bool, depth: u32) -> Result<Lineage, ApiError> {
    e.lineage(target, down, depth)
}

fn digests(r: &Lineage) -> Vec<String> {
    r.nodes.iter().map(|n| n.digest.clone()).collect()
}

#[test]
fn a_success_indexes_its_outputs_as_produced_and_its_inputs_as_consumed() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let (id, [data, features, model]) = run(&e, "1", "0.1", 0.5);
    let made = e.store.producers(&data, 10).unwrap();
    assert_eq!(made.len(), 1);
    assert_eq!((made[0].run.as_str(), made[0].value.step.as_str()), (id.as_str(), "ingest"));
    assert_eq!((made[0].value.path.as_str(), made[0].value.needs.clone()), ("data.csv", vec![]));
    let prep = &e.store.producers(&features, 10).unwrap()[0];
    assert_eq!((prep.value.step.as_str(), prep.value.needs.clone()), ("prep", vec![0]));
    let fed = e.store.consumers(&data, 10).unwrap();
    assert_eq!(fed.len(), 1);
    assert_eq!((fed[0].value.step.as_str(), fed[0].value.from, fed[0].value.path.as_str()), ("prep", 0, "data.csv"));
    let fed = e.store.consumers(&features, 10).unwrap();
    assert_eq!(fed[0].value.step, "train");
    assert!(e.store.consumers(&model, 10).unwrap().is_empty(), "nothing took the model");
    // Survives a reopen: it was in the success's own batch.
    drop(e);
    let store = crate::store::testkit::reopen(&dir.path().join("db"));
    assert_eq!(store.producers(&model, 10).unwrap()[0].value.path, "model.bin");
}

#[test]
fn upstream_walks_from_a_model_back_to_the_ingested_data_of_its_own_run() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let (r1, [d1, f1, _]) = run(&e, "1", "0.1", 0.5);
    let (r2, [d2, f2, m2]) = run(&e, "1", "0.2", 0.4);
    let (_, [d3, _, _]) = run(&e, "2", "0.1", 0.6);
    assert_eq!((d1, f1), (d2, f2), "identical data, identical digests");
    assert_ne!(d1, d3, "another seed, another dataset");

    let up = lineage(&e, &m2.to_string(), false, 0).unwrap();
    assert_eq!(up.digest, m2.to_string());
    let stats = Digest::of(stats("1").as_bytes()).to_string();
    assert_eq!(digests(&up), [m2.to_string(), f2.to_string(), stats.clone(), d2.to_string()]);
    let who: Vec<(&str, &str, u32)> = up.nodes.iter().map(|n| (n.run_id.as_str(), n.step.as_str(), n.depth)).collect();
    assert_eq!(
        who,
        [(r2.as_str(), "train", 0), (r2.as_str(), "prep", 1), (r2.as_str(), "prep", 1), (r2.as_str(), "ingest", 2)]
    );
    assert_eq!(up.nodes[0].links, [f2.to_string(), stats]);
    assert_eq!(up.nodes[1].links, [d2.to_string()]);
    assert!(up.nodes[3].links.is_empty(), "the ingested data came from nothing");
    assert!(up.truncated.is_none());
    assert_eq!((up.nodes[0].path.as_str(), up.nodes[3].path.as_str()), ("model.bin", "data.csv"));

    // The dataset alone: the first run that made those bytes.
    let data = lineage(&e, &d1.to_string()[..10], false, 0).unwrap();
    assert_eq!((data.nodes.len(), data.nodes[0].run_id.as_str()), (1, r1.as_str()));

    let shallow = lineage(&e, &m2.to_string(), false, 1).unwrap();
    assert_eq!(shallow.nodes.len(), 3);
    assert!(shallow.truncated.as_deref().is_some_and(|r| r.contains("depth 1")), "{shallow:?}");
}

#[test]
fn downstream_lists_what_a_dataset_fed_in_every_run_once() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let (_, [d, f, m1]) = run(&e, "1", "0.1", 0.5);
    let (_, [_, _, m2]) = run(&e, "1", "0.2", 0.4);
    let (_, [_, _, m3]) = run(&e, "2", "0.1", 0.6);
    let down = lineage(&e, &d.to_string(), true, 0).unwrap();
    let mut got = digests(&down);
    let stats = Digest::of(stats("1").as_bytes()).to_string();
    got[3..].sort();
    let mut models = [m1.to_string(), m2.to_string()];
    models.sort();
    assert_eq!(got[..3], [d.to_string(), f.to_string(), stats.clone()]);
    assert_eq!(got[3..], models, "both runs' models, in run id order");
    assert!(!got.contains(&m3.to_string()), "the other seed's model came from other data");
    assert_eq!(down.nodes[0].links, [f.to_string(), stats]);
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(sorted(down.nodes[1].links.clone()), models);
    assert_eq!(sorted(down.nodes[2].links.clone()), models, "the stats went into both models too");
    assert_eq!(down.nodes[3].step, "train");
    let one = lineage(&e, &d.to_string(), true, 1).unwrap();
    assert_eq!((one.nodes.len(), one.truncated.is_some()), (3, true));
}

#[test]
fn targets_resolve_by_unique_prefix_and_refuse_ambiguity_and_unknown_digests() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let (_, [d, _, _]) = run(&e, "1", "0.1", 0.5);
    let full = d.to_string();
    assert_eq!(lineage(&e, &full[..8], false, 0).unwrap().digest, full);
    assert_eq!(lineage(&e, &full.to_uppercase(), false, 0).unwrap().digest, full);

    // Two digests sharing their first five bytes.
    let mut a = [7u8; 32];
    let mut b = [7u8; 32];
    a[31] = 1;
    b[31] = 2;
    let (a, b) = (Digest::from_bytes(a), Digest::from_bytes(b));
    let mut batch = Batch::new();
    let p = Produced { path: "x".into(), size: 1, at: Millis(5), step: "s".into(), needs: vec![] };
    batch.put_produced(&a, "r-x", InstanceId(0), &p).unwrap();
    batch.put_produced(&a, "r-y", InstanceId(3), &p).unwrap();
    batch.put_produced(&b, "r-x", InstanceId(1), &p).unwrap();
    e.store.write_batch(batch).unwrap();
    assert_eq!(e.store.produced_digests("0707070707", 10).unwrap(), [a, b]);
    assert_eq!(e.store.produced_digests("070707070", 10).unwrap(), [a, b], "odd lengths too");
    match lineage(&e, "0707070707", false, 0) {
        Err(ApiError::Invalid(m)) => {
            assert!(m.contains("ambiguous") && m.contains(&a.to_string()) && m.contains(&b.to_string()), "{m}")
        }
        other => panic!("{other:?}"),
    }
    match lineage(&e, "deadbeefdeadbeef", false, 0) {
        Err(ApiError::NotFound(m)) => assert!(m.contains("weir status RUN"), "{m}"),
        other => panic!("{other:?}"),
    }
    match lineage(&e, "", false, 0) {
        Err(ApiError::Invalid(m)) => assert!(m.contains("MODEL@ALIAS"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Not hex: a model name, for the registry to resolve.
    assert!(matches!(lineage(&e, "churn@prod", false, 0), Err(ApiError::NotFound(_))));
}

#[test]
fn metric_history_is_oldest_first_per_instance_and_names_what_exists() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let (r1, _) = run(&e, "1", "0.1", 0.5);
    let (r2, _) = run(&e, "1", "0.2", 0.4);
    let (r3, _) = run(&e, "2", "0.1", 0.6);
    // A cached instance reports the value it reused.
    let mut cached = e.store.step(&r3, InstanceId(2)).unwrap().unwrap();
    cached.state = StepState::Cached;
    cached.cached_from = Some(r1.clone());
    e.store.put_step(&r3, InstanceId(2), &cached).unwrap();

    let ask = |metric: &str, step: &str, limit: u32| e.metric_history("ml", metric, step, limit);
    let h = ask("rmse", "", 0).unwrap();
    let got: Vec<(&str, &str, f64, bool)> =
        h.points.iter().map(|p| (p.run_id.as_str(), p.step.as_str(), p.value, p.cached)).collect();
    assert_eq!(
        got,
        [(r1.as_str(), "train", 0.5, false), (r2.as_str(), "train", 0.4, false), (r3.as_str(), "train", 0.6, true)]
    );
    assert!(h.metrics.is_empty());
    assert_eq!(h.points[0].run_state, RunState::Succeeded);
    assert_eq!(ask("rmse", "train", 2).unwrap().points.len(), 2, "the most recent ones");
    assert_eq!(ask("rmse", "train", 2).unwrap().points[1].run_id, r3);

    let none = ask("f1", "", 0).unwrap();
    assert_eq!((none.points.len(), none.metrics), (0, vec!["acc".to_string(), "rmse".to_string()]));
    match ask("rmse", "trian", 0) {
        Err(ApiError::NotFound(m)) => assert!(m.contains("did you mean `train`") && m.contains("ingest"), "{m}"),
        other => panic!("{other:?}"),
    }
    match e.metric_history("ml2", "rmse", "", 0) {
        Err(ApiError::NotFound(m)) => assert!(m.contains("weir pipelines") && m.contains("`ml`"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_instance_found_cached_is_recorded_like_one_that_ran() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let (first, [data, features, _]) = run(&e, "1", "0.1", 0.5);
    // A second run whose prep is satisfied from the first run's manifest, as the cache does:
    // the copy is stored under the new run and its lineage recorded in the same batch.
    e.clock.advance(Duration::from_millis(3));
    let second = {
        let mut st = e.lock();
        let overrides = vec![("seed".to_string(), "1".to_string())];
        e.create_run(&mut st, "v1", &overrides, Trigger::Manual { user: None }, false, None).unwrap()
    };
    succeed(&e, &second, "ingest", &[("data.csv", "rows of seed 1")], &[]);
    let copied = e.store.artifacts(&first, InstanceId(1)).unwrap().unwrap();
    {
        let st = e.lock();
        let live = st.runs.get(&second).unwrap();
        let mut batch = Batch::new();
        batch.put_artifacts(&second, InstanceId(1), &copied).unwrap();
        e.record_lineage(live, InstanceId(1), &copied, &mut batch, Millis(9)).unwrap();
        e.store.write_batch(batch).unwrap();
    }
    let makers: Vec<(String, u32)> =
        e.store.producers(&features, 10).unwrap().into_iter().map(|p| (p.run, p.instance.0)).collect();
    let mut want = vec![(first.clone(), 1), (second.clone(), 1)];
    want.sort();
    assert_eq!(makers, want, "both runs have the features, by run id");
    let took: Vec<String> = e.store.consumers(&data, 10).unwrap().into_iter().map(|c| c.run).collect();
    assert!(took.contains(&second), "the cached prep took the second run's data: {took:?}");
    let cached = e.store.produced(&features, &second, InstanceId(1)).unwrap().unwrap();
    assert_eq!((cached.at, cached.needs), (Millis(9), vec![0]));
}

/// A run of `version` started by `trigger`, at its own millisecond.
fn start(e: &Engine, version: &str, trigger: Trigger) -> String {
    e.clock.advance(Duration::from_millis(3));
    let mut st = e.lock();
    e.create_run(&mut st, version, &[], trigger, false, None).unwrap()
}

fn file(path: &str, text: &str) -> crate::store::TriggerFile {
    crate::store::TriggerFile { path: path.into(), size: text.len() as u64, digest: Digest::of(text.as_bytes()) }
}

fn upstream_of(run: &str) -> Trigger {
    Trigger::Upstream { trigger: "pipeline".into(), pipeline: "ml".into(), run: run.into(), why: String::new() }
}

#[test]
fn a_run_an_upstream_run_started_has_its_input_dataset_both_ways_in_lineage() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let new = file("/incoming/new.csv", "drifted rows");
    // The monitor: started by the file; the retrain: started by the monitor's success.
    let monitor = start(&e, "v1", Trigger::Files { trigger: "files".into(), files: vec![new.clone()] });
    succeed(&e, &monitor, "ingest", &[("report.json", "psi 0.4")], &[("psi", 0.4)]);
    let retrain = start(&e, "v1", upstream_of(&monitor));
    let record = e.store.run(&retrain).unwrap().unwrap();
    assert_eq!(e.input_dataset(&record).unwrap(), vec![new.clone()], "inherited from the monitor");
    // A retry of the retrain has it too; a manual run has none.
    let retry = start(&e, "v1", Trigger::Retry { of: retrain.clone(), from: None });
    assert_eq!(e.input_dataset(&e.store.run(&retry).unwrap().unwrap()).unwrap(), vec![new.clone()]);
    let (manual, _) = run(&e, "1", "0.1", 0.5);
    assert!(e.input_dataset(&e.store.run(&manual).unwrap().unwrap()).unwrap().is_empty());

    // The retrain's ingest passes the file on unchanged (same bytes), its prep and train go on.
    succeed(&e, &retrain, "ingest", &[("data.csv", "drifted rows")], &[]);
    succeed(&e, &retrain, "prep", &[("features.csv", "features of drifted rows")], &[]);
    succeed(&e, &retrain, "train", &[("model.bin", "model of drifted rows")], &[]);
    e.commit().unwrap();
    let model = Digest::of(b"model of drifted rows").to_string();
    let up = lineage(&e, &model, false, 0).unwrap();
    assert_eq!(up.nodes.last().unwrap().digest, new.digest.to_string(), "{up:#?}");
    assert!(up.nodes.iter().all(|n| !n.links.contains(&n.digest)), "no node links to itself: {up:#?}");

    // Downstream from the file, named only by a prefix of its digest: the monitor's report and
    // everything the retrain made from it.
    let other = file("/incoming/other.csv", "other rows");
    let second = start(&e, "v1", Trigger::Files { trigger: "files".into(), files: vec![other.clone()] });
    succeed(&e, &second, "ingest", &[("report.json", "psi 0.01")], &[("psi", 0.01)]);
    e.commit().unwrap();
    let down = lineage(&e, &other.digest.to_string()[..12], true, 0).unwrap();
    assert_eq!(down.digest, other.digest.to_string());
    assert_eq!(down.nodes[0].path, "/incoming/other.csv", "an outside file is shown by its path");
    assert_eq!(digests(&down)[1..], [Digest::of(b"psi 0.01").to_string()]);
    let down = lineage(&e, &new.digest.to_string(), true, 0).unwrap();
    for d in ["psi 0.4", "features of drifted rows", "model of drifted rows"] {
        assert!(digests(&down).contains(&Digest::of(d.as_bytes()).to_string()), "{d}: {down:#?}");
    }
    let fed: Vec<(String, u32)> =
        e.store.consumers(&other.digest, 10).unwrap().into_iter().map(|c| (c.run, c.value.from)).collect();
    assert_eq!(fed, [(second.clone(), DATASET)], "only root instances take the dataset");
}

#[test]
fn a_step_that_reads_the_trigger_files_is_cached_on_their_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path());
    let yaml = "name: ml\nsteps:\n  ingest:\n    run: cp \"$WEIR_TRIGGER_FILES\" \"$WEIR_OUTPUTS/\"\n    cache: true\n  \
                other:\n    run: echo\n    cache: true\n";
    let version = PipelineVersion {
        name: "ml".into(),
        yaml: yaml.into(),
        bundle_digest: None,
        submitted_at: Millis(1),
        file: None,
    };
    e.store.put_pipeline_version("v2", &version).unwrap();
    let key = |run: &str, step: usize| {
        let st = e.lock();
        let k = st.runs.get(run).unwrap().steps[step].cache.clone().expect("a cache key");
        (k.key, k.parts)
    };
    // The same path with other bytes: another key for ingest, the same for the step that
    // does not read the files.
    let a = start(&e, "v2", Trigger::Files { trigger: "files".into(), files: vec![file("/in/d.csv", "one")] });
    let b = start(&e, "v2", Trigger::Files { trigger: "files".into(), files: vec![file("/in/d.csv", "two")] });
    let (ka, parts) = key(&a, 0);
    assert_ne!(ka, key(&b, 0).0);
    assert!(
        parts.iter().any(|(k, v)| k == "input.trigger files" && v.contains(&Digest::of(b"one").to_string()[..8])),
        "{parts:?}"
    );
    assert_eq!(key(&a, 1).0, key(&b, 1).0);
}
