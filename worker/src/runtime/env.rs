//! The environment a step sees. A step starts from an empty environment, not the worker's: the
//! worker holds secrets (`WEIR_WORKER_TOKEN`, cloud credentials) that a pipeline must never read.
//! Only the variables a program needs to behave (`PATH`, `HOME`, `LANG`, `LC_*`, `TMPDIR`) are
//! carried over. This module only computes the list; it never touches the process environment.

use std::path::Path;

/// The worker variables a step inherits, besides every `LC_*`.
pub const KEPT_VARS: &[&str] = &["PATH", "HOME", "LANG", "TMPDIR"];

/// The environment of a step: the kept part of `worker` (the worker's own environment, passed in),
/// then the spec's variables (which may override those), then `WEIR_INPUTS` and `WEIR_OUTPUTS`
/// (which the spec cannot override). `inputs` and `outputs` are the paths as the step sees them.
pub fn step_env(
    worker: impl IntoIterator<Item = (String, String)>,
    spec: &[(String, String)],
    inputs: &Path,
    outputs: &Path,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> =
        worker.into_iter().filter(|(k, _)| KEPT_VARS.contains(&k.as_str()) || k.starts_with("LC_")).collect();
    let mut set = |k: &str, v: String| match env.iter_mut().find(|(ek, _)| ek == k) {
        Some(slot) => slot.1 = v,
        None => env.push((k.to_string(), v)),
    };
    for (k, v) in spec {
        set(k, v.clone());
    }
    set("WEIR_INPUTS", inputs.display().to_string());
    set("WEIR_OUTPUTS", outputs.display().to_string());
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn keeps_only_the_safe_worker_vars_and_spec_wins() {
        let worker = pairs(&[
            ("PATH", "/bin"),
            ("LC_ALL", "C"),
            ("WEIR_WORKER_TOKEN", "secret"),
            ("AWS_SECRET_ACCESS_KEY", "x"),
            ("HOME", "/root"),
        ]);
        let spec = pairs(&[("HOME", "/step"), ("WEIR_STEP", "train"), ("WEIR_OUTPUTS", "/nope")]);
        let env = step_env(worker, &spec, Path::new("/in"), Path::new("/out"));
        assert_eq!(
            env,
            pairs(&[
                ("PATH", "/bin"),
                ("LC_ALL", "C"),
                ("HOME", "/step"),
                ("WEIR_STEP", "train"),
                ("WEIR_OUTPUTS", "/out"),
                ("WEIR_INPUTS", "/in"),
            ])
        );
    }
}
