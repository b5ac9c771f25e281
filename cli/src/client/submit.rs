//! `weir submit`: validate a pipeline file locally, bundle its folder and stream both to the
//! server; render the server's diagnostics against the files we sent when it refuses. With
//! `--dry-run` the server validates only (SubmitPipeline's `validate_only`): the bundle's digest
//! and size go, its bytes do not, and nothing is stored.

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};

use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};
use weir_core::diag::{self, Renderer};
use weir_core::spec::{self, Limits};
use weir_data::bundle::{self, Bundle, BundleLimits};
use weir_proto::v1::{self, SubmitPipelineHeader, SubmitPipelineRequest, submit_pipeline_request::Part};

use super::conn::{Hints, connect, refused};
use super::{ConnArgs, Failure, color_on, print_out};
use crate::offline;

/// Sends the bundle archive as `bundle_chunk` messages of at most 1 MiB.
struct ChunkWriter {
    tx: mpsc::Sender<SubmitPipelineRequest>,
    buf: Vec<u8>,
}

const CHUNK: usize = 1 << 20;

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(SubmitPipelineRequest { part: Some(Part::BundleChunk(chunk)) })
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the server stopped reading the upload"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = (CHUNK - self.buf.len()).min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() { Ok(()) } else { self.send() }
    }
}

pub(super) async fn submit(conn: &ConnArgs, path: &Path, dry_run: bool) -> Result<(), Failure> {
    let response = send(conn, path, None, dry_run, false).await?;
    print_out(&render_submitted(&response));
    Ok(())
}

/// The line `weir submit` prints for the server's answer.
pub fn render_submitted(r: &v1::SubmitPipelineResponse) -> String {
    if r.validated_only {
        let steps = if r.steps == 1 { "1 step".to_string() } else { format!("{} steps", r.steps) };
        let expanded =
            if r.instances == r.steps { String::new() } else { format!(", {} after matrix expansion", r.instances) };
        let would = if r.created { "would be new" } else { "is already stored" };
        return format!(
            "valid on the server: {} ({steps}{expanded}); version {} {would}; nothing was stored\n",
            r.name, r.version
        );
    }
    format!("submitted {} version {} ({})\n", r.name, r.version, if r.created { "new" } else { "unchanged" })
}

/// Bundles and submits `path`, which the caller validated already (`weir run` does, before it
/// starts its engine); the server's answer, printing only problems. The server validates it
/// again, so the file changed since is still checked. `skip`: a folder inside the pipeline's
/// that stays out of the bundle (`weir run`'s data folder).
pub async fn submit_quietly(
    conn: &ConnArgs,
    path: &Path,
    skip: Option<&Path>,
) -> Result<v1::SubmitPipelineResponse, Failure> {
    send(conn, path, skip, false, true).await
}

/// [`submit_quietly`]; with `validate_only` the server checks and stores nothing, and no
/// bundle bytes are sent. Unless `validated` (by the caller, with the same limits), the file is
/// checked here first, so that its problems are shown with their positions and no server.
async fn send(
    conn: &ConnArgs,
    path: &Path,
    skip: Option<&Path>,
    validate_only: bool,
    validated: bool,
) -> Result<v1::SubmitPipelineResponse, Failure> {
    // Validate before connecting: problems get exact positions and need no server.
    let file = offline::pipeline_file(path);
    let limits = Limits::default();
    let source = crate::source::read(&file, &limits).map_err(|d| {
        offline::report(&file, "", &[d]);
        Failure::Refused
    })?;
    // A 1,000-step pipeline takes ~15 ms to load: `weir run` loaded it already.
    if !validated {
        spec::load(&source, &limits).map_err(|diags| {
            offline::report(&file, &source, &diags);
            Failure::Refused
        })?;
    }
    let folder = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let bundle = Bundle::build_skipping(&folder, BundleLimits::default(), skip).map_err(|e| {
        eprintln!("error: cannot bundle the pipeline folder `{}`: {e}", folder.display());
        Failure::Refused
    })?;
    tracing::debug!(pipeline = %file.display(), files = bundle.files().len(), bytes = bundle.archive_len(), "bundled");

    let mut client = connect(conn).await?;
    let file_name = file.file_name().map_or_else(|| "pipeline.yaml".into(), |n| n.to_string_lossy().into_owned());
    let header = SubmitPipelineHeader {
        yaml: source.clone(),
        file_name,
        bundle_size: bundle.archive_len(),
        bundle_digest: bundle.digest().to_string(),
        validate_only,
    };
    let (tx, rx) = mpsc::channel(4);
    // The receiver is alive and the channel empty: this cannot fail.
    let _ = tx.send(SubmitPipelineRequest { part: Some(Part::Header(header)) }).await;
    let writer = tokio::task::spawn_blocking(move || {
        if validate_only {
            return Ok(()); // the header alone; dropping `tx` ends the stream
        }
        let mut out = ChunkWriter { tx, buf: Vec::with_capacity(CHUNK) };
        bundle.write_to(&mut out).map(|_| ())
    });
    let answer = client.submit_pipeline(ReceiverStream::new(rx)).await;
    let sent = writer.await;
    // A local failure explains a refused upload better than the server can.
    match sent {
        Ok(Err(bundle::Error::Stream(e))) if e.kind() == io::ErrorKind::BrokenPipe => {}
        Ok(Err(e)) => {
            eprintln!("error: cannot send the bundle of `{}`: {e}", folder.display());
            return Err(Failure::Refused);
        }
        Err(e) => {
            eprintln!("error: sending the bundle failed: {e}");
            return Err(Failure::Refused);
        }
        Ok(Ok(())) => {}
    }
    let response = match answer {
        Ok(r) => r.into_inner(),
        Err(status) if status.code() == Code::InvalidArgument => {
            eprintln!("error: the server refused `{}`: {}", file.display(), status.message());
            report_server_diagnostics(&status, &file, &folder, &source);
            return Err(Failure::Refused);
        }
        Err(status) => return Err(refused(&status, conn, Hints::default())),
    };
    if !response.warnings.is_empty() {
        let warnings: Vec<_> = response.warnings.iter().map(diagnostic).collect();
        report_diagnostics(&file, &folder, &source, &response.warnings, &warnings);
    }
    Ok(response)
}

