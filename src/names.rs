//! What a user may call themselves, and how names are compared.
//!
//! Names are shown before every line a user sends and are how `/msg` finds
//! someone, so they must be short, free of spaces and punctuation that would
//! make lines ambiguous, and unique without regard to case (`Bob` and `bob`
//! on one screen would be an impersonation waiting to happen).
//!
//! Case is not the only way to look like someone else. PROTOCOL.md (v2)
//! adds the two defences of Unicode UTS #39, both from the
//! `unicode-security` crate:
//!
//! - a name whose letters mix scripts is invalid ([`validate`]): `pаypal`
//!   with one Cyrillic `а` is refused outright, while an all-Cyrillic name
//!   is fine. Room names get this rule too ([`validate_room`]);
//! - a name whose confusable [`skeleton`] equals that of a connected user's
//!   name is taken ([`NameIndex::check`]): the all-Cyrillic `расе` cannot
//!   join while `pace` is there, nor `bob1` while `bobl` is.
//!
//! [`NameIndex`] keeps both keys of every connected user's name in hash
//! maps, so a rename, a `/msg` lookup or a newcomer's default name costs
//! the same with 20 users or 20,000.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use unicode_security::MixedScript;

/// The longest chosen name, in characters.
pub const MAX_NAME_CHARS: usize = 32;

/// Separates a default name from its counter (`127.0.0.1:50412~2`) when
/// the address alone is someone's name already (PROTOCOL.md, "Names").
pub const DEFAULT_NAME_COUNTER: char = '~';

/// Why a chosen name or room name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    /// Empty, over 32 characters, a character outside letters, digits and
    /// `_ - .` (which also rules out address-style names with `:`), letters
    /// of more than one script, or (chosen names only) a name that looks
    /// like an address: one whose skeleton has a `:`.
    Invalid,
}

/// A name already in use by another user, exactly, ignoring case, or as a
/// look-alike (same [`skeleton`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken;

/// Checks a chosen name against PROTOCOL.md's rules (uniqueness aside, which
/// is [`NameIndex::check`]): 1 to 32 characters, each alphanumeric or
/// `_ - .`, all letters of one script (UTS #39 single-script rule; digits
/// and `_ - .` go with any script; Japanese kana with kanji, or Korean
/// hangul with hanja, count as one script).
///
/// Beyond the letter of PROTOCOL.md, a name whose skeleton contains `:` is
/// refused as address-style too: a few alphanumeric signs (U+11182 KAITHI
/// SIGN VISARGA, among others) are confusable with `:`, so without this
/// `127.0.0.1𑆂50412` would be a valid name posing as a default one.
pub fn validate(name: &str) -> Result<(), NameError> {
    validate_word(name)?;
    if skeleton(name).contains(':') {
        return Err(NameError::Invalid);
    }
    Ok(())
}

/// Checks a room name (given without its leading `#`): the character,
/// length and single-script rules of [`validate`]; room names have no
/// look-alike rule.
pub fn validate_room(name: &str) -> Result<(), NameError> {
    validate_word(name)
}

/// The rules chosen names and room names share.
fn validate_word(name: &str) -> Result<(), NameError> {
    let mut count = 0;
    for c in name.chars() {
        count += 1;
        if count > MAX_NAME_CHARS || !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.')) {
            return Err(NameError::Invalid);
        }
    }
    if count == 0 || !letters(name).is_single_script() {
        return Err(NameError::Invalid);
    }
    Ok(())
}

/// The characters the single-script rule looks at: PROTOCOL.md says
/// "digits and `_ - .` go with any script", and a digit of another script
/// (Arabic-Indic `٣`, Devanagari `३`) is still a digit, though UTS #39
/// gives it that script.
fn letters(name: &str) -> String {
    name.chars().filter(|c| !c.is_numeric()).collect()
}

/// The key under which a name is unique: its lower-case form.
pub fn fold(name: &str) -> String {
    name.to_lowercase()
}

/// The UTS #39 confusable skeleton of the name's lower-case form: two names
/// with the same skeleton look alike (`расе` in Cyrillic and `pace` both
/// give `pace`; `bob1` and `bobl` both give `bobl`; full-width `ｂｏｂ`
/// gives `bob`). Only ever compared, never shown.
pub fn skeleton(name: &str) -> String {
    unicode_security::skeleton(&fold(name)).collect()
}

