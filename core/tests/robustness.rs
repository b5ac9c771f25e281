//! Hostile pipeline files: every budget in `spec::Limits` is hit on purpose and must come back
//! as its own diagnostic (not a hang, a stack overflow or a panic), and a collection of nasty
//! inputs must only ever produce diagnostics, which must render. No timing assertions: a
//! budget that failed to stop early would show up as a test that never finishes.

use std::panic::{AssertUnwindSafe, catch_unwind};

use weir_core::diag::{Diagnostic, Renderer};
use weir_core::plan;
use weir_core::spec::{self, Limits};

const STEPS: &str = "steps:\n  a:\n    run: \"true\"\n";

fn load(text: &str) -> Result<spec::Pipeline, Vec<Diagnostic>> {
    spec::load(text, &Limits::default())
}

/// The single diagnostic of a rejected file.
fn only_error(text: &str, limits: &Limits) -> Diagnostic {
    match spec::load(text, limits) {
        Ok(_) => panic!("accepted a file that breaks a limit"),
        Err(mut diags) => {
            let messages: Vec<&str> = diags.iter().map(|d| d.message.as_str()).collect();
            assert_eq!(diags.len(), 1, "expected one diagnostic, got {messages:?}");
            diags.remove(0)
        }
    }
}

/// Nine levels of ten aliases each: 10^9 nodes if expanded.
fn billion_laughs() -> String {
    let mut text = String::from("name: lol\n");
    text.push_str("x-l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for level in 1..9 {
        let refs = vec![format!("*l{}", level - 1); 10].join(", ");
        text.push_str(&format!("x-l{level}: &l{level} [{refs}]\n"));
    }
    text.push_str("x-boom: *l8\n");
    text.push_str(STEPS);
    text
}

#[test]
fn billion_laughs_runs_out_of_node_budget() {
    let d = only_error(&billion_laughs(), &Limits::default());
    assert_eq!(d.message, "YAML expands to more than 1000000 nodes (aliases included)");
    assert!(d.span.is_some(), "the budget message points at where it ran out");
}

#[test]
fn alias_bomb_within_budget_is_only_counted() {
    // Six levels of ten: 10^6 leaves, over the default budget. A budget of 10^7 lets the same
    // file through: aliases share the anchored nodes, so nothing is copied, only counted.
    let mut text = String::from("name: lol\nx-l0: &l0 [a, a, a, a, a, a, a, a, a, a]\n");
    for level in 1..6 {
        let refs = vec![format!("*l{}", level - 1); 10].join(", ");
        text.push_str(&format!("x-l{level}: &l{level} [{refs}]\n"));
    }
    text.push_str(STEPS);
    let tight = only_error(&text, &Limits::default());
    assert!(tight.message.starts_with("YAML expands to more than"), "{}", tight.message);
    let roomy = Limits { max_yaml_nodes: 10_000_000, ..Limits::default() };
    spec::load(&text, &roomy).expect("shared aliases within the budget load");
}

