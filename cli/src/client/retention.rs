//! `weir runs delete`, `weir pipelines delete` and `weir gc`: deleting runs and pipelines and
//! collecting what nothing needs (the `DeleteRuns`, `DeletePipeline` and `Gc` RPCs). The server
//! decides what may go and says why not; this prints its answer.

use weir_proto::v1;

use super::conn::{Client, Hints, RUN_HINTS, refused};
use super::{ConnArgs, Failure, print_out};

/// `weir runs delete RUN...`: exit 1 when any run was not deleted (each says why on stderr).
pub(super) async fn delete_runs(client: &mut Client, conn: &ConnArgs, runs: Vec<String>) -> Result<(), Failure> {
    let response = client
        .delete_runs(v1::DeleteRunsRequest { run_ids: runs })
        .await
        .map_err(|s| refused(&s, conn, RUN_HINTS))?
        .into_inner();
    let mut failed = false;
    for r in &response.runs {
        if r.deleted {
            print_out(&format!("deleted run {}\n", r.run_id));
        } else {
            failed = true;
            eprintln!("error: {}", r.refused);
        }
    }
    if failed { Err(Failure::Refused) } else { Ok(()) }
}

/// `weir pipelines delete NAME`.
pub(super) async fn delete_pipeline(client: &mut Client, conn: &ConnArgs, name: String) -> Result<(), Failure> {
    let hints = Hints { not_found: "`weir pipelines` lists the stored pipelines", ..Hints::default() };
    let response = client
        .delete_pipeline(v1::DeletePipelineRequest { name: name.clone() })
        .await
        .map_err(|s| refused(&s, conn, hints))?
        .into_inner();
    print_out(&format!("deleted pipeline {name} and {} of its runs\n", response.runs_deleted));
    Ok(())
}

/// `weir gc [--dry-run]`.
pub(super) async fn gc(client: &mut Client, conn: &ConnArgs, dry_run: bool) -> Result<(), Failure> {
    let response =
        client.gc(v1::GcRequest { dry_run }).await.map_err(|s| refused(&s, conn, Hints::default()))?.into_inner();
    print_out(&render::gc(&response, dry_run));
    Ok(())
}

/// Pure rendering of `Gc`.
pub(crate) mod render {
    use weir_proto::v1;

    /// `1.5 MiB`-style sizes.
    pub fn bytes(n: u64) -> String {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut v = n as f64;
        let mut unit = 0;
        while v >= 1024.0 && unit + 1 < UNITS.len() {
            v /= 1024.0;
            unit += 1;
        }
        if unit == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[unit]) }
    }

    /// A line per pipeline whose runs `keep:` let go, then the totals.
    pub fn gc(r: &v1::GcResponse, dry_run: bool) -> String {
        let verb = if dry_run { "would delete" } else { "deleted" };
        let mut out = String::new();
        let mut runs = 0;
        for p in &r.runs {
            runs += p.run_ids.len();
            out.push_str(&format!("{}: {verb} {} runs: {}\n", p.pipeline, p.run_ids.len(), p.run_ids.join(" ")));
        }
        out.push_str(&format!(
            "{verb} {runs} runs, {} blobs ({}), {} unfinished uploads\n",
            r.blobs,
            bytes(r.bytes),
            r.temp_files
        ));
        out
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_report_names_runs_by_pipeline_and_totals_in_readable_sizes() {
            let r = v1::GcResponse {
                runs: vec![v1::PipelineRuns { pipeline: "p".into(), run_ids: vec!["a".into(), "b".into()] }],
                blobs: 3,
                bytes: 1536,
                temp_files: 1,
            };
            assert_eq!(
                gc(&r, true),
                "p: would delete 2 runs: a b\nwould delete 2 runs, 3 blobs (1.5 KiB), 1 unfinished uploads\n"
            );
            assert_eq!(bytes(0), "0 B");
            assert_eq!(bytes(5 << 30), "5.0 GiB");
        }
    }
}
