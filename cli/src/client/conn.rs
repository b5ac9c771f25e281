//! The connection to a weir server: the connection options (only on the commands that talk to
//! a server), the endpoint and bearer token they settle on with the config file, the token sent
//! on every call (never printed), and the one place that turns a gRPC status into a message, a
//! next step and an exit code.

use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Endpoint;
use tonic::{Code, Request, Status};
use weir_proto::auth::{Role, TokenFile};
use weir_proto::tls::ClientTls;
use weir_proto::transport::Transport;
use weir_proto::v1::weir_access_client::WeirAccessClient;
use weir_proto::v1::weir_admin_client::WeirAdminClient;
use weir_proto::v1::weir_client_client::WeirClientClient;
use weir_proto::v1::weir_secrets_client::WeirSecretsClient;

use super::config::{self, Effective, Given, Origin, TokenChoice};
use super::{ConnArgs, Failure};

/// Adds the connection options (`ConnArgs`) to each subcommand whose name `talks` accepts, global there so
/// that their own subcommands (`runs compare`, `models show`) take them too. The other commands
/// (`server`, `run`, `validate`, ...) never list them in their --help.
pub fn with_connection_options(command: clap::Command, talks: impl Fn(&str) -> bool) -> clap::Command {
    use clap::Args;
    let options: Vec<clap::Arg> =
        ConnArgs::augment_args(clap::Command::new("conn")).get_arguments().map(|a| a.clone().global(true)).collect();
    // One pass in place: `mut_subcommand` per name moved each command to the end of the list,
    // shifting the others, which cost more than building them.
    command.mut_subcommands(|sub| if talks(sub.get_name()) { sub.args(options.iter().cloned()) } else { sub })
}

/// Records which connection options the command line or the environment set (clap's value
/// sources): a clap default is no setting, so the config file can still supply one, and neither
/// is an empty value (`WEIR_PROFILE=`).
pub fn note_given(conn: &mut ConnArgs, matches: &clap::ArgMatches) {
    use clap::parser::ValueSource;
    let origin = |id: &str, flag: &'static str, var: &'static str| match matches.value_source(id) {
        _ if matches.get_raw(id).is_some_and(|mut v| v.all(|v| v.is_empty())) => None,
        Some(ValueSource::CommandLine) => Some(Origin::Flag(flag)),
        Some(ValueSource::EnvVariable) => Some(Origin::Env(var)),
        _ => None,
    };
    conn.given = Given {
        server: origin("server", "--server", "WEIR_SERVER").map(|o| (conn.server.clone(), o)),
        token: origin("token", "--token", "WEIR_TOKEN").filter(|_| conn.token.as_ref().is_some_and(|t| !t.is_empty())),
        token_file: conn
            .token_file
            .clone()
            .and_then(|f| origin("token_file", "--token-file", "WEIR_TOKEN_FILE").map(|o| (f, o))),
        profile: conn.profile.clone().and_then(|p| origin("profile", "--profile", "WEIR_PROFILE").map(|o| (p, o))),
        config: conn.config.clone().and_then(|c| origin("config", "--config", "WEIR_CONFIG").map(|o| (c, o))),
    };
}

/// Adds `authorization: Bearer <token>` to every call when a token is set.
#[derive(Clone)]
pub struct Auth(Option<MetadataValue<Ascii>>);

impl Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub type Client = WeirClientClient<InterceptedService<Transport, Auth>>;
pub type AdminClient = WeirAdminClient<InterceptedService<Transport, Auth>>;
pub type SecretsClient = WeirSecretsClient<InterceptedService<Transport, Auth>>;
pub type AccessClient = WeirAccessClient<InterceptedService<Transport, Auth>>;

impl ConnArgs {
    /// The settings this command connects with: the command line and environment, then the
    /// config file. An error is printed; it means exit 2.
    pub fn effective(&self) -> Result<Effective, Failure> {
        let env = |var: &str| std::env::var_os(var);
        let file = match config::locate(&self.given, &env) {
            Some((path, explicit)) => config::read(&path, explicit),
            None => Ok(None),
        };
        file.and_then(|file| config::decide(&self.given, file.as_ref())).map_err(|e| {
            eprintln!("error: {}", e.0);
            Failure::Usage
        })
    }

