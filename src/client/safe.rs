//! What from the network may reach the terminal or a JSON reader, and how the rest is shown.
//!
//! Names and texts come from other people. Shown as they are, they could move the cursor,
//! recolour or clear the terminal (control characters, C1 `CSI` included), reverse or reorder
//! what follows (bidi controls), hide characters (zero-width and other format characters), or
//! forge a line that looks like another member's (a newline, or padding). So, in text:
//! - every character [`hidden_char`] names, and every whitespace character other than a plain
//!   space, is written as a visible escape, `\u{202E}`;
//! - a space at either end of a text or after another space is written `␣`, so padding shows;
//! - a newline starts a continuation line marked `  | `, which no event line starts with.
//!
//! In JSON, the same characters (C1 controls, bidi and format characters, line and paragraph
//! separators, private use) are escaped as `\uXXXX` (serde_json escapes only U+0000–U+001F).

use std::borrow::Cow;

use crate::protocol::hidden_char;

/// The mark that begins a continuation line of a multi-line text.
pub const CONTINUATION: &str = "  | ";

/// Whether `c` is written escaped in text.
fn escaped_in_text(c: char) -> bool {
    hidden_char(c).is_some() || (c.is_whitespace() && c != ' ')
}

/// A name or other one-line string, safe for the terminal.
pub fn one_line(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| escaped_in_text(c) || c == ' ') {
        return Cow::Borrowed(s);
    }
    Cow::Owned(show_line(s))
}

/// A message text, safe for the terminal: its lines after the first start with
/// [`CONTINUATION`].
pub fn text(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| escaped_in_text(c) || c == ' ') {
        return Cow::Borrowed(s);
    }
    let s = s.replace("\r\n", "\n");
    let lines: Vec<String> = s.split('\n').map(show_line).collect();
    Cow::Owned(lines.join(&format!("\n{CONTINUATION}")))
}

/// One line with escapes and visible padding.
fn show_line(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let last = line.chars().count().saturating_sub(1);
    let mut previous_space = true; // a leading space is padding too
    for (i, c) in line.chars().enumerate() {
        if escaped_in_text(c) {
            out.push_str(&format!("\\u{{{:04X}}}", c as u32));
            previous_space = false;
        } else if c == ' ' && (previous_space || i == last) {
            out.push('␣');
            previous_space = true;
        } else {
            out.push(c);
            previous_space = c == ' ';
        }
    }
    out
}

/// A line of JSON with the characters serde_json leaves raw escaped as `\uXXXX` (a surrogate
/// pair beyond the BMP). Only string contents can hold them, so escaping in place keeps it valid.
pub fn json(line: String) -> String {
    let needs = |c: char| c as u32 >= 0x7F && hidden_char(c).is_some();
    if !line.chars().any(needs) {
        return line;
    }
    let mut out = String::with_capacity(line.len() + 16);
    for c in line.chars() {
        if needs(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_and_direction_changing_characters_show_as_escapes() {
        assert_eq!(one_line("a\u{202E}b"), "a\\u{202E}b");
        assert_eq!(one_line("ali\u{200B}ce"), "ali\\u{200B}ce");
        assert_eq!(one_line("x\u{9B}2J"), "x\\u{009B}2J");
        assert_eq!(one_line("x\u{1b}[2J"), "x\\u{001B}[2J");
        assert_eq!(one_line("tab\there"), "tab\\u{0009}here");
        assert_eq!(one_line("plain words"), "plain words");
    }

    #[test]
    fn padding_shows() {
        assert_eq!(one_line("a  b"), "a ␣b");
        assert_eq!(one_line(" a "), "␣a␣");
        assert_eq!(one_line("a\u{2003}b"), "a\\u{2003}b");
    }

    #[test]
    fn continuation_lines_are_marked() {
        assert_eq!(text("one\ntwo"), "one\n  | two");
        assert_eq!(text("one\r\ntwo"), "one\n  | two");
        assert_eq!(text("a\u{2028}b"), "a\\u{2028}b");
    }

    #[test]
    fn json_escapes_c1_bidi_and_separators() {
        let raw = serde_json::to_string("\u{9B}2J \u{202E} \u{2028} \u{E0001}").unwrap_or_default();
        let safe = json(raw);
        assert_eq!(safe, r#""\u009b2J \u202e \u2028 \udb40\udc01""#);
        let back: String = serde_json::from_str(&safe).unwrap_or_default();
        assert_eq!(back, "\u{9B}2J \u{202E} \u{2028} \u{E0001}");
    }
}
