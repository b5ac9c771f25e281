//! Terminal colours in step logs as HTML: ANSI SGR sequences (`ESC[1;31m`) become
//! `<span class="ansi-1 ansi-31">` (the 8 and 16 colours, background too, bold, italic,
//! underline, reset); every other escape sequence (cursor moves, OSC titles, 256/true-colour
//! arguments) is dropped safely, and the text is HTML-escaped. Pure, so the rules are shown by
//! unit tests and the browser never parses a log.

use std::fmt::Write as _;

/// The SGR attributes in force.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Style {
    bold: bool,
    italic: bool,
    underline: bool,
    fg: Option<u8>,
    bg: Option<u8>,
}

impl Style {
    fn classes(&self) -> String {
        let mut c = Vec::new();
        if self.bold {
            c.push("ansi-1".to_string());
        }
        if self.italic {
            c.push("ansi-3".to_string());
        }
        if self.underline {
            c.push("ansi-4".to_string());
        }
        c.extend(self.fg.map(|n| format!("ansi-{n}")));
        c.extend(self.bg.map(|n| format!("ansi-{n}")));
        c.join(" ")
    }

    fn apply(&mut self, params: &str) {
        let codes: Vec<u16> = params.split([';', ':']).map(|p| p.parse().unwrap_or(0)).collect();
        let mut k = 0;
        while k < codes.len() {
            match codes[k] {
                0 => *self = Style::default(),
                1 => self.bold = true,
                3 => self.italic = true,
                4 => self.underline = true,
                22 => self.bold = false,
                23 => self.italic = false,
                24 => self.underline = false,
                n @ (30..=37 | 90..=97) => self.fg = Some(n as u8),
                39 => self.fg = None,
                n @ (40..=47 | 100..=107) => self.bg = Some(n as u8),
                49 => self.bg = None,
                // 256 colours (`38;5;N`) and true colour (`38;2;R;G;B`): their arguments are
                // skipped, not read as codes of their own; the colour stays as it was.
                38 | 48 => {
                    k += match codes.get(k + 1) {
                        Some(5) => 2,
                        Some(2) => 4,
                        _ => 0,
                    };
                }
                _ => {}
            }
            k += 1;
        }
    }
}

/// `text` (a log's bytes read as UTF-8, lossily) as escaped HTML with its colours as spans.
/// Every span opened is closed at the end, so fragments can be placed side by side.
pub(crate) fn to_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut style = Style::default();
    let mut open = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            match chars.peek() {
                Some('[') => {
                    chars.next();
                    let mut params = String::new();
                    let mut fin = None;
                    for d in chars.by_ref() {
                        if ('\u{40}'..='\u{7e}').contains(&d) {
                            fin = Some(d);
                            break;
                        }
                        if params.len() < 64 {
                            params.push(d);
                        }
                    }
                    if fin == Some('m') {
                        let before = style;
                        style.apply(&params);
                        if style != before {
                            if open {
                                out.push_str("</span>");
                                open = false;
                            }
                            let classes = style.classes();
                            if !classes.is_empty() {
                                let _ = write!(out, r#"<span class="{classes}">"#);
                                open = true;
                            }
                        }
                    }
                }
                Some(']') => {
                    // OSC: up to BEL or ESC \.
                    chars.next();
                    while let Some(d) = chars.next() {
                        if d == '\u{7}' {
                            break;
                        }
                        if d == '\u{1b}' && chars.peek() == Some(&'\\') {
                            chars.next();
                            break;
                        }
                    }
                }
                Some(_) => {
                    chars.next(); // a two-character escape (ESC c, ESC 7, …)
                }
                None => {}
            }
            continue;
        }
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    if open {
        out.push_str("</span>");
    }
    out
}

/// `text` without its escape sequences (for search and the plain-text download).
pub(crate) fn strip(text: &str) -> String {
    let html = to_html(text);
    // Reuse the one parser: drop the tags we made and undo the escaping.
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&#39;", "'").replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_and_bold_become_spans_and_reset_closes_them() {
        assert_eq!(to_html("\x1b[31mred\x1b[0m plain"), r#"<span class="ansi-31">red</span> plain"#);
        assert_eq!(to_html("\x1b[1;92mok\x1b[m"), r#"<span class="ansi-1 ansi-92">ok</span>"#);
        assert_eq!(
            to_html("\x1b[1mb\x1b[34mblue\x1b[22mthin"),
            r#"<span class="ansi-1">b</span><span class="ansi-1 ansi-34">blue</span><span class="ansi-34">thin</span>"#
        );
        assert_eq!(to_html("\x1b[44mbg\x1b[49m"), r#"<span class="ansi-44">bg</span>"#);
    }

    #[test]
    fn text_is_escaped_and_spans_left_open_are_closed() {
        assert_eq!(to_html("<script>&'\""), "&lt;script&gt;&amp;&#39;&quot;");
        assert_eq!(to_html("\x1b[33m<b>"), r#"<span class="ansi-33">&lt;b&gt;</span>"#);
    }

    #[test]
    fn other_sequences_are_dropped_without_eating_text() {
        assert_eq!(to_html("a\x1b[2Kb\x1b[10;5Hc"), "abc");
        assert_eq!(to_html("\x1b]0;title\x07x\x1b]2;t\x1b\\y"), "xy");
        assert_eq!(to_html("\x1b[38;5;196mx\x1b[38;2;1;2;3my\x1b[0m"), "xy", "extended colours are ignored");
        assert_eq!(to_html("\x1b7z\x1b"), "z");
        assert_eq!(to_html("\x1b[31"), "", "an unfinished sequence is dropped");
        assert_eq!(to_html("a\rb\x07c\td"), "abc\td");
    }

    #[test]
    fn strip_leaves_the_plain_text() {
        assert_eq!(strip("\x1b[1;31merror:\x1b[0m a < b & c"), "error: a < b & c");
    }
}
