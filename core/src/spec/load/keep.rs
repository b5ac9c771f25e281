//! Reads `keep:`, the pipeline's retention: how many finished runs to keep (`runs`) and for how
//! many days (`days`). It decides nothing about which runs go: the engine applies it.

use crate::diag::{Diagnostic, Span};
use crate::schema::KEEP_FIELDS;
use crate::spec::decode::Cx;
use crate::spec::model::Keep;
use crate::spec::yaml::NodeId;

/// The most runs or days `keep` accepts.
const MAX: i64 = 1_000_000;

pub(super) fn keep(cx: &mut Cx<'_>, id: NodeId, key: Span) -> Option<Keep> {
    let fields = cx.fields(id, "keep", "keep", KEEP_FIELDS)?;
    let runs = match fields.get("runs") {
        None => Some(None),
        Some(n) => cx.int_in(n, "keep.runs", 1, MAX).map(|n| Some(n as u32)),
    };
    let days = match fields.get("days") {
        None => Some(None),
        Some(n) => cx.int_in(n, "keep.days", 1, MAX).map(|n| Some(n as u32)),
    };
    let (runs, days) = (runs?, days?);
    if runs.is_none() && days.is_none() {
        cx.push(
            Diagnostic::error("`keep` keeps nothing out")
                .at(key, "expected `runs`, `days` or both")
                .help("write `keep: {runs: 100, days: 30}`, or remove `keep` to keep every run"),
        );
        return None;
    }
    Some(Keep { runs, days })
}

#[cfg(test)]
mod tests {
    use crate::spec::{Limits, load};

    fn check(keep: &str, expect: Result<(Option<u32>, Option<u32>), &str>) {
        let yaml = format!("name: p\n{keep}\nsteps:\n  a:\n    run: echo hi\n");
        match (load(&yaml, &Limits::default()), expect) {
            (Ok(p), Ok((runs, days))) => {
                let k = p.keep().expect("a keep");
                assert_eq!((k.runs(), k.days()), (runs, days), "{keep}");
            }
            (Err(diags), Err(text)) => {
                let all = format!("{diags:?}");
                assert!(all.contains(text), "{keep}: {all}");
                assert!(diags.iter().all(|d| d.span.is_some()), "{keep}: a diagnostic has no place");
            }
            (other, expect) => panic!("{keep}: {:?} vs {expect:?}", other.map(|p| p.keep().cloned())),
        }
    }

    #[test]
    fn keep_reads_runs_and_days_and_refuses_what_keeps_nothing_out() {
        check("keep: {runs: 100, days: 30}", Ok((Some(100), Some(30))));
        check("keep: {runs: 3}", Ok((Some(3), None)));
        check("keep: {days: 7}", Ok((None, Some(7))));
        check("keep: {}", Err("keeps nothing out"));
        check("keep: {runs: 0}", Err("keep.runs"));
        check("keep: {runs: -1}", Err("keep.runs"));
        check("keep: {weeks: 2}", Err("weeks"));
        check("keep: 100", Err("keep"));
    }

    #[test]
    fn no_keep_leaves_the_hash_as_it_was() {
        let yaml = "name: p\nsteps:\n  a:\n    run: echo hi\n";
        let p = load(yaml, &Limits::default()).unwrap();
        assert!(p.keep().is_none());
        assert!(!serde_json::to_string(&p).unwrap().contains("keep"));
    }
}
