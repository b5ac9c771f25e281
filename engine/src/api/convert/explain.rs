//! Explanations on the wire: a model version's [`Explanation`] and two versions' comparison
//! ([`ExplanationDiff`]) as `weir.v1` messages. Conversions only; what they mean is
//! `weir_core::explain`'s and `server::explain`'s.

use weir_core::explain::Explanation;
use weir_proto::v1;

use crate::server::explain::ExplanationDiff;

pub(crate) fn model_explanation(e: &Explanation) -> v1::Explanation {
    v1::Explanation {
        method: e.method.as_str().to_string(),
        metric: e.metric.clone().unwrap_or_default(),
        importances: e
            .importances
            .iter()
            .enumerate()
            .map(|(i, f)| v1::FeatureImportance { feature: f.feature.clone(), importance: f.value, rank: i as u32 + 1 })
            .collect(),
        partial_dependence: e
            .partial_dependence
            .iter()
            .map(|(f, points)| v1::PartialDependence {
                feature: f.clone(),
                x: points.iter().map(|p| p.0).collect(),
                y: points.iter().map(|p| p.1).collect(),
            })
            .collect(),
        samples: e.samples.len() as u32,
    }
}

pub(crate) fn explanation_diff(d: ExplanationDiff) -> v1::DiffModelExplanationsResponse {
    v1::DiffModelExplanationsResponse {
        model: d.model,
        from_version: d.from,
        to_version: d.to,
        from_method: d.from_method,
        to_method: d.to_method,
        rank_shift: d.rank_shift as u32,
        changes: d
            .changes
            .into_iter()
            .map(|c| v1::FeatureChange {
                from_rank: c.before.map_or(0, |b| b.0 as u32),
                to_rank: c.after.map_or(0, |a| a.0 as u32),
                from_importance: c.before.map_or(0.0, |b| b.1),
                to_importance: c.after.map_or(0.0, |a| a.1),
                feature: c.feature,
            })
            .collect(),
    }
}