/// The owners of one key. Nearly always exactly one (that is what the
/// index exists to ensure), so that case costs no allocation; several
/// when names were put in without [`NameIndex::check`] (the server's own
/// default names, or names another server of a cluster accepted).
#[derive(Debug, Clone)]
enum Owners<T> {
    /// The usual case.
    One(T),
    /// Two or more, oldest first; never fewer than two.
    Many(Vec<T>),
}

impl<T: Copy + Eq> Owners<T> {
    /// The oldest owner.
    fn first(&self) -> Option<T> {
        match self {
            Owners::One(owner) => Some(*owner),
            Owners::Many(owners) => owners.first().copied(),
        }
    }

    fn contains(&self, owner: T) -> bool {
        match self {
            Owners::One(only) => *only == owner,
            Owners::Many(owners) => owners.contains(&owner),
        }
    }

    /// Whether someone other than `owner` is among them.
    fn has_other_than(&self, owner: T) -> bool {
        match self {
            Owners::One(only) => *only != owner,
            Owners::Many(owners) => owners.iter().any(|&o| o != owner),
        }
    }

    fn push(&mut self, owner: T) {
        match self {
            Owners::One(only) => *self = Owners::Many(vec![*only, owner]),
            Owners::Many(owners) => owners.push(owner),
        }
    }

    /// Removes one occurrence of `owner`; `true` if none are left at all.
    fn remove_one(&mut self, owner: T) -> bool {
        match self {
            Owners::One(only) => *only == owner,
            Owners::Many(owners) => {
                if let Some(at) = owners.iter().position(|&o| o == owner) {
                    owners.remove(at);
                }
                if let [last] = owners[..] {
                    *self = Owners::One(last);
                }
                false
            }
        }
    }
}

