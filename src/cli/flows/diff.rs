//! Unified diffs of request/response bodies for `ccproxy flows diff|compare`.
//!
//! This module owns how a body is turned into diffable text ([`body_text`]: pretty JSON when it
//! parses, the raw text otherwise) and how two texts are rendered as a git-style unified diff
//! ([`unified`]), optionally with git's ANSI colours. Line diffing is done by the `similar` crate.

use std::fmt::Write as _;
use std::time::Duration;

use similar::{ChangeTag, TextDiff};

/// Lines of unchanged context around each change, as in `diff -u` and `git diff`.
const CONTEXT_LINES: usize = 3;
/// After this long the line diff settles for a correct but possibly less minimal result.
const DIFF_TIMEOUT: Duration = Duration::from_secs(2);

const BOLD: &str = "\x1b[1m";
const CYAN: &str = "\x1b[36m";
const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const RESET: &str = "\x1b[m";

/// A unified diff (3 lines of context) of `old` vs `new` with `--- old_label` / `+++ new_label`
/// headers and `@@ -l,n +l,n @@` hunk headers; empty string when the texts are equal.
///
/// Every output line ends with a newline. A last line without a trailing newline is followed by
/// `\ No newline at end of file`, as in `diff -u`. With `color`, lines are ANSI-coloured like git
/// (file headers bold, hunk headers cyan, removed lines red, added lines green).
#[must_use]
pub fn unified(old: &str, new: &str, old_label: &str, new_label: &str, color: bool) -> String {
    let diff = TextDiff::configure()
        .timeout(DIFF_TIMEOUT)
        .diff_lines(old, new);
    let mut out = String::new();
    let mut udiff = diff.unified_diff();
    udiff.context_radius(CONTEXT_LINES);
    for hunk in udiff.iter_hunks() {
        if out.is_empty() {
            line(&mut out, color.then_some(BOLD), "--- ", old_label);
            line(&mut out, color.then_some(BOLD), "+++ ", new_label);
        }
        line(
            &mut out,
            color.then_some(CYAN),
            "",
            &hunk.header().to_string(),
        );
        for change in hunk.iter_changes() {
            let (prefix, change_colour) = match change.tag() {
                ChangeTag::Equal => (" ", None),
                ChangeTag::Delete => ("-", Some(RED)),
                ChangeTag::Insert => ("+", Some(GREEN)),
            };
            let text = change.value();
            let text = text.strip_suffix('\n').unwrap_or(text);
            line(&mut out, change_colour.filter(|_| color), prefix, text);
            if change.missing_newline() {
                out.push_str("\\ No newline at end of file\n");
            }
        }
    }
    out
}

/// Append `prefix` + `text` and a newline, wrapped in `colour` and a reset when given.
fn line(out: &mut String, colour: Option<&str>, prefix: &str, text: &str) {
    match colour {
        Some(colour) => {
            let _ = writeln!(out, "{colour}{prefix}{text}{RESET}");
        }
        None => {
            let _ = writeln!(out, "{prefix}{text}");
        }
    }
}