#[test]
fn deeply_nested_flow_sequences_stop_at_the_depth_limit() {
    let text = "[".repeat(100_000);
    let d = only_error(&text, &Limits::default());
    assert_eq!(d.message, "YAML nesting is deeper than 64 levels");
    // Also behind a valid prefix, closed properly.
    let text = format!("name: deep\nx-deep: {}1{}\n{STEPS}", "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(only_error(&text, &Limits::default()).message, "YAML nesting is deeper than 64 levels");
}

#[test]
fn deeply_nested_flow_mappings_stop_at_the_depth_limit() {
    let text = "{a: ".repeat(100_000);
    assert_eq!(only_error(&text, &Limits::default()).message, "YAML nesting is deeper than 64 levels");
    let text = format!("name: deep\nx-deep: {}1{}\n{STEPS}", "{a: ".repeat(100_000), "}".repeat(100_000));
    assert_eq!(only_error(&text, &Limits::default()).message, "YAML nesting is deeper than 64 levels");
}

#[test]
fn deeply_indented_block_mappings_stop_at_the_depth_limit() {
    // 10,000 levels by indentation is ~50 MB of spaces: over the default file size, so use
    // the generous limits (same depth limit) to reach the parser.
    let mut text = String::new();
    for level in 0..10_000 {
        text.push_str(&" ".repeat(level));
        text.push_str("a:\n");
    }
    text.push_str(&" ".repeat(10_000));
    text.push_str("x\n");
    let d = only_error(&text, &Limits::generous());
    assert_eq!(d.message, "YAML nesting is deeper than 64 levels");
    // With the default limits the size check comes first.
    let d = only_error(&text, &Limits::default());
    assert!(d.message.starts_with("the file is "), "{}", d.message);
}

#[test]
fn deeply_nested_block_sequences_stop_at_the_depth_limit() {
    // `- - - - x`: 10,000 levels on one line.
    let text = format!("{}x\n", "- ".repeat(10_000));
    assert_eq!(only_error(&text, &Limits::default()).message, "YAML nesting is deeper than 64 levels");
}

#[test]
fn depth_limit_is_configurable() {
    let text = format!("name: d\nx-deep: {}1{}\n{STEPS}", "[".repeat(10), "]".repeat(10));
    load(&text).expect("ten levels are fine");
    let tight = Limits { max_depth: 5, ..Limits::default() };
    assert_eq!(only_error(&text, &tight).message, "YAML nesting is deeper than 5 levels");
}

#[test]
fn oversized_file_is_rejected_before_parsing() {
    // Invalid YAML, an alias bomb and deep nesting all at once: only the size is reported,
    // so nothing was parsed.
    let limits = Limits::default();
    let mut text = billion_laughs();
    text.push_str(&"[".repeat(100_000));
    text.push_str("\n\0*nowhere\n");
    while text.len() <= limits.max_file_bytes {
        text.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    let d = only_error(&text, &limits);
    assert_eq!(
        d.message,
        format!("the file is {} bytes, more than the limit of {} bytes", text.len(), limits.max_file_bytes)
    );

    let small = Limits { max_file_bytes: 100, ..Limits::default() };
    let exact = format!("name: x\n{STEPS}");
    let exact = format!("{exact}{}", "#".repeat(100 - exact.len()));
    assert_eq!(exact.len(), 100);
    spec::load(&exact, &small).expect("a file of exactly the limit is fine");
    let over = format!("{exact}#");
    assert_eq!(only_error(&over, &small).message, "the file is 101 bytes, more than the limit of 100 bytes");
}

#[test]
fn matrix_and_expansion_limits() {
    let text = "name: m\nsteps:\n  a:\n    matrix: {x: [1, 2, 3], y: [1, 2, 3]}\n    run: \"true\"\n";
    load(text).expect("nine instances are fine");
    let tight = Limits { max_matrix: 8, ..Limits::default() };
    let d = only_error(text, &tight);
    assert_eq!(d.message, "`steps.a.matrix` expands to 9 instances, more than the limit of 8");

    let tight = Limits { max_steps: 8, ..Limits::default() };
    assert_eq!(only_error(text, &tight).message, "the pipeline expands to 9 step instances, more than the limit of 8");

    let two = "name: m\nsteps:\n  a:\n    matrix: {x: [1, 2, 3]}\n    run: \"true\"\n  \
               b:\n    needs: [a]\n    matrix: {y: [1, 2, 3]}\n    run: \"true\"\n";
    load(two).expect("nine edges are fine");
    let tight = Limits { max_edges: 8, ..Limits::default() };
    assert_eq!(
        only_error(two, &tight).message,
        "the expanded pipeline has 9 dependencies between instances, more than the limit of 8"
    );
}

#[test]
fn huge_matrix_product_does_not_overflow() {
    // 20 axes of 10 values: 10^20 instances, more than usize on 64 bits.
    let axes: Vec<String> = (0..20).map(|i| format!("k{i}: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]")).collect();
    let text = format!("name: m\nsteps:\n  a:\n    matrix: {{{}}}\n    run: \"true\"\n", axes.join(", "));
    let d = only_error(&text, &Limits::default());
    assert!(d.message.contains("expands to too many instances"), "{}", d.message);
}

/// Inputs that have broken parsers before. Each must give diagnostics (or a pipeline), render,
/// and, when valid, plan.
fn nasty_inputs() -> Vec<(&'static str, String)> {
    let long = "x".repeat(900_000);
    let mut v: Vec<(&'static str, String)> = vec![
        ("empty", String::new()),
        ("only whitespace", " \n\t\n  \r\n".into()),
        ("only a comment", "# nothing\n".into()),
        ("NUL", "\0".into()),
        ("NULs", "\0\0\0\0".into()),
        ("NUL in a key", format!("na\0me: x\n{STEPS}")),
        ("NUL in a value", format!("name: x\0y\n{STEPS}")),
        ("NUL in a quoted value", format!("name: \"x\0y\"\n{STEPS}")),
        ("escaped NUL", format!("name: x\n{STEPS}    env: {{A: \"\\0\"}}\n")),
        ("lone high surrogate escape", format!("name: \"\\uD800\"\n{STEPS}")),
        ("lone low surrogate escape", format!("name: x\n{STEPS}    stage: \"\\uDC00\"\n")),
        ("surrogate pair escape", format!("name: x\n{STEPS}    stage: \"\\uD83D\\uDE00\"\n")),
        ("bad escape", "name: \"\\q\"\n".into()),
        ("huge escape", "name: \"\\U7FFFFFFF\"\n".into()),
        ("truncated escape", "name: \"\\u12".into()),
        ("unknown alias", "*unknown".into()),
        ("unknown alias as value", format!("name: *unknown\n{STEPS}")),
        ("self-referential anchor", "&a [*a]".into()),
        ("self-referential map anchor", "&a {b: *a}".into()),
        ("alias as key", format!("x-k: &k name\n*k : x\n{STEPS}")),
        ("anchor redefined", format!("x-a: &a 1\nx-b: &a [*a, *a]\nname: x\n{STEPS}")),
        ("very long line", format!("name: {long}\n{STEPS}")),
        ("very long key", format!("{long}: 1\n")),
        ("very long comment", format!("#{long}\n")),
        ("very long step name", format!("name: x\nsteps:\n  {long}:\n    run: \"true\"\n")),
        ("very long quoted", format!("name: \"{long}\n")),
        ("BOM", format!("\u{feff}name: x\n{STEPS}")),
        ("two documents", format!("name: x\n{STEPS}---\nname: y\n")),
        ("directives", format!("%YAML 1.1\n%TAG ! tag:x,2000:\n---\nname: x\n{STEPS}")),
        ("bad directive", "%YAML 9.9\n---\n".into()),
        ("tags", format!("name: !!str x\n{STEPS}    stage: !<tag:yaml.org,2002:binary> aGk=\n")),
        ("complex key", format!("name: x\n? [a, b]\n: c\n{STEPS}")),
        ("flow complex key", "{[a]: b, {c: d}: e}".into()),
        ("tabs", "name:\tx\nsteps:\n\ta:\n\t\trun: x\n".into()),
        ("CR only", "name: x\rsteps:\r  a:\r    run: x\r".into()),
        ("CRLF", "name: x\r\nsteps:\r\n  a:\r\n    run: \"true\"\r\n".into()),
        ("line separators", "name: x\u{2028}steps:\u{2029}  a: {run: x}\u{85}".into()),
        ("unclosed flow", "{name: x, steps: {a: {run: [".into()),
        ("unclosed quote", "name: 'x\n".into()),
        ("stray close", "]]]}}}".into()),
        ("only a scalar", "hello".into()),
        ("only a list", "[1, 2]".into()),
        ("null document", "~".into()),
        ("block scalar at top", "|\n  text\n".into()),
        ("bad indentation", "name: x\n steps:\n   a:\n  run: x\n".into()),
        ("block scalar indicators", format!("name: x\n{STEPS}    stage: |-9\n      x\n")),
        ("numbers", "name: x\nparams: {a: 0x, b: 0o9, c: 1e999999, d: -0, e: .nan, f: 99999999999999999999}\n".into()),
        ("wide chars", format!("name: \u{1F600}\u{0301}\u{200D}\n{STEPS}    stage: \"\u{10FFFF}\"\n")),
        ("combining marks in a key", "n\u{0301}ame: x\n".into()),
        (
            "template soup",
            format!(
                "name: x\n{STEPS}    env: {{A: \"{{{{\", B: \"{{{{ }}}}\", C: \"{{{{ params. }}}}\", {}}}\n",
                "D: \"}}{{'\""
            ),
        ),
        ("deep expression", format!("name: x\n{STEPS}    when: \"{}true{}\"\n", "(".repeat(2000), ")".repeat(2000))),
        ("long unary chain", format!("name: x\n{STEPS}    when: \"{}true\"\n", "!".repeat(4000))),
        ("long operator chain", format!("name: x\n{STEPS}    when: \"1{}\"\n", " + 1".repeat(1000))),
        ("overlong expression", format!("name: x\n{STEPS}    when: \"{}\"\n", "(".repeat(100_000))),
        ("cron garbage", format!("name: x\nschedule: {{cron: \"*/0 99 * * * * *\", timezone: \"\\0\"}}\n{STEPS}")),
        (
            "bad durations",
            format!("name: x\n{STEPS}    timeout: 99999999999999999999d\n    retries: {{limit: -1, backoff: 1x}}\n"),
        ),
        ("bad resources", format!("name: x\n{STEPS}    resources: {{cpus: -1, memory: 1Zi, gpus: 1.5}}\n")),
        (
            "regex bomb",
            "name: x\nparams: {p: {type: string, default: a, pattern: \"(((((((((((a*)*)*)*)*)*)*)*)*)*)*){99999}\"}}\n"
                .into(),
        ),
    ];
    // Random-looking bytes that are valid UTF-8: every ASCII control and punctuation mixed.
    let mut mix = String::new();
    let mut x: u32 = 0x2545_f491;
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        mix.push(char::from_u32(x % 0x80).unwrap_or('?'));
    }
    v.push(("xorshift ascii", mix));
    let mut uni = String::new();
    for _ in 0..5_000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        uni.push(char::from_u32(x % 0x11_0000).unwrap_or('\u{fffd}'));
        if x.is_multiple_of(7) {
            uni.push_str(": ");
        }
        if x.is_multiple_of(11) {
            uni.push('\n');
        }
    }
    v.push(("xorshift unicode", uni));
    v
}

