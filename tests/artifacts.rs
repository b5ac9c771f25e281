//! `weir artifacts ls|get` through the CLI binary against a real server and worker: any step's
//! outputs, listed with sizes and digests, downloaded to a file, a folder or stdout, and never
//! put in place when the name is wrong.

use std::process::Command;
use std::time::Duration;

use weir_tests::Cluster;

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_are_listed_and_downloaded_checked() {
    let mut c = Cluster::start(1, 2).await;
    let yaml = r#"
name: makes
steps:
  make:
    run: |
      mkdir -p "$WEIR_OUTPUTS/sub"
      printf 'hello weir\n' > "$WEIR_OUTPUTS/a.txt"
      head -c 3000 /dev/zero | tr '\0' 'x' > "$WEIR_OUTPUTS/sub/b.bin"
    outputs: [a.txt, sub/b.bin]
"#;
    let version = c.submit(yaml, None).await;
    let run = c.start_run(&version, &[]).await;
    c.wait(&run, MINUTE).await;
    let (weir, _) = weir_tests::binaries();
    let url = c.url();
    let weir_cmd = |args: &[&str]| Command::new(&weir).args(args).args(["--server", &url]).output().unwrap();

    let ls = weir_cmd(&["artifacts", "ls", &run]);
    let text = String::from_utf8_lossy(&ls.stdout);
    assert!(ls.status.success(), "{}", String::from_utf8_lossy(&ls.stderr));
    assert!(text.contains("a.txt") && text.contains("sub/b.bin") && text.contains("3000"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-copy.txt");
    let got = weir_cmd(&["artifacts", "get", &run, "make", "a.txt", "-o", file.to_str().unwrap()]);
    assert!(got.status.success(), "{}", String::from_utf8_lossy(&got.stderr));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "hello weir\n");

    let out = dir.path().join("all");
    std::fs::create_dir(&out).unwrap();
    let all = weir_cmd(&["artifacts", "get", &run, "make", "-o", out.to_str().unwrap()]);
    assert!(all.status.success(), "{}", String::from_utf8_lossy(&all.stderr));
    assert_eq!(std::fs::read(out.join("sub/b.bin")).unwrap().len(), 3000);
    assert_eq!(std::fs::read_to_string(out.join("a.txt")).unwrap(), "hello weir\n");

    let stdout = weir_cmd(&["artifacts", "get", &run, "make", "a.txt", "-o", "-"]);
    assert_eq!(String::from_utf8_lossy(&stdout.stdout), "hello weir\n");

    let wrong = weir_cmd(&["artifacts", "get", &run, "make", "nope.txt", "-o", file.to_str().unwrap()]);
    assert_eq!(wrong.status.code(), Some(1));
    let why = String::from_utf8_lossy(&wrong.stderr);
    assert!(why.contains("no output \"nope.txt\"") && why.contains("a.txt, sub/b.bin"), "{why}");
    // Several outputs to a path that does not exist yet: it becomes their folder; to stdout
    // they are refused (one stream cannot hold two files).
    let several = dir.path().join("new-folder");
    let many = weir_cmd(&["artifacts", "get", &run, "make", "-o", several.to_str().unwrap()]);
    assert!(many.status.success(), "{}", String::from_utf8_lossy(&many.stderr));
    assert!(several.join("a.txt").is_file() && several.join("sub/b.bin").is_file());
    let mixed = weir_cmd(&["artifacts", "get", &run, "make", "-o", "-"]);
    assert_eq!(mixed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&mixed.stderr).contains("several outputs"));
    let no_step = weir_cmd(&["artifacts", "get", &run, "nostep", "-o", file.to_str().unwrap()]);
    assert_eq!(no_step.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&no_step.stderr).contains("it has: make"));
    c.stop().await;
}
