//! Who may become an operator (PROTOCOL.md, "Operators"): the password from
//! `--oper-password-file`, compared so that timing tells nothing, and
//! guessed slowly.
//!
//! An operator can kick and ban anyone, so the password is the most
//! valuable thing a client can guess. Three things keep guessing useless:
//! the comparison takes a time that depends only on the attempt, never on
//! how much of it was right ([`constant_time_eq`]); any address (exempt
//! ones too) may try at most once per [`OPER_TRY_INTERVAL`], right or
//! wrong ([`OperGate::try_password`]); and the server closes a connection
//! at its [`MAX_WRONG_PASSWORDS`]th wrong password. The first two live
//! here; the third is a count per connection, so it lives with the
//! connection in the server.
//!
//! The per-address memory of tries is filled by clients, so it forgets
//! every try older than the interval, lazily, in O(tries forgotten).

use crate::protocol;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::clean::clean_line;
use crate::iplimit::AddrKey;

/// An address may try `/oper` at most once per this long.
pub const OPER_TRY_INTERVAL: Duration = Duration::from_secs(10);

/// The wrong password on one connection that closes it: the server answers
/// `Wrong password` to this one too, then closes the connection (its room
/// hears `NAME has left`). Tries refused as too soon do not count.
pub const MAX_WRONG_PASSWORDS: u32 = 3;

/// The longest password a password file may hold, in bytes. Longer would
/// not fit in a line anyway, and the limit keeps a wrong `FILE` (a log, a
/// device) from being read whole.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Below this capacity the memory of tries is not shrunk.
const MIN_SHRINK_CAPACITY: usize = 1024;

/// What a `/oper PASSWORD` gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperAttempt {
    /// The right password: the connection is an operator from now on.
    Granted,
    /// A wrong password; counts toward [`MAX_WRONG_PASSWORDS`].
    Wrong,
    /// The address tried less than [`OPER_TRY_INTERVAL`] ago; the password
    /// was not looked at, and this does not count as a wrong one.
    TooSoon,
    /// The server has no `--oper-password-file`.
    Disabled,
}

impl OperAttempt {
    /// The reply PROTOCOL.md gives the user.
    pub fn reply(self) -> &'static str {
        match self {
            OperAttempt::Granted => protocol::NOW_OPERATOR,
            OperAttempt::Wrong => protocol::WRONG_PASSWORD,
            OperAttempt::TooSoon => protocol::TOO_MANY_ATTEMPTS,
            OperAttempt::Disabled => protocol::OPERS_DISABLED,
        }
    }
}

/// The operator password and the memory of recent tries. Its `Debug`
/// output never shows the password.
pub struct OperGate {
    /// The password's bytes; `None` when operators are not enabled.
    password: Option<Box<[u8]>>,
    /// When each address last tried (within [`OPER_TRY_INTERVAL`] before
    /// the latest try, or older ones not yet forgotten).
    last_try: HashMap<AddrKey, Instant>,
    /// The same tries in the order they came, to forget them oldest first
    /// without a scan. An address is in it at most once.
    tries: VecDeque<(Instant, AddrKey)>,
}

impl fmt::Debug for OperGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OperGate")
            .field("enabled", &self.is_enabled())
            .field("addresses_remembered", &self.last_try.len())
            .finish_non_exhaustive()
    }
}

impl OperGate {
    /// A server without `--oper-password-file`: every try is
    /// [`OperAttempt::Disabled`].
    pub fn disabled() -> OperGate {
        OperGate {
            password: None,
            last_try: HashMap::new(),
            tries: VecDeque::new(),
        }
    }

    /// Operators enabled with this password, which must be non-empty and
    /// something a client can send (see [`from_file`](Self::from_file)).
    pub fn with_password(password: &str) -> Result<OperGate, String> {
        check_typeable(password)?;
        Ok(OperGate {
            password: Some(password.as_bytes().into()),
            ..OperGate::disabled()
        })
    }