    /// These arguments with the server and the token file settled by [`Self::effective`];
    /// unchanged with `--local` (no server, so no config file is read).
    pub fn resolved(&self) -> Result<ConnArgs, Failure> {
        if self.local.is_some() || self.weir_run.is_some() {
            return Ok(self.clone());
        }
        let settled = self.effective()?;
        let mut conn = self.clone();
        conn.server = settled.server.0;
        match settled.token {
            TokenChoice::None => (conn.token, conn.token_file) = (None, None),
            TokenChoice::Literal(_) => conn.token_file = None,
            TokenChoice::File(path, _) => (conn.token, conn.token_file) = (None, Some(path)),
        }
        Ok(conn)
    }

    /// The token to send: `--token-file`'s contents, else `--token` or `WEIR_TOKEN`.
    pub(super) fn auth(&self) -> Result<Auth, Failure> {
        let token = match &self.token_file {
            Some(file) => {
                let token = TokenFile::read(file).and_then(|f| f.token(Role::Client).map_err(|e| vec![e]));
                match token {
                    Ok(token) => Some(token.into_secret()),
                    Err(problems) => {
                        for p in problems {
                            eprintln!("error: {p}");
                        }
                        return Err(Failure::Usage);
                    }
                }
            }
            None => self.token.clone().filter(|t| !t.is_empty()),
        };
        let Some(token) = token else { return Ok(Auth(None)) };
        match MetadataValue::try_from(format!("Bearer {token}")) {
            Ok(mut value) => {
                value.set_sensitive(true);
                Ok(Auth(Some(value)))
            }
            Err(_) => {
                eprintln!("error: the token holds characters that cannot be sent in a header (visible ASCII only)");
                Err(Failure::Usage)
            }
        }
    }
}

/// Connects to the server named by `conn`, failing with exit 3 when nothing answers.
pub async fn connect(conn: &ConnArgs) -> Result<Client, Failure> {
    connect_resuming(conn, &[], true).await
}

/// [`connect`]; with `--local`, the engine started on the data folder also resumes `resume`
/// (runs a killed `weir run` left unfinished), every other unfinished run is named, and a
/// worker starts beside it when `worker` (not to cancel a run: its steps would start first).
pub async fn connect_resuming(conn: &ConnArgs, resume: &[String], worker: bool) -> Result<Client, Failure> {
    if let Some(dir) = &conn.local {
        let url = crate::local::attach(dir, resume, worker).await?;
        let local = ConnArgs { server: url, weir_run: Some(dir.clone()), ..ConnArgs::default() };
        let mut client = Box::pin(connect(&local)).await?;
        super::resume::announce_interrupted(&mut client, dir, resume).await;
        return Ok(client);
    }
    let auth = conn.auth()?;
    let channel = channel(conn).await?;
    Ok(WeirClientClient::with_interceptor(channel, auth))
}

/// A client of the operator's service (`WeirAdmin`) on the server `conn` names, or on an
/// engine started in this process on `--local`'s data folder (no worker).
pub async fn connect_admin(conn: &ConnArgs) -> Result<AdminClient, Failure> {
    if let Some(dir) = &conn.local {
        let url = crate::local::attach(dir, &[], false).await?;
        let local = ConnArgs {
            server: url,
            token: None,
            token_file: None,
            local: None,
            weir_run: Some(dir.clone()),
            ..Default::default()
        };
        return Ok(WeirAdminClient::with_interceptor(channel(&local).await?, Auth(None)));
    }
    let auth = conn.auth()?;
    Ok(WeirAdminClient::with_interceptor(channel(conn).await?, auth))
}