/// Text to diff for a body: pretty JSON (2-space indent, keys in their original order, ending with
/// a newline) when it parses as JSON, else the text itself (lossy UTF-8, unchanged otherwise), and
/// `(empty)` followed by a newline for an empty body.
#[must_use]
pub fn body_text(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "(empty)\n".to_string();
    }
    match serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
    {
        Some(mut pretty) => {
            pretty.push('\n');
            pretty
        }
        None => String::from_utf8_lossy(bytes).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_texts_give_empty_diff() {
        assert_eq!(unified("a\nb\n", "a\nb\n", "a", "b", false), "");
        assert_eq!(unified("a\nb\n", "a\nb\n", "a", "b", true), "");
        assert_eq!(unified("", "", "a", "b", true), "");
    }

    #[test]
    fn one_changed_line() {
        let old = "1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n";
        let new = "1\n2\n3\n4\n5\nsix\n7\n8\n9\n10\n";
        assert_eq!(
            unified(old, new, "flow 1 request", "flow 2 request", false),
            "--- flow 1 request\n\
             +++ flow 2 request\n\
             @@ -3,7 +3,7 @@\n\
             \x203\n\
             \x204\n\
             \x205\n\
             -6\n\
             +six\n\
             \x207\n\
             \x208\n\
             \x209\n"
        );
    }

    #[test]
    fn separate_hunks_and_single_line_ranges() {
        let old = "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\nk\n";
        let new = "A\nb\nc\nd\ne\nf\ng\nh\ni\nj\nK\n";
        assert_eq!(
            unified(old, new, "old", "new", false),
            "--- old\n+++ new\n\
             @@ -1,4 +1,4 @@\n-a\n+A\n b\n c\n d\n\
             @@ -8,4 +8,4 @@\n h\n i\n j\n-k\n+K\n"
        );
        assert_eq!(
            unified("x\n", "y\n", "old", "new", false),
            "--- old\n+++ new\n@@ -1 +1 @@\n-x\n+y\n"
        );
        assert_eq!(
            unified("", "y\n", "old", "new", false),
            "--- old\n+++ new\n@@ -0,0 +1 @@\n+y\n"
        );
    }

    #[test]
    fn missing_trailing_newline_stays_well_formed() {
        assert_eq!(
            unified("a\nb", "a\nc", "old", "new", false),
            "--- old\n+++ new\n@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+c\n\\ No newline at end of file\n"
        );
        assert_eq!(
            unified("a\nb", "a\nb\n", "old", "new", false),
            "--- old\n+++ new\n@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+b\n"
        );
        assert_eq!(
            unified("x\nend", "y\nend", "old", "new", false),
            "--- old\n+++ new\n@@ -1,2 +1,2 @@\n-x\n+y\n end\n\\ No newline at end of file\n"
        );
    }

    #[test]
    fn colour_only_when_asked() {
        let plain = unified("a\nb\n", "a\nc\n", "old", "new", false);
        assert!(!plain.contains('\x1b'));
        assert_eq!(
            unified("a\nb\n", "a\nc\n", "old", "new", true),
            "\x1b[1m--- old\x1b[m\n\
             \x1b[1m+++ new\x1b[m\n\
             \x1b[36m@@ -1,2 +1,2 @@\x1b[m\n\
             \x20a\n\
             \x1b[31m-b\x1b[m\n\
             \x1b[32m+c\x1b[m\n"
        );
    }

    #[test]
    fn body_text_pretty_prints_json_in_original_key_order() {
        assert_eq!(
            body_text(br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}],"a":1.0}"#),
            "{\n  \"model\": \"m\",\n  \"max_tokens\": 5,\n  \"messages\": [\n    {\n      \"role\": \"user\",\n      \"content\": \"hi\"\n    }\n  ],\n  \"a\": 1.0\n}\n"
        );
        assert_eq!(body_text(b" [1, 2] \n"), "[\n  1,\n  2\n]\n");
        assert_eq!(body_text(b"\"s\""), "\"s\"\n");
    }

    #[test]
    fn body_text_keeps_other_text() {
        assert_eq!(
            body_text(b"event: ping\ndata: {}\n\n"),
            "event: ping\ndata: {}\n\n"
        );
        assert_eq!(body_text(b"{\"truncated\": "), "{\"truncated\": ");
        assert_eq!(body_text(b"caf\xc3\xa9 \xff"), "caf\u{e9} \u{fffd}");
    }

    #[test]
    fn body_text_of_empty_body() {
        assert_eq!(body_text(b""), "(empty)\n");
        assert_eq!(
            unified(&body_text(b""), &body_text(b"{}"), "a", "b", false),
            "--- a\n+++ b\n@@ -1 +1 @@\n-(empty)\n+{}\n"
        );
    }
}