    /// `--oper-password-file FILE`: the password is FILE's first line
    /// without its `\n` or `\r\n`. Refused, with a message naming the
    /// file: a file that cannot be read, an empty password, one longer
    /// than [`MAX_PASSWORD_BYTES`], and one no client could ever send (not
    /// UTF-8, a control or bidi character, a leading or trailing blank:
    /// lines are cleaned and trimmed before `/oper` sees them).
    pub fn from_file(path: &Path) -> Result<OperGate, String> {
        let named = |problem: &str| format!("--oper-password-file {}: {problem}", path.display());
        let file = File::open(path).map_err(|e| named(&e.to_string()))?;
        let mut line = Vec::new();
        BufReader::new(file)
            .take(MAX_PASSWORD_BYTES as u64 + 2)
            .read_until(b'\n', &mut line)
            .map_err(|e| named(&e.to_string()))?;
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        if line.len() > MAX_PASSWORD_BYTES {
            return Err(named(&format!(
                "the password is longer than {MAX_PASSWORD_BYTES} bytes"
            )));
        }
        let password = String::from_utf8(line)
            .map_err(|_| named("the password is not UTF-8, so no client could send it"))?;
        OperGate::with_password(&password).map_err(|problem| named(&problem))
    }

    /// Whether operators are enabled.
    pub fn is_enabled(&self) -> bool {
        self.password.is_some()
    }

    /// Addresses whose last try is remembered.
    pub fn remembered(&self) -> usize {
        self.last_try.len()
    }

    /// `/oper ATTEMPT` from an address at `now`. A try that is not
    /// [`TooSoon`](OperAttempt::TooSoon) (or `Disabled`) starts the
    /// address's [`OPER_TRY_INTERVAL`], whether right or wrong.
    pub fn try_password(&mut self, key: AddrKey, attempt: &str, now: Instant) -> OperAttempt {
        let Some(password) = &self.password else {
            return OperAttempt::Disabled;
        };
        forget_tries_before(&mut self.last_try, &mut self.tries, now);
        match self.last_try.entry(key) {
            Entry::Occupied(_) => return OperAttempt::TooSoon,
            Entry::Vacant(free) => {
                free.insert(now);
            }
        }
        self.tries.push_back((now, key));
        if constant_time_eq(password, attempt.as_bytes()) {
            OperAttempt::Granted
        } else {
            OperAttempt::Wrong
        }
    }
}

/// Forgets the tries made [`OPER_TRY_INTERVAL`] or longer before `now`,
/// oldest first, and gives memory back after a storm.
fn forget_tries_before(
    last_try: &mut HashMap<AddrKey, Instant>,
    tries: &mut VecDeque<(Instant, AddrKey)>,
    now: Instant,
) {
    while let Some(&(at, key)) = tries.front() {
        if now.saturating_duration_since(at) < OPER_TRY_INTERVAL {
            break;
        }
        tries.pop_front();
        if last_try.get(&key) == Some(&at) {
            last_try.remove(&key);
        }
    }
    if last_try.capacity() > MIN_SHRINK_CAPACITY && last_try.len() < last_try.capacity() / 4 {
        last_try.shrink_to(last_try.len() * 2);
        tries.shrink_to(tries.len() * 2);
    }
}

/// Refuses a password no client could send: `/oper` sees a cleaned line
/// (no control or bidi characters, valid UTF-8, no trailing blanks) whose
/// argument starts after the blanks that follow the command word.
fn check_typeable(password: &str) -> Result<(), String> {
    if password.is_empty() {
        return Err("the password (the file's first line) is empty".to_string());
    }
    if clean_line(password.as_bytes()) != password || password.starts_with([' ', '\t']) {
        return Err(
            "the password has a control or bidi character, or a leading or \
                    trailing blank, so no client could send it"
                .to_string(),
        );
    }
    Ok(())
}

