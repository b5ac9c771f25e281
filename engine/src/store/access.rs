//! Named tokens created with `weir tokens create` (`tokens`: name -> [`TokenRecord`], holding
//! the BLAKE3 of the token, never the token) and the audit log (`audit`: id -> [`AuditRecord`],
//! ids from sled's `generate_id`, so increasing across restarts and in time order). Every write
//! flushes before it returns. This module only stores: who may call what is `crate::access`'s.

use serde::{Deserialize, Serialize};

use super::Error;
use super::db::{Store, TreeId};
use super::envelope::{decode, encode};
use weir_core::run::Millis;

/// `tokens`: one created token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub name: String,
    /// `viewer`, `operator`, `admin` or `worker`.
    pub role: String,
    /// Lowercase hex BLAKE3 of the token.
    pub hash: String,
    pub created_at: Millis,
    pub created_by: String,
}

/// `audit`: one mutating request and how it ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Set by [`Store::append_audit`].
    #[serde(default)]
    pub id: u64,
    pub at: Millis,
    pub who: String,
    pub role: String,
    pub action: String,
    pub target: String,
    /// `ok` or the lowercase gRPC code name.
    pub outcome: String,
    pub method: String,
}

/// Which audit entries to list.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub since: Option<Millis>,
    pub who: Option<String>,
    /// The newest this many (of those that pass).
    pub limit: usize,
}

impl Store {
    /// Stores a created token, flushed: the token is shown only after this returns.
    pub fn put_token(&self, record: &TokenRecord) -> Result<(), Error> {
        self.put(TreeId::Tokens, record.name.as_bytes().to_vec(), record)
    }

    /// Forgets a token, flushed; whether there was one.
    pub fn remove_token(&self, name: &str) -> Result<bool, Error> {
        let had = self.writing("removing a token", || Ok(self.tree(TreeId::Tokens)?.remove(name.as_bytes())?))?;
        self.flush()?;
        Ok(had.is_some())
    }

    /// Every created token; one that does not decode is skipped with a warning (its holder is
    /// refused until it is created anew).
    pub fn tokens(&self) -> Result<Vec<TokenRecord>, Error> {
        self.reading("listing tokens", || {
            let mut out = Vec::new();
            for kv in self.tree(TreeId::Tokens)?.iter() {
                let (k, v) = kv?;
                match decode(TreeId::Tokens.name(), &k, &v) {
                    Ok(r) => out.push(r),
                    Err(e) => tracing::warn!(error = %e, "skipping a token that does not decode"),
                }
            }
            Ok(out)
        })
    }

    /// Appends `record` to the audit log under a fresh id, flushed; the id.
    pub fn append_audit(&self, record: &AuditRecord) -> Result<u64, Error> {
        let id = self.writing("allocating an audit id", || Ok(self.handle()?.db.generate_id()?))?;
        let value = encode(TreeId::Audit.name(), &AuditRecord { id, ..record.clone() })?;
        self.writing("writing an audit entry", || {
            self.tree(TreeId::Audit)?.insert(id.to_be_bytes(), value)?;
            Ok(())
        })?;
        self.flush()?;
        Ok(id)
    }

    /// The audit entries that pass `filter`, oldest first (the newest `filter.limit`); damaged
    /// ones are skipped with a warning.
    pub fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, Error> {
        self.reading("listing the audit log", || {
            let mut out = Vec::new();
            for kv in self.tree(TreeId::Audit)?.iter().rev() {
                let (k, v) = kv?;
                let r: AuditRecord = match decode(TreeId::Audit.name(), &k, &v) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(error = %e, "skipping an audit entry that does not decode");
                        continue;
                    }
                };
                if filter.since.is_some_and(|s| r.at < s) {
                    break;
                }
                if filter.who.as_ref().is_none_or(|w| *w == r.who) {
                    out.push(r);
                    if out.len() >= filter.limit.max(1) {
                        break;
                    }
                }
            }
            out.reverse();
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testkit;

    fn entry(at: u64, who: &str, action: &str) -> AuditRecord {
        AuditRecord {
            id: 0,
            at: Millis(at),
            who: who.into(),
            role: "admin".into(),
            action: action.into(),
            target: "run=r-1".into(),
            outcome: "ok".into(),
            method: "/weir.v1.WeirClient/CancelRun".into(),
        }
    }

    #[test]
    fn tokens_and_audit_entries_survive_a_reopen_and_filter() {
        let dir = tempfile::tempdir().unwrap();
        let t = TokenRecord {
            name: "alice".into(),
            role: "operator".into(),
            hash: "ab".repeat(32),
            created_at: Millis(1),
            created_by: "client".into(),
        };
        {
            let s = Store::open(dir.path()).unwrap();
            s.put_token(&t).unwrap();
            s.append_audit(&entry(10, "alice", "start")).unwrap();
            s.append_audit(&entry(20, "bob", "cancel")).unwrap();
            s.append_audit(&entry(30, "alice", "cancel")).unwrap();
        }
        let s = testkit::reopen(dir.path());
        assert_eq!(s.tokens().unwrap(), vec![t]);
        let all = |f: AuditFilter| s.audit(&f).unwrap().into_iter().map(|r| (r.at.0, r.action)).collect::<Vec<_>>();
        let many = 100;
        assert_eq!(all(AuditFilter { limit: many, ..Default::default() }).len(), 3);
        assert_eq!(
            all(AuditFilter { who: Some("alice".into()), limit: many, ..Default::default() }),
            vec![(10, "start".to_string()), (30, "cancel".to_string())]
        );
        assert_eq!(all(AuditFilter { since: Some(Millis(20)), limit: many, ..Default::default() }).len(), 2);
        assert_eq!(all(AuditFilter { limit: 1, ..Default::default() }), vec![(30, "cancel".to_string())]);
        let ids: Vec<u64> =
            s.audit(&AuditFilter { limit: many, ..Default::default() }).unwrap().iter().map(|r| r.id).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        assert!(s.remove_token("alice").unwrap());
        assert!(!s.remove_token("alice").unwrap());
        assert_eq!(s.tokens().unwrap(), vec![]);
    }
}
