//! Pipeline files as the engine holds them: a file checked with the engine's limits, the version
//! it gets with its bundle (its id from the pipeline's hash and its bundle's digest), recording a
//! submitted version (schedules follow the new version), saying what a validate-only submission
//! would store, planning a file that is not stored, and listing pipelines a page at a time. The
//! bundle's bytes arrive through the adapter (`crate::api`); this module sees its digest.

use std::sync::Arc;

use crate::store::PipelineVersion;
use weir_core::diag::Diagnostic;
use weir_core::run::Millis;
use weir_core::spec::Pipeline;
use weir_data::artifact::Digest;
use weir_data::bundle::is_digest;

use super::core::Engine;
use super::error::ApiError;

/// A stored pipeline as `weir pipelines` lists it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PipelineSummary {
    pub name: String,
    pub description: String,
    pub latest_version: String,
    pub submitted_at: Option<Millis>,
    pub version_count: u32,
    /// The cron of its `schedule:`, if any.
    pub schedule: String,
}

impl Engine {
    /// `yaml` loaded as a submission is, with this engine's limits; every problem is an
    /// invalid-argument error carrying the diagnostics against `file` (`pipeline.yaml` when
    /// empty).
    pub(crate) fn check_pipeline(&self, yaml: &str, file: &str) -> Result<Pipeline, ApiError> {
        let file = if file.is_empty() { "pipeline.yaml" } else { file };
        weir_core::spec::load(yaml, &self.limits)
            .map_err(|d| ApiError::diagnostics("the pipeline is invalid", file, yaml, d))
    }

    /// Every `notify:` entry's `secret:` names a secret this server holds (`--notify-secrets`):
    /// one it lacks would fail every delivery long after the submission, so the submission is
    /// refused with where each unknown name stands in `file` (whose text is `yaml`).
    pub(crate) fn check_notify_secrets(&self, pipeline: &Pipeline, yaml: &str, file: &str) -> Result<(), ApiError> {
        let file = if file.is_empty() { "pipeline.yaml" } else { file };
        let secrets = &self.notify.secrets;
        let entries = pipeline.notify().iter().chain(pipeline.steps().iter().flat_map(|s| s.notify.iter()));
        let diags: Vec<Diagnostic> = entries
            .filter_map(|n| {
                let name = n.secret().filter(|name| secrets.get(name).is_none())?;
                let (path, span) = n.secret_site().unwrap_or(("notify.secret", Default::default()));
                let hint = weir_core::diag::did_you_mean(name, secrets.names());
                Some(
                    Diagnostic::error(format!("`{path}` names secret `{name}`, which this server does not hold"))
                        .at(span, "not in the server's --notify-secrets file")
                        .help_opt(hint)
                        .note(
                            "add a line `NAME = SECRET` to the file given to `weir server --notify-secrets` and \
                             restart the server, or remove `secret:` to send unsigned",
                        ),
                )
            })
            .collect();
        if diags.is_empty() {
            return Ok(());
        }
        Err(ApiError::diagnostics(
            "the pipeline names a notification secret this server does not hold",
            file,
            yaml,
            diags,
        ))
    }

    /// A pipeline file that is not stored, with the digest of its folder's bundle (empty for
    /// none): checked, with the version it would get if submitted. Stores nothing.
    pub(crate) fn unstored(
        &self,
        yaml: &str,
        file: &str,
        bundle_digest: &str,
    ) -> Result<(String, Arc<Pipeline>, Option<String>), ApiError> {
        let pipeline = self.check_pipeline(yaml, file)?;
        let bundle = if bundle_digest.is_empty() { None } else { Some(digest(bundle_digest)?) };
        let version = version_of(&pipeline, bundle.as_ref());
        Ok((version, Arc::new(pipeline), bundle.map(|d| d.to_string())))
    }

    /// A validate-only submission: the version `pipeline` with `bundle` would get and whether it
    /// would be new. Stores nothing and syncs no schedule.
    pub(crate) fn would_submit(
        &self,
        pipeline: &Pipeline,
        bundle: Option<&Digest>,
    ) -> Result<(String, bool), ApiError> {
        let version = version_of(pipeline, bundle);
        let created = self.store.pipeline_version(&version)?.is_none();
        tracing::debug!(pipeline = pipeline.name(), version, created, "pipeline validated, not stored");
        Ok((version, created))
    }