/// Whether `attempt` equals `secret`, in a time that depends on the
/// attempt's length only. Every byte of the attempt is compared with the
/// secret (repeated under it as often as needed), the differences and the
/// difference in length are OR-ed together, and only the total is looked
/// at: no branch and no early exit depends on the secret's bytes, or on
/// how many leading bytes were right. (An empty secret never gets here in
/// chatd; it matches only an empty attempt.)
pub fn constant_time_eq(secret: &[u8], attempt: &[u8]) -> bool {
    if secret.is_empty() {
        return attempt.is_empty();
    }
    let mut diff = secret.len() ^ attempt.len();
    let mut at = 0;
    for &byte in attempt {
        diff |= usize::from(byte ^ secret[at]);
        // Kept opaque so the optimiser cannot stop early once `diff` can
        // no longer return to zero.
        diff = std::hint::black_box(diff);
        at += 1;
        // Back to 0 at the secret's end, by a mask rather than a branch.
        at &= usize::from(at != secret.len()).wrapping_neg();
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::IpAddr;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn key(text: &str) -> AddrKey {
        let ip: IpAddr = text.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        AddrKey::from_ip(ip)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn gate(password: &str) -> OperGate {
        OperGate::with_password(password).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A file in the temporary directory, removed when dropped.
    struct TempFile(PathBuf);

    impl TempFile {
        fn with(contents: &[u8]) -> TempFile {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path =
                std::env::temp_dir().join(format!("chatd-oper-test-{}-{n}", std::process::id()));
            std::fs::write(&path, contents).unwrap_or_else(|e| panic!("{e}"));
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn password_from(contents: &[u8]) -> Result<OperGate, String> {
        let file = TempFile::with(contents);
        OperGate::from_file(&file.0)
    }

    fn grants(gate: Result<OperGate, String>, attempt: &str) -> bool {
        let mut gate = gate.unwrap_or_else(|e| panic!("{e}"));
        gate.try_password(key("10.0.0.1"), attempt, Instant::now()) == OperAttempt::Granted
    }

    #[test]
    fn the_password_is_the_first_line_without_its_newline() {
        assert!(grants(password_from(b"s3cret\n"), "s3cret"));
        assert!(grants(password_from(b"s3cret\r\nsecond line\n"), "s3cret"));
        assert!(grants(password_from(b"s3cret"), "s3cret"));
        assert!(grants(password_from(b"two words\n"), "two words"));
        assert!(grants(password_from("pässwörd\n".as_bytes()), "pässwörd"));
        assert!(!grants(password_from(b"s3cret\n"), "s3cret\n"));
        assert!(!grants(password_from(b"s3cret\r\n"), "s3cret\r"));
        let long = "x".repeat(MAX_PASSWORD_BYTES);
        assert!(grants(password_from(format!("{long}\n").as_bytes()), &long));
    }

    #[test]
    fn unusable_password_files_are_refused_naming_the_file() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "empty"),
            (b"\n", "empty"),
            (b"\r\n", "empty"),
            (b"\nsecret\n", "empty"),
            (b"sec\x1bret\n", "no client"),
            (b"secret \n", "no client"),
            (b" secret\n", "no client"),
            (b"\tsecret\n", "no client"),
            ("se\u{202e}cret\n".as_bytes(), "no client"),
            (b"sec\xffret\n", "not UTF-8"),
            (b"secret\r\r\n", "no client"),
        ];
        for &(contents, problem) in cases {
            let file = TempFile::with(contents);
            let error = OperGate::from_file(&file.0).map(|_| ()).unwrap_err();
            assert!(error.contains(problem), "{contents:?}: {error}");
            assert!(
                error.starts_with(&format!("--oper-password-file {}: ", file.0.display())),
                "{error}"
            );
        }
        let too_long = "x".repeat(MAX_PASSWORD_BYTES + 1);
        let error = password_from(too_long.as_bytes()).map(|_| ()).unwrap_err();
        assert!(error.contains("longer than 1024 bytes"), "{error}");
        let missing = Path::new("/nonexistent/chatd-oper-password");
        let error = OperGate::from_file(missing).map(|_| ()).unwrap_err();
        assert!(
            error.contains("/nonexistent/chatd-oper-password"),
            "{error}"
        );
    }

    #[test]
    fn a_device_without_newlines_is_not_read_whole() {
        let error = OperGate::from_file(Path::new("/dev/zero"))
            .map(|_| ())
            .unwrap_err();
        assert!(error.contains("longer than"), "{error}");
    }

    #[test]
    fn right_and_wrong_passwords() {
        let mut gate = gate("hunter2");
        let now = Instant::now();
        assert_eq!(
            gate.try_password(key("10.0.0.1"), "hunter2", now),
            OperAttempt::Granted
        );
        assert_eq!(
            gate.try_password(key("10.0.0.2"), "hunter3", now),
            OperAttempt::Wrong
        );
        assert_eq!(
            gate.try_password(key("10.0.0.3"), "hunter", now),
            OperAttempt::Wrong
        );
        assert_eq!(
            gate.try_password(key("10.0.0.4"), "hunter22", now),
            OperAttempt::Wrong
        );
        assert_eq!(
            gate.try_password(key("10.0.0.5"), "HUNTER2", now),
            OperAttempt::Wrong
        );
        assert_eq!(
            gate.try_password(key("10.0.0.6"), "", now),
            OperAttempt::Wrong
        );
    }

    #[test]
    fn an_address_may_try_once_per_ten_seconds_right_or_wrong() {
        let mut gate = gate("hunter2");
        let t0 = Instant::now();
        let a = key("203.0.113.7");
        assert_eq!(gate.try_password(a, "guess", t0), OperAttempt::Wrong);
        assert_eq!(
            gate.try_password(a, "hunter2", t0 + secs(1)),
            OperAttempt::TooSoon
        );
        // A refused try does not restart the interval.
        let almost = t0 + secs(10) - Duration::from_nanos(1);
        assert_eq!(
            gate.try_password(a, "hunter2", almost),
            OperAttempt::TooSoon
        );
        assert_eq!(
            gate.try_password(a, "hunter2", t0 + secs(10)),
            OperAttempt::Granted
        );
        // Right ones count too.
        assert_eq!(
            gate.try_password(a, "hunter2", t0 + secs(15)),
            OperAttempt::TooSoon
        );
        assert_eq!(
            gate.try_password(a, "hunter2", t0 + secs(20)),
            OperAttempt::Granted
        );
        // Other addresses are not held up; an IPv6 /64 is one address.
        assert_eq!(
            gate.try_password(key("203.0.113.8"), "x", t0 + secs(20)),
            OperAttempt::Wrong
        );
        assert_eq!(
            gate.try_password(key("2001:db8::1"), "x", t0 + secs(20)),
            OperAttempt::Wrong
        );
        assert_eq!(
            gate.try_password(key("2001:db8::2"), "hunter2", t0 + secs(21)),
            OperAttempt::TooSoon
        );
    }

    #[test]
    fn exempt_addresses_are_limited_too() {
        let mut gate = gate("hunter2");
        let t0 = Instant::now();
        let lo = key("127.0.0.1");
        assert_eq!(gate.try_password(lo, "x", t0), OperAttempt::Wrong);
        assert_eq!(gate.try_password(lo, "hunter2", t0), OperAttempt::TooSoon);
    }

    #[test]
    fn disabled_operators_answer_disabled_and_remember_nothing() {
        let mut gate = OperGate::disabled();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(
                gate.try_password(key("10.0.0.1"), "x", t0),
                OperAttempt::Disabled
            );
        }
        assert!(!gate.is_enabled());
        assert_eq!(gate.remembered(), 0);
        assert_eq!(
            OperAttempt::Disabled.reply(),
            "Operators are not enabled on this server"
        );
    }

    #[test]
    fn replies_are_protocol_lines() {
        assert_eq!(OperAttempt::Granted.reply(), "You are now an operator");
        assert_eq!(OperAttempt::Wrong.reply(), "Wrong password");
        assert_eq!(
            OperAttempt::TooSoon.reply(),
            "Too many attempts, try again later"
        );
    }

    #[test]
    fn the_memory_of_tries_is_bounded_by_the_interval() {
        let mut gate = gate("hunter2");
        let t0 = Instant::now();
        for i in 0..100_000u32 {
            let k = AddrKey::from_ip(IpAddr::from(i.to_be_bytes()));
            assert_eq!(gate.try_password(k, "x", t0), OperAttempt::Wrong);
        }
        assert_eq!(gate.remembered(), 100_000);
        assert_eq!(
            gate.try_password(key("10.9.9.9"), "x", t0 + secs(10)),
            OperAttempt::Wrong
        );
        assert_eq!(gate.remembered(), 1);
        assert!(
            gate.last_try.capacity() < 4096,
            "{}",
            gate.last_try.capacity()
        );
        assert!(gate.tries.capacity() < 4096, "{}", gate.tries.capacity());
    }

    #[test]
    fn debug_output_never_shows_the_password() {
        let shown = format!("{:?}", gate("hunter2"));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("enabled: true"), "{shown}");
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"abc", b"abcabc"));
        assert!(!constant_time_eq(b"abc", b""));
        assert!(!constant_time_eq(b"a", b"aa"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"", b"a"));
    }

    proptest! {
        #[test]
        fn constant_time_eq_agrees_with_eq(
            secret in prop::collection::vec(0u8..4, 0..8),
            attempt in prop::collection::vec(0u8..4, 0..20),
        ) {
            prop_assert_eq!(constant_time_eq(&secret, &attempt), secret == attempt);
            prop_assert!(constant_time_eq(&secret, &secret.clone()));
        }
    }
}
