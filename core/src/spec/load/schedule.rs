//! Reads `schedule:`: the cron expression, time zone, catch-up and concurrency policies, and
//! the param values for scheduled runs, checked against the declared params. It must not
//! compute run times: the parsed cron is kept for whoever schedules.

use std::collections::BTreeMap;
use std::str::FromStr;

use super::params::typed_value;
use crate::diag::{Diagnostic, Span, did_you_mean};
use crate::schema::SCHEDULE_FIELDS;
use crate::spec::cron;
use crate::spec::decode::Cx;
use crate::spec::model::*;
use crate::spec::yaml::NodeId;

pub(super) fn schedule(
    cx: &mut Cx<'_>,
    id: NodeId,
    key: Span,
    params: &[Param],
    declared: &[String],
) -> Option<Schedule> {
    let fields = cx.fields(id, "schedule", "schedule", SCHEDULE_FIELDS)?;
    let cron_node = cx.require(&fields, "cron", "schedule", "a cron expression like \"0 3 * * *\"", key);
    let parsed = cron_node.and_then(|n| {
        let text = cx.string(n, "schedule.cron")?;
        match cron::parse_cron(text) {
            Ok(c) => Some((text.trim().to_string(), c)),
            Err(e) => {
                cx.push(
                    Diagnostic::error("`schedule.cron` is not a valid cron expression")
                        .at(cx.span(n), e)
                        .help(cron::CRON_HELP),
                );
                None
            }
        }
    });
    let timezone = match fields.get("timezone") {
        None => Some(chrono_tz::Tz::UTC),
        Some(n) => cx.string(n, "schedule.timezone").and_then(|text| match chrono_tz::Tz::from_str(text) {
            Ok(tz) => Some(tz),
            Err(_) => {
                let help = did_you_mean(text, chrono_tz::TZ_VARIANTS.iter().map(|t| t.name()))
                    .unwrap_or_else(|| "use an IANA name like `Europe/Berlin`, `America/New_York` or `UTC`".into());
                cx.push(
                    Diagnostic::error(format!("unknown time zone `{text}`"))
                        .at(cx.span(n), "expected an IANA time zone name")
                        .help(help),
                );
                None
            }
        }),
    };
    let catchup = fields.get("catchup").map_or(Some(false), |n| cx.bool(n, "schedule.catchup"));
    let max_catchup = fields.get("max_catchup").map_or(Some(50), |n| cx.int_in(n, "schedule.max_catchup", 1, 10_000));
    let concurrency = fields.get("concurrency").map_or(Some(Concurrency::Forbid), |n| {
        let text = cx.string(n, "schedule.concurrency")?;
        match text {
            "allow" => Some(Concurrency::Allow),
            "forbid" => Some(Concurrency::Forbid),
            "replace" => Some(Concurrency::Replace),
            other => {
                cx.push(
                    Diagnostic::error(format!("unknown concurrency policy `{other}`"))
                        .at(cx.span(n), "expected allow, forbid or replace")
                        .help_opt(did_you_mean(other, ["allow", "forbid", "replace"])),
                );
                None
            }
        }
    });
    let mut values = BTreeMap::new();
    let mut ok = true;
    if let Some(n) = fields.get("params")
        && let Some(entries) = cx.map(n, "schedule.params")
    {
        for &(k, v) in entries {
            let name = cx.doc.text(k).unwrap_or("");
            match params.iter().find(|p| p.name == name) {
                Some(p) => match typed_value(cx, v, p, &format!("schedule.params.{name}")) {
                    Some(value) => {
                        if let Err(e) = p.check(&value) {
                            cx.push(
                                Diagnostic::error(format!("scheduled value for param `{name}` is not allowed"))
                                    .at(cx.span(v), e),
                            );
                            ok = false;
                        }
                        values.insert(name.to_string(), value);
                    }
                    None => ok = false,
                },
                None if declared.iter().any(|d| d == name) => ok = false,
                None => {
                    cx.push(
                        Diagnostic::error(format!("unknown param `{name}` in `schedule.params`"))
                            .at(cx.span(k), "not a declared param")
                            .help_opt(did_you_mean(name, params.iter().map(|p| p.name.as_str()))),
                    );
                    ok = false;
                }
            }
        }
    }
    let (cron, parsed) = parsed?;
    if !ok {
        return None;
    }
    Some(Schedule {
        cron,
        timezone: timezone?,
        catchup: catchup?,
        max_catchup: max_catchup? as u32,
        concurrency: concurrency?,
        params: values,
        parsed,
    })
}
