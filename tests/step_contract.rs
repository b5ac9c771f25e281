//! docs/step-contract.md says what a step gets; this runs real steps and checks the page
//! against what the runtimes really set: every `WEIR_*` variable a step sees is in the page's
//! table, every variable in the table is seen (or marked as conditional there), and the
//! working folder and the inputs layout of a matrix step's dependent are as described.

use std::collections::BTreeSet;
use std::time::Duration;

use weir_tests::Cluster;

const MINUTE: Duration = Duration::from_secs(60);

/// The variables the page's table names, and those it marks as set only sometimes.
fn documented() -> (BTreeSet<String>, BTreeSet<String>) {
    let page = std::fs::read_to_string(weir_tests::root().join("docs/step-contract.md")).unwrap();
    let mut all = BTreeSet::new();
    let mut sometimes = BTreeSet::new();
    for line in page.lines().filter(|l| l.starts_with("| `WEIR_")) {
        let name = line.split('`').nth(1).unwrap().to_string();
        if line.contains("only in") || line.contains("only when") {
            sometimes.insert(name.clone());
        }
        all.insert(name);
    }
    (all, sometimes)
}

/// `WEIR_PARAM_ROWS` → `WEIR_PARAM_<NAME>`, as the page writes families.
fn family(var: &str) -> String {
    for prefix in ["WEIR_PARAM_", "WEIR_MATRIX_"] {
        if var.starts_with(prefix) {
            return format!("{prefix}<{}>", if prefix == "WEIR_PARAM_" { "NAME" } else { "KEY" });
        }
    }
    var.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_step_contract_page_lists_exactly_what_steps_get() {
    let folder = tempfile::tempdir().unwrap();
    let yaml = r#"name: contract
params:
  rows: {type: int, default: 5}
steps:
  fan:
    matrix:
      l2: ["0.1", "0.2"]
    run: |
      echo "l2=$WEIR_MATRIX_L2" > "$WEIR_OUTPUTS/out.txt"
    outputs: [out.txt]
  look:
    needs: [fan]
    run: |
      env | grep '^WEIR_' | cut -d= -f1 | sort
      test -f pipeline.yaml && echo "cwd-has-pipeline"
      cat "$WEIR_INPUTS/fan/l2=0.1/out.txt" "$WEIR_INPUTS/fan/l2=0.2/out.txt"
"#;
    std::fs::write(folder.path().join("pipeline.yaml"), yaml).unwrap();
    let mut c = Cluster::start(1, 2).await;
    let version = c.submit(yaml, Some(folder.path())).await;
    let run = c.start_run(&version, &[]).await;
    let got = c.wait(&run, MINUTE).await;
    let fan_logs = c.logs(&run, "look").await;
    assert_eq!(got.run.as_ref().unwrap().state(), weir_proto::v1::RunState::Succeeded, "{fan_logs}");
    let seen: BTreeSet<String> =
        fan_logs.lines().filter(|l| l.starts_with("WEIR_")).map(|l| family(l.trim())).collect();
    assert!(fan_logs.contains("cwd-has-pipeline"), "the working folder is the pipeline's: {fan_logs}");
    assert!(fan_logs.contains("l2=0.1") && fan_logs.contains("l2=0.2"), "inputs per instance: {fan_logs}");

    // The matrix step itself sees its WEIR_MATRIX_*; `look` (not a matrix step) does not.
    let (all, sometimes) = documented();
    let mut expected: BTreeSet<String> = all.difference(&sometimes).cloned().collect();
    expected.remove("WEIR_MATRIX_<KEY>");
    assert_eq!(seen, expected, "docs/step-contract.md's table against what a step sees");
    assert!(all.contains("WEIR_MATRIX_<KEY>") && all.contains("WEIR_SCHEDULED_TIME"));
    c.stop().await;
}
