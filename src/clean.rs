//! Client bytes become displayable text here, before anything else sees them.
//!
//! Everything a user types is shown on other users' terminals, so this is the
//! one place that decides what may reach them: invalid UTF-8 becomes U+FFFD,
//! control characters (C0 except TAB, DEL, C1) are removed so nobody can move
//! someone else's cursor or recolour their screen, and trailing blanks go.

/// Turns one raw client line (terminator already removed) into clean text.
pub fn clean_line(raw: &[u8]) -> String {
    let lossy = String::from_utf8_lossy(raw);
    let mut text: String = lossy
        .chars()
        .filter(|&c| !is_forbidden_control(c))
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
    fn unicode_letters_survive() {
        assert_eq!(clean_line("Zoë 日本 ü".as_bytes()), "Zoë 日本 ü");
    }
}
