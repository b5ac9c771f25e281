//! Who is calling, and what they may do. A caller is a [`Principal`]: the name of a person or
//! system and its [`Role`]. Tokens map to principals in the live set [`Access`]: those of the
//! server's token file (fixed while it runs) and those created with `weir tokens create`
//! (kept in the store as BLAKE3 hashes, loaded at start, changed here only after the store has
//! flushed the change, so a revoked token is refused from the moment `RevokeToken` answers).
//! The rule of each RPC is in [`table`]; the gRPC guard (`api/guard.rs`) and the web UI's
//! session check (`web/auth.rs`) both ask this module and decide nothing themselves.
//!
//! A server started without any token (loopback only, or `--insecure`) is open: a caller
//! without a token is `anonymous` with every role, as before roles existed. A side with no
//! token of its own (no worker token: workers; no client token: clients) is open alike.

pub mod table;

use std::collections::HashMap;
use std::sync::RwLock;

use weir_core::run::Millis;

use crate::store::{Store, TokenRecord};

/// What a token allows. `Viewer` < `Operator` < `Admin` nest; `Worker` stands apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Viewer,
    Operator,
    Admin,
    Worker,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Operator, Role::Admin, Role::Worker];

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == s)
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
            Role::Worker => "worker",
        }
    }

    /// Whether this role may do what `need` may.
    pub fn covers(self, need: Role) -> bool {
        match (self, need) {
            (Role::Worker, Role::Worker) => true,
            (Role::Worker, _) | (_, Role::Worker) => false,
            (has, need) => has >= need,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Who is calling: in a request's extensions once the guard let it through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
}

impl Principal {
    /// The caller of an open server (or an open side of one).
    pub fn anonymous(role: Role) -> Principal {
        Principal { name: "anonymous".into(), role }
    }
}

/// A token as the server is configured with it (`weir server --token-file`).
#[derive(Clone)]
pub struct Grant {
    pub name: String,
    pub role: Role,
    pub token: String,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Grant({}:{}, <token>)", self.name, self.role)
    }
}

/// Where a live token came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    File,
    Store { created_at: Millis, created_by: String },
}

/// A named token as listed (never the token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenInfo {
    pub name: String,
    pub role: Role,
    pub source: Source,
}

/// Why a call is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("a token is required: send `authorization: Bearer <token>` (weir: --token-file or WEIR_TOKEN)")]
    NoToken,
    #[error(
        "the token is not valid (unknown or revoked): ask an admin for one (`weir tokens create NAME --role ROLE`)"
    )]
    BadToken,
    #[error("`{name}` ({role}) may not call {method}: it needs the {need} role")]
    Role { name: String, role: Role, method: String, need: Role },
    #[error("{0} is not in the role table, so nobody may call it")]
    Unlisted(String),
}

/// Why a token cannot be created or revoked.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("`{0}` is not a token name: use 1 to 64 letters, digits, `-`, `_` or `.`")]
    BadName(String),
    #[error("unknown role `{0}`: expected `viewer`, `operator`, `admin` or `worker`")]
    BadRole(String),
    #[error("a token named `{0}` exists: revoke it first (`weir tokens revoke {0}`) or pick another name")]
    Exists(String),
    #[error("no created token is named `{0}` (`weir tokens list` shows them)")]
    Unknown(String),
    #[error("`{0}` comes from the server's token file: remove its line there and restart the server")]
    FromFile(String),
    #[error("cannot make a token: {0}")]
    Random(String),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
}

#[derive(Clone, Debug)]
struct Live {
    principal: Principal,
    source: Source,
}

/// The live set of tokens.
pub struct Access {
    by_hash: RwLock<HashMap<blake3::Hash, Live>>,
    /// No client token was configured: clients need none.
    open_clients: bool,
    /// No worker token was configured: workers need none.
    open_workers: bool,
}