/// The names of the connected users, by lower-case form (for `/msg` and
/// uniqueness) and by skeleton (for look-alikes), each mapped to its owner
/// (`T`: a connection id). Every operation is a couple of hash lookups plus
/// the work on the name itself (at most 32 characters), whatever the number
/// of users.
///
/// An owner may hold several names (the index does not forbid it) but
/// normally holds one; a name's lower-case form and skeleton are each
/// recorded once per owner.
///
/// Memory per name: one slot in each of two hash maps, 48 bytes each for
/// `T = usize` (a `String` key of 24 bytes and a 24-byte owner record),
/// plus a control byte each, at a load factor between 7/16 and 7/8, so
/// 110 to 220 bytes of table; plus the two key strings on the heap, the
/// lower-case form and the skeleton, each about as long as the name (an
/// allocation of 16 to 32 bytes for most names). About 180 to 300 bytes in
/// all for a typical name.
#[derive(Debug, Clone)]
pub struct NameIndex<T> {
    /// Lower-case form → owners (one each).
    by_fold: HashMap<String, Owners<T>>,
    /// Skeleton → owners, an owner once per name of it with that skeleton.
    by_skeleton: HashMap<String, Owners<T>>,
    /// (name, owner) pairs held: the owners in `by_fold`, counted.
    len: usize,
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
            by_fold: HashMap::new(),
            by_skeleton: HashMap::new(),
            len: 0,
        }
    }

    /// How many names the index holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the index holds no name.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The owner of `name`, compared ignoring case (not as a look-alike:
    /// `/msg bobl` never reaches `bob1`). Should two owners share the name
    /// (put in unchecked, e.g. by two servers of a cluster at once), the one
    /// who took it first.
    pub fn find(&self, name: &str) -> Option<T> {
        self.by_fold.get(&fold(name)).and_then(Owners::first)
    }

    /// Whether `owner` may take `name`: not if another owner has a name
    /// equal to it ignoring case, or with the same [`skeleton`]. The
    /// owner's own names never count, so `bob` may become `Bob`. Does not
    /// check [`validate`]: PROTOCOL.md has that come first.
    pub fn check(&self, name: &str, owner: T) -> Result<(), Taken> {
        let folded = fold(name);
        let clash = |map: &HashMap<String, Owners<T>>, key: &str| {
            map.get(key)
                .is_some_and(|owners| owners.has_other_than(owner))
        };
        // Equal lower-case forms have equal skeletons, so the second test
        // alone would do; the first keeps the rule readable as written.
        if clash(&self.by_fold, &folded)
            || clash(
                &self.by_skeleton,
                &unicode_security::skeleton(&folded).collect::<String>(),
            )
        {
            return Err(Taken);
        }
        Ok(())
    }

    /// Records `name` as `owner`'s, unchecked (call [`check`](Self::check)
    /// first, or use [`rename`](Self::rename)). Recording a name an owner
    /// already has is a no-op.
    pub fn insert(&mut self, name: &str, owner: T) {
        let folded = fold(name);
        let skeleton: String = unicode_security::skeleton(&folded).collect();
        match self.by_fold.entry(folded) {
            Entry::Occupied(mut held) => {
                if held.get().contains(owner) {
                    return;
                }
                held.get_mut().push(owner);
            }
            Entry::Vacant(free) => {
                free.insert(Owners::One(owner));
            }
        }
        match self.by_skeleton.entry(skeleton) {
            Entry::Occupied(mut held) => held.get_mut().push(owner),
            Entry::Vacant(free) => {
                free.insert(Owners::One(owner));
            }
        }
        self.len += 1;
    }

    /// Forgets `name` as `owner`'s. Only that owner's record goes: a stale
    /// call (the owner no longer has the name, or never had it) changes
    /// nothing, whoever holds the name now. Returns whether it was there.
    pub fn remove(&mut self, name: &str, owner: T) -> bool {
        let folded = fold(name);
        let Some(owners) = self.by_fold.get_mut(&folded) else {
            return false;
        };
        if !owners.contains(owner) {
            return false;
        }
        if owners.remove_one(owner) {
            self.by_fold.remove(&folded);
        }
        let skeleton: String = unicode_security::skeleton(&folded).collect();
        if let Some(owners) = self.by_skeleton.get_mut(&skeleton)
            && owners.remove_one(owner)
        {
            self.by_skeleton.remove(&skeleton);
        }
        self.len -= 1;
        true
    }

    /// [`check`](Self::check), then moves `owner` from `old` to `new`.
    /// On [`Taken`] nothing changes.
    pub fn rename(&mut self, old: &str, new: &str, owner: T) -> Result<(), Taken> {
        self.check(new, owner)?;
        self.remove(old, owner);
        self.insert(new, owner);
        Ok(())
    }

    /// A newcomer's name (PROTOCOL.md, "Names"): its address text (as
    /// `SocketAddr` displays it) if no one has that name or a look-alike of
    /// it, else `ADDRESS~2`, then `~3`, … Does not record it: call
    /// [`insert`](Self::insert) with the result.
    pub fn default_name(&self, addr: &str) -> String {
        if self.is_free(addr) {
            return addr.to_string();
        }
        // Every name held can block at most one counter, so this ends by
        // `len() + 2`.
        (2..)
            .map(|n| format!("{addr}{DEFAULT_NAME_COUNTER}{n}"))
            .find(|name| self.is_free(name))
            .unwrap_or_default()
    }

    /// Whether no one holds `name` or a look-alike of it.
    fn is_free(&self, name: &str) -> bool {
        let folded = fold(name);
        !self.by_fold.contains_key(&folded)
            && !self
                .by_skeleton
                .contains_key(&unicode_security::skeleton(&folded).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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

    #[test]
    fn single_script_names_of_any_script_are_valid() {
        for name in [
            "расе",         // Cyrillic
            "Борис_2",      // Cyrillic with a digit and `_`
            "αβγ",          // Greek
            "ΑΘΗΝΑ.1",      // Greek capitals
            "ｂｏｂ",       // full-width Latin is Latin
            "日本語かな",   // kanji with hiragana: Japanese
            "カタカナ漢字", // katakana with kanji
            "한국어漢字",   // hangul with hanja: Korean
            "中文",         // Han
            "123",          // digits only (Common)
            "ab٣",          // Latin with an Arabic-Indic digit
            "ab३",          // Latin with a Devanagari digit
            "абв٣",         // Cyrillic with an Arabic-Indic digit
            "_-.",          // punctuation only (Common)
        ] {
            assert_eq!(validate(name), Ok(()), "{name}");
            assert_eq!(validate_room(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn mixed_scripts_are_invalid() {
        for name in [
            "pаypal",     // Latin with a Cyrillic а (U+0430)
            "bοb",        // Latin with a Greek ο (U+03BF)
            "рaypal",     // Cyrillic р first, then Latin
            "αlpha",      // Greek α with Latin
            "日本語abc",  // Han with Latin
            "한국어かな", // Korean with Japanese kana
        ] {
            assert_eq!(validate(name), Err(NameError::Invalid), "{name}");
            assert_eq!(validate_room(name), Err(NameError::Invalid), "{name}");
        }
    }

    #[test]
    fn room_names_have_the_character_rules_but_no_hash() {
        for name in ["rust", "Rust-2024", "日本", "a.b_c"] {
            assert_eq!(validate_room(name), Ok(()), "{name}");
        }
        for name in ["#rust", "", "a b", "a:b", &"r".repeat(33)] {
            assert_eq!(validate_room(name), Err(NameError::Invalid), "{name}");
        }
    }

    #[test]
    fn a_sign_that_looks_like_a_colon_makes_an_address_style_name() {
        // U+11182 KAITHI SIGN VISARGA: alphanumeric, single script with
        // digits and dots, and confusable with `:`.
        let fake = "127.0.0.1\u{11182}50412";
        assert_eq!(skeleton(fake), skeleton("127.0.0.1:50412"));
        assert_eq!(validate(fake), Err(NameError::Invalid));
        // A room name is always shown after `#`, so it keeps its sign.
        assert_eq!(validate_room(fake), Ok(()));
    }

    #[test]
    fn skeletons_of_look_alikes_are_equal() {
        assert_eq!(skeleton("pace"), skeleton("расе"));
        assert_eq!(skeleton("bob1"), skeleton("bobl"));
        assert_eq!(skeleton("ｂｏｂ"), "bob");
        assert_eq!(skeleton("BOB"), skeleton("bob"));
        assert_eq!(skeleton("οmega"), skeleton("omega")); // Greek omicron
        assert_ne!(skeleton("bob"), skeleton("bib"));
    }

    #[test]
    fn find_ignores_case_but_not_look_alikes() {
        let mut index = NameIndex::new();
        index.insert("Bob1", 7);
        assert_eq!(index.find("bob1"), Some(7));
        assert_eq!(index.find("BOB1"), Some(7));
        assert_eq!(index.find("bobl"), None);
        assert_eq!(index.find("alice"), None);
    }

    #[test]
    fn look_alikes_of_other_users_are_taken() {
        let mut index = NameIndex::new();
        index.insert("pace", 1);
        index.insert("bobl", 2);
        index.insert("bob", 3);
        assert_eq!(index.check("расе", 9), Err(Taken)); // all Cyrillic
        assert_eq!(index.check("PACE", 9), Err(Taken));
        assert_eq!(index.check("bob1", 9), Err(Taken));
        assert_eq!(index.check("ｂｏｂ", 9), Err(Taken)); // full width
        assert_eq!(index.check("βοβ", 9), Ok(())); // Greek beta is no b
        assert_eq!(index.check("pacer", 9), Ok(()));
    }

    #[test]
    fn greek_and_cyrillic_look_alikes_of_latin_names_are_taken() {
        let mut index = NameIndex::new();
        index.insert("pop", 1);
        index.insert("oxo", 2);
        assert_eq!(validate("ρορ"), Ok(())); // Greek rho, omicron
        assert_eq!(index.check("ρορ", 3), Err(Taken));
        assert_eq!(validate("охо"), Ok(())); // Cyrillic o, ha
        assert_eq!(index.check("охо", 3), Err(Taken));
    }

    #[test]
    fn an_owner_may_change_the_case_or_look_of_its_own_name() {
        let mut index = NameIndex::new();
        index.insert("bob", 1);
        assert_eq!(index.check("Bob", 1), Ok(()));
        assert_eq!(index.rename("bob", "Bob", 1), Ok(()));
        assert_eq!(index.find("BOB"), Some(1));
        assert_eq!(index.len(), 1);
        assert_eq!(index.check("bob", 2), Err(Taken));
        assert_eq!(index.rename("x", "BOB", 2), Err(Taken));
        assert_eq!(index.find("bob"), Some(1));
    }

    #[test]
    fn rename_frees_the_old_name_and_its_look_alikes() {
        let mut index = NameIndex::new();
        index.insert("bobl", 1);
        assert_eq!(index.rename("bobl", "alice", 1), Ok(()));
        assert_eq!(index.find("bobl"), None);
        assert_eq!(index.check("bob1", 2), Ok(()));
        assert_eq!(index.check("alice", 2), Err(Taken));
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn default_names_count_up_from_two() {
        let mut index = NameIndex::new();
        let addr = "127.0.0.1:50412";
        let first = index.default_name(addr);
        assert_eq!(first, addr);
        index.insert(&first, 1);
        let second = index.default_name(addr);
        assert_eq!(second, "127.0.0.1:50412~2");
        index.insert(&second, 2);
        assert_eq!(index.default_name(addr), "127.0.0.1:50412~3");
        index.insert("127.0.0.1:50412~3", 3);
        // The first leaves: its plain address is free again.
        assert!(index.remove(addr, 1));
        assert_eq!(index.default_name(addr), addr);
        assert_eq!(index.default_name("[::1]:9"), "[::1]:9");
    }

    #[test]
    fn a_stale_remove_never_drops_someone_elses_name() {
        let mut index = NameIndex::new();
        index.insert("bob", 1);
        // 1 renamed away and 2 took "bob"; a late remove of 1's old name.
        assert_eq!(index.rename("bob", "robert", 1), Ok(()));
        index.insert("bob", 2);
        assert!(!index.remove("bob", 1));
        assert!(!index.remove("BOB", 1));
        assert!(!index.remove("nobody", 1));
        assert_eq!(index.find("bob"), Some(2));
        assert_eq!(index.check("bob", 3), Err(Taken));
        assert_eq!(index.check("bob", 2), Ok(()));
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn names_sharing_a_key_unchecked_lose_nothing() {
        // Put in without `check` (e.g. accepted by two servers at once):
        // removing one owner's leaves the other's intact, both keys.
        let mut index = NameIndex::new();
        index.insert("bob1", 1);
        index.insert("bobl", 2);
        index.insert("BOB1", 3);
        assert_eq!(index.len(), 3);
        assert_eq!(index.find("bob1"), Some(1));
        assert!(index.remove("bob1", 1));
        assert_eq!(index.find("bob1"), Some(3));
        assert_eq!(index.check("bob1", 9), Err(Taken));
        assert!(index.remove("bob1", 3));
        assert_eq!(index.find("bob1"), None);
        assert_eq!(index.check("bob1", 9), Err(Taken)); // bobl is still there
        assert_eq!(index.check("bob1", 2), Ok(()));
        assert!(index.remove("bobl", 2));
        assert!(index.is_empty());
        assert_eq!(index.check("bob1", 9), Ok(()));
        assert!(index.by_fold.is_empty() && index.by_skeleton.is_empty());
    }

    #[test]
    fn inserting_a_name_twice_records_it_once() {
        let mut index = NameIndex::new();
        index.insert("bob", 1);
        index.insert("Bob", 1);
        assert_eq!(index.len(), 1);
        assert!(index.remove("bob", 1));
        assert!(index.is_empty());
        assert_eq!(index.check("bob", 2), Ok(()));
    }

    #[test]
    fn an_owner_record_costs_no_more_than_a_vec() {
        assert_eq!(std::mem::size_of::<Owners<usize>>(), 24);
    }

    /// Letters that look alike across Latin, Cyrillic and Greek, plus digits
    /// that look like letters: names drawn from these clash often.
    const LOOK_ALIKES: &[char] = &[
        'a', 'o', 'p', 'c', 'e', 'x', 'l', 'i', 'B', 'O', // Latin
        'а', 'о', 'р', 'с', 'е', 'х', 'і', 'ӏ', 'В', 'О', // Cyrillic
        'α', 'ο', 'ρ', 'ε', 'χ', 'ι', 'Β', 'Ο', // Greek
        '0', '1', '_', // Common
    ];

    fn look_alike_name() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(LOOK_ALIKES), 1..4)
            .prop_map(|chars| chars.into_iter().collect())
    }

    proptest! {
        /// Whatever users try, among the present names no two are equal
        /// ignoring case or look alike; what the index refuses really
        /// clashes; and `find` and `len` agree with the users.
        #[test]
        fn accepted_names_never_look_alike(
            tries in prop::collection::vec((0usize..6, look_alike_name()), 1..60),
        ) {
            let mut index = NameIndex::new();
            let mut present: Vec<String> = Vec::new();
            for owner in 0..6 {
                let name = index.default_name("10.0.0.1:5");
                index.insert(&name, owner);
                present.push(name);
            }
            for (owner, name) in tries {
                if validate(&name).is_err() {
                    continue;
                }
                let clash = present.iter().enumerate().any(|(o, held)| {
                    o != owner && (fold(held) == fold(&name) || skeleton(held) == skeleton(&name))
                });
                let old = present[owner].clone();
                match index.rename(&old, &name, owner) {
                    Ok(()) => {
                        prop_assert!(!clash, "{name:?} accepted among {present:?}");
                        present[owner] = name;
                    }
                    Err(Taken) => prop_assert!(clash, "{name:?} refused among {present:?}"),
                }
                for (a, x) in present.iter().enumerate() {
                    prop_assert_eq!(index.find(x), Some(a));
                    for y in &present[a + 1..] {
                        prop_assert_ne!(skeleton(x), skeleton(y));
                        prop_assert_ne!(fold(x), fold(y));
                    }
                }
                prop_assert_eq!(index.len(), present.len());
            }
        }
    }
}
