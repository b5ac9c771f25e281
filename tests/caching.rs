//! Step caching and re-running from a step, through a real server and worker: a second run with
//! the same inputs takes its cacheable steps from the cache; changing one param re-runs exactly
//! the steps whose key it is part of (and, through their outputs, what they feed); `PlanRun`
//! predicts that (for a stored version or the file itself); `ExplainCache` names the part of the key that changed; `--no-cache` runs
//! everything; `RetryRun --from` re-runs one step and its descendants and reuses the rest.

use std::time::Duration;

use weir_proto::v1::{self, CacheVerdict, StepState};
use weir_tests::{Cluster, step};

const MINUTE: Duration = Duration::from_secs(60);

const YAML: &str = r#"name: cachy
params:
  a: 1
  b: x
steps:
  s1:
    run: echo "a={{ params.a }}" > "$WEIR_OUTPUTS/data.txt"
    outputs: [data.txt]
    cache: true
  s2:
    needs: [s1]
    run: |
      cat "$WEIR_INPUTS/s1/data.txt" > "$WEIR_OUTPUTS/m.txt"
      echo "b={{ params.b }}" >> "$WEIR_OUTPUTS/m.txt"
      echo '{"score": 0.5}' > "$WEIR_OUTPUTS/metrics.json"
    outputs: [m.txt, metrics.json]
    cache: true
  s3:
    needs: [s1]
    run: wc -c < "$WEIR_INPUTS/s1/data.txt" > "$WEIR_OUTPUTS/n.txt"
    outputs: [n.txt]
    cache: {ttl: 7d}
  s4:
    needs: [s2]
    run: cat "$WEIR_INPUTS/s2/m.txt"
"#;

/// Each instance's state, in instance order.
fn states(got: &v1::GetRunResponse) -> Vec<(String, StepState)> {
    got.steps.iter().map(|s| (s.name.clone(), s.state())).collect()
}

fn expect(pairs: &[(&str, StepState)]) -> Vec<(String, StepState)> {
    pairs.iter().map(|(n, s)| (n.to_string(), *s)).collect()
}

async fn run(c: &mut Cluster, version: &str, params: &[(&str, &str)], no_cache: bool) -> v1::GetRunResponse {
    let params = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let req = v1::StartRunRequest {
        pipeline: Some(v1::start_run_request::Pipeline::Version(version.into())),
        params,
        no_cache,
    };
    let id = c.client.start_run(req).await.expect("started").into_inner().run.expect("a run").run_id;
    let got = c.wait(&id, MINUTE).await;
    assert_eq!(got.run.as_ref().unwrap().state(), v1::RunState::Succeeded, "{got:#?}");
    got
}

async fn explain(c: &mut Cluster, run: &str, step: &str) -> v1::ExplainCacheResponse {
    let req = v1::ExplainCacheRequest { run_id: run.into(), step: step.into() };
    c.client.explain_cache(req).await.expect("explain").into_inner()
}

