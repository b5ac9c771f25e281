//! Cron expressions for `schedule.cron`, through the croner crate: standard 5 fields
//! (minute hour day-of-month month day-of-week, Sunday = 0 or 7, so `1-5` is Monday to
//! Friday), 6 fields with seconds first, and `@hourly`/`@daily`/`@weekly`/`@monthly`/
//! `@yearly`/`@annually`. croner is DST-correct: a local time inside a spring-forward gap
//! fires once at the next valid instant and a time in the autumn overlap fires once.

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

pub const CRON_HELP: &str = "write 5 fields `minute(0-59) hour(0-23) day-of-month(1-31) month(1-12) day-of-week(0-7, 0 and 7 = Sunday)` (e.g. `0 3 * * 1-5`), 6 with seconds first, or @hourly, @daily, @weekly, @monthly, @yearly";

/// Parses an expression; the error says what is wrong in words.
pub fn parse_cron(expr: &str) -> Result<Cron, String> {
    let trimmed = expr.trim();
    if trimmed.starts_with('@') {
        const ALIASES: [&str; 6] = ["@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually"];
        if !ALIASES.iter().any(|a| a.eq_ignore_ascii_case(trimmed)) {
            let hint = crate::diag::did_you_mean(trimmed, ALIASES).map(|h| format!(": {h}")).unwrap_or_default();
            return Err(format!("unknown cron alias `{trimmed}`{hint}"));
        }
    } else {
        let fields = trimmed.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err(format!("`{trimmed}` has {fields} fields, expected 5 (or 6 with seconds first)"));
        }
    }
    let parser = CronParser::builder().seconds(Seconds::Optional).year(Year::Disallowed).build();
    let cron = parser.parse(trimmed).map_err(|e| {
        let text = e.to_string();
        let text = text.trim_end_matches('.');
        format!("invalid cron expression `{trimmed}`: {}", lowercase_first(text))
    })?;
    // An expression like `0 0 30 2 *` parses but can never fire. Every valid day-of-month and
    // month combination occurs within 8 years of any date (29 February included), so one
    // search from a fixed instant decides it without reading the clock.
    let reference = chrono::DateTime::from_timestamp(946_684_800, 0).unwrap_or_default(); // 2000-01-01
    match cron.find_next_occurrence(&reference, false) {
        Ok(next) if next.signed_duration_since(reference).num_days() <= 8 * 366 => Ok(cron),
        _ => Err(format!("`{trimmed}` never fires: no date matches it")),
    }
}

fn lowercase_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone, Timelike, Weekday};

    #[test]
    fn weekdays_are_standard_monday_to_friday() {
        let cron = parse_cron("0 3 * * 1-5").unwrap();
        // 2026-11-27 is a Friday.
        let mut t = chrono::Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap();
        let mut days = Vec::new();
        for _ in 0..5 {
            t = cron.find_next_occurrence(&t, false).unwrap();
            assert_eq!((t.hour(), t.minute(), t.second()), (3, 0, 0));
            days.push(t.weekday());
        }
        assert_eq!(days, [Weekday::Mon, Weekday::Tue, Weekday::Wed, Weekday::Thu, Weekday::Fri]);
    }

    #[test]
    fn accepts_seconds_and_aliases() {
        for ok in [
            "0 0 29 2 *",
            "0 12 L * *",
            "*/5 * * * *",
            "30 0 3 * * *",
            "@daily",
            "@Hourly",
            "@yearly",
            "0 0 * * SUN",
            "0 9 1 JAN *",
        ] {
            assert!(parse_cron(ok).is_ok(), "{ok}: {:?}", parse_cron(ok).err());
        }
        let t = chrono::Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap();
        let daily = parse_cron("@daily").unwrap().find_next_occurrence(&t, false).unwrap();
        assert_eq!(daily, chrono::Utc.with_ymd_and_hms(2026, 11, 28, 0, 0, 0).unwrap());
    }

    #[test]
    fn rejects_bad_expressions() {
        for bad in
            ["", "* * *", "61 * * * *", "* 25 * * *", "0 3 * * 1-9", "@reboot", "@dayly", "0 0 0 0 0 0 0", "a b c d e"]
        {
            assert!(parse_cron(bad).is_err(), "{bad} should be rejected");
        }
        assert!(parse_cron("@dayly").unwrap_err().contains("did you mean `@daily`"));
    }
}
