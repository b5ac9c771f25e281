//! What a step's container looks like, as pure functions of the [`StepSpec`]: its name, its
//! labels, and the body of the create request (command, environment, mounts, limits, GPUs and the
//! security settings). Nothing here talks to the engine or reads the clock, so every rule of the
//! container's shape is checked by unit tests below without Docker.
//!
//! Safe by default, whatever the spec says: never privileged, no host network, pid, ipc or uts
//! namespace, `no-new-privileges`, every capability dropped but the step's set (the default set
//! or the step's `capabilities:`, never one outside the safe set of
//! `weir_data::capabilities`), at most [`PIDS_LIMIT`] processes and threads, and no
//! mounts but the folders of the step (bundle, inputs, outputs and its live metrics folder). The step runs as the worker's own uid:gid, so what it writes to `/weir/outputs`
//! belongs on the host to the worker that uploads it (and a step gains no root by being in a
//! container that the worker's user could not have).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use bollard::models::{ContainerCreateBody, DeviceRequest, HostConfig, Mount, MountType};

use weir_data::capabilities;

use crate::runtime::{Action, AttemptLabel, Error, StepSpec, set_metrics_file, step_env};

/// Where the pipeline bundle is mounted, read-only; the step's working directory.
pub const SRC: &str = "/weir/src";
/// Where the outputs of the steps this one needs are mounted, read-only.
pub const INPUTS: &str = "/weir/inputs";
/// Where the step writes its outputs, read-write.
pub const OUTPUTS: &str = "/weir/outputs";
/// Where the attempt's live metrics folder is mounted, read-write (`WEIR_METRICS` is a file in it).
pub const METRICS: &str = "/weir/metrics";

/// Carried by every container weir starts, so that a worker finds its own after a restart (and
/// never touches anyone else's).
pub const MANAGED: (&str, &str) = ("weir.managed", "1");
pub const RUN: &str = "weir.run";
pub const STEP: &str = "weir.step";
pub const INSTANCE: &str = "weir.instance";
pub const ATTEMPT: &str = "weir.attempt";
/// The worker that started it ([`AttemptLabel::owner`]): two workers may share one engine.
pub const OWNER: &str = "weir.owner";

/// The most processes and threads a step's container may hold at once (its cgroup's
/// `pids.max`): a fork bomb stops there instead of exhausting the host's pid space. Threads
/// count, so the bound is well above what a data loader or a BLAS pool starts.
pub const PIDS_LIMIT: i64 = 4096;

/// The longest part of the run id or step name kept readable in a container name.
const NAME_PART: usize = 40;

/// The container name of an attempt: deterministic, valid for Docker
/// (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`), distinct per (run, instance, attempt). The run id and step are
/// kept readable (characters Docker refuses become `_`, long parts are cut); a hash of the exact
/// label makes names distinct even where that rewriting makes two of them alike.
pub fn container_name(id: &AttemptLabel) -> String {
    let part = |s: &str| -> String {
        let kept: String = s
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') { c } else { '_' })
            .take(NAME_PART)
            .collect();
        if kept.is_empty() { "_".to_string() } else { kept }
    };
    let mut hasher = blake3::Hasher::new();
    for field in [id.run_id.as_bytes(), id.step.as_bytes()] {
        hasher.update(&(field.len() as u64).to_le_bytes());
        hasher.update(field);
    }
    hasher.update(&id.instance.to_le_bytes());
    hasher.update(&id.attempt.to_le_bytes());
    let hash = hasher.finalize().to_hex();
    format!("weir-{}-{}-i{}-a{}-{}", part(&id.run_id), part(&id.step), id.instance, id.attempt, &hash[..12])
}

/// The labels of an attempt's container.
pub fn labels(id: &AttemptLabel) -> HashMap<String, String> {
    HashMap::from([
        (MANAGED.0.to_string(), MANAGED.1.to_string()),
        (RUN.to_string(), id.run_id.clone()),
        (STEP.to_string(), id.step.clone()),
        (INSTANCE.to_string(), id.instance.to_string()),
        (ATTEMPT.to_string(), id.attempt.to_string()),
        (OWNER.to_string(), id.owner.clone()),
    ])
}