fn digest(got: &v1::GetRunResponse, name: &str, file: &str) -> String {
    let outputs = step(got, name).outputs.as_ref().expect("outputs");
    outputs.files.iter().find(|f| f.path == file).expect("the file").digest.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_reuses_unchanged_steps_reruns_what_a_param_changes_and_says_why() {
    use StepState::{Cached, Succeeded};
    let mut c = Cluster::start(1, 4).await;
    let version = c.submit(YAML, None).await;

    let r1 = run(&mut c, &version, &[], false).await;
    let id1 = r1.run.as_ref().unwrap().run_id.clone();
    assert_eq!(states(&r1), expect(&[("s1", Succeeded), ("s2", Succeeded), ("s3", Succeeded), ("s4", Succeeded)]));
    assert!(r1.steps.iter().take(3).all(|s| s.cache_key.len() == 64), "cacheable steps have keys: {r1:#?}");
    assert!(step(&r1, "s4").cache_key.is_empty(), "s4 has no `cache:`");

    // Same inputs: every cacheable step comes from the first run, with its outputs and metrics.
    let r2 = run(&mut c, &version, &[], false).await;
    let id2 = r2.run.as_ref().unwrap().run_id.clone();
    assert_eq!(states(&r2), expect(&[("s1", Cached), ("s2", Cached), ("s3", Cached), ("s4", Succeeded)]));
    for name in ["s1", "s2", "s3"] {
        let s = step(&r2, name);
        assert!(s.cached && s.cached_from == id1 && s.worker_id.is_empty(), "{s:?}");
        assert_eq!(s.cache_key, step(&r1, name).cache_key);
    }
    assert_eq!(digest(&r2, "s2", "m.txt"), digest(&r1, "s2", "m.txt"));
    assert_eq!(step(&r2, "s2").metrics["score"], 0.5, "metrics come with the outputs");
    assert_eq!(c.logs(&id2, "s4").await, "a=1\nb=x\n", "s4 ran on the cached outputs");
    // On /metrics: three misses in the first run (s4 has no `cache:`), three hits in the second.
    let scraped = weir_tests::http::Http::new(&c.url()).get("/metrics").await;
    assert_eq!(scraped.status, 200);
    let sample = |series: &str| -> f64 {
        let line = scraped.body.lines().find(|l| l.split_once(' ').is_some_and(|(n, _)| n == series));
        line.and_then(|l| l.rsplit(' ').next()?.trim().parse().ok()).unwrap_or_else(|| panic!("{series}"))
    };
    assert_eq!((sample("weir_cache_misses_total"), sample("weir_cache_hits_total")), (3.0, 3.0));
    let hit = explain(&mut c, &id2, "s2").await;
    assert_eq!(hit.verdict(), CacheVerdict::Hit);
    assert!(hit.message.contains(&id1), "{}", hit.message);

    // The plan for b=y: only s2 misses, because of b; s4 is not cacheable.
    let plan = c
        .client
        .plan_run(v1::PlanRunRequest {
            pipeline: Some(v1::plan_run_request::Pipeline::Name("cachy".into())),
            params: [("b".to_string(), "y".to_string())].into(),
            no_cache: false,
        })
        .await
        .expect("plan")
        .into_inner();
    let verdicts: Vec<(String, CacheVerdict)> = plan.steps.iter().map(|s| (s.name.clone(), s.cache())).collect();
    let want = [
        ("s1", CacheVerdict::Hit),
        ("s2", CacheVerdict::Miss),
        ("s3", CacheVerdict::Hit),
        ("s4", CacheVerdict::NotCacheable),
    ];
    assert_eq!(verdicts, want.map(|(n, v)| (n.to_string(), v)), "{plan:#?}");
    assert!(plan.steps[1].reason.contains("param.b: x -> y"), "{:?}", plan.steps[1]);
    // The file itself, not stored (`weir plan FILE`): planned as the version it is, alike.
    let source =
        v1::PipelineSource { yaml: YAML.into(), file_name: "pipeline.yaml".into(), bundle_digest: String::new() };
    let unstored = c
        .client
        .plan_run(v1::PlanRunRequest {
            pipeline: Some(v1::plan_run_request::Pipeline::Source(source)),
            params: [("b".to_string(), "y".to_string())].into(),
            no_cache: false,
        })
        .await
        .expect("plan of a file")
        .into_inner();
    assert_eq!(unstored, plan, "the same version, verdicts and reasons");

    // Changing b re-runs exactly s2 (whose command names it) and what needs s2.
    let r3 = run(&mut c, &version, &[("b", "y")], false).await;
    let id3 = r3.run.as_ref().unwrap().run_id.clone();
    assert_eq!(states(&r3), expect(&[("s1", Cached), ("s2", Succeeded), ("s3", Cached), ("s4", Succeeded)]));
    let why = explain(&mut c, &id3, "s2").await;
    assert_eq!(why.verdict(), CacheVerdict::Miss);
    let diffs: Vec<(&str, &str, &str)> =
        why.differences.iter().map(|d| (d.part.as_str(), d.closest.as_str(), d.value.as_str())).collect();
    assert_eq!(diffs[0], ("param.b", "x", "y"), "the param is named first: {why:#?}");
    assert!(diffs.iter().all(|(p, ..)| ["param.b", "command"].contains(p)), "nothing else changed: {diffs:?}");
    assert!(why.message.contains("param.b: x -> y"), "{}", why.message);

    // Changing a changes s1's output, so everything downstream of it misses on its input.
    let r4 = run(&mut c, &version, &[("a", "2")], false).await;
    let id4 = r4.run.as_ref().unwrap().run_id.clone();
    assert_eq!(states(&r4), expect(&[("s1", Succeeded), ("s2", Succeeded), ("s3", Succeeded), ("s4", Succeeded)]));
    let why = explain(&mut c, &id4, "s3").await;
    let parts: Vec<&str> = why.differences.iter().map(|d| d.part.as_str()).collect();
    assert_eq!(parts, ["input.s1"], "s3 names no param: only its input changed: {why:#?}");
    let not = explain(&mut c, &id4, "s4").await;
    assert_eq!(not.verdict(), CacheVerdict::NotCacheable);

    // --no-cache runs everything, and says so.
    let r5 = run(&mut c, &version, &[], true).await;
    let id5 = r5.run.as_ref().unwrap().run_id.clone();
    assert!(r5.steps.iter().all(|s| s.state() == Succeeded), "{r5:#?}");
    assert!(r5.run.as_ref().unwrap().no_cache);
    assert!(explain(&mut c, &id5, "s1").await.message.contains("caching was off"));
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_from_a_step_reruns_it_and_its_descendants_and_reuses_the_rest() {
    use StepState::{Cached, Succeeded};
    let mut c = Cluster::start(1, 4).await;
    let version = c.submit(YAML, None).await;
    let r1 = run(&mut c, &version, &[("a", "5")], false).await;
    let id1 = r1.run.as_ref().unwrap().run_id.clone();

    let req = |from: &str, dry_run| v1::RetryRunRequest { run_id: id1.clone(), from_step: from.into(), dry_run };
    let dry = c.client.retry_run(req("s2", true)).await.expect("dry run").into_inner();
    assert!(dry.run.is_none(), "a dry run starts nothing");
    assert_eq!((dry.rerun, dry.reused), (vec!["s2".to_string(), "s4".into()], vec!["s1".to_string(), "s3".into()]));

    let done = c.client.retry_run(req("s2", false)).await.expect("retry").into_inner();
    let run = done.run.expect("a run");
    assert_eq!((run.retry_of.as_str(), run.retry_from.as_str()), (id1.as_str(), "s2"));
    let got = c.wait(&run.run_id, MINUTE).await;
    // s2 runs although the cache holds its key: --from means run it.
    assert_eq!(states(&got), expect(&[("s1", Cached), ("s2", Succeeded), ("s3", Cached), ("s4", Succeeded)]));
    assert_eq!(step(&got, "s1").cached_from, id1);
    assert_eq!(c.logs(&run.run_id, "s4").await, "a=5\nb=x\n", "the reused outputs fed the re-run");
    let why = explain(&mut c, &run.run_id, "s2").await;
    assert!(why.message.contains("--from s2"), "{}", why.message);

    let err = c.client.retry_run(req("s5", false)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(
        err.message().contains("did you mean `s4`?") || err.message().contains("did you mean `s1`?"),
        "{}",
        err.message()
    );
    // Without --from a succeeded run has nothing to retry, and says how to re-run part of it.
    let err = c.client.retry_run(req("", false)).await.unwrap_err();
    assert!(err.message().contains("--from"), "{}", err.message());
    c.stop().await;
}

/// An entry whose output file is gone from the blob store (a data folder cleaned by hand) is
/// not used: the step runs again and makes the file anew, and what it feeds still hits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_whose_files_are_gone_is_not_used() {
    let mut c = Cluster::start(1, 4).await;
    let version = c.submit(YAML, None).await;
    let r1 = run(&mut c, &version, &[], false).await;
    let blob = digest(&r1, "s1", "data.txt");
    let blobs = weir_data::artifact::Store::open(&c.dir.path().join("engine/artifacts")).expect("the blob store");
    let path = blobs.path_of(&blob.parse().expect("a digest"));
    std::fs::remove_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let r2 = run(&mut c, &version, &[], false).await;
    use StepState::{Cached, Succeeded};
    assert_eq!(states(&r2), expect(&[("s1", Succeeded), ("s2", Cached), ("s3", Cached), ("s4", Succeeded)]));
    assert!(path.exists(), "made anew");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_where_a_long_command_changed_not_only_that_it_did() {
    let mut c = Cluster::start(1, 2).await;
    let filler = "x".repeat(60);
    let yaml = |middle: &str| {
        format!(
            "name: longcmd\nsteps:\n  fit:\n    run: echo {filler} {middle} {filler} > \"$WEIR_OUTPUTS/o\"\n    outputs: [o]\n    cache: true\n"
        )
    };
    let v1 = c.submit(&yaml("--l2=0.1"), None).await;
    run(&mut c, &v1, &[], false).await;
    let v2 = c.submit(&yaml("--l2=0.2"), None).await;
    let second = run(&mut c, &v2, &[], false).await;
    let why = explain(&mut c, &second.run.unwrap().run_id, "fit").await;
    let d = why.differences.iter().find(|d| d.part == "command").unwrap_or_else(|| panic!("{why:?}"));
    assert!(d.closest.contains("--l2=0.1") && d.value.contains("--l2=0.2"), "the change itself is shown: {d:?}");
    assert!(!d.value.contains("blake3"), "{d:?}");
    c.stop().await;
}
