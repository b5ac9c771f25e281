//! Reading a step's live metrics file (`$WEIR_METRICS`) as it grows: bytes in, points and
//! malformed lines out. One JSON object a line, `{"name": "loss", "value": 0.31, "step": 12,
//! "timestamp": 1764923700.5}`: `name` a non-empty string of at most [`MAX_NAME`] bytes,
//! `value` a finite number, `step` (optional) a non-negative integer, `timestamp` (optional)
//! seconds since the Unix epoch; other keys are ignored. A partial last line waits for its
//! newline (or for [`Parser::finish`] once the step ended); a line that is not such an object
//! is reported with its line number, never fatal; blank lines are skipped. Pure: it reads no
//! file and no clock.

use std::time::{Duration, SystemTime};

use serde_json::Value;

/// The longest metric name accepted (the engine's bound on names).
pub(crate) const MAX_NAME: usize = 256;
/// The longest line read; a longer one is malformed (and skipped to its newline).
pub(crate) const MAX_LINE: usize = 64 * 1024;

/// One point of a series.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Point {
    pub name: String,
    pub value: f64,
    pub step: Option<u64>,
    /// The line's `timestamp`, when it had one.
    pub at: Option<SystemTime>,
}

/// What one line was.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Parsed {
    Point(Point),
    /// Line `line` (from 1) is not a metric point, for `reason`.
    Malformed {
        line: u64,
        reason: String,
    },
}

/// The state between reads: the unfinished last line and how many lines came before it.
#[derive(Debug, Default)]
pub(crate) struct Parser {
    partial: Vec<u8>,
    /// The current line is past [`MAX_LINE`]: drop its bytes until its newline.
    overlong: bool,
    lines: u64,
}

impl Parser {
    /// The points and malformed lines completed by `bytes`, the next bytes of the file.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Vec<Parsed> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            self.take(&rest[..end]);
            self.end_line(&mut out);
            rest = &rest[end + 1..];
        }
        self.take(rest);
        out
    }

    /// The last line, when the file ended without a newline (the step has ended).
    pub(crate) fn finish(&mut self) -> Vec<Parsed> {
        let mut out = Vec::new();
        if !self.partial.is_empty() || self.overlong {
            self.end_line(&mut out);
        }
        out
    }

    fn take(&mut self, bytes: &[u8]) {
        if self.overlong {
            return;
        }
        if self.partial.len() + bytes.len() > MAX_LINE {
            self.overlong = true;
            self.partial.clear();
        } else {
            self.partial.extend_from_slice(bytes);
        }
    }

    fn end_line(&mut self, out: &mut Vec<Parsed>) {
        self.lines += 1;
        let line = self.lines;
        if std::mem::take(&mut self.overlong) {
            out.push(Parsed::Malformed { line, reason: format!("longer than {MAX_LINE} bytes") });
            return;
        }
        let text = std::mem::take(&mut self.partial);
        if text.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        out.push(match point(&text) {
            Ok(p) => Parsed::Point(p),
            Err(reason) => Parsed::Malformed { line, reason },
        });
    }
}

