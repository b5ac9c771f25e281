//! `weir retry` (plain and `--from STEP`, `--dry-run`), `weir cache explain RUN STEP` and the
//! cache lines of `weir plan` (asked of a server, or of an engine started on `weir run`'s data
//! folder: never read from its store directly), and the rendering of their answers (pure
//! functions, tested below).

use std::fmt::Write as _;
use std::path::Path;

use weir_engine::server::StartError;
use weir_engine::store;
use weir_proto::v1::{self, CacheVerdict};

use super::conn::{Client, Hints, RUN_HINTS, refused};
use super::{ConnArgs, Failure, print_out};

/// Retries `run_id`; returns the new run's id (None for a dry run).
pub(super) async fn retry(
    client: &mut Client,
    conn: &ConnArgs,
    run_id: &str,
    from: Option<String>,
    dry_run: bool,
) -> Result<Option<String>, Failure> {
    let request =
        v1::RetryRunRequest { run_id: run_id.to_string(), from_step: from.clone().unwrap_or_default(), dry_run };
    let hints = Hints {
        precondition: "without --from only a failed or cancelled run can be retried; `weir status RUN` shows its state",
        not_found: "`weir runs` lists run ids; `weir status RUN` lists a run's steps",
        ..RUN_HINTS
    };
    let response = client.retry_run(request).await.map_err(|s| refused(&s, conn, hints))?.into_inner();
    let new = response.run.as_ref().map(|r| r.run_id.clone());
    print_out(&render_retry(run_id, from.as_deref(), new.as_deref(), &response.rerun, &response.reused));
    Ok(new)
}

/// What a retry did (or, without a new run, would do).
pub fn render_retry(of: &str, from: Option<&str>, new: Option<&str>, rerun: &[String], reused: &[String]) -> String {
    let mut out = String::new();
    match new {
        Some(id) => {
            let _ = writeln!(out, "retrying run {of} as {id}");
        }
        None => {
            let what = from.map_or_else(|| "what did not succeed".to_string(), |s| format!("from {s}"));
            let _ = writeln!(out, "dry run: retrying {of} {what} would");
        }
    }
    let _ = writeln!(out, "  run again ({}): {}", rerun.len(), list(rerun));
    let _ = writeln!(out, "  reuse from {of} ({}): {}", reused.len(), list(reused));
    if let Some(id) = new {
        let _ = writeln!(out, "`weir status {id} --watch` follows it");
    }
    out
}

fn list(names: &[String]) -> String {
    if names.is_empty() { "nothing".to_string() } else { names.join(", ") }
}

pub(super) async fn explain(client: &mut Client, conn: &ConnArgs, run_id: &str, step: &str) -> Result<(), Failure> {
    let request = v1::ExplainCacheRequest { run_id: run_id.to_string(), step: step.to_string() };
    let hints = Hints {
        not_found: "`weir runs` lists run ids; `weir status RUN` lists a run's steps",
        invalid: "name one instance, as `weir status RUN` lists them",
        ..RUN_HINTS
    };
    let answer = client.explain_cache(request).await.map_err(|s| refused(&s, conn, hints))?.into_inner();
    print_out(&render_explain(&answer));
    Ok(())
}

/// The answer of `weir cache explain`.
pub fn render_explain(a: &v1::ExplainCacheResponse) -> String {
    let mut out = String::new();
    let verdict = match a.verdict() {
        CacheVerdict::Hit => "cached",
        CacheVerdict::Miss => "ran (cache miss)",
        CacheVerdict::NotCacheable => "ran (not cacheable)",
        CacheVerdict::Unknown | CacheVerdict::Unspecified => "no key",
    };
    let _ = writeln!(out, "{}: {verdict}", a.name);
    let _ = writeln!(out, "  {}", a.message);
    if !a.cache_key.is_empty() {
        let _ = writeln!(out, "  key {}", &a.cache_key[..a.cache_key.len().min(16)]);
    }
    if !a.differences.is_empty() {
        let _ = writeln!(out, "\nwhat differs from run {}:", a.closest_run);
        let width = a.differences.iter().map(|d| d.part.len()).max().unwrap_or(0);
        for d in &a.differences {
            let then = if d.closest.is_empty() { "(absent)" } else { &d.closest };
            let now = if d.value.is_empty() { "(absent)" } else { &d.value };
            let _ = writeln!(out, "  {:width$}  {then}  ->  {now}", d.part);
        }
    }
    if !a.parts.is_empty() {
        let _ = writeln!(out, "\nkey parts:");
        let width = a.parts.iter().map(|p| p.part.len()).max().unwrap_or(0);
        for p in &a.parts {
            let mark = if a.differences.iter().any(|d| d.part == p.part) { "*" } else { " " };
            // Whole values are in the answer (for `--json` users and the web UI); a line here
            // shows the start of a long one, the differences above show where it changed.
            let value: String = p.value.chars().take(100).map(|c| if c == '\n' { '⏎' } else { c }).collect();
            let more = if p.value.chars().count() > 100 { "…" } else { "" };
            let _ = writeln!(out, "{mark} {:width$}  {value}{more}", p.part);
        }
    }
    out
}

pub(super) async fn plan_remote(
    client: &mut Client,
    conn: &ConnArgs,
    pipeline: String,
    params: Vec<(String, String)>,
    no_cache: bool,
) -> Result<(), Failure> {
    let request = v1::PlanRunRequest {
        pipeline: Some(v1::plan_run_request::Pipeline::Name(pipeline)),
        params: params.into_iter().collect(),
        no_cache,
    };
    let hints = Hints {
        not_found: "store the pipeline first: `weir submit DIR`",
        invalid: "`weir plan FILE -p NAME=VALUE` checks params against the file locally",
        ..RUN_HINTS
    };
    let answer = client.plan_run(request).await.map_err(|s| refused(&s, conn, hints))?.into_inner();
    let short = &answer.version[..answer.version.len().min(12)];
    print_out(&format!("\nstep cache (server {}, version {short}):\n{}", conn.server, render_planned(&answer.steps)));
    Ok(())
}

