//! No parameter value can inject shell syntax: plans are rendered and their scripts really run
//! under `sh -c`, once per quoting context, with hostile values; each value must come back
//! byte for byte and no side effect may happen. In `command:` a value stays one argv item.

use std::process::Command;

use weir_engine::plan::{self, Resolved};
use weir_engine::spec::{self, Limits};

const PIPELINE: &str = r#"
name: quoting
params:
  msg: {type: string}
steps:
  bare:
    run: printf '%s' {{ params.msg }} > "$OUT/bare"
  double:
    run: printf '%s' "{{ params.msg }}" > "$OUT/double"
  single:
    run: printf '%s' '{{ params.msg }}' > "$OUT/single"
  mixed:
    run: printf '%s' "pre-{{ params.msg }}"-'{{ params.msg }}'-{{ params.msg }} > "$OUT/mixed"
  subst:
    run: printf '%s' "$(printf '%s' {{ params.msg }})" > "$OUT/subst"
  backtick:
    run: printf '%s' "`printf '%s' {{ params.msg }}`" > "$OUT/backtick"
  argv:
    command: [printf, "%s", "{{ params.msg }}", "--flag={{ params.msg }}"]
"#;

fn hostile(dir: &std::path::Path) -> Vec<String> {
    let pwned = dir.join("pwned");
    let p = pwned.display();
    vec![
        format!("\"; touch {p} #"),
        format!("'; touch {p} #"),
        format!("$(touch {p})"),
        format!("`touch {p}`"),
        format!("a\ntouch {p}\n"),
        format!("\\\"; touch {p}; echo \\"),
        format!("${{IFS}}touch${{IFS}}{p}"),
        "it's \"quoted\" $HOME * ~ ! & | ; < > ( ) { } [ ] # \\ \t end".to_string(),
        "trailing backslash \\".to_string(),
        String::new(),
        "--".to_string(),
        "x'\"'\"'y".to_string(),
    ]
}

#[test]
fn values_stay_literal_in_every_shell_context() {
    let pipeline = spec::load(PIPELINE, &Limits::default()).expect("valid pipeline");
    let dir = tempfile::tempdir().expect("tempdir");
    for value in hostile(dir.path()) {
        let params = plan::resolve_params(&pipeline, &[("msg".into(), value.clone())]).expect("params");
        let plan = plan::plan(&pipeline, &params, "r1");
        for &n in &plan.order {
            let inst = &plan.graph[n];
            match &inst.action {
                Resolved::Run(script) => {
                    let status =
                        Command::new("sh").arg("-c").arg(script).env("OUT", dir.path()).status().expect("run sh");
                    assert!(status.success(), "{}: script failed for {value:?}:\n{script}", inst.name);
                    let got = std::fs::read_to_string(dir.path().join(&inst.name)).expect("output");
                    let expected = match inst.name.as_str() {
                        "mixed" => format!("pre-{value}-{value}-{value}"),
                        // $(...) and `...` strip trailing newlines, as the shell always does.
                        "subst" | "backtick" => value.trim_end_matches('\n').to_string(),
                        _ => value.clone(),
                    };
                    assert_eq!(got, expected, "{}: value changed for {value:?}:\n{script}", inst.name);
                }
                Resolved::Command(argv) => {
                    assert_eq!(argv, &["printf", "%s", value.as_str(), &format!("--flag={value}")]);
                }
            }
            assert!(!dir.path().join("pwned").exists(), "{}: injection ran for {value:?}", inst.name);
        }
        assert_eq!(plan.env, vec![("WEIR_PARAM_MSG".to_string(), value.clone())]);
    }
}
