//! The commands that read, check and plan pipeline files without a server: `validate`,
//! `plan`, `graph`, `schema`. Reading files, printing and exit codes only; every decision is
//! made by weir-core. `weir plan`'s cache lines are the engine's answer (`client::cache`),
//! never read from a store here.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use weir_core::diag::{Diagnostic, Renderer};
use weir_core::graph;
use weir_core::plan::{self, Plan, Resolved};
use weir_core::spec::{self, Limits, Pipeline};

pub const EXIT_CODES: &str = "\
Exit status:
  0  success (the files are valid)
  1  invalid: a pipeline file or a parameter has problems, printed on stderr
  2  usage error: unknown option or missing argument";

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check pipeline files and print every problem with its file:line:column.
    #[command(after_help = EXIT_CODES)]
    Validate {
        /// Pipeline files to check (a folder means its pipeline.yaml).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Show the steps a run would execute, in order, with resolved commands (a dry run).
    #[command(after_help = EXIT_CODES)]
    Plan {
        /// The pipeline file (a folder means its pipeline.yaml).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        #[command(flatten)]
        params: ParamArgs,
        /// The run id that `{{ run.id }}` renders to.
        #[arg(long, default_value = "dry-run", value_name = "ID")]
        run_id: String,
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
        /// The `weir run` data folder whose step cache to ask: the plan then says which steps
        /// would come from the cache and why the others would run. An engine starts on the
        /// folder in this process to answer (no worker, nothing resumed, nothing stored), so a
        /// `weir run` or `weir server` using it at the time makes it say so. Nothing is said
        /// when the folder holds no store yet.
        #[arg(long, default_value = ".weir", value_name = "DIR", env = "WEIR_DATA_DIR")]
        data_dir: PathBuf,
        /// Plan as `weir run --no-cache` would run: nothing from the cache.
        #[arg(long)]
        no_cache: bool,
        /// Ask the weir server (--server, WEIR_SERVER) instead of --data-dir what its cache
        /// would do for a run of this pipeline's latest stored version (`weir submit` it first).
        #[arg(long)]
        remote: bool,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Print the planned DAG as a Mermaid flowchart or a Graphviz digraph, grouped by stage.
    #[command(after_help = EXIT_CODES)]
    Graph {
        /// The pipeline file (a folder means its pipeline.yaml).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value = "mermaid")]
        format: GraphFormat,
        #[command(flatten)]
        params: ParamArgs,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Print the JSON Schema of pipeline files, for editors (yaml-language-server).
    Schema,
}

#[derive(Args, Debug)]
pub struct ParamArgs {
    /// Set a parameter: `-p rows=500`. Checked against the declared type; repeatable.
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
}

#[derive(Args, Debug)]
pub struct LimitArgs {
    /// Largest pipeline file accepted (bytes, or like `4Mi`).
    #[arg(long, value_name = "SIZE", default_value = "1Mi", value_parser = parse_size, env = "WEIR_MAX_FILE_SIZE")]
    max_file_size: u64,
    /// Most instances a matrix step may expand to.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_matrix, env = "WEIR_MAX_MATRIX")]
    max_matrix: usize,
    /// Most step instances in a pipeline after matrix expansion.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_steps, env = "WEIR_MAX_STEPS")]
    max_steps: usize,
    /// Most dependencies between step instances after matrix expansion.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_edges, env = "WEIR_MAX_EDGES")]
    max_edges: usize,
}

impl LimitArgs {
    pub fn limits(&self) -> Limits {
        let max_file_bytes = usize::try_from(self.max_file_size).unwrap_or(usize::MAX);
        // A larger file may hold proportionally more YAML nodes.
        let scale = (max_file_bytes / Limits::default().max_file_bytes).max(1) as u64;
        Limits {
            max_file_bytes,
            max_yaml_nodes: Limits::default().max_yaml_nodes.saturating_mul(scale),
            max_matrix: self.max_matrix,
            max_steps: self.max_steps,
            max_edges: self.max_edges,
            ..Limits::default()
        }
    }
}

pub fn parse_param(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected NAME=VALUE, got `{s}`")),
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    spec::units::parse_memory(s)
}

/// Runs one of the commands that read pipeline files without an engine.
pub fn dispatch(command: Command, conn: &crate::client::ConnArgs) -> ExitCode {
    let result = match command {
        Command::Validate { files, limits } => validate(&files, &limits.limits()),
        Command::Plan { file, params, run_id, json, data_dir, no_cache, remote, limits } => {
            let shown = show_plan(&file, &params.params, &run_id, json, &limits.limits());
            match (shown, json, remote) {
                (Ok(()), false, false) => {
                    print_out(&cache_section(&file, &params.params, &data_dir, no_cache, &limits.limits()))
                }
                (Ok(()), false, true) => {
                    let Ok((pipeline, _)) = planned(&file, &params.params, &run_id, &limits.limits()) else {
                        return ExitCode::from(1);
                    };
                    let name = pipeline.name().to_string();
                    return crate::client::plan_remote(conn, name, params.params, no_cache);
                }
                (other, ..) => other,
            }
        }
        Command::Graph { file, format, params, limits } => show_graph(&file, &params.params, format, &limits.limits()),
        Command::Schema => {
            let text = serde_json::to_string_pretty(&weir_core::schema::json_schema()).unwrap_or_default();
            print_out(&format!("{text}\n"))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Invalid) => ExitCode::from(1),
    }
}

/// Why a command failed; the details were already printed.
enum Failure {
    Invalid,
}

fn print_out(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    // A closed pipe (`weir plan x | head`) is not an error worth a message.
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    Ok(())
}

fn color() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

pub(crate) fn report(path: &Path, source: &str, diags: &[Diagnostic]) {
    let path = path.display().to_string();
    let text = Renderer { path: &path, source, color: color() }.render_all(diags);
    let _ = std::io::stderr().write_all(text.as_bytes());
}

fn report_params(path: &Path, source: &str, diags: &[Diagnostic]) {
    let path = path.display().to_string();
    let renderer = Renderer { path: &path, source, color: color() };
    let text = renderer.render_all_as(diags, &format!("parameters for `{path}` are invalid"));
    let _ = std::io::stderr().write_all(text.as_bytes());
}

/// Reads and validates one file, printing its problems.
/// A pipeline folder stands for the `pipeline.yaml` (or `.yml`) inside it.
pub(crate) fn pipeline_file(path: &Path) -> PathBuf {
    if path.is_dir() {
        let yml = path.join("pipeline.yml");
        if yml.is_file() && !path.join("pipeline.yaml").exists() {
            return yml;
        }
        return path.join("pipeline.yaml");
    }
    path.to_path_buf()
}

fn load(path: &Path, limits: &Limits) -> Result<(String, Pipeline), Failure> {
    let file = pipeline_file(path);
    let path = file.as_path();
    let source = match crate::source::read(path, limits) {
        Ok(s) => s,
        Err(d) => {
            report(path, "", &[d]);
            return Err(Failure::Invalid);
        }
    };
    tracing::debug!(path = %path.display(), bytes = source.len(), "read pipeline file");
    match spec::load(&source, limits) {
        Ok(p) => Ok((source, p)),
        Err(diags) => {
            report(path, &source, &diags);
            Err(Failure::Invalid)
        }
    }
}

fn validate(files: &[PathBuf], limits: &Limits) -> Result<(), Failure> {
    let mut failed = 0usize;
    for file in files {
        match load(file, limits) {
            Ok((_, p)) => {
                let steps = p.steps().len();
                let instances = p.instance_count();
                let expanded =
                    if instances == steps { String::new() } else { format!(", {instances} after matrix expansion") };
                print_out(&format!(
                    "ok: {} (pipeline `{}`: {steps} step{}{expanded})\n",
                    pipeline_file(file).display(),
                    p.name(),
                    if steps == 1 { "" } else { "s" }
                ))?;
            }
            Err(_) => failed += 1,
        }
    }
    if failed > 0 {
        if files.len() > 1 {
            eprintln!("{failed} of {} files invalid", files.len());
        }
        return Err(Failure::Invalid);
    }
    Ok(())
}

fn planned(
    file: &Path,
    overrides: &[(String, String)],
    run_id: &str,
    limits: &Limits,
) -> Result<(Pipeline, Plan), Failure> {
    let file = &pipeline_file(file);
    let (source, pipeline) = load(file, limits)?;
    let params = match plan::resolve_params(&pipeline, overrides) {
        Ok(p) => p,
        Err(diags) => {
            report_params(file, &source, &diags);
            return Err(Failure::Invalid);
        }
    };
    let plan = plan::plan(&pipeline, &params, run_id);
    Ok((pipeline, plan))
}

fn show_plan(
    file: &Path,
    overrides: &[(String, String)],
    run_id: &str,
    json: bool,
    limits: &Limits,
) -> Result<(), Failure> {
    let (pipeline, plan) = planned(file, overrides, run_id, limits)?;
    let version = submitted_version(file, &pipeline);
    if json {
        let mut value = plan.to_json();
        if let (Some(obj), Some(v)) = (value.as_object_mut(), &version) {
            obj.insert("version".into(), v.clone().into());
        }
        let text = serde_json::to_string_pretty(&value).unwrap_or_default();
        return print_out(&format!("{text}\n"));
    }
    let mut text = render_plan(&pipeline, &plan);
    if let Some(v) = version {
        text = text.replacen(
            &format!("(hash {})", &plan.pipeline_hash[..12.min(plan.pipeline_hash.len())]),
            &format!("(version {}, as `weir submit` stores it)", &v[..12.min(v.len())]),
            1,
        );
    }
    print_out(&text)
}

/// The version `weir submit` would store `file` under: its meaning and its folder's bundle
/// (`None` when the folder cannot be bundled; the plan still shows).
fn submitted_version(file: &Path, pipeline: &Pipeline) -> Option<String> {
    let file = pipeline_file(file);
    let folder = file.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let folder = if folder.as_os_str().is_empty() { PathBuf::from(".") } else { folder };
    let bundle = weir_data::bundle::Bundle::build(&folder, weir_data::bundle::BundleLimits::default()).ok()?;
    Some(pipeline.version(Some(bundle.digest())))
}

/// What `weir run`'s step cache in `data_dir` would do for a run of `file`: one line per
/// instance, or one line saying why that cannot be told. The engine answers (an engine started
/// on the folder, asked over loopback gRPC: `client::cache::plan_local`); nothing here opens
/// its store.
fn cache_section(
    file: &Path,
    overrides: &[(String, String)],
    data_dir: &Path,
    no_cache: bool,
    limits: &Limits,
) -> String {
    if !data_dir.join("db").is_dir() {
        return String::new(); // never run here: nothing cached, nothing to say
    }
    let file = pipeline_file(file);
    let Ok((source, _)) = load(&file, limits) else { return String::new() };
    let folder = file.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let folder = if folder.as_os_str().is_empty() { PathBuf::from(".") } else { folder };
    // As `weir run` bundles it: without its data folder, when that lies inside.
    let limits = weir_data::bundle::BundleLimits::default();
    let bundle = match weir_data::bundle::Bundle::build_skipping(&folder, limits, Some(data_dir)) {
        Ok(b) => b,
        Err(e) => {
            return format!("\nstep cache ({}):\n  cannot bundle {}: {e}\n", data_dir.display(), folder.display());
        }
    };
    let file_name = file.file_name().map_or_else(|| "pipeline.yaml".into(), |n| n.to_string_lossy().into_owned());
    let digest = bundle.digest().to_string();
    crate::client::cache::plan_local(data_dir, source, file_name, digest, overrides.to_vec(), no_cache)
}

/// The human view of a plan: a header, then each instance with what it needs and runs.
pub fn render_plan(pipeline: &Pipeline, plan: &Plan) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "pipeline {} (hash {}), run {}",
        plan.pipeline,
        &plan.pipeline_hash[..12.min(plan.pipeline_hash.len())],
        plan.run_id
    );
    if plan.params.iter().next().is_some() {
        let params: Vec<String> = plan.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "params: {}", params.join(" "));
    }
    let _ = writeln!(out, "{} step instances in order:", plan.order.len());
    let width = plan.order.len().to_string().len();
    for (i, &n) in plan.order.iter().enumerate() {
        let inst = &plan.graph[n];
        let step = &pipeline.steps()[inst.step];
        let mut line = format!("\n{:>width$}. {}", i + 1, inst.name);
        if let Some(stage) = &step.stage {
            let _ = write!(line, "  [{stage}]");
        }
        let _ = writeln!(out, "{line}");
        let pad = " ".repeat(width + 2);
        if !step.needs_idx.is_empty() {
            let needs: Vec<String> = step
                .needs_idx
                .iter()
                .map(|&d| {
                    let dep = &pipeline.steps()[d];
                    if dep.is_matrix() {
                        format!("{}[*] ({} instances)", dep.name, dep.instance_count())
                    } else {
                        dep.name.clone()
                    }
                })
                .collect();
            let _ = writeln!(out, "{pad}needs: {}", needs.join(", "));
        }
        match &inst.action {
            Resolved::Run(script) => {
                // Exactly the script that runs; the values its references hold follow.
                let mut lines = script.trim_end().lines();
                let _ = writeln!(out, "{pad}run: {}", lines.next().unwrap_or(""));
                for l in lines {
                    let _ = writeln!(out, "{pad}     {l}");
                }
                for (var, value) in &inst.vars {
                    let _ = writeln!(out, "{pad}with: {var}={}", shown_value(value));
                }
            }
            Resolved::Command(argv) => {
                // Each argv item as a string literal: no shell reads it.
                let shown: Vec<String> = argv.iter().map(|a| format!("{a:?}")).collect();
                let _ = writeln!(out, "{pad}command: [{}]", shown.join(", "));
            }
        }
        for (k, v) in &inst.env {
            let _ = writeln!(out, "{pad}env: {k}={v}");
        }
        if let Some(when) = &step.when {
            let _ = writeln!(out, "{pad}when: {}", when.source());
        }
        if let Some(gate) = &step.gate {
            let _ = writeln!(out, "{pad}gate: {}", gate.source());
        }
        if let Some(image) = &inst.image
            && step.runtime == weir_core::spec::Runtime::Docker
        {
            let _ = writeln!(out, "{pad}image: {image}");
        }
    }
    out
}

/// A value as it is when it holds only printable text without spaces at its ends, else as
/// a string literal (escapes for newlines, quotes and control characters): never shell-quoted.
fn shown_value(value: &str) -> String {
    let plain =
        !value.is_empty() && value.trim() == value && !value.chars().any(|c| c.is_control() || c == '"' || c == '\\');
    if plain { value.to_string() } else { format!("{value:?}") }
}

fn show_graph(
    file: &Path,
    overrides: &[(String, String)],
    format: GraphFormat,
    limits: &Limits,
) -> Result<(), Failure> {
    let (pipeline, plan) = planned(file, overrides, "graph", limits)?;
    print_out(&graph::render(&pipeline, &plan, format.into()))
}

/// `weir graph --format`: the command line's names for [`graph::Format`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphFormat {
    Mermaid,
    Dot,
}

impl From<GraphFormat> for graph::Format {
    fn from(f: GraphFormat) -> graph::Format {
        match f {
            GraphFormat::Mermaid => graph::Format::Mermaid,
            GraphFormat::Dot => graph::Format::Dot,
        }
    }
}