/// One line as a point, or why it is not one.
fn point(text: &[u8]) -> Result<Point, String> {
    let value: Value = serde_json::from_slice(text).map_err(|e| format!("not JSON ({e})"))?;
    let Value::Object(o) = value else { return Err("not a JSON object".to_string()) };
    let name = match o.get("name") {
        Some(Value::String(s)) if s.is_empty() => return Err("`name` is empty".to_string()),
        Some(Value::String(s)) if s.len() > MAX_NAME => {
            return Err(format!("`name` is {} bytes long; at most {MAX_NAME}", s.len()));
        }
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err("`name` is not a string".to_string()),
        None => return Err("no `name`".to_string()),
    };
    let value = match o.get("value") {
        Some(Value::Number(n)) => n.as_f64().filter(|x| x.is_finite()).ok_or("`value` is not a finite number")?,
        Some(_) => return Err("`value` is not a number (NaN and infinities are refused)".to_string()),
        None => return Err("no `value`".to_string()),
    };
    let step = match o.get("step") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n.as_u64().ok_or("`step` is not a non-negative integer")?),
        Some(_) => return Err("`step` is not a non-negative integer".to_string()),
    };
    let at = match o.get("timestamp") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => {
            let secs = n.as_f64().filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e11);
            let secs = secs.ok_or("`timestamp` is not seconds since the Unix epoch")?;
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs))
        }
        Some(_) => return Err("`timestamp` is not a number (seconds since the Unix epoch)".to_string()),
    };
    Ok(Point { name, value, step, at })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str, value: f64, step: Option<u64>) -> Parsed {
        Parsed::Point(Point { name: name.into(), value, step, at: None })
    }

    fn bad(line: u64, reason: &str) -> Parsed {
        Parsed::Malformed { line, reason: reason.into() }
    }

    /// Feeds `chunks` in order, then finishes; every result in order.
    fn check(chunks: &[&str], want: &[Parsed]) {
        let mut parser = Parser::default();
        let mut got = Vec::new();
        for c in chunks {
            got.extend(parser.feed(c.as_bytes()));
        }
        got.extend(parser.finish());
        assert_eq!(got, want, "chunks {chunks:?}");
    }

    #[test]
    fn lines_become_points_and_bad_lines_are_reported_by_number() {
        check(&[r#"{"name": "loss", "value": 0.31, "step": 12}"#, "\n"], &[p("loss", 0.31, Some(12))]);
        check(
            &["{\"name\":\"a\",\"value\":1}\n\n  \n{\"name\":\"b\",\"value\":-2e-3}\n"],
            &[p("a", 1.0, None), p("b", -0.002, None)],
        );
        check(
            &["not json\n{\"name\":\"a\",\"value\":1}\n[1]\n{\"value\":1}\n{\"name\":\"\",\"value\":1}\n"],
            &[
                bad(1, "not JSON (expected ident at line 1 column 2)"),
                p("a", 1.0, None),
                bad(3, "not a JSON object"),
                bad(4, "no `name`"),
                bad(5, "`name` is empty"),
            ],
        );
        check(
            &[
                "{\"name\":\"a\",\"value\":\"NaN\"}\n{\"name\":\"a\",\"value\":1e999}\n{\"name\":\"a\",\"value\":1,\"step\":-1}\n{\"name\":\"a\",\"value\":1,\"step\":1.5}\n{\"name\":3,\"value\":1}\n",
            ],
            &[
                bad(1, "`value` is not a number (NaN and infinities are refused)"),
                bad(2, "not JSON (number out of range at line 1 column 25)"),
                bad(3, "`step` is not a non-negative integer"),
                bad(4, "`step` is not a non-negative integer"),
                bad(5, "`name` is not a string"),
            ],
        );
    }

    #[test]
    fn a_partial_line_waits_for_its_newline_and_the_last_one_for_finish() {
        let mut parser = Parser::default();
        assert_eq!(parser.feed(b"{\"name\":\"loss\",\"va"), vec![]);
        assert_eq!(parser.feed(b"lue\":0.5}\n{\"name\":\"acc\""), vec![p("loss", 0.5, None)]);
        assert_eq!(parser.feed(b",\"value\":0.9,\"step\":3}"), vec![]);
        assert_eq!(parser.finish(), vec![p("acc", 0.9, Some(3))]);
        assert_eq!(parser.finish(), vec![], "finish twice gives nothing more");
    }

    #[test]
    fn timestamps_and_extra_keys() {
        let mut parser = Parser::default();
        let got = parser.feed(b"{\"name\":\"loss\",\"value\":2,\"timestamp\":1700000000.5,\"epoch\":\"x\"}\n");
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_500);
        assert_eq!(got, vec![Parsed::Point(Point { name: "loss".into(), value: 2.0, step: None, at: Some(at) })]);
        let got = parser.feed(b"{\"name\":\"loss\",\"value\":2,\"timestamp\":\"yesterday\"}\n");
        assert_eq!(got, vec![bad(2, "`timestamp` is not a number (seconds since the Unix epoch)")]);
    }

    #[test]
    fn an_overlong_line_is_malformed_and_the_next_one_still_reads() {
        let mut parser = Parser::default();
        let long = vec![b'x'; MAX_LINE / 2 + 1];
        assert_eq!(parser.feed(&long), vec![]);
        assert_eq!(parser.feed(&long), vec![]);
        let got = parser.feed(b"tail\n{\"name\":\"a\",\"value\":1}\n");
        assert_eq!(got, vec![bad(1, &format!("longer than {MAX_LINE} bytes")), p("a", 1.0, None)]);
    }
}