/// `weir plan FILE`'s cache lines from `weir run`'s data folder `data_dir`, whose database
/// exists: an engine starts on it in this process ([`crate::local::engine_only`]) and is asked
/// PlanRun for the file as given (`yaml`, its name, the digest of its folder's bundle), as a
/// server would be; nothing is stored. Never fails: what went wrong is the section's one line.
pub fn plan_local(
    data_dir: &Path,
    yaml: String,
    file_name: String,
    bundle_digest: String,
    params: Vec<(String, String)>,
    no_cache: bool,
) -> String {
    let header = format!("\nstep cache ({}):\n", data_dir.display());
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return format!("{header}  cannot read it: cannot start the async runtime: {e}\n"),
    };
    let request = v1::PlanRunRequest {
        pipeline: Some(v1::plan_run_request::Pipeline::Source(v1::PipelineSource { yaml, file_name, bundle_digest })),
        params: params.into_iter().collect(),
        no_cache,
    };
    runtime.block_on(async {
        let server = match crate::local::engine_only(data_dir).await {
            Ok(s) => s,
            Err(StartError::Store(store::Error::Locked { .. })) => {
                return format!("{header}  cannot read it: a running weir holds {}\n", data_dir.display());
            }
            Err(e) => return format!("{header}  cannot read it: {e}\n"),
        };
        let answer = match v1::weir_client_client::WeirClientClient::connect(server.url()).await {
            Ok(mut client) => {
                client.plan_run(request).await.map(|r| r.into_inner()).map_err(|s| s.message().to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        server.shutdown().await;
        match answer {
            Ok(plan) => format!("{header}{}", render_planned(&plan.steps)),
            Err(e) => format!("{header}  cannot read it: {e}\n"),
        }
    })
}

/// The cache column of `weir plan`: one line per instance.
pub fn render_planned(steps: &[v1::PlannedStep]) -> String {
    let mut out = String::new();
    let width = steps.iter().map(|s| s.name.len()).max().unwrap_or(0);
    let (mut hits, mut runs) = (0, 0);
    for s in steps {
        let what = match s.cache() {
            CacheVerdict::Hit => {
                hits += 1;
                format!("cached (from run {})", s.cached_from)
            }
            CacheVerdict::Miss => {
                runs += 1;
                format!("runs: cache miss, {}", s.reason)
            }
            CacheVerdict::Unknown => {
                runs += 1;
                format!("runs unless the cache has it: {}", s.reason)
            }
            CacheVerdict::NotCacheable | CacheVerdict::Unspecified => {
                runs += 1;
                format!("runs ({})", s.reason)
            }
        };
        let _ = writeln!(out, "  {:width$}  {what}", s.name);
    }
    let _ = writeln!(out, "{hits} from the cache, {runs} to run");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_says_what_runs_again_and_what_is_reused() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let dry = render_retry("r1", Some("train"), None, &names(&["train", "deploy"]), &names(&["ingest"]));
        assert_eq!(
            dry,
            "dry run: retrying r1 from train would\n  run again (2): train, deploy\n  reuse from r1 (1): ingest\n"
        );
        let done = render_retry("r1", None, Some("r2"), &[], &names(&["a"]));
        assert!(done.starts_with("retrying run r1 as r2\n  run again (0): nothing\n"), "{done}");
        assert!(done.ends_with("`weir status r2 --watch` follows it\n"), "{done}");
    }

    #[test]
    fn explain_marks_the_parts_that_differ() {
        let part = |p: &str, v: &str, c: &str| v1::CacheKeyPart { part: p.into(), value: v.into(), closest: c.into() };
        let a = v1::ExplainCacheResponse {
            name: "train".into(),
            cache_key: "0123456789abcdef0123".into(),
            verdict: CacheVerdict::Miss as i32,
            message: "closest entry is run r1 (train): param.rows: 10 -> 20".into(),
            parts: vec![part("param.rows", "20", "10"), part("runtime", "process", "process")],
            closest_run: "r1".into(),
            differences: vec![part("param.rows", "20", "10")],
        };
        let text = render_explain(&a);
        assert!(text.starts_with("train: ran (cache miss)\n"), "{text}");
        assert!(text.contains("what differs from run r1:\n  param.rows  10  ->  20\n"), "{text}");
        assert!(text.contains("* param.rows  20\n  runtime     process\n"), "{text}");
        assert!(text.contains("key 0123456789abcdef\n"), "{text}");
    }

    #[test]
    fn the_plan_says_what_comes_from_the_cache() {
        let s = |name: &str, v: CacheVerdict, from: &str, reason: &str| v1::PlannedStep {
            name: name.into(),
            step: name.into(),
            cache: v as i32,
            cached_from: from.into(),
            reason: reason.into(),
            cache_key: String::new(),
        };
        let text = render_planned(&[
            s("ingest", CacheVerdict::Hit, "r1", ""),
            s("train", CacheVerdict::Miss, "", "differs from run r1: param.lr: 0.1 -> 0.2"),
            s("deploy", CacheVerdict::NotCacheable, "", "no `cache:`"),
        ]);
        assert_eq!(
            text,
            "  ingest  cached (from run r1)\n  train   runs: cache miss, differs from run r1: param.lr: 0.1 -> 0.2\n  \
             deploy  runs (no `cache:`)\n1 from the cache, 2 to run\n"
        );
    }
}