/// Renders the diagnostics an `InvalidArgument` status carries, if its details (a standard
/// `google.rpc.Status`) hold them.
fn report_server_diagnostics(status: &Status, file: &Path, folder: &Path, source: &str) {
    let Some(decoded) = weir_engine::api::status::diagnostics(status) else { return };
    let diags: Vec<_> = decoded.diagnostics.iter().map(diagnostic).collect();
    report_diagnostics(file, folder, source, &decoded.diagnostics, &diags);
}

/// Renders diagnostics against the files they point into: the pipeline file we sent, or
/// another file of its folder read from disk (shown without a snippet if unreadable).
fn report_diagnostics(file: &Path, folder: &Path, source: &str, wire: &[v1::Diagnostic], diags: &[diag::Diagnostic]) {
    let sent_name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut groups: Vec<(String, Vec<diag::Diagnostic>)> = Vec::new();
    for (w, d) in wire.iter().zip(diags) {
        let key = if w.file.is_empty() || w.file == sent_name { String::new() } else { w.file.clone() };
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, list)) => list.push(d.clone()),
            None => groups.push((key, vec![d.clone()])),
        }
    }
    let color = color_on(io::stderr().is_terminal());
    for (key, list) in groups {
        let (path, text) = if key.is_empty() {
            (file.display().to_string(), source.to_string())
        } else {
            let other = folder.join(&key);
            (other.display().to_string(), std::fs::read_to_string(&other).unwrap_or_default())
        };
        let rendered = Renderer { path: &path, source: &text, color }.render_all(&list);
        let _ = io::stderr().write_all(rendered.as_bytes());
    }
}

/// A wire diagnostic as the engine's renderer takes it.
fn diagnostic(d: &v1::Diagnostic) -> diag::Diagnostic {
    let span =
        |line: u32, col: u32, end_line: u32, end_col: u32| diag::Span::new(line, col, end_line.max(line), end_col);
    diag::Diagnostic {
        severity: if d.severity == v1::Severity::Warning as i32 {
            diag::Severity::Warning
        } else {
            diag::Severity::Error
        },
        message: d.message.clone(),
        span: (d.line > 0).then(|| span(d.line, d.column, d.end_line, d.end_column)),
        label: d.label.clone(),
        related: d
            .related
            .iter()
            .filter(|r| r.line > 0)
            .map(|r| diag::Related { span: span(r.line, r.column, r.end_line, r.end_column), label: r.label.clone() })
            .collect(),
        notes: d.notes.clone(),
        help: (!d.help.is_empty()).then(|| d.help.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dry_run_says_what_would_be_stored_and_that_nothing_was() {
        let answer = |created, validated_only, steps, instances| v1::SubmitPipelineResponse {
            name: "grid".into(),
            version: "abc".into(),
            created,
            validated_only,
            steps,
            instances,
            ..Default::default()
        };
        assert_eq!(render_submitted(&answer(true, false, 2, 3)), "submitted grid version abc (new)\n");
        assert_eq!(render_submitted(&answer(false, false, 2, 3)), "submitted grid version abc (unchanged)\n");
        assert_eq!(
            render_submitted(&answer(true, true, 2, 3)),
            "valid on the server: grid (2 steps, 3 after matrix expansion); version abc would be new; nothing was stored\n"
        );
        assert_eq!(
            render_submitted(&answer(false, true, 1, 1)),
            "valid on the server: grid (1 step); version abc is already stored; nothing was stored\n"
        );
    }
}
