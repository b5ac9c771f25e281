//! Stored pipelines: recording a submitted version (its id from the pipeline's hash and its
//! bundle's digest; schedules follow the new version) and listing pipelines a page at a time.
//! The bundle's bytes arrive through the adapter (`crate::api`); this module sees its digest.

use crate::store::PipelineVersion;
use weir_core::run::Millis;
use weir_core::spec::Pipeline;
use weir_data::artifact::Digest;

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
    /// Records `pipeline` (whose text is `yaml`) with its bundle: returns its version and
    /// whether that version is new. Resubmitting a version changes nothing but the time.
    pub(crate) fn submit(
        &self,
        pipeline: &Pipeline,
        yaml: &str,
        bundle: Option<Digest>,
    ) -> Result<(String, bool), ApiError> {
        let version = match &bundle {
            None => pipeline.hash().to_string(),
            Some(d) => {
                let h = blake3::hash(format!("{}:{d}", pipeline.hash()).as_bytes()).to_hex();
                h[..pipeline.hash().len().min(64)].to_string()
            }
        };
        let created = self.store.pipeline_version(&version)?.is_none();
        let record = PipelineVersion {
            name: pipeline.name().to_string(),
            yaml: yaml.to_string(),
            bundle_digest: bundle,
            submitted_at: self.clock.now(),
        };
        self.store.put_pipeline_version(&version, &record)?;
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
