//! Names and room ids that cannot be forged: what the server accepts as an identity, and when two
//! names are too alike to be told apart.
//!
//! An id is taken in Unicode Normalization Form C, so that "é" typed as one character or as "e" and
//! a combining accent is one id; the server stores and writes the NFC form. Refused
//! (INVALID_ARGUMENT, saying which rule and which character):
//! - control characters (Cc), format characters (Cf: bidi controls such as U+202E, zero-width
//!   characters such as U+200B, the soft hyphen, the byte order mark), private-use characters,
//!   line and paragraph separators (U+2028, U+2029), and invisible fillers (U+115F, U+1160, U+3164,
//!   U+FFA0, U+034F);
//! - whitespace at either end, two whitespace characters in a row, or nothing but whitespace.
//!
//! Two names are the same identity when their *skeletons* are equal: case folded, compatibility
//! normalized (NFKC: fullwidth "ａｌｉｃｅ" is "alice"), then mapped through the Unicode TS #39
//! confusables (Cyrillic "а" is Latin "a"). A name whose skeleton is a present member's is
//! ALREADY_EXISTS.

use unicode_normalization::UnicodeNormalization;

use crate::grpc::Status;
use crate::protocol::hidden_char;

/// The NFC form of `id` if it is acceptable as the `field` (`room_id`, `sender_id`) of at most
/// `max_bytes` bytes; INVALID_ARGUMENT saying why not.
pub fn normalize(field: &str, id: &str, max_bytes: usize) -> Result<String, Status> {
    let too_long = |len: usize| {
        Status::invalid_argument(format!(
            "{field} is {len} bytes; the limit is {max_bytes} (max-id-bytes)"
        ))
    };
    if id.is_empty() {
        return Err(Status::invalid_argument(format!("{field} is required")));
    }
    // Checked before normalizing too: normalizing costs memory in proportion to the input.
    if id.len() > max_bytes {
        return Err(too_long(id.len()));
    }
    let nfc: String = id.nfc().collect();
    if nfc.len() > max_bytes {
        return Err(too_long(nfc.len()));
    }
    if let Some((c, what)) = nfc.chars().find_map(|c| hidden_char(c).map(|w| (c, w))) {
        return Err(Status::invalid_argument(format!(
            "{field} must not contain {what} (U+{:04X})",
            c as u32
        )));
    }
    if nfc.chars().all(char::is_whitespace) {
        return Err(Status::invalid_argument(format!(
            "{field} must not be only whitespace"
        )));
    }
    if nfc.starts_with(char::is_whitespace) || nfc.ends_with(char::is_whitespace) {
        return Err(Status::invalid_argument(format!(
            "{field} must not begin or end with whitespace"
        )));
    }
    let mut previous_space = false;
    for c in nfc.chars() {
        let space = c.is_whitespace();
        if space && previous_space {
            return Err(Status::invalid_argument(format!(
                "{field} must not contain two whitespace characters in a row"
            )));
        }
        previous_space = space;
    }
    Ok(nfc)
}

/// The skeleton of a name: equal skeletons are names a reader cannot tell apart.
pub fn skeleton(name: &str) -> String {
    let folded: String = name.nfkc().flat_map(char::to_lowercase).collect();
    // Confusable mappings may produce capitals (and the skeleton is NFD): fold once more.
    unicode_security::skeleton(&folded)
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::Code;

    fn refused(id: &str) -> String {
        match normalize("sender_id", id, 64) {
            Ok(ok) => panic!("{id:?} accepted as {ok:?}"),
            Err(status) => {
                assert_eq!(status.code(), Code::InvalidArgument);
                status.message().to_string()
            }
        }
    }

    #[test]
    fn invisible_and_direction_changing_characters_are_refused_saying_which() {
        for (id, why) in [
            ("ali\u{200B}ce", "zero-width character (U+200B)"),
            ("\u{202E}ecila", "bidirectional control (U+202E)"),
            ("ali\u{00AD}ce", "invisible format character (U+00AD)"),
            ("\u{FEFF}alice", "zero-width character (U+FEFF)"),
            ("alice\u{2028}bob", "line or paragraph separator (U+2028)"),
            ("ali\u{E000}ce", "private-use character (U+E000)"),
            ("ali\u{0007}ce", "control character (U+0007)"),
            ("ali\u{2066}ce", "bidirectional control (U+2066)"),
            ("\u{3164}", "invisible filler (U+3164)"),
        ] {
            let message = refused(id);
            assert!(message.contains(why), "{id:?}: {message}");
        }
    }

    #[test]
    fn whitespace_is_refused_at_the_ends_twice_in_a_row_and_alone() {
        assert!(refused("alice ").contains("begin or end"));
        assert!(refused(" alice").contains("begin or end"));
        assert!(refused("al  ice").contains("two whitespace"));
        assert!(refused("   ").contains("only whitespace"));
        assert!(refused("\u{3000}").contains("only whitespace"));
        assert_eq!(
            normalize("room_id", "two words", 64).ok().as_deref(),
            Some("two words")
        );
    }

    #[test]
    fn ids_are_taken_in_nfc_and_measured_after_it() {
        let nfd = "e\u{0301}mile";
        assert_eq!(
            normalize("sender_id", nfd, 64).ok().as_deref(),
            Some("\u{00E9}mile")
        );
        assert!(normalize("sender_id", &"n".repeat(65), 64).is_err());
        assert!(normalize("sender_id", "", 64).is_err());
    }

    #[test]
    fn look_alike_names_share_a_skeleton() {
        let alice = skeleton("alice");
        for other in [
            "Alice",
            "ALICE",
            "\u{0430}lice",                             // Cyrillic а
            "\u{FF41}\u{FF4C}\u{FF49}\u{FF43}\u{FF45}", // fullwidth
            "al\u{0456}ce",                             // Cyrillic і
        ] {
            assert_eq!(skeleton(other), alice, "{other:?}");
        }
        assert_ne!(skeleton("alicia"), alice);
        assert_ne!(skeleton("bob"), alice);
    }
}
