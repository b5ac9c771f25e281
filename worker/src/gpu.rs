//! The host's GPUs, as the worker offers them at Register: read from `nvidia-smi` when it is on
//! `PATH` (none otherwise), or chosen with `weir-worker --gpus`. [`parse`] reads nvidia-smi's CSV
//! and never panics: a line it cannot read is skipped with a warning. This module only finds
//! GPUs; which attempt gets which one is `agent::gpus`.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long `nvidia-smi` may take before the worker gives up on it (a wedged driver can hang it).
const QUERY_TIMEOUT: Duration = Duration::from_secs(15);

/// The arguments of the query: one CSV line per GPU, `0, NVIDIA H200, 143771` (memory in MiB).
pub const QUERY: [&str; 2] = ["--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"];

/// One GPU of the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gpu {
    /// The driver's device index: what `CUDA_VISIBLE_DEVICES` and Docker's device requests name.
    pub index: u32,
    /// `NVIDIA H200`; empty when unknown.
    pub model: String,
    /// Device memory; 0 when unknown.
    pub memory_bytes: u64,
}

/// Which GPUs a worker offers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum GpuChoice {
    /// Whatever `nvidia-smi` reports; none when it is not on `PATH` or fails.
    #[default]
    Detect,
    /// None, even on a GPU host (`--gpus none`).
    None,
    /// Exactly these device indices (`--gpus 0,1`), described by `nvidia-smi` when it knows them.
    Only(Vec<u32>),
}

impl std::str::FromStr for GpuChoice {
    type Err = String;

    /// `auto`, `none`, or comma-separated device indices (`0,1`).
    fn from_str(s: &str) -> Result<GpuChoice, String> {
        match s.trim() {
            "auto" | "" => Ok(GpuChoice::Detect),
            "none" => Ok(GpuChoice::None),
            list => {
                let mut indices = Vec::new();
                for part in list.split(',') {
                    let part = part.trim();
                    let index: u32 = part.parse().map_err(|_| {
                        format!("`{part}` is not a GPU index: expected `auto`, `none` or indices like 0,1")
                    })?;
                    if indices.contains(&index) {
                        return Err(format!("GPU {index} is listed twice"));
                    }
                    indices.push(index);
                }
                Ok(GpuChoice::Only(indices))
            }
        }
    }
}

impl GpuChoice {
    /// The GPUs to offer: runs `nvidia-smi` unless told `none`.
    pub async fn resolve(&self) -> Vec<Gpu> {
        let gpus = self.find().await;
        if !gpus.is_empty() {
            let offered: Vec<String> = gpus.iter().map(|g| format!("{} ({})", g.index, g.model)).collect();
            tracing::info!(gpus = ?offered, "offering GPUs");
        }
        gpus
    }

    async fn find(&self) -> Vec<Gpu> {
        let detected = match self {
            GpuChoice::None => return Vec::new(),
            _ => match find_on_path("nvidia-smi") {
                Some(program) => detect_with(&program).await.unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "cannot list GPUs with nvidia-smi; offering none it did not name");
                    Vec::new()
                }),
                None => Vec::new(),
            },
        };
        match self {
            GpuChoice::Only(indices) => indices
                .iter()
                .map(|&index| {
                    detected.iter().find(|g| g.index == index).cloned().unwrap_or(Gpu {
                        index,
                        model: String::new(),
                        memory_bytes: 0,
                    })
                })
                .collect(),
            _ => detected,
        }
    }
}

/// Runs `program` (an `nvidia-smi`) with [`QUERY`] and parses what it prints.
pub async fn detect_with(program: &Path) -> Result<Vec<Gpu>, String> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(QUERY).stdin(std::process::Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(QUERY_TIMEOUT, cmd.output())
        .await
        .map_err(|_| format!("`{}` did not answer within {QUERY_TIMEOUT:?}", program.display()))?
        .map_err(|e| format!("cannot run `{}`: {e}", program.display()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(format!("`{}` failed ({}): {}", program.display(), out.status, stderr.trim()));
    }
    Ok(parse(&String::from_utf8_lossy(&out.stdout)))
}

/// Reads nvidia-smi's CSV: `index, name, memory.total[, anything more]` per line, memory in MiB
/// (a ` MiB` suffix is accepted). Blank lines, `#` comments and a header line are skipped; a line
/// whose index does not read is skipped with a warning; an unreadable memory is 0.
pub fn parse(text: &str) -> Vec<Gpu> {
    let mut gpus: Vec<Gpu> = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with("index") {
            continue;
        }
        let mut fields = line.split(',').map(str::trim);
        let Some(Ok(index)) = fields.next().map(str::parse::<u32>) else {
            tracing::warn!(line, "skipping a line of nvidia-smi output that names no GPU index");
            continue;
        };
        if gpus.iter().any(|g| g.index == index) {
            tracing::warn!(line, "skipping a GPU index nvidia-smi listed twice");
            continue;
        }
        let model = fields.next().unwrap_or_default().to_string();
        let mib: u64 =
            fields.next().map(|m| m.trim_end_matches("MiB").trim()).and_then(|m| m.parse().ok()).unwrap_or(0);
        gpus.push(Gpu { index, model, memory_bytes: mib.saturating_mul(1 << 20) });
    }
    gpus
}