/// A client of the server's step secrets (`WeirSecrets`), with the client token. There is no
/// `--local`: `weir run` keeps no secrets.
pub async fn connect_secrets(conn: &ConnArgs) -> Result<SecretsClient, Failure> {
    let auth = conn.auth()?;
    Ok(WeirSecretsClient::with_interceptor(channel(conn).await?, auth))
}

/// A client of the tokens and audit service (`WeirAccess`) on the server `conn` names.
pub async fn connect_access(conn: &ConnArgs) -> Result<AccessClient, Failure> {
    if conn.local.is_some() {
        eprintln!(
            "error: tokens and the audit log belong to a `weir server`; --local has neither (its engine is open)"
        );
        return Err(Failure::Usage);
    }
    let auth = conn.auth()?;
    Ok(WeirAccessClient::with_interceptor(channel(conn).await?, auth))
}

/// The channel to `conn.server`, an http:// URL, or an https:// one with TLS (`--ca`, the
/// system's roots, a client certificate), that answers.
async fn channel(conn: &ConnArgs) -> Result<Transport, Failure> {
    if let Some(local) = &conn.transport {
        return Ok(local.clone());
    }
    let tls = ClientTls { ca: conn.ca.clone(), cert: conn.tls_cert.clone(), key: conn.tls_key.clone() };
    let endpoint: Endpoint = tls.endpoint(&conn.server).map_err(|e| {
        eprintln!("error: --server: {e}");
        Failure::Usage
    })?;
    let endpoint = endpoint.connect_timeout(Duration::from_secs(10)).tcp_nodelay(true);
    let channel = endpoint.connect().await.map_err(|e| unreachable(conn, &e))?;
    Ok(Transport::from(channel))
}

fn unreachable(conn: &ConnArgs, e: &dyn std::error::Error) -> Failure {
    let why = weir_proto::tls::causes(e);
    let hint = weir_proto::tls::hint(&conn.server, &why);
    if !hint.is_empty() {
        eprintln!("error: cannot talk to the weir server at {}: {why}", conn.server);
        eprintln!("help: {hint}");
        return Failure::Unreachable;
    }
    eprintln!(
        "error: cannot reach the weir server at {}: {why}; start one with `weir server` or set --server, WEIR_SERVER or `server` in the config file (`weir config show`)",
        conn.server,
    );
    Failure::Unreachable
}

/// What to suggest after a refusal, by status code.
#[derive(Default, Clone, Copy)]
pub(super) struct Hints<'a> {
    pub not_found: &'a str,
    pub invalid: &'a str,
    pub precondition: &'a str,
}

pub(super) const RUN_HINTS: Hints<'static> =
    Hints { not_found: "run `weir runs` to list run ids", invalid: "", precondition: "" };

/// Prints why the server refused a call and what to do next; returns the exit it means.
pub(super) fn refused(status: &Status, conn: &ConnArgs, hints: Hints<'_>) -> Failure {
    let message = if status.message().is_empty() { status.code().description() } else { status.message() };
    match status.code() {
        Code::Unauthenticated => {
            eprintln!(
                "error: the server refused the token: pass --token-file, WEIR_TOKEN_FILE or --token, or set `token_file` in the config file (`weir config show` says which one was sent) ({message})"
            );
            Failure::Unauthenticated
        }
        // A connection the transport gave up on (a TLS or protocol refusal) comes as CANCELLED.
        Code::Unavailable | Code::Cancelled => unreachable(conn, status),
        Code::Unimplemented => {
            eprintln!(
                "error: the server at {} does not serve this call ({message}); is it a weir server of this version?",
                conn.server
            );
            Failure::Refused
        }
        code => {
            eprintln!("error: {message}");
            let hint = match code {
                Code::NotFound => hints.not_found,
                Code::InvalidArgument => hints.invalid,
                Code::FailedPrecondition => hints.precondition,
                _ => "",
            };
            let hint = if hint.is_empty() { weir_proto::tls::hint(&conn.server, message) } else { hint };
            if !hint.is_empty() {
                eprintln!("help: {hint}");
            }
            Failure::Refused
        }
    }
}