/// The attempt a container's labels name; a label that is missing or not a number reads as
/// empty or 0 (the caller sees the raw labels too).
pub fn attempt_of(labels: &BTreeMap<String, String>) -> AttemptLabel {
    let text = |k: &str| labels.get(k).cloned().unwrap_or_default();
    let number = |k: &str| labels.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
    AttemptLabel {
        run_id: text(RUN),
        step: text(STEP),
        instance: number(INSTANCE),
        attempt: number(ATTEMPT),
        owner: text(OWNER),
    }
}

/// The command of the container: a script through `sh -c`, an argv as it is. Either way the
/// image's entrypoint is reset, so what runs is exactly this.
pub fn command(action: &Action) -> Result<Vec<String>, Error> {
    match action {
        Action::Script(script) => Ok(vec!["sh".into(), "-c".into(), script.clone()]),
        Action::Argv(argv) if argv.is_empty() => Err(Error::EmptyArgv),
        Action::Argv(argv) => Ok(argv.clone()),
    }
}

/// A host folder as the engine wants a bind source: absolute, and UTF-8 (the API is JSON).
fn host_path(path: &Path) -> Result<String, Error> {
    let absolute = std::path::absolute(path)
        .map_err(|e| Error::Docker(format!("cannot make {} absolute for a bind mount: {e}", path.display())))?;
    absolute.to_str().map(str::to_string).ok_or_else(|| {
        Error::Docker(format!("{} is not UTF-8 and cannot be mounted: use a UTF-8 work folder", absolute.display()))
    })
}

/// The step's folders: its bundle and inputs read-only, its outputs and live metrics folder
/// read-write.
fn mounts(spec: &StepSpec) -> Result<Vec<Mount>, Error> {
    let mut mounts = vec![
        bind(&spec.workdir, SRC, true)?,
        bind(&spec.inputs_dir, INPUTS, true)?,
        bind(&spec.outputs_dir, OUTPUTS, false)?,
    ];
    if let Some(dir) = &spec.metrics_dir {
        mounts.push(bind(dir, METRICS, false)?);
    }
    Ok(mounts)
}

fn bind(source: &Path, target: &str, read_only: bool) -> Result<Mount, Error> {
    Ok(Mount {
        target: Some(target.to_string()),
        source: Some(host_path(source)?),
        typ: Some(MountType::BIND),
        read_only: Some(read_only),
        ..Default::default()
    })
}

/// The capabilities `spec`'s container keeps; a name outside the safe set is refused here too,
/// whatever the engine sent.
pub fn kept_capabilities(spec: &StepSpec) -> Result<Vec<String>, Error> {
    let Some(names) = &spec.capabilities else {
        return Ok(capabilities::DEFAULT.iter().map(|c| c.to_string()).collect());
    };
    match names.iter().find(|n| !capabilities::SAFE.contains(&n.as_str())) {
        Some(bad) => Err(Error::Docker(format!(
            "capability {bad:?} is outside weir's safe set ({}): this worker will not grant it",
            capabilities::SAFE.join(", ")
        ))),
        None => Ok(names.clone()),
    }
}

