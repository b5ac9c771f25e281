//! The environment a step sees. A step starts from an empty environment, not the worker's: the
//! worker holds secrets (`WEIR_WORKER_TOKEN`, cloud credentials) that a pipeline must never read.
//! Only the variables a program needs to behave (`PATH`, `HOME`, `LANG`, `LC_*`, `TMPDIR`) are
//! carried over. This module only computes the list; it never touches the process environment.

use std::path::Path;

/// The worker variables a step inherits, besides every `LC_*`.
pub const KEPT_VARS: &[&str] = &["PATH", "HOME", "LANG", "TMPDIR"];

/// The part of this process's environment a step inherits, read once: copying the whole
/// environment into strings at every step was about a tenth of the worker's own instructions
/// per step of a chain of short steps (callgrind, BENCHMARKS.md issue 19). weir never changes
/// its own environment after it starts.
pub fn kept_from_process() -> &'static [(String, String)] {
    static KEPT: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();
    KEPT.get_or_init(|| std::env::vars().filter(|(k, _)| kept(k)).collect())
}

fn kept(name: &str) -> bool {
    KEPT_VARS.contains(&name) || name.starts_with("LC_")
}

/// The environment of a step: the kept part of `worker` (the worker's own environment, passed in),
/// then the spec's variables (which may override those), then `WEIR_INPUTS` and `WEIR_OUTPUTS`
/// (which the spec cannot override). `inputs` and `outputs` are the paths as the step sees them.
pub fn step_env(
    worker: impl IntoIterator<Item = (String, String)>,
    spec: &[(String, String)],
    inputs: &Path,
    outputs: &Path,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = worker.into_iter().filter(|(k, _)| kept(k)).collect();
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

/// The name of the live metrics file in an attempt's metrics folder.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// Sets `WEIR_METRICS` to `file`, the live metrics file as the step sees it, over anything the
/// spec said (the worker tails that file and no other).
pub fn set_metrics_file(env: &mut Vec<(String, String)>, file: &Path) {
    env.retain(|(k, _)| k != "WEIR_METRICS");
    env.push(("WEIR_METRICS".to_string(), file.display().to_string()));
}

/// Sets `CUDA_VISIBLE_DEVICES` to the GPUs assigned to a process step (`0,2`), and to the empty
/// string when it was assigned none: CUDA then shows the step no device at all, so a step that
/// asked for no GPU cannot take one another step holds just because it runs on a GPU host. Set
/// last, over the step's own `env:`, which cannot widen its share. Containers do not use this:
/// Docker's device request renumbers the devices inside the container.
pub fn set_visible_gpus(env: &mut Vec<(String, String)>, gpus: &[u32]) {
    let value = gpus.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    env.retain(|(k, _)| k != "CUDA_VISIBLE_DEVICES");
    env.push(("CUDA_VISIBLE_DEVICES".to_string(), value));
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

    #[test]
    fn the_process_environment_is_read_once_and_only_its_kept_part() {
        let kept = kept_from_process();
        let path = std::env::var("PATH").expect("tests run with a PATH");
        assert!(kept.contains(&("PATH".to_string(), path)), "{kept:?}");
        // cargo sets CARGO_* for every test process: never carried to a step.
        assert!(std::env::vars().any(|(k, _)| k.starts_with("CARGO_")));
        assert!(kept.iter().all(|(k, _)| KEPT_VARS.contains(&k.as_str()) || k.starts_with("LC_")), "{kept:?}");
        assert!(std::ptr::eq(kept, kept_from_process()), "read again");
    }

    #[test]
    fn a_process_step_sees_only_its_assigned_gpus_and_none_when_it_asked_for_none() {
        let cases: &[(&[u32], &str)] = &[(&[], ""), (&[1], "1"), (&[0, 3], "0,3")];
        for (gpus, want) in cases {
            let mut env = pairs(&[("CUDA_VISIBLE_DEVICES", "0,1,2,3"), ("PATH", "/bin")]);
            set_visible_gpus(&mut env, gpus);
            assert_eq!(env, pairs(&[("PATH", "/bin"), ("CUDA_VISIBLE_DEVICES", want)]), "{gpus:?}");
        }
    }
}