/// The first executable file called `name` in `PATH`.
fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The output of one command in the fixture (the lines after its `# Command:` line).
    fn section(fixture: &str, command_contains: &str) -> String {
        let mut lines = fixture.lines().skip_while(|l| !(l.starts_with("# Command:") && l.contains(command_contains)));
        lines.next().expect("the command is in the fixture");
        lines.take_while(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n")
    }

    const H200: &str = include_str!("../tests/fixtures/nvidia-smi-h200.txt");

    #[test]
    fn reads_real_nvidia_smi_output_from_an_h200_host() {
        let h200 = Gpu { index: 0, model: "NVIDIA H200".into(), memory_bytes: 143771 << 20 };
        // The query with extra columns (uuid, driver): the first three are ours.
        let csv = section(H200, "memory.total,uuid");
        assert_eq!(parse(&csv), std::slice::from_ref(&h200));
        // The same query with a header and units, as `--format=csv` prints it.
        let with_header = section(H200, "memory.total --format=csv");
        assert!(with_header.starts_with("index, name"), "{with_header}");
        assert_eq!(parse(&with_header), std::slice::from_ref(&h200));
        // The whole file: comments skipped, `nvidia-smi -L`'s line is not CSV and is skipped.
        assert_eq!(parse(H200), [h200]);
    }

    #[test]
    fn odd_output_never_panics_and_keeps_what_reads() {
        type Expected<'a> = &'a [(u32, &'a str, u64)];
        let cases: &[(&str, Expected)] = &[
            ("", &[]),
            ("No devices were found", &[]),
            ("0, A100, 40960\n1, A100, 40960\n", &[(0, "A100", 40960 << 20), (1, "A100", 40960 << 20)]),
            ("0\n", &[(0, "", 0)]),
            ("0, T4, [N/A]\n", &[(0, "T4", 0)]),
            ("-1, x, 1\n99999999999, x, 1\n, , ,\n", &[]),
            ("0, a, 1\n0, b, 2\n", &[(0, "a", 1 << 20)]),
            ("  3 ,  NVIDIA L4 , 23034 MiB  \r\n", &[(3, "NVIDIA L4", 23034 << 20)]),
            ("0, x, 99999999999999999999\n", &[(0, "x", 0)]),
            ("0, x, 18446744073709551615\n", &[(0, "x", u64::MAX)]),
        ];
        for (text, want) in cases {
            let got: Vec<(u32, String, u64)> =
                parse(text).into_iter().map(|g| (g.index, g.model, g.memory_bytes)).collect();
            let want: Vec<(u32, String, u64)> = want.iter().map(|(i, m, b)| (*i, m.to_string(), *b)).collect();
            assert_eq!(got, want, "{text:?}");
        }
    }

    #[test]
    fn the_gpus_flag_reads_auto_none_and_index_lists() {
        assert_eq!("auto".parse(), Ok(GpuChoice::Detect));
        assert_eq!("none".parse(), Ok(GpuChoice::None));
        assert_eq!("0, 2".parse(), Ok(GpuChoice::Only(vec![0, 2])));
        assert!("0,0".parse::<GpuChoice>().unwrap_err().contains("twice"));
        assert!("gpu0".parse::<GpuChoice>().unwrap_err().contains("not a GPU index"));
    }

    #[tokio::test]
    async fn detection_runs_the_program_and_reads_its_output() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("nvidia-smi");
        let csv = section(H200, "memory.total,uuid");
        // Answers only the exact query the worker sends.
        let script = format!(
            "#!/bin/sh\n[ \"$1 $2\" = \"{} {}\" ] || {{ echo \"unexpected: $*\" >&2; exit 9; }}\ncat <<'EOF'\n{csv}\nEOF\n",
            QUERY[0], QUERY[1]
        );
        std::fs::write(&fake, script).unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let got = detect_with(&fake).await.unwrap();
        assert_eq!(got, [Gpu { index: 0, model: "NVIDIA H200".into(), memory_bytes: 143771 << 20 }]);
        let failing = dir.path().join("broken");
        std::fs::write(&failing, "#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 1\n").unwrap();
        std::fs::set_permissions(&failing, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(detect_with(&failing).await.unwrap_err().contains("NVIDIA-SMI has failed"));
        assert!(detect_with(&dir.path().join("absent")).await.is_err());
    }
}
