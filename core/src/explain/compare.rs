//! Two explanations side by side: each feature's rank and importance before and after (which
//! appeared, which vanished, how far each moved), and the one number a gate reads,
//! [`rank_shift`]. Pure: it takes the two explanations and returns values.

use super::format::Explanation;

/// How many of each ranking's top features [`rank_shift`] looks at.
pub const RANK_SHIFT_TOP: usize = 10;

/// One feature in either explanation: its (rank, importance) before and after.
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureChange {
    pub feature: String,
    pub before: Option<(usize, f64)>,
    pub after: Option<(usize, f64)>,
}

impl FeatureChange {
    /// Ranks moved up (positive: it matters more now); `None` when it appeared or vanished.
    pub fn moved(&self) -> Option<i64> {
        Some(self.before?.0 as i64 - self.after?.0 as i64)
    }
}

/// What changed from one explanation to the next.
#[derive(Clone, Debug, PartialEq)]
pub struct Diff {
    /// Every feature, in the new ranking's order, then the vanished ones in the old order.
    pub changes: Vec<FeatureChange>,
    /// [`rank_shift`] of the two.
    pub rank_shift: usize,
}

/// The largest move, in rank positions, of any feature among the top [`RANK_SHIFT_TOP`] of
/// either ranking. A feature one ranking does not list counts as ranked one past its last, so
/// a new feature at the top of `after` moves as far as the length of `before`.
pub fn rank_shift(before: &Explanation, after: &Explanation) -> usize {
    let rank = |e: &Explanation, f: &str| e.rank(f).unwrap_or(e.importances.len() + 1);
    before
        .importances
        .iter()
        .take(RANK_SHIFT_TOP)
        .chain(after.importances.iter().take(RANK_SHIFT_TOP))
        .map(|i| rank(before, &i.feature).abs_diff(rank(after, &i.feature)))
        .max()
        .unwrap_or(0)
}

/// Compares `before` (an older version's explanation) with `after`.
pub fn diff(before: &Explanation, after: &Explanation) -> Diff {
    let at = |e: &Explanation, f: &str| e.rank(f).map(|r| (r, e.importances[r - 1].value));
    let mut changes: Vec<FeatureChange> = after
        .importances
        .iter()
        .map(|i| FeatureChange {
            feature: i.feature.clone(),
            before: at(before, &i.feature),
            after: at(after, &i.feature),
        })
        .collect();
    changes.extend(before.importances.iter().filter(|i| after.rank(&i.feature).is_none()).map(|i| FeatureChange {
        feature: i.feature.clone(),
        before: at(before, &i.feature),
        after: None,
    }));
    Diff { changes, rank_shift: rank_shift(before, after) }
}

#[cfg(test)]
mod tests {
    use super::super::format::{Importance, Method};
    use super::*;

    fn ranked(features: &[&str]) -> Explanation {
        let n = features.len() as f64;
        Explanation {
            method: Method::Permutation,
            metric: None,
            importances: features
                .iter()
                .enumerate()
                .map(|(i, f)| Importance { feature: f.to_string(), value: n - i as f64 })
                .collect(),
            partial_dependence: Default::default(),
            samples: Vec::new(),
        }
    }

    #[test]
    fn rank_shift_is_the_largest_move_among_either_top() {
        let check = |a: &[&str], b: &[&str], want: usize| {
            assert_eq!(rank_shift(&ranked(a), &ranked(b)), want, "{a:?} -> {b:?}");
        };
        check(&["a", "b", "c"], &["a", "b", "c"], 0);
        check(&["a", "b", "c"], &["b", "a", "c"], 1);
        check(&["a", "b", "c"], &["c", "b", "a"], 2);
        // A new feature at the top: from one past the old last (4) to 1.
        check(&["a", "b", "c"], &["id", "a", "b", "c"], 3);
        // A vanished top feature: from 1 to one past the new last (3).
        check(&["a", "b", "c"], &["b", "c"], 2);
        // Beyond both tops, moves do not count: f11 and f12 swap places at ranks 11 and 12.
        let top: Vec<String> = (1..=12).map(|i| format!("f{i}")).collect();
        let mut swapped = top.clone();
        swapped.swap(10, 11);
        let (a, b): (Vec<&str>, Vec<&str>) =
            (top.iter().map(String::as_str).collect(), swapped.iter().map(String::as_str).collect());
        check(&a, &b, 0);
    }

    #[test]
    fn the_diff_lists_moves_appearances_and_vanishings() {
        let d = diff(&ranked(&["income", "age", "zip"]), &ranked(&["customer_id", "age", "income"]));
        type Row<'a> = (&'a str, Option<usize>, Option<usize>, Option<i64>);
        let got: Vec<Row> = d
            .changes
            .iter()
            .map(|c| (c.feature.as_str(), c.before.map(|b| b.0), c.after.map(|a| a.0), c.moved()))
            .collect();
        assert_eq!(
            got,
            [
                ("customer_id", None, Some(1), None),
                ("age", Some(2), Some(2), Some(0)),
                ("income", Some(1), Some(3), Some(-2)),
                ("zip", Some(3), None, None),
            ]
        );
        assert_eq!(d.changes[1].after, Some((2, 2.0)));
        assert_eq!(d.rank_shift, 3);
    }
}