fn exercise(text: &str) {
    let render = |diags: &[Diagnostic]| {
        assert!(!diags.is_empty(), "an error without a diagnostic");
        let out = Renderer { path: "nasty.yaml", source: text, color: false }.render_all(diags);
        assert!(out.contains("error"), "{out}");
        let _ = Renderer { path: "nasty.yaml", source: text, color: true }.render_all(diags);
    };
    match load(text) {
        Ok(pipeline) => match plan::resolve_params(&pipeline, &[]) {
            Ok(params) => {
                let plan = plan::plan(&pipeline, &params, "nasty");
                assert_eq!(plan.order.len(), plan.graph.node_count());
            }
            Err(diags) => render(&diags),
        },
        Err(diags) => render(&diags),
    }
}

#[test]
fn nasty_inputs_never_panic() {
    let mut failures = Vec::new();
    for (what, text) in nasty_inputs() {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| exercise(&text))) {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("?");
            failures.push(format!("{what}: {message}"));
        }
    }
    assert!(failures.is_empty(), "panicked on:\n{}", failures.join("\n"));
}

#[test]
fn aliases_that_are_not_defined_yet() {
    for text in ["*unknown", "&a [*a]", "&a {b: *a}"] {
        let d = only_error(text, &Limits::default());
        assert!(d.message.contains("alias") && d.message.contains("anchor"), "{text}: {}", d.message);
        assert!(d.span.is_some_and(|s| s.line == 1), "{text}: points at the alias");
    }
}

