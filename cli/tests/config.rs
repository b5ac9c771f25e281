//! The client config file through the real `weir` binary against a real `weir server` that
//! wants a token: profiles, `--profile` / `WEIR_PROFILE`, `WEIR_TOKEN_FILE`, the precedence of
//! flags over the environment over the profile over the top level, the XDG location, errors
//! with file, line and column, a `token` key refused, `weir config show` (which never prints
//! the token), and the connection options listed only by the commands that talk to a server.
//! The parsing and precedence rules' own cases are unit tests in `cli/src/client/config.rs`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};

const CLIENT_TOKEN: &str = "SECRETclientaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const WORKER_TOKEN: &str = "SECRETworkerbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// `weir ARGS` with a clean environment: HOME is `home` (so no real config is read) and no
/// WEIR_* variable leaks in from the caller, then `env` on top.
fn weir(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_weir"));
    cmd.args(args).env("NO_COLOR", "1").env("HOME", home).env_remove("XDG_CONFIG_HOME");
    for var in ["WEIR_SERVER", "WEIR_TOKEN", "WEIR_TOKEN_FILE", "WEIR_PROFILE", "WEIR_CONFIG", "WEIR_LISTEN"] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied()).output().expect("run weir")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn private(path: &Path, content: &str) -> PathBuf {
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.to_path_buf()
}

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server(dir: &Path) -> Server {
    let tokens = private(&dir.join("server.tokens"), &format!("client={CLIENT_TOKEN}\nworker={WORKER_TOKEN}\n"));
    let port = common::free_port();
    let child = common::server(&dir.join("data"), port, &["--token-file", &tokens.display().to_string()]);
    Server { child, url: format!("http://127.0.0.1:{port}") }
}

