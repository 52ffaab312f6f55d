//! Client bytes become displayable text here, before anything else sees them.
//!
//! Everything a user types is shown on other users' terminals, so this is the
//! one place that decides what may reach them: invalid UTF-8 becomes U+FFFD,
//! control characters (C0 except TAB, DEL, C1) are removed so nobody can move
//! someone else's cursor or recolour their screen, the bidirectional
//! embedding, override and isolate characters are removed so nobody can make
//! other screens show text in another order than it was typed ("Trojan
//! Source": a U+202E turns `evil; // safe` into something that reads
//! differently), and trailing blanks go.

/// Turns one raw client line (terminator already removed) into clean text.
pub fn clean_line(raw: &[u8]) -> String {
    let lossy = String::from_utf8_lossy(raw);
    let mut text: String = lossy
        .chars()
        .filter(|&c| !is_forbidden_control(c) && !is_bidi_control(c))
        .collect();
    let kept = text.trim_end_matches([' ', '\t']).len();
    text.truncate(kept);
    text
}

/// The control characters PROTOCOL.md removes: U+0000–U+001F except TAB,
/// U+007F and U+0080–U+009F.
fn is_forbidden_control(c: char) -> bool {
    matches!(c, '\u{0}'..='\u{8}' | '\u{a}'..='\u{1f}' | '\u{7f}'..='\u{9f}')
}

/// The bidirectional formatting characters PROTOCOL.md removes: the
/// embeddings and overrides U+202A–U+202E (LRE, RLE, PDF, LRO, RLO) and the
/// isolates U+2066–U+2069 (LRI, RLI, FSI, PDI). The implicit marks (LRM,
/// RLM, ALM) stay: they cannot reorder a run of text, only nudge neutral
/// characters, and right-to-left writers need them.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_unchanged() {
        assert_eq!(clean_line(b"hello, world"), "hello, world");
    }

    #[test]
    fn invalid_utf8_becomes_replacement_character() {
        assert_eq!(clean_line(b"a\xffb"), "a\u{fffd}b");
    }

    #[test]
    fn escape_sequences_lose_their_escape() {
        assert_eq!(clean_line(b"\x1b[31mred\x1b[0m"), "[31mred[0m");
    }

    #[test]
    fn c0_c1_and_del_are_removed_but_tab_stays() {
        assert_eq!(clean_line(b"a\x00b\x07c\td\x7fe"), "abc\tde");
        assert_eq!(clean_line("x\u{85}y\u{9b}z".as_bytes()), "xyz");
    }

    #[test]
    fn trailing_blanks_are_trimmed_leading_kept() {
        assert_eq!(clean_line(b"  hi \t \t"), "  hi");
    }

    #[test]
    fn control_only_line_is_empty() {
        assert_eq!(clean_line(b"\x01\x02 \x03"), "");
    }

    #[test]
    fn every_bidi_embedding_override_and_isolate_is_removed() {
        let all: String = ('\u{202a}'..='\u{202e}')
            .chain('\u{2066}'..='\u{2069}')
            .collect();
        assert_eq!(all.chars().count(), 9);
        assert!(all.chars().all(is_bidi_control));
        assert_eq!(clean_line(format!("a{all}b").as_bytes()), "ab");
        assert_eq!(clean_line(all.as_bytes()), "");
    }

    #[test]
    fn neighbours_of_the_bidi_ranges_stay() {
        // U+2029 (paragraph separator) and U+202F (narrow no-break space)
        // border the first range, U+2065 (unassigned) and U+206A the second;
        // the implicit marks LRM, RLM and ALM are not removed.
        for c in [
            '\u{2029}', '\u{202f}', '\u{2065}', '\u{206a}', '\u{200e}', '\u{200f}', '\u{61c}',
        ] {
            assert!(!is_bidi_control(c), "{c:?}");
            let text = format!("a{c}b");
            assert_eq!(clean_line(text.as_bytes()), text);
        }
    }

    #[test]
    fn trojan_source_line_loses_its_override() {
        // Shown raw, the RLO makes the tail render right to left, so the
        // line would not read as what was sent. Cleaned, it reads as typed.
        let raw = "access = \"user\u{202e} \u{2066}// admin only\u{2069} \u{2066}\"";
        assert_eq!(
            clean_line(raw.as_bytes()),
            "access = \"user // admin only \""
        );
    }

    #[test]
    fn a_bidi_character_before_trailing_blanks_does_not_protect_them() {
        assert_eq!(clean_line("hi \u{202e}\t\u{2069} ".as_bytes()), "hi");
    }

    #[test]
    fn unicode_letters_survive() {
        assert_eq!(clean_line("Zoë 日本 ü".as_bytes()), "Zoë 日本 ü");
    }
}