#[test]
fn lone_surrogate_escapes_are_rejected_or_replaced() {
    // A YAML `\uD800` escape cannot become a Rust `char`: the parser must refuse it (or
    // replace it), never produce invalid UTF-8 or panic.
    let text = format!("name: x\n{STEPS}    stage: \"\\uD800\"\n");
    match load(&text) {
        Ok(p) => {
            let stage = p.steps()[0].stage.as_deref().unwrap_or("");
            assert!(!stage.is_empty(), "the escape vanished");
        }
        Err(diags) => assert!(diags.iter().any(|d| d.message.starts_with("invalid YAML")), "{diags:?}"),
    }
}

#[test]
fn source_text_refuses_bytes_over_the_limit_naming_the_size_on_disk() {
    let limits = Limits { max_file_bytes: 999, ..Limits::default() };
    let d = spec::source_text(vec![b'#'; 1000], 5000, &limits).expect_err("over the limit");
    assert_eq!(d.message, "the file is 5000 bytes, more than the limit of 999 bytes");
    let limits = Limits { max_file_bytes: 1000, ..Limits::default() };
    assert_eq!(spec::source_text(vec![b'#'; 1000], 1000, &limits).expect("at the limit").len(), 1000);
}

#[test]
fn source_text_refuses_invalid_utf8_and_points_at_it() {
    let bytes = b"name: x\nsteps:\n  \xc3\xa9a\xff\xfe:\n".to_vec();
    let len = bytes.len() as u64;
    let d = spec::source_text(bytes, len, &Limits::default()).expect_err("not UTF-8");
    assert_eq!(d.message, "the file is not valid UTF-8");
    let span = d.span.expect("points at the byte");
    // Line 3, after the two spaces, `é` (one character) and `a`.
    assert_eq!((span.line, span.col), (3, 4));
    let source = "name: x\nsteps:\n  \u{e9}a??:\n";
    let out = Renderer { path: "bad.yaml", source, color: false }.render(&d);
    assert!(out.contains("bad.yaml:3:5"), "{out}");
}

