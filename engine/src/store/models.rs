//! The model registry's records: one head per model ([`ModelRecord`]: latest version, aliases,
//! how many events), one record per version ([`ModelVersionRecord`]) and an append-only list of
//! alias moves and refused promotions per model ([`AliasEventRecord`]). Keys: `models` by name;
//! `model_versions` and `model_events` by name · big-endian u64, so a model's versions and
//! events scan in order and one model's keys never interleave with another's (model names hold
//! no NUL). Registration writes through [`Batch`] helpers, so it lands in the same atomic batch
//! as the step's success; the engine decides what to write, this module only stores it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::append::Batch;
use super::db::{Store, TreeId};
use super::envelope::{decode, encode};
use super::{Error, keys};
use weir_core::run::Millis;
use weir_data::artifact::Digest;

/// `models`: one model's head.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelRecord {
    pub name: String,
    /// The newest version (versions count from 1).
    pub latest: u64,
    /// When the newest version was registered.
    pub updated_at: Millis,
    /// Alias to version.
    pub aliases: BTreeMap<String, u64>,
    /// How many events the model has (the next one is `events + 1`).
    pub events: u64,
    /// Protected aliases (a `register:` with `approval:` declared them): their moves wait for
    /// a person's approval. Never lifted by a pipeline that stops declaring it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub protected: BTreeMap<String, Protection>,
    /// Moves of protected aliases awaiting approval, oldest first; at most one per alias.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<PendingMove>,
    /// How many moves were ever requested (the next request's id is `requests + 1`).
    #[serde(default)]
    pub requests: u64,
}

/// A protected alias: what its approver is told, how long a request waits, who declared it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Protection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Milliseconds a request waits before it is refused; `None`: until someone decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// `run R step S`, where the `register:` declared it.
    pub declared_by: String,
    pub since: Millis,
}

/// A move of a protected alias awaiting approval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingMove {
    /// The request's id, per model, from 1.
    pub id: u64,
    pub alias: String,
    /// The version the alias held when the move was requested.
    pub from: Option<u64>,
    pub to: u64,
    pub requested_at: Millis,
    /// Why, as a move records it (`registered by run R step S; ...`, `promoted by hand: ...`).
    pub reason: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rollback: bool,
    /// When it is refused without a decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<Millis>,
    /// For a gated registration: the expression and what it compared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compared: Vec<(String, String)>,
}

/// `model_versions`: one version of a model, as its step made it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelVersionRecord {
    pub model: String,
    pub version: u64,
    /// The file's path in the step's outputs.
    pub file: String,
    pub digest: Digest,
    pub size: u64,
    pub run_id: String,
    /// The step instance's name.
    pub step: String,
    pub metrics: BTreeMap<String, f64>,
    /// The run's params, as text.
    pub params: BTreeMap<String, String>,
    pub created_at: Millis,
    /// What its step's `explain.json` said drives it (`weir_core::explain`), when it wrote a
    /// usable one. Absent in records written before explanations were collected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanation: Option<weir_core::explain::Explanation>,
}

/// `model_events`: an alias moved, or a gated promotion was refused (the alias did not move),
/// or a move of a protected alias was requested or decided.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AliasEventRecord {
    pub alias: String,
    /// The version the alias held before; `None` when it was new.
    pub from: Option<u64>,
    /// The version it moved to (or, refused, would have).
    pub to: u64,
    pub at: Millis,
    pub reason: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refused: bool,
    /// This move undid an earlier one (`weir models rollback`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rollback: bool,
    /// For a gated promotion: the expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
    /// For a gated promotion: every value the expression read, as `(reference, value)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compared: Vec<(String, String)>,
    /// The move of a protected alias was requested, not made: it awaits approval.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub awaiting: bool,
    /// The request (`PendingMove::id`) this event asks for or decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<u64>,
    /// Who decided the request (`alice (client token)`, or `timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// Why, as the approver gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Who moved it by hand (the principal's name); `None` for a run's registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// `name · n`: a version or event key.
fn numbered(name: &str, n: u64) -> Result<Vec<u8>, Error> {
    let mut k = keys::prefix(name)?;
    k.extend_from_slice(&n.to_be_bytes());
    Ok(k)
}

impl Batch {
    /// Writes (replaces) a model's head.
    pub fn put_model(&mut self, m: &ModelRecord) -> Result<&mut Batch, Error> {
        let v = encode(TreeId::Models.name(), m)?;
        self.put_raw(TreeId::Models, keys::run(&m.name)?, v);
        Ok(self)
    }

    /// Writes one version of a model.
    pub fn put_model_version(&mut self, v: &ModelVersionRecord) -> Result<&mut Batch, Error> {
        let value = encode(TreeId::ModelVersions.name(), v)?;
        self.put_raw(TreeId::ModelVersions, numbered(&v.model, v.version)?, value);
        Ok(self)
    }

