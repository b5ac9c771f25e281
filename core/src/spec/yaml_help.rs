//! Help for the YAML mistake a new user makes first: a plain value holding `: ` (writing JSON
//! with `echo`, a URL with a port after a space, `note: a: b`). YAML reads the `: ` as a key
//! inside the value and says "mapping values are not allowed", which points nowhere useful;
//! this says to quote the value or use a block, with the fixed line. Pure text in, text out.

/// The help for a "mapping values are not allowed" error at column `col` (0-based) of `line`,
/// when the line is `key: plain value` and the error falls inside the value.
pub(super) fn colon_in_plain_value(line: &str, col: usize) -> Option<String> {
    let indent = line.len() - line.trim_start().len();
    let rest = &line[indent..];
    let (dash, rest) = match rest.strip_prefix("- ") {
        Some(r) => ("- ", r),
        None => ("", rest),
    };
    let (key, value) = rest.split_once(": ")?;
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return None;
    }
    let value = value.trim();
    let start = line.len() - line[indent + dash.len() + key.len() + 2..].trim_start().len();
    if col < start || value.is_empty() || value.starts_with(['\'', '"', '|', '>', '[', '{', '&', '*', '!', '#']) {
        return None;
    }
    // A comment after the value stays after it.
    let value = value.split(" #").next().unwrap_or(value).trim_end();
    let (pad, inner) = (" ".repeat(indent), " ".repeat(indent + dash.len() + 2));
    let quoted = format!("{pad}{dash}{key}: '{}'", value.replace('\'', "''"));
    let block = format!("{pad}{dash}{key}: |\n{inner}{value}");
    let what = if key == "run" { "the command" } else { "the value" };
    Some(format!(
        "{what} holds `: `, which YAML reads as a key inside it: quote the whole value or use a block. \
         Write\n{quoted}\nor\n{block}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_line_with_json_is_told_to_quote_or_use_a_block_with_the_fixed_line() {
        let help = colon_in_plain_value("    run: echo {\"a\": 1}", 18).unwrap();
        assert!(help.starts_with("the command holds `: `"), "{help}");
        assert!(help.contains("\n    run: 'echo {\"a\": 1}'\nor\n    run: |\n      echo {\"a\": 1}"), "{help}");
        let help = colon_in_plain_value("  - note: it's a: b  # why", 16).unwrap();
        assert!(help.contains("\n  - note: 'it''s a: b'\nor\n  - note: |\n      it's a: b"), "{help}");
        // Not a plain value, or the error before it: no such help.
        assert_eq!(colon_in_plain_value("    run: 'echo {\"a\": 1}'", 18), None);
        assert_eq!(colon_in_plain_value("    run: |", 9), None);
        assert_eq!(colon_in_plain_value("  a b: c: d", 5), None);
        assert_eq!(colon_in_plain_value("    run: x", 2), None);
    }

    #[test]
    fn the_parse_error_carries_the_help_instead_of_the_indentation_hint() {
        let text = "name: p\nsteps:\n  a:\n    run: echo {\"a\": 1} > out.json\n";
        let d = crate::spec::yaml::parse(text, &crate::spec::Limits::default()).unwrap_err();
        assert!(d.message.contains("mapping values are not allowed"), "{d:?}");
        let help = d.help.as_deref().unwrap_or_default();
        assert!(help.contains("quote the whole value or use a block"), "{help}");
        assert!(help.contains("    run: 'echo {\"a\": 1} > out.json'"), "{help}");
        assert!(help.contains("    run: |\n      echo {\"a\": 1} > out.json"), "{help}");
        assert!(!help.contains("indentation"), "{help}");
    }
}