    /// Records `pipeline` (whose text is `yaml`, read from a file named `file`; empty:
    /// `pipeline.yaml`) with its bundle: returns its version and whether that version is new.
    /// Resubmitting a version changes nothing but the time and the file name.
    pub(crate) fn submit(
        &self,
        pipeline: &Arc<Pipeline>,
        yaml: &str,
        file: &str,
        bundle: Option<Digest>,
    ) -> Result<(String, bool), ApiError> {
        let version = version_of(pipeline, bundle.as_ref());
        let created = self.store.pipeline_version(&version)?.is_none();
        let record = PipelineVersion {
            name: pipeline.name().to_string(),
            yaml: yaml.to_string(),
            bundle_digest: bundle,
            submitted_at: self.clock.now(),
            file: (!file.is_empty()).then(|| file.to_string()),
        };
        self.store.put_pipeline_version(&version, &record)?;
        // Parsed already: the first run of this version (`weir run` starts one at once) need
        // not parse the stored text again, which for a 1,000-step pipeline cost ~2% of its run.
        self.lock().pipelines.insert(version.clone(), (pipeline.clone(), bundle.map(|d| d.to_string())));
        if self.scheduling {
            {
                let mut st = self.lock();
                self.sync_schedule(&mut st, pipeline.name(), &version, self.clock.calendar())?;
            }
            self.commit()?;
        }
        tracing::info!(pipeline = pipeline.name(), version, created, "pipeline submitted");
        Ok((version, created))
    }

    /// No pipeline is named `name`: says so, with the stored name closest to it if one is
    /// close (`did you mean ml-retrain?`), and how to store one.
    pub(crate) fn no_pipeline(&self, name: &str) -> ApiError {
        let names: Vec<String> =
            self.store.pipelines().map(|all| all.into_iter().map(|(n, _)| n).collect()).unwrap_or_default();
        let hint = match weir_core::diag::closest(name, names.iter().map(String::as_str)) {
            Some(close) => format!("did you mean {close}? (`weir pipelines` lists them)"),
            None => "submit it first with `weir submit DIR`".to_string(),
        };
        ApiError::NotFound(format!("no pipeline {name}: {hint}"))
    }

    /// At most `size` pipelines named after `after` (empty: from the first), by name, and the
    /// name to continue after (empty: no more).
    pub(crate) fn pipelines(&self, after: &str, size: usize) -> Result<(Vec<PipelineSummary>, String), ApiError> {
        let all = self.store.pipelines()?;
        let mut out: Vec<PipelineSummary> = Vec::new();
        for (name, index) in all.into_iter().filter(|(n, _)| after.is_empty() || n.as_str() > after) {
            if out.len() == size {
                let next = out.last().map(|p| p.name.clone()).unwrap_or_default();
                return Ok((out, next));
            }
            let stored = self.store.pipeline_version(&index.latest)?;
            let parsed = {
                let mut st = self.lock();
                self.pipeline(&mut st, &index.latest).ok().map(|(p, _)| p)
            };
            out.push(PipelineSummary {
                name,
                description: parsed.as_ref().and_then(|p| p.description().map(str::to_string)).unwrap_or_default(),
                latest_version: index.latest.clone(),
                submitted_at: stored.map(|s| s.submitted_at),
                version_count: index.versions.len() as u32,
                schedule: parsed.as_ref().and_then(|p| p.schedule().map(|s| s.cron.clone())).unwrap_or_default(),
            });
        }
        Ok((out, String::new()))
    }
}

/// A bundle digest as a request gives it: lowercase hex BLAKE3, else invalid.
pub(crate) fn digest(text: &str) -> Result<Digest, ApiError> {
    if !is_digest(text) {
        return Err(ApiError::Invalid(format!("bundle_digest {text:?} is not a BLAKE3 hex digest")));
    }
    text.parse().map_err(|e| ApiError::Invalid(format!("bundle_digest: {e}")))
}

/// The version a pipeline gets: its hash alone, or with a bundle a hash of the two cut to the
/// same length, so one file with two different folders is two versions.
pub(crate) fn version_of(pipeline: &Pipeline, bundle: Option<&Digest>) -> String {
    pipeline.version(bundle.map(ToString::to_string).as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_names_the_file_and_its_bundle() {
        let p = weir_core::spec::load("name: v\nsteps:\n  a: {run: 'true'}\n", &Default::default()).unwrap();
        let (d1, d2): (Digest, Digest) = (digest(&"a".repeat(64)).unwrap(), digest(&"b".repeat(64)).unwrap());
        assert_eq!(version_of(&p, None), p.hash());
        let (v1, v2) = (version_of(&p, Some(&d1)), version_of(&p, Some(&d2)));
        assert_ne!(v1, v2);
        assert_eq!(v1.len(), p.hash().len());
        assert_eq!(v1, version_of(&p, Some(&d1)), "stable");
        assert!(digest("ABC").unwrap_err().to_string().contains("is not a BLAKE3 hex digest"));
    }
}
