//! TLS and mTLS over loopback, through the real binaries and certificates made in the test
//! (`weir_tests::pki`): a `weir` client and a `weir-worker` run a pipeline against a `weir
//! server --tls-cert --tls-key --client-ca`; a worker without a client certificate (or with one
//! another CA signed) is refused, and both sides say why; a plain-text client is refused by a
//! TLS server with a clear message on both sides; the web UI answers over https with HTTP/1.1;
//! off loopback, plain text needs --insecure and a token file others can read is refused.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_tests::pki::Pki;
use weir_tests::procs::{self, Kill};

const PIPELINE: &str =
    "name: secure\nsteps:\n  hello:\n    run: echo over-tls > \"$WEIR_OUTPUTS/out.txt\"\n    outputs: [out.txt]\n";

/// `weir ARGS --server URL` with `extra` connection options.
fn weir(bin: &Path, url: &str, args: &[&str], extra: &[&str]) -> Output {
    Command::new(bin).args(args).args(["--server", url]).args(extra).env_remove("RUST_LOG").output().unwrap()
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `weir server` on a free loopback port with `extra`, its log (stderr) in `log`.
fn server(bin: &Path, data: &Path, log: &Path, extra: &[String]) -> (Kill, String) {
    let mut cmd = Command::new(bin);
    cmd.args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(extra)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(std::fs::File::create(log).unwrap());
    procs::serve(cmd)
}

/// Waits (at most two minutes, a bound for a stuck test, not a timing claim) until the file at
/// `path` holds `needle`; returns its text.
fn wait_for_text(path: &Path, needle: &str) -> String {
    let since = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(since.elapsed() < Duration::from_secs(120), "{} never said {needle:?}:\n{text}", path.display());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_client_and_a_worker_run_a_pipeline_over_mtls() {
    let (bin, worker_bin) = weir_tests::binaries();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let log = dir.path().join("server.log");
    let (_server, url) = server(&bin, &dir.path().join("data"), &log, &pki.server_args(true));
    assert!(url.starts_with("https://"), "{url}");
    let mut cmd = procs::worker(&worker_bin, &url, &dir.path().join("work"), "w1", 2);
    cmd.args(["--ca", path(&pki.ca), "--tls-cert", path(&pki.worker_cert), "--tls-key", path(&pki.worker_key)]);
    let _worker = procs::spawn(cmd);

    let folder = dir.path().join("secure");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("pipeline.yaml"), PIPELINE).unwrap();
    // The CLI has no client certificate: under mTLS without --client-ca-required it may call.
    let ca = ["--ca", path(&pki.ca)];
    let out = weir(&bin, &url, &["submit", path(&folder)], &ca);
    assert!(out.status.success(), "{:?}", text(&out));
    let out = weir(&bin, &url, &["start", "secure"], &ca);
    assert!(out.status.success(), "{:?}", text(&out));
    let run = text(&out).0.lines().next().unwrap().trim().to_string();
    let out = weir(&bin, &url, &["status", &run, "--watch"], &ca);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("succeeded"), "{stdout}");
    let got = dir.path().join("out.txt");
    let out = weir(&bin, &url, &["artifacts", "get", &run, "hello", "out.txt", "-o", path(&got)], &ca);
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(std::fs::read_to_string(&got).unwrap().trim(), "over-tls");

    // Without --ca the server's certificate is not trusted (it is not from a public CA).
    let out = weir(&bin, &url, &["runs"], &[]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("--ca"), "{stderr}");
}

#[test]
fn a_worker_without_a_valid_client_certificate_is_refused_under_mtls() {
    let (bin, worker_bin) = weir_tests::binaries();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let log = dir.path().join("server.log");
    let (_server, url) = server(&bin, &dir.path().join("data"), &log, &pki.server_args(true));

    // No certificate: the handshake lets it in (the CLI may come that way), the worker service
    // refuses its first call, Register, before it runs; the worker exits and says what to do.
    let out = procs::worker(&worker_bin, &url, &dir.path().join("work1"), "bare", 1)
        .args(["--ca", path(&pki.ca)])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("client certificate") && stderr.contains("--tls-cert"), "{stderr}");
    wait_for_text(&log, "a worker call without a client certificate was refused");

    // A certificate another CA signed: the handshake itself fails; the server logs why.
    let rogue_log = dir.path().join("rogue.log");
    let mut cmd = procs::worker(&worker_bin, &url, &dir.path().join("work2"), "rogue", 1);
    cmd.args(["--ca", path(&pki.ca), "--tls-cert", path(&pki.rogue_cert), "--tls-key", path(&pki.rogue_key)])
        .env("NO_COLOR", "1")
        .stderr(std::fs::File::create(&rogue_log).unwrap());
    let _rogue = procs::spawn(cmd);
    let server_log = wait_for_text(&log, "TLS handshake refused");
    assert!(server_log.contains("UnknownIssuer") || server_log.contains("invalid peer certificate"), "{server_log}");
    // Its own log is not asserted: what it sees (a closed connection or the UnknownCA alert, by
    // timing) is logged with a hint only on some paths of its retry loop (see the report).
    let _ = &rogue_log;
    // Neither became a worker of the server.
    let out = weir(&bin, &url, &["workers"], &["--ca", path(&pki.ca)]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    assert!(!stdout.contains("bare") && !stdout.contains("rogue"), "{stdout}");
}

