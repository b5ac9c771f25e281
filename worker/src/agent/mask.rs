//! Masking a step's secret values in its output before any byte leaves the worker: every
//! occurrence of any value becomes `***`, also one split across two writes, two lines or two
//! chunks. A [`Masker`] sees one stream (stdout or stderr) as the bytes it is given, one piece at
//! a time, and holds back only the end of what it saw that could still begin a value (at most
//! the longest value less one byte); [`Masker::finish`] gives back what is held at the end.
//! Values are UTF-8 and a match starts where a value's first byte is, so in UTF-8 text what is
//! given out always ends on a character boundary. Pure: no I/O.

/// What a value is replaced with.
pub const MASK: &[u8] = b"***";

/// Masks the values of one attempt in one stream.
#[derive(Clone, Debug, Default)]
pub struct Masker {
    /// Non-empty values, longest first, so a value that contains another is masked whole.
    values: Vec<Vec<u8>>,
    /// Bytes seen but not given out: a possible start of a value.
    held: Vec<u8>,
}

impl Masker {
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Masker {
        let mut values: Vec<Vec<u8>> =
            values.into_iter().filter(|v| !v.is_empty()).map(|v| v.as_bytes().to_vec()).collect();
        values.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
        values.dedup();
        Masker { values, held: Vec::new() }
    }

    /// Whether there is nothing to mask.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Takes the next piece of the stream; returns what can be given out now, masked.
    pub fn push(&mut self, piece: &[u8]) -> Vec<u8> {
        if self.values.is_empty() {
            return piece.to_vec();
        }
        let mut buf = std::mem::take(&mut self.held);
        buf.extend_from_slice(piece);
        self.scan(&buf, false)
    }

    /// The end of the stream: what was held back, masked (a shorter value may lie inside it).
    pub fn finish(&mut self) -> Vec<u8> {
        let held = std::mem::take(&mut self.held);
        self.scan(&held, true)
    }

    /// Masks `buf`; unless at the `end`, keeps back (in `held`) a tail that may begin a value.
    fn scan(&mut self, buf: &[u8], end: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(buf.len());
        let mut i = 0;
        'scan: while i < buf.len() {
            let rest = &buf[i..];
            // The stream stops inside what may be a value: wait for more before deciding, even
            // when a shorter value already matches here (the longer one wins, however the
            // stream was cut).
            if !end && self.values.iter().any(|v| v.len() > rest.len() && v.starts_with(rest)) {
                self.held = rest.to_vec();
                return out;
            }
            for v in &self.values {
                if rest.starts_with(v) {
                    out.extend_from_slice(MASK);
                    i += v.len();
                    continue 'scan;
                }
            }
            out.push(buf[i]);
            i += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `pieces` and returns every byte given out, joined.
    fn run(values: &[&str], pieces: &[&[u8]]) -> Vec<u8> {
        let mut m = Masker::new(values.iter().copied());
        let mut out = Vec::new();
        for p in pieces {
            out.extend(m.push(p));
        }
        out.extend(m.finish());
        out
    }

    #[test]
    fn masks_whole_split_repeated_and_overlapping_values() {
        // (values, the pieces fed, what comes out)
        type Case<'a> = (&'a [&'a str], &'a [&'a [u8]], &'a [u8]);
        let cases: &[Case<'_>] = &[
            (&["s3cret"], &[b"pw=s3cret\n"], b"pw=***\n"),
            (&["s3cret"], &[b"pw=s3c", b"ret\n"], b"pw=***\n"),
            (&["s3cret"], &[b"s", b"3", b"c", b"r", b"e", b"t"], b"***"),
            (&["s3cret"], &[b"s3cs3cret s3cre"], b"s3c*** s3cre"),
            (&["abc", "abcdef"], &[b"abcdefabc"], b"******"),
            (&["ab", "b"], &[b"abb"], b"******"),
            (&["abc", "b"], &[b"xab"], b"xa***"),
            // a shorter value at the end of a piece waits: the longer may still follow
            (&["b", "bba"], &[b"aab", b"ba"], b"aa***"),
            (&["line1\nline2"], &[b"x line1\n", b"line2 y\n"], b"x *** y\n"),
            (&[], &[b"nothing"], b"nothing"),
            (&[""], &[b"empty values mask nothing"], b"empty values mask nothing"),
            (&["p\u{e9}p\u{e9}"], &[b"caf\xc3\xa9 p\xc3", b"\xa9p\xc3\xa9!"], "caf\u{e9} ***!".as_bytes()),
        ];
        for (values, pieces, want) in cases {
            assert_eq!(run(values, pieces), *want, "{values:?} {pieces:?}");
        }
    }

    #[test]
    fn holds_back_only_a_possible_start_of_a_value() {
        let mut m = Masker::new(["token123"]);
        assert_eq!(m.push(b"hello tok"), b"hello ");
        assert_eq!(m.push(b"en12"), b"");
        assert_eq!(m.push(b"x\n"), b"token12x\n");
        assert_eq!(m.push(b"line\n"), b"line\n");
        assert_eq!(m.push(b"to"), b"");
        assert_eq!(m.finish(), b"to");
    }

    #[test]
    fn what_is_given_out_ends_on_a_character_boundary() {
        let mut m = Masker::new(["\u{e9}t\u{e9}-secret"]);
        for piece in [&b"d\xc3\xa9j\xc3\xa0 \xc3"[..], b"\xa9t\xc3\xa9", b"-sec", b"rets"] {
            let out = m.push(piece);
            assert!(std::str::from_utf8(&out).is_ok(), "{out:?}");
        }
        assert_eq!(m.finish(), b"");
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    proptest! {
        /// However the stream is cut, no value survives (values and text over an alphabet
        /// without `*`, so a mask cannot combine with text into a value), and text holding
        /// no value comes out unchanged.
        #[test]
        fn no_value_survives_any_cut(
            values in proptest::collection::vec("[abc]{1,6}", 1..4),
            text in "[abc\n]{0,80}",
            cuts in proptest::collection::vec(0usize..80, 0..8),
        ) {
            let bytes = text.as_bytes();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut at = 0;
            for c in cuts.into_iter().chain([bytes.len()]) {
                pieces.push(&bytes[at..c]);
                at = c;
            }
            let refs: Vec<&str> = values.iter().map(String::as_str).collect();
            let out = run(&refs, &pieces);
            for v in &values {
                prop_assert!(!contains(&out, v.as_bytes()), "{v:?} in {:?}", String::from_utf8_lossy(&out));
            }
            if !values.iter().any(|v| contains(bytes, v.as_bytes())) {
                prop_assert_eq!(out, bytes.to_vec());
            }
            // Cutting never changes the result.
            prop_assert_eq!(run(&refs, &pieces), run(&refs, &[bytes]));
        }
    }
}
