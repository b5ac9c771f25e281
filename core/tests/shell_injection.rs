//! No value can execute through a `run:` script. Plans are rendered and each script really
//! runs under `sh -c` (and `bash -c`), with the environment the engine gives a step
//! ([`Plan::values_env`]), once per payload of a hostile corpus and per shell context a
//! reference may stand in: a canary file must never appear, each value must arrive byte for
//! byte, and no script may contain the value's text. Every place a reference cannot stand is
//! refused by validation, naming the field and what to write instead, and a demonstration
//! shows that in those places even a reference runs a payload under bash. In `command:` a
//! value stays one argv item.

use std::path::Path;
use std::process::Command;

use weir_core::plan::{self, Plan, Resolved};
use weir_core::spec::{self, Limits};

/// How a context's output relates to the value.
#[derive(Clone, Copy)]
enum Expect {
    Value,
    /// `$(...)` strips trailing newlines, as the shell always does.
    Trimmed,
    Fixed(&'static str),
    /// Written three times: `pre-V-V-post`.
    Mixed,
}

/// Accepted contexts: (step, script writing to "$OUT/<step>", expected output).
const CONTEXTS: &[(&str, &str, Expect)] = &[
    ("bare", r#"printf '%s' {{ params.msg }} > "$OUT/bare""#, Expect::Value),
    ("double", r#"printf '%s' "{{ params.msg }}" > "$OUT/double""#, Expect::Value),
    ("mixed", r#"printf '%s' "pre-{{ params.msg }}"-{{ params.msg }}-post > "$OUT/mixed""#, Expect::Mixed),
    ("subst", r#"printf '%s' "$(printf '%s' {{ params.msg }})" > "$OUT/subst""#, Expect::Trimmed),
    (
        "subst_quoted",
        r#"x="$(printf '%s' "{{ params.msg }}")"; printf '%s' "$x" > "$OUT/subst_quoted""#,
        Expect::Trimmed,
    ),
    ("assign", r#"v={{ params.msg }}; printf '%s' "$v" > "$OUT/assign""#, Expect::Value),
    ("export_nested", r#"export V2={{ params.msg }}; sh -c 'printf "%s" "$V2"' > "$OUT/export_nested""#, Expect::Value),
    (
        "comment",
        "# about {{ params.msg }} here\nprintf '%s' ok > \"$OUT/comment\" # {{ params.msg }}",
        Expect::Fixed("ok"),
    ),
    ("case", r#"case {{ params.msg }} in *) printf '%s' {{ params.msg }} > "$OUT/case";; esac"#, Expect::Value),
    ("for", r#"for w in {{ params.msg }}; do printf '%s' "$w" > "$OUT/for"; done"#, Expect::Value),
    ("nested_arg", r#"sh -c 'printf "%s" "$1"' sh {{ params.msg }} > "$OUT/nested_arg""#, Expect::Value),
    (
        "after_heredoc",
        "cat <<EOF > /dev/null\nbody $HOME\nEOF\nprintf '%s' {{ params.msg }} > \"$OUT/after_heredoc\"",
        Expect::Value,
    ),
    (
        "test",
        r#"[ {{ params.msg }} = "$WEIR_PARAM_MSG" ] && printf '%s' {{ params.msg }} > "$OUT/test""#,
        Expect::Value,
    ),
    ("if_subshell", r#"if true; then ( printf '%s' "{{ params.msg }}" ) > "$OUT/if_subshell"; fi"#, Expect::Value),
    ("matrix", r#"printf '%s' {{ matrix.m }} > "$OUT/matrix""#, Expect::Value),
    ("run_id", r#"printf '%s' "{{ run.id }}" > "$OUT/run_id""#, Expect::Value),
];

/// The payload corpus; `P` is the canary's path.
fn payloads(canary: &Path) -> Vec<String> {
    let p = canary.display();
    let binaryish: String = (1u8..32).chain([127]).map(char::from).collect();
    vec![
        format!("$(touch {p})"),
        format!("`touch {p}`"),
        format!("; touch {p}"),
        format!("| touch {p}"),
        format!("&& touch {p}"),
        format!("x\ntouch {p}\n"),
        format!("'; touch {p}; '"),
        format!("\"; touch {p}; \""),
        format!("\\\"; touch {p}; echo \\"),
        format!("\nEOF\ntouch {p}\nEOF\n"),
        format!("END\ntouch {p}\n"),
        format!("a[$(touch {p})]"),
        format!("x[$(touch {p})]+1"),
        format!("${{IFS}}touch${{IFS}}{p}"),
        format!("$IFS;touch$IFS{p}"),
        format!("); touch {p}; ("),
        format!("}}; touch {p}; {{"),
        format!("$((1+1))$[1]${{x:-$(touch {p})}}"),
        format!("# comment\ntouch {p}"),
        format!("'\"'\"'$(touch {p})'\"'\"'"),
        format!("{}$(touch {p})", "x".repeat(100_000)),
        "*".into(),
        "/*".into(),
        "-n".into(),
        "--help".into(),
        "-e a\\nb".into(),
        String::new(),
        "  spaces  at both ends  ".into(),
        "$HOME ~ !! {a,b} [a-z] ? %s %n \\ \t end".into(),
        "trailing backslash \\".into(),
        format!("{binaryish} é 漢 \u{202e}"),
        "EOF".into(),
    ]
}

fn pipeline_yaml(matrix_value: &str) -> String {
    let mut yaml = String::from("name: quoting\nparams:\n  msg: {type: string}\nsteps:\n");
    for (name, script, _) in CONTEXTS {
        // A JSON string is a YAML double-quoted scalar.
        let run = serde_json::to_string(script).expect("json");
        yaml.push_str(&format!("  {name}:\n    run: {run}\n"));
        if *name == "matrix" {
            let v = serde_json::to_string(matrix_value).expect("json");
            yaml.push_str(&format!("    matrix: {{m: [{v}]}}\n"));
        }
    }
    yaml.push_str("  argv:\n    command: [printf, \"%s\", \"{{ params.msg }}\", \"--flag={{ params.msg }}\"]\n");
    yaml
}

fn shells() -> Vec<&'static str> {
    let mut shells = vec!["sh"];
    let bash = Command::new("bash").arg("-c").arg("true").status().is_ok_and(|s| s.success());
    if bash {
        shells.push("bash");
    } else {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "bash is missing: install it (CI must test it)");
        eprintln!("bash is missing: testing sh only");
    }
    shells
}

fn run(shell: &str, script: &str, plan: &Plan, node: petgraph::graph::NodeIndex, out: &Path) -> bool {
    Command::new(shell)
        .arg("-c")
        .arg(script)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("OUT", out)
        .envs(plan.values_env(node))
        .status()
        .expect("run the shell")
        .success()
}

#[test]
fn no_payload_executes_in_any_accepted_context() {
    let dir = tempfile::tempdir().expect("tempdir");
    let canary = dir.path().join("canary");
    let out = dir.path().join("out");
    let shells = shells();
    let mut runs = 0;
    for value in payloads(&canary) {
        let yaml = pipeline_yaml(&value);
        let pipeline = spec::load(&yaml, &Limits::default()).unwrap_or_else(|d| panic!("{d:#?}"));
        let params = plan::resolve_params(&pipeline, &[("msg".into(), value.clone())]).expect("params");
        // The run id too is a payload here (the engine makes its own; this shows it is not trusted).
        let plan = plan::plan(&pipeline, &params, &value);
        for shell in &shells {
            for &n in &plan.order {
                let inst = &plan.graph[n];
                let step = inst.name.split('[').next().unwrap_or_default();
                std::fs::create_dir_all(&out).expect("mkdir");
                match &inst.action {
                    Resolved::Run(script) => {
                        if value.len() > 3 {
                            assert!(!script.contains(value.as_str()), "{step}: the value is in the script:\n{script}");
                        }
                        let ok = run(shell, script, &plan, n, &out);
                        runs += 1;
                        assert!(ok, "{shell} {step}: script failed for {value:?}:\n{script}");
                        let got = std::fs::read(out.join(step)).expect("output");
                        let expect = CONTEXTS.iter().find(|c| c.0 == step).map(|c| c.2).expect("a context");
                        let expected = match expect {
                            Expect::Value => value.clone(),
                            Expect::Trimmed => value.trim_end_matches('\n').to_string(),
                            Expect::Fixed(s) => s.to_string(),
                            Expect::Mixed => format!("pre-{value}-{value}-post"),
                        };
                        assert!(
                            got == expected.as_bytes(),
                            "{shell} {step}: value changed for {value:?}: got {:?}",
                            String::from_utf8_lossy(&got)
                        );
                    }
                    Resolved::Command(argv) => {
                        assert_eq!(argv, &["printf", "%s", value.as_str(), &format!("--flag={value}")]);
                    }
                }
                assert!(!canary.exists(), "{shell} {step}: a payload ran for {value:?}");
                std::fs::remove_dir_all(&out).expect("clean");
            }
        }
        assert_eq!(plan.env, vec![("WEIR_PARAM_MSG".to_string(), value.clone())]);
    }
    assert!(runs >= 30 * CONTEXTS.len(), "ran {runs} scripts");
}

/// Refused places: (script, a fragment of the help). `@` stands for `{{ params.msg }}`.
const REFUSED: &[(&str, &str)] = &[
    ("echo '@'", "end the quotes before it"),
    ("awk '{print \"@\"}' f", "ENVIRON[\"WEIR_PARAM_MSG\"]"),
    ("jq '.@' f.json", "read $WEIR_PARAM_MSG from its environment"),
    ("python3 - <<EOF\nprint('@')\nEOF", "os.environ['WEIR_PARAM_MSG']"),
    ("cat <<'EOF'\n@\nEOF", "os.environ['WEIR_PARAM_MSG']"),
    ("cat <<-EOF\n\t@\n\tEOF", "os.environ['WEIR_PARAM_MSG']"),
    ("echo $(( @ + 1 ))", "check that it is a number first"),
    ("(( n = @ ))", "check that it is a number first"),
    ("let n=@", "check that it is a number first"),
    ("[[ @ -eq 1 ]]", "check that it is a number first"),
    ("if [[ @ -gt 1 ]]; then :; fi", "check that it is a number first"),
    ("for (( i = 0; i < @; i++ )); do :; done", "check that it is a number first"),
    ("declare @", "name the variable yourself"),
    ("PS4=@; set -x", "keep values out of `PS4`"),
    ("a[@]=1", "check that it is a number first"),
    ("declare -i n=@", "check that it is a number first"),
    ("echo ${x:-@}", "${X:-\"$WEIR_PARAM_MSG\"}"),
    ("echo \"${a[@]}\"", "${X:-\"$WEIR_PARAM_MSG\"}"),
    ("echo `echo @`", "use $( ... ) instead of backticks"),
    ("eval echo @", "as an argument"),
    ("trap \"echo @\" EXIT", "as an argument"),
    ("sh -c \"echo @\"", "sh -c '... \"$1\" ...' sh \"$WEIR_PARAM_MSG\""),
    ("bash -c 'echo @'", "the environment reaches nested shells"),
    ("find . -exec sh -c \"echo @\" \\;", "the environment reaches nested shells"),
    ("python3 -c \"print('@')\"", "os.environ['WEIR_PARAM_MSG']"),
    ("perl -e 'print \"@\"'", "$ENV{WEIR_PARAM_MSG}"),
    ("node -e \"console.log('@')\"", "process.env.WEIR_PARAM_MSG"),
    ("sed \"s/x/@/\" f", "ENVIRON[\"WEIR_PARAM_MSG\"]"),
    ("read @", "name the variable yourself"),
    ("printf -v @ x", "name the variable yourself"),
    ("echo \\@", "remove the `\\` or `$`"),
    ("echo $@", "remove the `\\` or `$`"),
];

#[test]
fn places_a_reference_cannot_keep_a_value_out_of_code_are_refused() {
    for (script, help) in REFUSED {
        let script = script.replace('@', "{{ params.msg }}");
        let yaml =
            format!("name: r\nparams:\n  msg: x\nsteps:\n  s:\n    run: {}\n", serde_json::to_string(&script).unwrap());
        let errors = match spec::load(&yaml, &Limits::default()) {
            Ok(_) => panic!("accepted: {script:?}"),
            Err(e) => e,
        };
        assert_eq!(errors.len(), 1, "{script:?}: {errors:#?}");
        let d = &errors[0];
        assert!(
            d.message.starts_with("`{{ params.msg }}` cannot stand ") && d.message.ends_with("in `steps.s.run`"),
            "{script:?}: {}",
            d.message
        );
        let h = d.help.as_deref().unwrap_or_default();
        assert!(h.contains(help), "{script:?}: help {h:?} lacks {help:?}");
        // The span is the `{{ ... }}` itself, on line 6 of the file.
        let span = d.span.expect("a span");
        assert_eq!(span.line, 6, "{script:?}");
        assert_eq!(span.end_col - span.col, "{{ params.msg }}".len() as u32, "{script:?}");
    }
}

/// Every kind of reference renders as its variable, which the step's environment carries.
#[test]
fn the_same_places_are_accepted_for_every_kind_of_reference() {
    let yaml = "name: k\nparams:\n  p: x\nsteps:\n  s:\n    matrix: {m: [a]}\n    run: echo {{ params.p }} \"{{ matrix.m }}\" {{ run.id }} {{ step.name }}\n";
    let pipeline = spec::load(yaml, &Limits::default()).unwrap_or_else(|d| panic!("{d:#?}"));
    let plan = plan::plan(&pipeline, &plan::resolve_params(&pipeline, &[]).unwrap(), "r-1");
    let inst = &plan.graph[plan.order[0]];
    assert_eq!(
        inst.action,
        Resolved::Run(r#"echo "${WEIR_PARAM_P}" "${WEIR_MATRIX_M}" "${WEIR_RUN_ID}" "${WEIR_INSTANCE}""#.into())
    );
    let env = plan.values_env(plan.order[0]);
    for (k, v) in [("WEIR_PARAM_P", "x"), ("WEIR_MATRIX_M", "a"), ("WEIR_RUN_ID", "r-1"), ("WEIR_INSTANCE", "s[m=a]")] {
        assert!(env.contains(&(k.to_string(), v.to_string())), "{k} in {env:?}");
    }
}

/// Why the refusals exist: in each of these places a reference to the variable, as a script
/// would hold it (`"${VAR}"` for `@`, `${VAR}` inside `"..."` for `%`), still runs a payload
/// under bash, so only refusing helps. `C` is the canary's path in the payload.
const HOLES: &[(&str, &str)] = &[
    ("echo $(( @ + 1 ))", "a[$(touch C)]"),
    ("(( n = @ ))", "a[$(touch C)]"),
    ("for (( i = 0; i < @; i++ )); do :; done", "a[$(touch C)]"),
    ("let n=@", "a[$(touch C)]"),
    ("[[ @ -eq 1 ]]", "a[$(touch C)]"),
    ("if [[ @ -gt 1 ]]; then :; fi", "a[$(touch C)]"),
    ("a[@]=1", "a[$(touch C)]"),
    ("a=([@]=1)", "a[$(touch C)]"),
    ("declare -i n=@", "a[$(touch C)]"),
    ("x=(1); echo \"${x[@]}\"", "a[$(touch C)]"),
    ("declare @", "a[$(touch C)]=1"),
    ("read @ <<< x", "a[$(touch C)]"),
    ("printf -v @ x", "a[$(touch C)]"),
    ("PS4=@; set -x; true", "$(touch C)"),
    ("sh -c \"echo %\"", "$(touch C)"),
    ("eval echo @", "$(touch C)"),
    ("trap \"echo %\" EXIT", "$(touch C)"),
    ("python3 -c \"print('%')\"", "');import os;os.system('touch C');print('"),
    ("python3 - <<EOF\nprint('%')\nEOF", "');import os;os.system('touch C');print('"),
    ("perl -e \"print '%'\"", "';system('touch C');'"),
    ("awk \"BEGIN{print \\\"%\\\"}\"", "\";system(\"touch C\");\""),
];

#[test]
fn refused_places_run_a_payload_even_through_a_reference() {
    let bash = Command::new("bash").arg("-c").arg("true").status().is_ok_and(|s| s.success());
    if !bash {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "bash is missing: install it (CI must test it)");
        eprintln!("bash is missing: skipping the demonstration");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let canary = dir.path().join("canary");
    for (script, payload) in HOLES {
        let template = script.replace(['@', '%'], "{{ params.msg }}");
        let yaml = format!(
            "name: h\nparams:\n  msg: x\nsteps:\n  s:\n    run: {}\n",
            serde_json::to_string(&template).unwrap()
        );
        assert!(spec::load(&yaml, &Limits::default()).is_err(), "validation accepts {template:?}");
        let rendered = script.replace('@', "\"${WEIR_PARAM_MSG}\"").replace('%', "${WEIR_PARAM_MSG}");
        let value = payload.replace('C', &canary.display().to_string());
        let _ = Command::new("bash")
            .arg("-c")
            .arg(&rendered)
            .env("WEIR_PARAM_MSG", &value)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("run bash");
        assert!(canary.exists(), "{rendered:?} did not run {value:?}: is it still a hole?");
        std::fs::remove_file(&canary).expect("reset the canary");
    }
}

/// An int param or an all-integer matrix key may stand in arithmetic: its value is digits,
/// which the declared type guarantees (a payload is refused before any plan).
#[test]
fn integers_may_stand_in_arithmetic() {
    let yaml = "name: i\nparams:\n  n: 41\nsteps:\n  s:\n    matrix: {k: [2, -3]}\n    run: |\n      echo $(( {{ params.n }} + 1 )) $(( {{ matrix.k }} * 2 ))\n      (( {{ params.n }} > 1 )) 2>/dev/null || [ {{ params.n }} -gt 1 ]\n";
    let pipeline = spec::load(yaml, &Limits::default()).unwrap_or_else(|d| panic!("{d:#?}"));
    let bad = plan::resolve_params(&pipeline, &[("n".into(), "a[$(touch /tmp/x)]".into())]);
    assert!(bad.is_err(), "an int param takes digits only");
    let plan = plan::plan(&pipeline, &plan::resolve_params(&pipeline, &[]).unwrap(), "r");
    let dir = tempfile::tempdir().expect("tempdir");
    for shell in shells() {
        let outputs: Vec<String> = plan
            .order
            .iter()
            .map(|&n| {
                let Resolved::Run(script) = &plan.graph[n].action else { panic!("a script") };
                assert!(script.contains("$(( ${WEIR_PARAM_N} + 1 ))"), "{script}");
                let out = Command::new(shell)
                    .arg("-c")
                    .arg(script)
                    .envs(plan.values_env(n))
                    .current_dir(dir.path())
                    .output()
                    .expect("run the shell");
                assert!(out.status.success(), "{shell}: {script}");
                String::from_utf8_lossy(&out.stdout).into_owned()
            })
            .collect();
        assert_eq!(outputs, ["42 4\n", "42 -6\n"], "{shell}");
    }
}