impl Access {
    /// The set of `grants` (the configuration's) and the tokens created in `store`.
    pub fn load(grants: &[Grant], store: &Store) -> Result<Access, crate::store::Error> {
        let mut by_hash = HashMap::new();
        for g in grants {
            let principal = Principal { name: g.name.clone(), role: g.role };
            by_hash.insert(blake3::hash(g.token.as_bytes()), Live { principal, source: Source::File });
        }
        let open_clients = !grants.iter().any(|g| g.role != Role::Worker);
        let open_workers = !grants.iter().any(|g| g.role == Role::Worker);
        for t in store.tokens()? {
            let (Some(role), Ok(hash)) = (Role::parse(&t.role), blake3::Hash::from_hex(&t.hash)) else {
                tracing::warn!(name = %t.name, "skipping a stored token with an unknown role or hash");
                continue;
            };
            let source = Source::Store { created_at: t.created_at, created_by: t.created_by };
            by_hash.insert(hash, Live { principal: Principal { name: t.name, role }, source });
        }
        Ok(Access { by_hash: RwLock::new(by_hash), open_clients, open_workers })
    }

    /// Whether no token at all is needed (a server without any token).
    pub fn open(&self) -> bool {
        self.open_clients && self.open_workers
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<blake3::Hash, Live>> {
        self.by_hash.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<blake3::Hash, Live>> {
        self.by_hash.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The principal of `token` (comparing BLAKE3 hashes: constant time in the token).
    pub fn principal(&self, token: &str) -> Option<Principal> {
        self.read().get(&blake3::hash(token.as_bytes())).map(|l| l.principal.clone())
    }

    /// Whether `name` still holds a live token with `role` (a web session is checked so on
    /// every request: revoking the token ends it).
    pub fn is_live(&self, name: &str, role: Role) -> bool {
        self.read().values().any(|l| l.principal.name == name && l.principal.role == role)
    }

    /// Who calls `method` with `token`, if they may.
    pub fn check(&self, method: &str, token: Option<&str>) -> Result<Principal, Refusal> {
        let rule = table::rule(method).ok_or_else(|| Refusal::Unlisted(method.to_string()))?;
        let open = if rule.need == Role::Worker { self.open_workers } else { self.open_clients };
        let principal = match token.map(|t| self.principal(t)) {
            Some(Some(p)) => p,
            _ if open => Principal::anonymous(if rule.need == Role::Worker { Role::Worker } else { Role::Admin }),
            Some(None) => return Err(Refusal::BadToken),
            None => return Err(Refusal::NoToken),
        };
        if !principal.role.covers(rule.need) {
            return Err(Refusal::Role {
                name: principal.name,
                role: principal.role,
                method: method.to_string(),
                need: rule.need,
            });
        }
        Ok(principal)
    }

    /// Creates token `name` with `role` by `by`: stored (its hash) and flushed, then live. The
    /// token, to show once.
    pub fn create(&self, store: &Store, name: &str, role: &str, by: &str, now: Millis) -> Result<String, TokenError> {
        if !weir_proto::auth::valid_name(name) || name == "anonymous" {
            return Err(TokenError::BadName(name.to_string()));
        }
        let role = Role::parse(role).ok_or_else(|| TokenError::BadRole(role.to_string()))?;
        let token = random_token()?;
        let hash = blake3::hash(token.as_bytes());
        let mut live = self.write();
        if live.values().any(|l| l.principal.name == name) {
            return Err(TokenError::Exists(name.to_string()));
        }
        let record = TokenRecord {
            name: name.to_string(),
            role: role.name().to_string(),
            hash: hash.to_hex().to_string(),
            created_at: now,
            created_by: by.to_string(),
        };
        store.put_token(&record)?;
        let source = Source::Store { created_at: now, created_by: by.to_string() };
        live.insert(hash, Live { principal: Principal { name: name.to_string(), role }, source });
        Ok(token)
    }

    /// Revokes the created token `name`: removed from the store and flushed, then refused.
    pub fn revoke(&self, store: &Store, name: &str) -> Result<(), TokenError> {
        let mut live = self.write();
        let Some((hash, l)) = live.iter().find(|(_, l)| l.principal.name == name).map(|(h, l)| (*h, l.clone())) else {
            return Err(TokenError::Unknown(name.to_string()));
        };
        if l.source == Source::File {
            return Err(TokenError::FromFile(name.to_string()));
        }
        store.remove_token(name)?;
        live.remove(&hash);
        Ok(())
    }

    /// Every named token, by name.
    pub fn list(&self) -> Vec<TokenInfo> {
        let mut out: Vec<TokenInfo> = self
            .read()
            .values()
            .map(|l| TokenInfo { name: l.principal.name.clone(), role: l.principal.role, source: l.source.clone() })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

/// 256 random bits as 64 hex characters, prefixed `weir_` so a leaked one is recognisable.
fn random_token() -> Result<String, TokenError> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| TokenError::Random(format!("/dev/urandom: {e}")))?;
    Ok(format!("weir_{}", blake3::Hash::from_bytes(bytes).to_hex()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants() -> Vec<Grant> {
        let g = |name: &str, role, token: &str| Grant { name: name.into(), role, token: token.into() };
        vec![g("client", Role::Admin, "c"), g("worker", Role::Worker, "w"), g("vic", Role::Viewer, "v")]
    }

    #[test]
    fn tokens_map_to_principals_and_revocation_is_immediate_and_durable() {
        let dir = tempfile::tempdir().unwrap();
        let token = {
            let store = Store::open(dir.path()).unwrap();
            let access = Access::load(&grants(), &store).unwrap();
            assert_eq!(access.check("/weir.v1.WeirClient/GetRun", Some("v")).unwrap().name, "vic");
            assert!(matches!(access.check("/weir.v1.WeirClient/StartRun", Some("v")), Err(Refusal::Role { .. })));
            assert!(matches!(access.check("/weir.v1.WeirWorker/Lease", Some("c")), Err(Refusal::Role { .. })));
            assert!(matches!(access.check("/weir.v1.WeirClient/GetRun", Some("w")), Err(Refusal::Role { .. })));
            assert_eq!(access.check("/weir.v1.WeirClient/GetRun", None), Err(Refusal::NoToken));
            assert_eq!(access.check("/weir.v1.WeirClient/GetRun", Some("x")), Err(Refusal::BadToken));
            assert!(matches!(access.check("/weir.v1.WeirClient/Nope", Some("c")), Err(Refusal::Unlisted(_))));
            let t = access.create(&store, "alice", "operator", "client", Millis(5)).unwrap();
            assert!(matches!(
                access.create(&store, "alice", "viewer", "client", Millis(5)),
                Err(TokenError::Exists(_))
            ));
            assert!(matches!(access.create(&store, "vic", "viewer", "client", Millis(5)), Err(TokenError::Exists(_))));
            assert!(matches!(access.create(&store, "a b", "viewer", "client", Millis(5)), Err(TokenError::BadName(_))));
            assert!(matches!(access.create(&store, "bob", "root", "client", Millis(5)), Err(TokenError::BadRole(_))));
            assert!(matches!(access.revoke(&store, "vic"), Err(TokenError::FromFile(_))));
            assert_eq!(access.check("/weir.v1.WeirClient/StartRun", Some(&t)).unwrap().name, "alice");
            t
        };
        // created tokens survive a restart; revoking one refuses it at once and for good
        let store = crate::store::testkit::reopen(dir.path());
        let access = Access::load(&grants(), &store).unwrap();
        assert_eq!(access.principal(&token).map(|p| (p.name, p.role)), Some(("alice".into(), Role::Operator)));
        assert!(access.is_live("alice", Role::Operator));
        access.revoke(&store, "alice").unwrap();
        assert_eq!(access.check("/weir.v1.WeirClient/GetRun", Some(&token)), Err(Refusal::BadToken));
        assert!(!access.is_live("alice", Role::Operator));
        drop(access);
        let access = Access::load(&grants(), &store).unwrap();
        assert_eq!(access.principal(&token), None);
        assert_eq!(access.list().iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["client", "vic", "worker"]);
    }

    #[test]
    fn a_server_without_tokens_is_open_and_a_side_without_tokens_too() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let open = Access::load(&[], &store).unwrap();
        assert!(open.open());
        assert_eq!(open.check("/weir.v1.WeirClient/Gc", None).unwrap(), Principal::anonymous(Role::Admin));
        let clients_only = Access::load(&grants()[..1], &store).unwrap();
        assert_eq!(clients_only.check("/weir.v1.WeirWorker/Lease", None).unwrap(), Principal::anonymous(Role::Worker));
        assert_eq!(clients_only.check("/weir.v1.WeirClient/GetRun", None), Err(Refusal::NoToken));
    }
}