#[test]
fn profiles_and_the_environment_choose_the_server_and_the_token_file() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let server = server(home);
    // Nothing listens on port 1: a command sent there fails with exit 3, one sent to the server
    // without the right token with exit 4.
    let config_dir = home.join("conf");
    std::fs::create_dir(&config_dir).unwrap();
    private(&config_dir.join("team.token"), &format!("client={CLIENT_TOKEN}\n"));
    let wrong = private(&home.join("wrong.token"), "client=SECRETwrong\n");
    let config = config_dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "server = \"http://127.0.0.1:1\"\n\n[profiles.team]\nserver = \"{}\"\ntoken_file = \"team.token\"\n\n[profiles.tokenonly]\ntoken_file = \"team.token\"\n",
            server.url
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let wrong = wrong.display().to_string();
    let url = server.url.as_str();

    let check = |args: &[&str], env: &[(&str, &str)], want: i32| {
        let mut all = vec!["pipelines", "--config", &config];
        all.extend_from_slice(args);
        let out = weir(home, &all, env);
        assert_eq!(code(&out), want, "{args:?} {env:?}: {}{}", text(&out.stdout), text(&out.stderr));
        assert!(!text(&out.stderr).contains("SECRET"), "{}", text(&out.stderr));
    };
    // The profile's server and its token file (relative to the config file's folder).
    check(&["--profile", "team"], &[], 0);
    check(&[], &[("WEIR_PROFILE", "team")], 0);
    // Without a profile: the top level's server, where nothing answers.
    check(&[], &[], 3);
    // A flag beats the top level; no token file there, so the server refuses.
    check(&["--server", url], &[], 4);
    // A profile without a server: the top level's server, the profile's token file.
    check(&["--profile", "tokenonly"], &[], 3);
    check(&["--profile", "tokenonly", "--server", url], &[], 0);
    // The environment beats the profile: WEIR_SERVER, WEIR_TOKEN_FILE.
    check(&["--profile", "team"], &[("WEIR_SERVER", "http://127.0.0.1:1")], 3);
    check(&["--profile", "team"], &[("WEIR_TOKEN_FILE", &wrong)], 4);
    // An empty variable (`VAR=` in a script or a compose file) is no setting.
    check(&[], &[("WEIR_PROFILE", "team"), ("WEIR_SERVER", ""), ("WEIR_TOKEN_FILE", ""), ("WEIR_CONFIG", "")], 0);
    // A flag beats the environment.
    check(&["--profile", "team", "--server", url], &[("WEIR_SERVER", "http://127.0.0.1:1")], 0);
    check(&["--server", url, "--token", CLIENT_TOKEN], &[("WEIR_TOKEN_FILE", &wrong)], 0);
    // WEIR_TOKEN_FILE on its own, with no config file at all.
    let token = config_dir.join("team.token").display().to_string();
    let out = weir(home, &["pipelines", "--server", url], &[("WEIR_TOKEN_FILE", &token)]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    // --config named through WEIR_CONFIG; the profile given before the subcommand.
    let out = weir(home, &["--profile", "team", "pipelines"], &[("WEIR_CONFIG", &config)]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
}

#[test]
fn the_default_location_is_xdg_config_home_then_the_home_folder() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let server = server(home);
    let token = private(&home.join("client.token"), &format!("client={CLIENT_TOKEN}\n"));
    let write = |folder: &Path| {
        std::fs::create_dir_all(folder.join("weir")).unwrap();
        std::fs::write(
            folder.join("weir").join("config.toml"),
            format!("server = \"{}\"\ntoken_file = \"{}\"\n", server.url, token.display()),
        )
        .unwrap();
    };
    // ~/.config/weir/config.toml names the server and the token file.
    write(&home.join(".config"));
    let out = weir(home, &["pipelines"], &[]);
    assert_eq!(code(&out), 0, "{}", text(&out.stderr));
    // XDG_CONFIG_HOME wins over ~/.config.
    let xdg = home.join("xdg");
    std::fs::create_dir_all(xdg.join("weir")).unwrap();
    std::fs::write(xdg.join("weir").join("config.toml"), "server = \"http://127.0.0.1:1\"\n").unwrap();
    let out = weir(home, &["pipelines"], &[("XDG_CONFIG_HOME", &xdg.display().to_string())]);
    assert_eq!(code(&out), 3, "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("http://127.0.0.1:1"), "{}", text(&out.stderr));
}

#[test]
fn a_bad_config_file_is_refused_with_file_line_column_and_the_known_names() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let config = home.join("config.toml");
    let path = config.display().to_string();
    let run = |body: &str, args: &[&str]| {
        std::fs::write(&config, body).unwrap();
        let mut all = vec!["runs", "--config", path.as_str()];
        all.extend_from_slice(args);
        let out = weir(home, &all, &[]);
        assert_eq!(code(&out), 2, "{}", text(&out.stderr));
        text(&out.stderr)
    };
    let err = run("[profiles.prod]\nserver = \"http://x:1\"\nsevrer = \"http://y:1\"\n", &[]);
    assert!(err.contains(&format!("{path}:3:1")), "{err}");
    assert!(err.contains("unknown key `sevrer` in [profiles.prod]"), "{err}");
    assert!(err.contains("expected one of: server, token_file"), "{err}");
    assert!(err.contains("did you mean `server`?"), "{err}");

    let err = run("[profiles.prod]\nserver = \"http://x:1\"\n[profiles.staging]\n", &["--profile", "prd"]);
    assert!(err.contains("no profile `prd`"), "{err}");
    assert!(err.contains(&path), "{err}");
    assert!(err.contains("prod, staging"), "{err}");
    assert!(err.contains("did you mean `prod`?"), "{err}");

    // A token in the config file is refused, and not repeated.
    let err = run("server = \"http://x:1\"\ntoken = \"SECRETliteral\"\n", &[]);
    assert!(err.contains(&format!("{path}:2:1")), "{err}");
    assert!(err.contains("a token does not belong in the config file"), "{err}");
    assert!(err.contains("token_file"), "{err}");
    assert!(!err.contains("SECRET"), "{err}");

    // A --config that does not exist is an error; a default location that does not is not.
    let missing = home.join("nope.toml").display().to_string();
    let out = weir(home, &["runs", "--config", &missing], &[]);
    assert_eq!(code(&out), 2, "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("nope.toml"), "{}", text(&out.stderr));
}

#[test]
fn config_show_names_where_each_setting_came_from_and_never_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let token = private(&home.join("t.token"), "client=SECRETshown\n");
    std::fs::create_dir_all(home.join(".config/weir")).unwrap();
    std::fs::write(
        home.join(".config/weir/config.toml"),
        format!("server = \"http://top:1\"\n[profiles.ci]\ntoken_file = \"{}\"\n", token.display()),
    )
    .unwrap();
    let out = weir(home, &["config", "show", "--profile", "ci"], &[]);
    let shown = text(&out.stdout);
    assert_eq!(code(&out), 0, "{shown}{}", text(&out.stderr));
    assert!(shown.contains(".config/weir/config.toml"), "{shown}");
    assert!(shown.contains("profile:     ci (--profile)"), "{shown}");
    assert!(shown.contains("server:      http://top:1 (config line 1)"), "{shown}");
    assert!(shown.contains("(profile `ci`, config line 3): holds a client token"), "{shown}");
    assert!(!shown.contains("SECRET") && !text(&out.stderr).contains("SECRET"), "{shown}");

    let out = weir(home, &["config", "show"], &[("WEIR_SERVER", "http://env:2"), ("WEIR_TOKEN", "SECRETenv")]);
    let shown = text(&out.stdout);
    assert!(shown.contains("server:      http://env:2 (WEIR_SERVER)"), "{shown}");
    assert!(shown.contains("token:       given by WEIR_TOKEN (not shown)"), "{shown}");
    assert!(!shown.contains("SECRET"), "{shown}");

    // A token file others can read gets a warning, from the config file too.
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = weir(home, &["config", "show", "--profile", "ci"], &[]);
    assert!(text(&out.stderr).contains("token file can be read or changed by other users"), "{}", text(&out.stderr));
}

#[test]
fn only_the_commands_that_talk_to_a_server_list_the_connection_options() {
    let dir = tempfile::tempdir().unwrap();
    let options = ["--server", "--token ", "--token <", "--profile", "--config", "--local"];
    // Option lines of a --help, not its prose (`weir run --help` mentions `--local`).
    let lists = |help: &str, option: &str| help.lines().any(|l| l.trim_start().starts_with(option));
    let help = |args: &[&str]| {
        let out = weir(dir.path(), args, &[]);
        assert_eq!(code(&out), 0, "{args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    for args in [["server", "--help"], ["run", "--help"], ["validate", "--help"], ["store", "--help"], ["ui", "--help"]]
    {
        let shown = help(&args);
        for option in options {
            assert!(!lists(&shown, option), "{args:?} lists {option}:\n{shown}");
        }
    }
    for args in
        [&["runs", "--help"][..], &["runs", "compare", "--help"], &["status", "--help"], &["config", "show", "--help"]]
    {
        let shown = help(args);
        assert!(shown.contains("Connection:"), "{args:?}:\n{shown}");
        for option in ["--server <URL>", "--token <TOKEN>", "--token-file <FILE>", "--profile <NAME>", "--local"] {
            assert!(lists(&shown, option), "{args:?} does not list {option}:\n{shown}");
        }
    }
    // A client-only option on a command that ignores it is an error, not silence.
    let out = weir(dir.path(), &["server", "--server", "http://x:1"], &[]);
    assert_eq!(code(&out), 2, "{}", text(&out.stderr));
}