    /// Appends an event to `head`'s list, counting it in `head` (write `head` after this).
    pub fn append_model_event(&mut self, head: &mut ModelRecord, e: &AliasEventRecord) -> Result<&mut Batch, Error> {
        let value = encode(TreeId::ModelEvents.name(), e)?;
        head.events += 1;
        self.put_raw(TreeId::ModelEvents, numbered(&head.name, head.events)?, value);
        Ok(self)
    }
}

impl Store {
    /// A model's head, if it has one.
    pub fn model(&self, name: &str) -> Result<Option<ModelRecord>, Error> {
        self.get(TreeId::Models, &keys::run(name)?)
    }

    /// Every model's head, in name order.
    pub fn models(&self) -> Result<Vec<ModelRecord>, Error> {
        let mut out = Vec::new();
        for kv in self.tree(TreeId::Models)?.iter() {
            let (k, v) = kv?;
            out.push(decode(TreeId::Models.name(), &k, &v)?);
        }
        Ok(out)
    }

    /// One version of a model.
    pub fn model_version(&self, name: &str, version: u64) -> Result<Option<ModelVersionRecord>, Error> {
        self.get(TreeId::ModelVersions, &numbered(name, version)?)
    }

    /// Every version of a model, oldest first.
    pub fn model_versions(&self, name: &str) -> Result<Vec<ModelVersionRecord>, Error> {
        self.scan(TreeId::ModelVersions, name)
    }

    /// Every alias move and refused promotion of a model, oldest first.
    pub fn model_events(&self, name: &str) -> Result<Vec<AliasEventRecord>, Error> {
        self.scan(TreeId::ModelEvents, name)
    }

    fn scan<T: serde::de::DeserializeOwned>(&self, t: TreeId, name: &str) -> Result<Vec<T>, Error> {
        let mut out = Vec::new();
        for kv in self.tree(t)?.scan_prefix(keys::prefix(name)?) {
            let (k, v) = kv?;
            out.push(decode(t.name(), &k, &v)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testkit;

    fn version(model: &str, n: u64) -> ModelVersionRecord {
        ModelVersionRecord {
            model: model.to_string(),
            version: n,
            file: "model.json".to_string(),
            digest: Digest::of(format!("v{n}").as_bytes()),
            size: 2,
            run_id: format!("r-{n}"),
            step: "deploy".to_string(),
            metrics: BTreeMap::from([("rmse".to_string(), 0.5)]),
            params: BTreeMap::from([("lr".to_string(), "0.1".to_string())]),
            created_at: Millis(n),
            explanation: None,
        }
    }

    fn moved(alias: &str, from: Option<u64>, to: u64) -> AliasEventRecord {
        AliasEventRecord {
            alias: alias.to_string(),
            from,
            to,
            at: Millis(to),
            reason: "test".to_string(),
            refused: false,
            rollback: false,
            expression: None,
            compared: Vec::new(),
            awaiting: false,
            request: None,
            decided_by: None,
            comment: None,
            by: None,
        }
    }

    #[test]
    fn versions_and_events_scan_in_order_per_model_and_survive_export_import() {
        let (_dir, s) = testkit::store();
        for (name, n) in [("churn", 1u64), ("churn", 2), ("churn-2", 1), ("churn", 256)] {
            let mut head =
                s.model(name).unwrap().unwrap_or(ModelRecord { name: name.to_string(), ..Default::default() });
            head.latest = n;
            head.aliases.insert("production".to_string(), n);
            let mut b = Batch::new();
            b.put_model_version(&version(name, n)).unwrap();
            b.append_model_event(&mut head, &moved("production", None, n)).unwrap();
            b.put_model(&head).unwrap();
            s.write_batch(b).unwrap();
        }
        let versions: Vec<u64> = s.model_versions("churn").unwrap().iter().map(|v| v.version).collect();
        assert_eq!(versions, [1, 2, 256]);
        assert_eq!(s.model_events("churn").unwrap().iter().map(|e| e.to).collect::<Vec<_>>(), [1, 2, 256]);
        assert_eq!(s.model_versions("churn-2").unwrap().len(), 1);
        let heads: Vec<(String, u64, u64)> =
            s.models().unwrap().into_iter().map(|m| (m.name, m.latest, m.events)).collect();
        assert_eq!(heads, [("churn".to_string(), 256, 3), ("churn-2".to_string(), 1, 1)]);
        assert_eq!(s.model_version("churn", 2).unwrap(), Some(version("churn", 2)));
        assert_eq!(s.model_version("churn", 3).unwrap(), None);
        assert!(s.model("").is_err());

        let mut dump = Vec::new();
        s.export(&mut dump).unwrap();
        let (_dir2, fresh) = testkit::store();
        fresh.import(&dump[..]).unwrap();
        assert_eq!(fresh.models().unwrap(), s.models().unwrap());
        assert_eq!(fresh.model_versions("churn").unwrap(), s.model_versions("churn").unwrap());
        assert_eq!(fresh.model_events("churn").unwrap(), s.model_events("churn").unwrap());
    }
}
