//! Pipeline files as the engine holds them: a file checked with the engine's limits, and the
//! version it gets with its bundle. SubmitPipeline uses them to store a version (or, validating
//! only, to say what it would store), PlanRun to plan a file that is not stored. Domain values
//! and [`ApiError`] only; storing the version and receiving the bundle stay with the caller.

use std::sync::Arc;

use weir_core::spec::Pipeline;
use weir_data::artifact::Digest;
use weir_data::bundle::is_digest;

use super::core::Engine;
use super::error::ApiError;

impl Engine {
    /// `yaml` loaded as a submission is, with this engine's limits; every problem is an
    /// invalid-argument error carrying the diagnostics against `file` (`pipeline.yaml` when
    /// empty).
    pub(super) fn check_pipeline(&self, yaml: &str, file: &str) -> Result<Pipeline, ApiError> {
        let file = if file.is_empty() { "pipeline.yaml" } else { file };
        weir_core::spec::load(yaml, &self.limits)
            .map_err(|d| ApiError::diagnostics("the pipeline is invalid", file, yaml, d))
    }

    /// A pipeline file that is not stored, with the digest of its folder's bundle (empty for
    /// none): checked, with the version it would get if submitted. Stores nothing.
    pub(super) fn unstored(
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
}

/// A bundle digest as a request gives it: lowercase hex BLAKE3, else invalid.
pub(super) fn digest(text: &str) -> Result<Digest, ApiError> {
    if !is_digest(text) {
        return Err(ApiError::Invalid(format!("bundle_digest {text:?} is not a BLAKE3 hex digest")));
    }
    text.parse().map_err(|e| ApiError::Invalid(format!("bundle_digest: {e}")))
}

/// The version a pipeline gets: its hash alone, or with a bundle a hash of the two cut to the
/// same length, so one file with two different folders is two versions.
pub(super) fn version_of(pipeline: &Pipeline, bundle: Option<&Digest>) -> String {
    match bundle {
        None => pipeline.hash().to_string(),
        Some(d) => {
            let h = blake3::hash(format!("{}:{d}", pipeline.hash()).as_bytes()).to_hex();
            h[..pipeline.hash().len().min(64)].to_string()
        }
    }
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
