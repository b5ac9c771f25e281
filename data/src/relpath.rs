//! The one rule for names that must stay inside a folder: declared step outputs, artifact
//! manifest entries and bundle entries. A safe name is a relative path of plain segments
//! separated by `/`: not empty, not absolute, no `\`, no control characters, no `..`, `.` or
//! empty segments, at most [`MAX_LEN`] bytes. Pure: it looks at the string, never the disk
//! (symlinks are the caller's business).

use std::path::{Component, Path};

/// Longest name accepted, in bytes.
pub const MAX_LEN: usize = 4096;

/// Why a name is not safe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsafe {
    Empty,
    TooLong,
    Absolute,
    Backslash,
    Control,
    Parent,
    EmptyOrDot,
}

impl Unsafe {
    /// The reason in words, for messages that have nothing more specific to say.
    pub fn describe(self) -> &'static str {
        match self {
            Unsafe::Empty => "a name cannot be empty",
            Unsafe::TooLong => "a name is at most 4096 bytes",
            Unsafe::Absolute => "absolute paths are not allowed",
            Unsafe::Backslash => "use `/` to separate folders",
            Unsafe::Control => "control characters are not allowed",
            Unsafe::Parent => "`..` would leave the folder",
            Unsafe::EmptyOrDot => "empty or `.` path segments are not allowed",
        }
    }
}

/// Checks `name` against the rule above.
pub fn check(name: &str) -> Result<(), Unsafe> {
    if name.is_empty() {
        return Err(Unsafe::Empty);
    }
    if name.len() > MAX_LEN {
        return Err(Unsafe::TooLong);
    }
    if name.starts_with('/') || name.starts_with('\\') || name.as_bytes().get(1) == Some(&b':') {
        return Err(Unsafe::Absolute);
    }
    if name.contains('\\') {
        return Err(Unsafe::Backslash);
    }
    if name.chars().any(char::is_control) {
        return Err(Unsafe::Control);
    }
    for part in name.split('/') {
        match part {
            ".." => return Err(Unsafe::Parent),
            "." | "" => return Err(Unsafe::EmptyOrDot),
            _ => {}
        }
    }
    // Belt and braces: whatever the platform thinks the path is, it must be plain names only.
    if !Path::new(name).components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(Unsafe::Parent);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let cases = [
            ("model.json", Ok(())),
            ("plots/loss.png", Ok(())),
            ("a:b", Err(Unsafe::Absolute)),
            ("", Err(Unsafe::Empty)),
            ("/etc/passwd", Err(Unsafe::Absolute)),
            ("C:/x", Err(Unsafe::Absolute)),
            ("a\\b", Err(Unsafe::Backslash)),
            ("a\0b", Err(Unsafe::Control)),
            ("a\nb", Err(Unsafe::Control)),
            ("../x", Err(Unsafe::Parent)),
            ("a/../../x", Err(Unsafe::Parent)),
            ("a//b", Err(Unsafe::EmptyOrDot)),
            ("./a", Err(Unsafe::EmptyOrDot)),
            ("a/", Err(Unsafe::EmptyOrDot)),
        ];
        for (name, expected) in cases {
            assert_eq!(check(name), expected, "{name:?}");
        }
        assert_eq!(check(&"x".repeat(MAX_LEN + 1)), Err(Unsafe::TooLong));
    }
}