/// A long chain, acyclic and then closed into one big cycle, on a 2 MiB thread (the size of a
/// spawned or tokio worker thread): no graph algorithm on the way may recurse per step.
#[test]
fn a_long_chain_does_not_exhaust_the_stack() {
    const N: usize = 50_000;
    let mut chain = String::from("name: c\nsteps:\n  s0:\n    run: 'true'\n");
    for i in 1..N {
        chain.push_str(&format!("  s{i}:\n    needs: [s{}]\n    run: 'true'\n", i - 1));
    }
    let cyclic =
        chain.replacen("  s0:\n    run: 'true'\n", &format!("  s0:\n    needs: [s{}]\n    run: 'true'\n", N - 1), 1);
    let outcome = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let pipeline = spec::load(&chain, &Limits::generous()).expect("a chain is valid");
            let params = weir_core::plan::resolve_params(&pipeline, &[]).expect("no params");
            let planned = weir_core::plan::plan(&pipeline, &params, "r").order.len();
            let errors = spec::load(&cyclic, &Limits::generous()).expect_err("a cycle is invalid");
            (planned, errors.into_iter().map(|d| d.message).collect::<Vec<_>>())
        })
        .expect("spawn")
        .join()
        .expect("no stack overflow");
    assert_eq!(outcome.0, N);
    assert_eq!(outcome.1.len(), 1);
    assert!(
        outcome.1[0].starts_with("steps form a cycle of 50000 steps: s0 -> s49999 -> s49998"),
        "{}",
        &outcome.1[0][..80]
    );
}
