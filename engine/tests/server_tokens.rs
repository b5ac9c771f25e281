//! `server::start`'s own guard on tokens, for every way of configuring a server besides `weir
//! server`'s token file (which says the same with file and line: `weir_proto::auth`): equal
//! client and worker tokens are refused anywhere, tokens under 32 characters off loopback.

use weir_engine::server::{self, ServerConfig};

fn config(dir: &std::path::Path, listen: &str, client: &str, worker: &str) -> ServerConfig {
    let mut c = ServerConfig::new(dir, listen.parse().unwrap());
    c.client_token = Some(client.into());
    c.worker_token = Some(worker.into());
    // Off loopback plain text needs `insecure` (or TLS); the token rules hold either way.
    c.insecure = !c.listen.ip().is_loopback();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_refuses_equal_tokens_and_short_ones_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let long = |c: &str| c.repeat(32);
    let refused = [
        ("127.0.0.1:0", "same-secret", "same-secret", "the client and worker tokens are the same"),
        (
            "0.0.0.0:0",
            "c-secret",
            &long("w"),
            "a token shorter than 32 characters cannot guard a server listening on 0.0.0.0:0",
        ),
    ];
    for (listen, client, worker, wanted) in refused {
        let err = server::start(config(dir.path(), listen, client, worker)).await.err().expect("refused");
        let text = err.to_string();
        assert!(text.contains(wanted), "{text}");
        assert!(!text.contains("secret") && !text.contains("www"), "a token was shown: {text}");
    }
    for listen in ["127.0.0.1:0", "0.0.0.0:0"] {
        server::start(config(dir.path(), listen, &long("c"), &long("w"))).await.unwrap().shutdown().await;
    }
    server::start(config(dir.path(), "127.0.0.1:0", "c", "w")).await.unwrap().shutdown().await;
}
