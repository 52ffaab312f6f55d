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

/// Checks a room name (without `#`): the chosen-name character rules.
pub fn validate_room(name: &str) -> Result<(), NameError> {
    validate(name)
}

/// The name is someone else's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken;

/// Connected users' names (interim: case-folded only).
#[derive(Debug)]
pub struct NameIndex<T> {
    by_fold: std::collections::HashMap<String, T>,
}

impl<T: Copy + Eq> Default for NameIndex<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Copy + Eq> NameIndex<T> {
    /// An empty index.
    pub fn new() -> Self {
        NameIndex {
            by_fold: std::collections::HashMap::new(),
        }
    }
    /// Who is called `name`, any case.
    pub fn find(&self, name: &str) -> Option<T> {
        self.by_fold.get(&fold(name)).copied()
    }
    /// Whether `owner` may take `name`.
    pub fn check(&self, name: &str, owner: T) -> Result<(), Taken> {
        match self.find(name) {
            Some(other) if other != owner => Err(Taken),
            _ => Ok(()),
        }
    }
    /// Records that `owner` is called `name`.
    pub fn insert(&mut self, name: &str, owner: T) {
        self.by_fold.insert(fold(name), owner);
    }
    /// Forgets `name` if `owner` has it.
    pub fn remove(&mut self, name: &str, owner: T) {
        let folded = fold(name);
        if self.by_fold.get(&folded) == Some(&owner) {
            self.by_fold.remove(&folded);
        }
    }
    /// The address itself if free, else `ADDRESS~2`, `~3`, …
    pub fn default_name(&self, addr: &str) -> String {
        if self.find(addr).is_none() {
            return addr.to_string();
        }
        (2..)
            .map(|n| format!("{addr}~{n}"))
            .find(|name| self.find(name).is_none())
            .unwrap_or_default()
    }
    /// How many names are held.
    pub fn len(&self) -> usize {
        self.by_fold.len()
    }
    /// True when nobody has a name.
    pub fn is_empty(&self) -> bool {
        self.by_fold.is_empty()
    }
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