#[test]
fn a_plain_text_client_of_a_tls_server_is_told_to_use_https_and_the_server_logs_it() {
    let (bin, _) = weir_tests::binaries();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let log = dir.path().join("server.log");
    let (_server, url) = server(&bin, &dir.path().join("data"), &log, &pki.server_args(false));
    let plain = url.replace("https://", "http://");
    let out = weir(&bin, &plain, &["runs"], &[]);
    let (_, stderr) = text(&out);
    // The GOAWAY's reason does not reach tonic's error ("h2 protocol error"): the hint says it.
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("error: ") && stderr.contains("help: the server may require TLS: use an https:// URL"),
        "{stderr}"
    );
    wait_for_text(&log, "a plain-text connection to this TLS server was refused");

    // A browser or curl on http:// gets a page that says the same.
    let host = plain.trim_start_matches("http://").to_string();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let resp = rt.block_on(async {
        let mut tcp = tokio::net::TcpStream::connect(&host).await.unwrap();
        weir_tests::http::exchange(&mut tcp, &format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n")).await
    });
    assert_eq!(resp.status, 400, "{resp:?}");
    assert!(resp.body.contains("use an https:// URL"), "{resp:?}");

    // And TLS settings with an http:// URL are a usage error, not silently plain text.
    let out = weir(&bin, &plain, &["runs"], &["--ca", path(&pki.ca)]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("use https://"), "{stderr}");
}

/// A TLS client to `host` trusting `ca`, offering `alpn`; returns the stream.
async fn tls_connect(host: &str, ca: &Path, alpn: &[&[u8]]) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(weir_engine::tls::ring_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(host).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.expect("the TLS handshake")
}

#[test]
fn the_web_ui_answers_over_https_with_http11_and_grpc_gets_h2() {
    let (bin, _) = weir_tests::binaries();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let log = dir.path().join("server.log");
    let (_server, url) = server(&bin, &dir.path().join("data"), &log, &pki.server_args(true));
    let host = url.trim_start_matches("https://").to_string();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        // A browser that speaks only HTTP/1.1 (and has no client certificate) gets the pages.
        let mut tls = tls_connect(&host, &pki.ca, &[b"http/1.1"]).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        let resp = weir_tests::http::exchange(
            &mut tls,
            &format!("GET /runs HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(resp.status, 200, "{resp:?}");
        assert!(resp.body.contains("<html"), "{resp:?}");
        // /metrics is on the same port, so behind the same TLS.
        let mut tls = tls_connect(&host, &pki.ca, &[b"http/1.1"]).await;
        let resp = weir_tests::http::exchange(
            &mut tls,
            &format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(resp.status, 200, "{resp:?}");
        // A client offering both (gRPC clients, modern browsers) gets HTTP/2.
        let tls = tls_connect(&host, &pki.ca, &[b"h2", b"http/1.1"]).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    });
}

fn token_file(dir: &Path, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let file = dir.join(format!("tokens-{mode:o}"));
    std::fs::write(&file, format!("client={}\nworker={}\n", "c".repeat(40), "w".repeat(40))).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
    file
}

#[test]
fn off_loopback_plain_text_needs_insecure_and_a_readable_token_file_is_refused() {
    let (bin, _) = weir_tests::binaries();
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(&dir.path().join("pki"));
    let private = token_file(dir.path(), 0o600);
    let server = |extra: &[&str]| {
        let mut cmd = Command::new(&bin);
        cmd.args(["server", "--listen", "0.0.0.0:0", "--data-dir", path(&dir.path().join("data"))])
            .args(extra)
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    };
    // Tokens but plain text: refused, saying how to give TLS.
    let out = server(&["--token-file", path(&private)]).output().unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("in plain text") && stderr.contains("--tls-cert") && stderr.contains("--insecure"),
        "{stderr}"
    );

    // A token file others can read: refused off loopback, even with TLS.
    let loose = token_file(dir.path(), 0o644);
    let mut tls: Vec<&str> = Vec::new();
    let args = pki.server_args(false);
    tls.extend(args.iter().map(String::as_str));
    let mut with = vec!["--token-file", path(&loose)];
    with.extend(&tls);
    let out = server(&with).output().unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("chmod 600") && stderr.contains("644"), "{stderr}");

    // --insecure starts it, with a warning in the log.
    let log = dir.path().join("insecure.log");
    let mut cmd = Command::new(&bin);
    cmd.args(["server", "--listen", "0.0.0.0:0", "--insecure", "--data-dir", path(&dir.path().join("data2"))])
        .args(["--token-file", path(&private)])
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stderr(std::fs::File::create(&log).unwrap());
    let (_server, url) = procs::serve(cmd);
    assert!(url.starts_with("http://"), "{url}");
    wait_for_text(&log, "WITHOUT TLS (--insecure)");
}