/// The create request for `spec`'s container, from `image`, run as `user` (`uid:gid`).
pub fn create_body(spec: &StepSpec, image: &str, user: &str) -> Result<ContainerCreateBody, Error> {
    let cmd = command(&spec.action)?;
    // No worker variable at all: the image's own environment (PATH, HOME) rules in a container.
    let mut env = step_env(std::iter::empty(), &spec.env, Path::new(INPUTS), Path::new(OUTPUTS));
    if spec.metrics_dir.is_some() {
        set_metrics_file(&mut env, &Path::new(METRICS).join(crate::runtime::METRICS_FILE));
    }
    let saturate = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let memory = spec.limits.memory_bytes.map(saturate);
    let gpus = (!spec.gpus.is_empty()).then(|| {
        vec![DeviceRequest {
            driver: Some("nvidia".into()),
            device_ids: Some(spec.gpus.iter().map(u32::to_string).collect()),
            capabilities: Some(vec![vec!["gpu".into()]]),
            ..Default::default()
        }]
    });
    let host = HostConfig {
        mounts: Some(mounts(spec)?),
        nano_cpus: spec.limits.cpus_milli.map(|m| saturate(m.saturating_mul(1_000_000))),
        memory,
        // Equal to the memory limit: no swap, so a step over its limit is OOM-killed, not slowed.
        memory_swap: memory,
        device_requests: gpus,
        // An init (docker-init) as PID 1 passes our SIGTERM on to the step: a shell as PID 1
        // would ignore it and every stop would wait out the whole grace.
        init: Some(true),
        privileged: Some(false),
        ipc_mode: Some("private".into()),
        security_opt: Some(vec!["no-new-privileges".into()]),
        cap_drop: Some(vec!["ALL".into()]),
        cap_add: Some(kept_capabilities(spec)?),
        pids_limit: Some(PIDS_LIMIT),
        ..Default::default()
    };
    Ok(ContainerCreateBody {
        image: Some(image.to_string()),
        user: Some(user.to_string()),
        cmd: Some(cmd),
        // `[""]` resets the image's entrypoint (the API's own convention).
        entrypoint: Some(vec![String::new()]),
        env: Some(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()),
        working_dir: Some(SRC.to_string()),
        labels: Some(labels(&spec.id)),
        attach_stdin: Some(false),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(false),
        tty: Some(false),
        stop_signal: Some("SIGTERM".into()),
        // For a `docker stop` by hand or the engine's own shutdown; weir stops with its own grace.
        stop_timeout: Some(spec.grace.as_secs_f64().ceil() as i64),
        host_config: Some(host),
        ..Default::default()
    })
}

