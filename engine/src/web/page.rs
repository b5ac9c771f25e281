//! The shared page layout and the small renderers every page uses: state badges that say
//! their state in text and by icon as well as colour (colour alone fails colour-blind users),
//! times, and durations.

use axum::http::StatusCode;
use axum::response::Html;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use weir_core::run::{Millis, RunState, StepState};

/// A page of the UI: the navigation, then `body`. `csrf` goes in a meta tag for the script's
/// requests.
pub(crate) fn layout(title: &str, csrf: &str, active: &str, body: Markup) -> Html<String> {
    let nav = [
        ("/runs", "Runs"),
        ("/pipelines", "Pipelines"),
        ("/plots", "Metrics"),
        ("/models", "Models"),
        ("/workers", "Workers"),
    ];
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    meta name="csrf" content=(csrf);
                    title { (title) " · weir" }
                    link rel="stylesheet" href="/static/style.css";
                    script src="/static/live.js" defer {}
                }
                body {
                    header.top {
                        a.brand href="/runs" { "weir" }
                        nav {
                            @for (href, name) in nav {
                                a href=(href) aria-current=[(name == active).then_some("page")] { (name) }
                            }
                        }
                        form.logout method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { "Log out" }
                        }
                    }
                    main { (body) }
                }
            }
        }
        .into_string(),
    )
}

/// A page without navigation (login).
pub(crate) fn bare(title: &str, body: Markup) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " · weir" }
                    link rel="stylesheet" href="/static/style.css";
                }
                body { main { (body) } }
            }
        }
        .into_string(),
    )
}

/// An error as a page.
pub(crate) fn error_page(code: StatusCode, message: &str) -> Html<String> {
    bare(
        code.canonical_reason().unwrap_or("Error"),
        html! {
            h1 { (code.as_u16()) " " (code.canonical_reason().unwrap_or("")) }
            pre.error role="alert" { (message) }
            p { a href="/runs" { "Back to the runs" } }
        },
    )
}

/// The icon shown beside a state's name.
pub(crate) fn icon(state: &str) -> &'static str {
    match state {
        "succeeded" => "✓",
        "failed" => "✗",
        "running" => "▶",
        "leased" => "◔",
        "released" => "↩",
        "ready" => "◌",
        "pending" | "queued" => "○",
        "cancelled" => "⊘",
        "skipped" => "↷",
        "cached" => "♻",
        "awaiting_approval" => "✋",
        _ => "?",
    }
}

/// A state as a badge: icon, name and colour (`data-state` lets the script update it).
pub(crate) fn badge(state: &str) -> Markup {
    html! {
        span class={"badge st-" (state)} data-state=(state) {
            span.icon aria-hidden="true" { (icon(state)) } " " span.name { (state) }
        }
    }
}

pub(crate) fn run_badge(s: RunState) -> Markup {
    badge(s.as_str())
}

#[allow(dead_code)] // for the pages that follow
pub(crate) fn step_badge(s: StepState) -> Markup {
    badge(s.as_str())
}

/// `at` in UTC, to the second, in a `<time>` the script may show in local time.
pub(crate) fn time(at: Millis) -> Markup {
    let text = chrono::DateTime::from_timestamp_millis(at.0 as i64)
        .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_default();
    let iso = chrono::DateTime::from_timestamp_millis(at.0 as i64).map(|t| t.to_rfc3339()).unwrap_or_default();
    html! { time datetime=(iso) { (text) } }
}

/// A duration in ms, as people read it: `850ms`, `12.3s`, `4m05s`, `2h03m`.
pub(crate) fn duration(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..3_600_000 => format!("{}m{:02}s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms / 60_000 % 60),
    }
}

/// Trusted markup (ours: SVG we built with escaped text).
#[allow(dead_code)] // for the pages that follow
pub(crate) fn raw(s: String) -> PreEscaped<String> {
    PreEscaped(s)
}

/// `text` escaped for HTML or XML text and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(12_345), "12.3s");
        assert_eq!(duration(245_000), "4m05s");
        assert_eq!(duration(7_380_000), "2h03m");
    }

    #[test]
    fn badges_say_their_state_in_text_and_icon() {
        let b = badge("failed").into_string();
        assert!(b.contains("✗") && b.contains(">failed<") && b.contains("st-failed"), "{b}");
        assert_eq!(escape("<a href=\"x\">'&"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;");
    }
}
