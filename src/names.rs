//! What a user may call themselves, and how names are compared.
//!
//! Names are shown before every line a user sends and are how `/msg` finds
//! someone, so they must be short, free of spaces and punctuation that would
//! make lines ambiguous, and unique without regard to case (`Bob` and `bob`
//! on one screen would be an impersonation waiting to happen).

/// The longest chosen name, in characters.
pub const MAX_NAME_CHARS: usize = 32;

/// Why a chosen name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    /// Empty, over 32 characters, or a character outside letters, digits
    /// and `_ - .` (which also rules out address-style names with `:`).
    Invalid,
}

/// Checks a chosen name against PROTOCOL.md's rules (uniqueness aside, which
/// needs the room).
pub fn validate(name: &str) -> Result<(), NameError> {
    let mut count = 0;
    for c in name.chars() {
        count += 1;
        if count > MAX_NAME_CHARS || !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.')) {
            return Err(NameError::Invalid);
        }
    }
    if count == 0 {
        return Err(NameError::Invalid);
    }
    Ok(())
}

/// The key under which a name is unique: its lower-case form.
pub fn fold(name: &str) -> String {
    name.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_are_valid() {
        for name in ["bob", "Alice_1", "a.b-c", "Zoë", "日本", "x"] {
            assert_eq!(validate(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn length_is_counted_in_characters() {
        assert_eq!(validate(&"é".repeat(32)), Ok(()));
        assert_eq!(validate(&"a".repeat(33)), Err(NameError::Invalid));
        assert_eq!(validate(""), Err(NameError::Invalid));
    }

    #[test]
    fn punctuation_spaces_and_addresses_are_invalid() {
        for name in [
            "a b",
            "a:b",
            "127.0.0.1:5000",
            "[::1]:80",
            "bob!",
            "a\tb",
            "a/b",
        ] {
            assert_eq!(validate(name), Err(NameError::Invalid), "{name}");
        }
    }

    #[test]
    fn folding_ignores_case() {
        assert_eq!(fold("Bob"), fold("bOB"));
        assert_eq!(fold("ÄRGER"), "ärger");
    }
}