/// The image reference to pull, as `(image, tag)`: the engine pulls every tag of a repository
/// when the tag is empty, so an untagged name means `latest`, as it does for `docker pull`.
pub fn pull_reference(image: &str) -> (&str, &str) {
    if image.contains('@') {
        return (image, "");
    }
    let last = image.rfind('/').map_or(0, |i| i + 1);
    match image[last..].rfind(':') {
        Some(i) => (&image[..last + i], &image[last + i + 1..]),
        None => (image, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::runtime::Limits;

    fn id(run: &str, step: &str, instance: u32, attempt: u32) -> AttemptLabel {
        AttemptLabel { run_id: run.into(), step: step.into(), instance, attempt, owner: "o1".into() }
    }

    fn valid(name: &str) -> bool {
        let mut chars = name.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    }

    #[test]
    fn container_names_are_valid_deterministic_and_distinct() {
        let ids = [
            id("r1", "train", 3, 1),
            id("r1", "train", 3, 2),
            id("r1", "train", 4, 1),
            id("r2", "train", 3, 1),
            id("r/1", "train", 3, 1),
            id("r_1", "train", 3, 1),
            id("", "", 0, 0),
            id("ünïcode run", "step with spaces", 1, 1),
            id(&"x".repeat(300), "s", 1, 1),
            id(&"x".repeat(301), "s", 1, 1),
        ];
        let names: Vec<String> = ids.iter().map(container_name).collect();
        for name in &names {
            assert!(valid(name), "{name}");
            assert!(name.len() < 128, "{name}");
        }
        assert_eq!(names.iter().collect::<std::collections::HashSet<_>>().len(), names.len(), "{names:?}");
        assert_eq!(container_name(&ids[0]), container_name(&ids[0].clone()));
        assert!(names[0].starts_with("weir-r1-train-i3-a1-"), "{}", names[0]);
    }

    #[test]
    fn labels_round_trip() {
        let attempt = id("run-7", "prep", 2, 3);
        let labels: BTreeMap<_, _> = labels(&attempt).into_iter().collect();
        assert_eq!(labels.get("weir.managed").map(String::as_str), Some("1"));
        assert_eq!(attempt_of(&labels), attempt);
        assert_eq!(attempt_of(&BTreeMap::from([(ATTEMPT.to_string(), "x".to_string())])), AttemptLabel::default());
    }

    #[test]
    fn pull_references() {
        let check = |image, expect| assert_eq!(pull_reference(image), expect, "{image}");
        check("busybox", ("busybox", "latest"));
        check("python:3.12-slim", ("python", "3.12-slim"));
        check("localhost:5000/team/img", ("localhost:5000/team/img", "latest"));
        check("localhost:5000/team/img:v2", ("localhost:5000/team/img", "v2"));
        check("img@sha256:abcd", ("img@sha256:abcd", ""));
    }

    fn spec(action: Action) -> StepSpec {
        let mut spec = StepSpec::new(action, "/b/src".into(), "/b/in".into(), "/b/out".into());
        spec.id = id("run", "train", 1, 2);
        spec.env = vec![("WEIR_STEP".into(), "train".into()), ("WEIR_OUTPUTS".into(), "/elsewhere".into())];
        spec.grace = Duration::from_millis(2500);
        spec
    }

    #[test]
    fn body_runs_the_action_exactly() {
        let body = create_body(&spec(Action::Script("echo hi".into())), "img:1", "1000:100").unwrap();
        assert_eq!(body.cmd.unwrap(), ["sh", "-c", "echo hi"]);
        assert_eq!(body.entrypoint.unwrap(), [""]);
        let body = create_body(&spec(Action::Argv(vec!["python".into(), "a b".into()])), "img:1", "0:0").unwrap();
        assert_eq!(body.cmd.unwrap(), ["python", "a b"]);
        assert!(matches!(create_body(&spec(Action::Argv(vec![])), "img:1", "0:0"), Err(Error::EmptyArgv)));
        assert_eq!(body.image.as_deref(), Some("img:1"));
        assert_eq!(body.user.as_deref(), Some("0:0"));
        assert_eq!(body.working_dir.as_deref(), Some(SRC));
        assert_eq!(body.tty, Some(false));
        assert_eq!(body.stop_timeout, Some(3));
    }

    #[test]
    fn body_env_is_the_spec_and_container_paths_only() {
        let body = create_body(&spec(Action::Script("true".into())), "img", "0:0").unwrap();
        assert_eq!(
            body.env.unwrap(),
            ["WEIR_STEP=train", "WEIR_OUTPUTS=/weir/outputs", "WEIR_INPUTS=/weir/inputs"],
            "no PATH, HOME or any worker variable; the spec cannot move WEIR_OUTPUTS"
        );
    }

    #[test]
    fn body_labels_name_the_attempt() {
        let body = create_body(&spec(Action::Script("true".into())), "img", "0:0").unwrap();
        let labels = body.labels.unwrap();
        assert_eq!(labels["weir.run"], "run");
        assert_eq!(labels["weir.step"], "train");
        assert_eq!(labels["weir.instance"], "1");
        assert_eq!(labels["weir.attempt"], "2");
        assert_eq!(labels["weir.managed"], "1");
    }

    #[test]
    fn body_is_safe_by_default() {
        let mut s = spec(Action::Script("true".into()));
        s.gpus = vec![1, 3];
        s.limits = Limits { cpus_milli: Some(1500), memory_bytes: Some(1 << 30) };
        let host = create_body(&s, "img", "0:0").unwrap().host_config.unwrap();
        assert_ne!(host.privileged, Some(true));
        for mode in [&host.network_mode, &host.pid_mode, &host.ipc_mode, &host.uts_mode, &host.userns_mode] {
            assert_ne!(mode.as_deref(), Some("host"));
        }
        assert_eq!(host.cap_drop.unwrap(), ["ALL"]);
        assert_eq!(host.cap_add.unwrap(), capabilities::DEFAULT);
        assert_eq!(host.pids_limit, Some(PIDS_LIMIT));
        assert_eq!(host.devices, None);
        assert_eq!(host.binds, None, "only the three mounts below");
        assert_eq!(host.volumes_from, None);
        assert_eq!(host.security_opt.unwrap(), ["no-new-privileges"]);
        let mounts: Vec<_> = host
            .mounts
            .unwrap()
            .into_iter()
            .map(|m| (m.typ.unwrap(), m.source.unwrap(), m.target.unwrap(), m.read_only.unwrap()))
            .collect();
        assert_eq!(
            mounts,
            [
                (MountType::BIND, "/b/src".to_string(), SRC.to_string(), true),
                (MountType::BIND, "/b/in".to_string(), INPUTS.to_string(), true),
                (MountType::BIND, "/b/out".to_string(), OUTPUTS.to_string(), false),
            ]
        );
    }

    #[test]
    fn body_limits_and_gpus() {
        let mut s = spec(Action::Script("true".into()));
        let host = create_body(&s, "img", "0:0").unwrap().host_config.unwrap();
        assert_eq!((host.nano_cpus, host.memory, host.memory_swap, host.device_requests), (None, None, None, None));
        s.gpus = vec![1, 3];
        s.limits = Limits { cpus_milli: Some(1500), memory_bytes: Some(256 << 20) };
        let host = create_body(&s, "img", "0:0").unwrap().host_config.unwrap();
        assert_eq!(host.nano_cpus, Some(1_500_000_000));
        assert_eq!(host.memory, Some(256 << 20));
        assert_eq!(host.memory_swap, Some(256 << 20), "no swap beyond the memory limit");
        let request = &host.device_requests.unwrap()[0];
        assert_eq!(request.driver.as_deref(), Some("nvidia"));
        assert_eq!(request.device_ids.as_deref(), Some(&["1".to_string(), "3".to_string()][..]));
        assert_eq!(request.capabilities, Some(vec![vec!["gpu".to_string()]]));
        assert_eq!(request.count, None, "specific devices, not a count");
        s.limits = Limits { cpus_milli: Some(u64::MAX), memory_bytes: Some(u64::MAX) };
        let host = create_body(&s, "img", "0:0").unwrap().host_config.unwrap();
        assert_eq!((host.nano_cpus, host.memory), (Some(i64::MAX), Some(i64::MAX)));
    }

    #[test]
    fn capabilities_are_the_step_s_within_the_safe_set() {
        let caps = |names: Option<&[&str]>| {
            let mut s = spec(Action::Script("true".into()));
            s.capabilities = names.map(|n| n.iter().map(|c| c.to_string()).collect());
            create_body(&s, "img", "0:0").map(|b| b.host_config.unwrap())
        };
        let host = caps(None).unwrap();
        assert_eq!(host.cap_drop.unwrap(), ["ALL"], "everything is dropped first");
        assert_eq!(
            host.cap_add.unwrap(),
            ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "NET_BIND_SERVICE", "SETGID", "SETUID"]
        );
        assert_eq!(caps(Some(&["CHOWN", "SYS_CHROOT"])).unwrap().cap_add.unwrap(), ["CHOWN", "SYS_CHROOT"]);
        assert_eq!(caps(Some(&[])).unwrap().cap_add.unwrap(), Vec::<String>::new(), "none at all");
        for bad in ["SYS_ADMIN", "NET_ADMIN", "NET_RAW", "ALL", "chown"] {
            let err = caps(Some(&["CHOWN", bad])).unwrap_err();
            assert!(err.to_string().contains(bad) && err.to_string().contains("safe set"), "{bad}: {err}");
        }
    }

    #[test]
    fn relative_folders_become_absolute() {
        let mut s = spec(Action::Script("true".into()));
        s.workdir = PathBuf::from("bundle");
        let host = create_body(&s, "img", "0:0").unwrap().host_config.unwrap();
        let source = PathBuf::from(host.mounts.unwrap()[0].source.clone().unwrap());
        assert!(source.is_absolute() && source.ends_with("bundle"), "{source:?}");
    }
}
