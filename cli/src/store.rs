//! `weir store check | export | import`: the data folder's database, read directly with no
//! engine running (sled allows one process per folder). `check` says what is readable and
//! which runs hold what is not; `export` saves every readable record as JSON lines; `import`
//! loads such a file into a fresh folder. Printing and exit codes only: reading, salvaging and
//! loading are `weir_engine::store`'s.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use weir_engine::store::{self, Report, Store};

pub const STORE_EXIT_CODES: &str = "\
Exit status:
  0  done; for `check`, every record is readable
  1  `check` found unreadable records or the database does not open; `export`/`import` failed
  2  usage error
Stop the weir server (or `weir run`) using the folder first: one process at a time.";

#[derive(Args, Debug)]
pub struct StoreArgs {
    #[command(subcommand)]
    command: StoreCommand,
}

#[derive(Args, Debug)]
struct DataDir {
    /// The data folder (`weir server --data-dir`, `weir run --data-dir`); its database is DIR/db.
    #[arg(long, default_value = ".weir", value_name = "DIR", env = "WEIR_DATA_DIR")]
    data_dir: PathBuf,
}

#[derive(Subcommand, Debug)]
enum StoreCommand {
    /// Read every record and report what is readable: runs, steps, events, logs, pipelines,
    /// models, and the unreadable records with the runs they belong to.
    #[command(after_help = STORE_EXIT_CODES)]
    Check {
        #[command(flatten)]
        dir: DataDir,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write every readable record as JSON lines (a damaged record is kept byte for byte),
    /// for a backup or to move what is left of a damaged store into a fresh one.
    #[command(after_help = STORE_EXIT_CODES)]
    Export {
        #[command(flatten)]
        dir: DataDir,
        /// Write here instead of stdout.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Load a `weir store export` file into the data folder's database, which must hold
    /// nothing yet: restore into a fresh folder, then start weir on it.
    #[command(after_help = STORE_EXIT_CODES)]
    Import {
        #[command(flatten)]
        dir: DataDir,
        /// The export file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

pub fn run(args: StoreArgs) -> ExitCode {
    match args.command {
        StoreCommand::Check { dir, json } => check(&dir.data_dir, json),
        StoreCommand::Export { dir, output } => export(&dir.data_dir, output.as_deref()),
        StoreCommand::Import { dir, file } => import(&dir.data_dir, &file),
    }
}

/// Opens `DIR/db`; `None` (with the error printed) when it cannot be.
fn open(data_dir: &Path, create: bool) -> Option<Store> {
    let db = data_dir.join("db");
    if !create && !db.join("db").exists() {
        eprintln!("error: no weir store in {}: expected {}", data_dir.display(), db.join("db").display());
        eprintln!("help: pass the folder given to `weir server --data-dir` or `weir run --data-dir`");
        return None;
    }
    match Store::open(&db) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("error: {e}");
            if matches!(e, store::Error::Locked { .. }) {
                eprintln!("help: stop the weir server (or `weir run`) using it first: one process at a time");
            }
            if matches!(e, store::Error::Unopenable { .. }) {
                eprintln!(
                    "help: nothing can be read through sled; restore from an earlier `weir store export` \
                     (`weir store import --data-dir NEW FILE`) or a backup of {}",
                    data_dir.display()
                );
            }
            None
        }
    }
}

fn check(data_dir: &Path, json: bool) -> ExitCode {
    let Some(store) = open(data_dir, false) else { return ExitCode::from(1) };
    let report = match store.check() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        print!("{}", render(data_dir, &report));
    }
    if report.is_clean() { ExitCode::SUCCESS } else { ExitCode::from(1) }
}

/// The report as text: counts, then what is unreadable and what to do.
fn render(data_dir: &Path, r: &Report) -> String {
    let mut out = format!("store {}\n", data_dir.join("db").display());
    for (tree, label) in [
        ("runs", "runs"),
        ("steps", "step records"),
        ("events", "events"),
        ("logs", "log chunks"),
        ("pipelines", "pipelines"),
        ("pipeline_versions", "pipeline versions"),
        ("models", "models"),
        ("model_versions", "model versions"),
        ("artifacts", "artifact manifests"),
        ("schedules", "schedules"),
        ("cache", "cache entries"),
    ] {
        out += &format!("  {:>8}  {label}\n", r.readable(tree));
    }
    for (run, reason) in &r.quarantined {
        out += &format!("quarantined run {run}: {reason}\n");
    }
    if r.is_clean() {
        out += "every record is readable\n";
        return out;
    }
    if r.bad.is_empty() && r.damaged.is_empty() {
        out += "every record is readable, but the runs-by-time index (the order `weir runs` lists in) \
                disagrees with the runs:\n";
        for p in &r.index {
            out += &format!("  {p}\n");
        }
        out += &format!(
            "what to do: `weir store export --data-dir {} -o FILE`, then `weir store import --data-dir NEW FILE` \
             into a fresh folder rebuilds it; start weir on NEW\n",
            data_dir.display()
        );
        return out;
    }
    for p in &r.index {
        out += &format!("  runs_by_time: {p}\n");
    }
    out += &format!("{} unreadable records", r.bad.len());
    let runs = r.affected_runs();
    if !runs.is_empty() {
        out += &format!(" in {} runs: {}", runs.len(), runs.into_iter().collect::<Vec<_>>().join(", "));
    }
    out += "\n";
    for b in &r.bad {
        out += &format!("  {} {}: {}\n", b.tree, b.key, b.reason);
    }
    for d in &r.damaged {
        let after = d.after.as_deref().map(|a| format!(" after {a}")).unwrap_or_default();
        let before = d.before.as_deref().map(|b| format!(" before {b}")).unwrap_or_default();
        out += &format!("  {}: records{after}{before} cannot be read: {}\n", d.tree, d.reason);
    }
    let dir = data_dir.display();
    out += &format!(
        "what to do: the server quarantines the runs named above and serves the rest. To start clean, \
         stop weir, save what is readable with `weir store export --data-dir {dir} -o weir-export.jsonl`, \
         move {dir} aside, `weir store import --data-dir {dir} weir-export.jsonl` and start weir again \
         (artifacts: copy {dir}/artifacts into the new folder)\n"
    );
    out
}

fn export(data_dir: &Path, output: Option<&Path>) -> ExitCode {
    let Some(store) = open(data_dir, false) else { return ExitCode::from(1) };
    let result = match output {
        Some(path) => match File::create(path) {
            Ok(f) => store.export(&mut BufWriter::new(f)).and_then(|e| {
                File::open(path).and_then(|f| f.sync_all()).map_err(store::Error::from)?;
                Ok(e)
            }),
            Err(e) => {
                eprintln!("error: cannot create {}: {e}", path.display());
                return ExitCode::from(1);
            }
        },
        None => store.export(&mut BufWriter::new(std::io::stdout().lock())),
    };
    match result {
        Ok(exported) => {
            eprintln!("exported {} records", exported.records);
            for d in &exported.damaged {
                let after = d.after.as_deref().map(|a| format!(" after {a}")).unwrap_or_default();
                eprintln!("warning: {}: records{after} could not be read and are not in the export", d.tree);
            }
            let _ = std::io::stderr().flush();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: export: {e}");
            ExitCode::from(1)
        }
    }
}

fn import(data_dir: &Path, file: &Path) -> ExitCode {
    let input = match File::open(file) {
        Ok(f) => BufReader::new(f),
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", file.display());
            return ExitCode::from(1);
        }
    };
    if let Err(e) = std::fs::create_dir_all(data_dir) {
        eprintln!("error: cannot create {}: {e}", data_dir.display());
        return ExitCode::from(1);
    }
    let Some(store) = open(data_dir, true) else { return ExitCode::from(1) };
    match store.is_empty() {
        Ok(true) => {}
        Ok(false) => {
            eprintln!("error: the store in {} already holds records", data_dir.display());
            eprintln!("help: import into a new, empty folder and start weir on that one");
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    }
    match store.import(input) {
        Ok(n) => {
            println!("imported {n} records into {}", data_dir.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}: {e}", file.display());
            ExitCode::from(1)
        }
    }
}
