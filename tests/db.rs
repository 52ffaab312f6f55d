//! PROTOCOL.md v2, "History (v2)", the `--db PATH` paragraph: history that
//! survives restarts and SIGKILL, files that are not chatd's refused
//! untouched, writes that fail while the chat goes on, and `/history`
//! reaching into the database. Every test runs the real binary (a process
//! that dies, restarts or has a file-size limit is the point), on port 0,
//! with its database in a directory of its own under the temp directory,
//! removed at the end.
//!
//! No test sleeps where a line can be awaited. The deliberate waits are
//! part of the contract or of the scenario, and each says so: ~1.1 s
//! between a line's echo and a SIGKILL ("a line broadcast at least 1 s
//! before the server dies"), and a few ticks' worth while writes fail (so
//! that several retries fail within one episode).

mod common;

use common::calendar::{unix_now, utc_minute};
use common::proc::{self, proc_word};
use common::tempdir::TempDir;
use common::{CHATD, Client, READ_TIMEOUT, RealServer, wait_for};
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

/// The deliberate wait between a line's echo and a SIGKILL: the contract's
/// 1 s, and a little.
const BEFORE_KILL: Duration = Duration::from_millis(1100);

/// chatd's `PRAGMA application_id` ("chat"), to check a new database is
/// marked as chatd's.
const CHATD_APPLICATION_ID: i32 = 0x6368_6174;

// ---- files and processes ----

impl TempDir {
    /// The database file the test hands to `--db`.
    fn db(&self) -> PathBuf {
        self.path("chat.db")
    }
}

/// `--db` and a path, as flags.
fn db_args<'a>(db: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--db", db.to_str().expect("a UTF-8 temp path")];
    args.extend_from_slice(extra);
    args
}

/// `chatd --db DB EXTRA --listen 127.0.0.1:0`, started and listening.
fn chatd(db: &Path, extra: &[&str]) -> RealServer {
    RealServer::start(&db_args(db, extra))
}

/// SIGTERM, and checks the graceful exit (status 0).
fn stop(mut server: RealServer) {
    server.terminate();
    let status = server.wait();
    assert!(
        status.success(),
        "chatd exited with {status} after SIGTERM; log:\n{}",
        server.log_text()
    );
}

/// SIGKILL: no goodbye, no destructor, no last flush.
fn kill(mut server: RealServer) {
    server.child.kill().expect("SIGKILL delivered");
    server.child.wait().expect("reaped");
}

/// Runs `chatd ARGS --listen 127.0.0.1:0` expecting it to exit at start;
/// returns its status and everything it wrote to stderr (see
/// [`proc::run_to_exit`]).
fn run_to_exit(args: &[&str]) -> (ExitStatus, String) {
    proc::run_to_exit(
        Command::new(CHATD)
            .args(args)
            .args(["--listen", "127.0.0.1:0"]),
    )
}

// ---- chat and history blocks ----

/// Has `client` say `line` (a chat line, or `/me TEXT`) and waits for its
/// echo, skipping presence notices; returns the line as broadcast (and as
/// history keeps it).
fn say(client: &mut Client, line: &str) -> String {
    client.send(line);
    let echo = broadcast_form(&client.name, line);
    client.skip_until(&echo);
    echo
}

/// How `line` said by `name` is broadcast.
fn broadcast_form(name: &str, line: &str) -> String {
    match line.strip_prefix("/me ") {
        Some(action) => format!("* {name} {action}"),
        None => format!("{name}: {line}"),
    }
}

/// Moves `client` to `room` (lower case, no `#`) and reads the
/// confirmation; the room's history block, if any, is left to read.
fn join(client: &mut Client, room: &str) {
    client.send(&format!("/join {room}"));
    client.expect(&format!("You are now in #{room}"));
}

/// N from a block head: `1 line of history:` or `N lines of history:`.
fn block_len(head: &str) -> Option<usize> {
    if head == "1 line of history:" {
        return Some(1);
    }
    let n: usize = head.strip_suffix(" lines of history:")?.parse().ok()?;
    (n != 1).then_some(n)
}

/// True for `[HH:MM] ` at the start of `line` (two digits, a colon, two
/// digits), with hours below 24 and minutes below 60.
fn has_hhmm(line: &str) -> bool {
    let b = line.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    b.len() >= 8
        && b[0] == b'['
        && digits(1..3)
        && b[3] == b':'
        && digits(4..6)
        && &b[6..8] == b"] "
        && line[1..3].parse::<u32>().is_ok_and(|h| h < 24)
        && line[4..6].parse::<u32>().is_ok_and(|m| m < 60)
}

/// The `LINE` of a history line `[TIME] LINE`.
fn text_of(line: &str) -> &str {
    let (_, text) = line
        .split_once("] ")
        .unwrap_or_else(|| panic!("not a `[TIME] LINE` history line: {line:?}"));
    text
}

/// Reads a history block: its head, as many lines as the head says, and
/// `End of history`. Returns the lines (with their times). Every line must
/// have the `[HH:MM] ` shape (all lines of these tests are recent) unless
/// `any_time`.
fn read_block_any(client: &mut Client, any_time: bool) -> Vec<String> {
    let head = client.line();
    let n = block_len(&head)
        .unwrap_or_else(|| panic!("{}: not a history block head: {head:?}", client.name));
    let lines: Vec<String> = (0..n).map(|_| client.line()).collect();
    for line in &lines {
        assert!(
            any_time || has_hhmm(line),
            "{}: not a `[HH:MM] LINE` history line: {line:?}",
            client.name
        );
    }
    client.expect("End of history");
    lines
}

/// [`read_block_any`] for recent lines only.
fn read_block(client: &mut Client) -> Vec<String> {
    read_block_any(client, false)
}

/// `/history N`, and its block.
fn history(client: &mut Client, n: usize) -> Vec<String> {
    client.send(&format!("/history {n}"));
    read_block(client)
}

/// The texts of history lines.
fn texts(lines: &[String]) -> Vec<&str> {
    lines.iter().map(|l| text_of(l)).collect()
}

/// `[HH:MM] ` of a unix time, UTC.
fn hhmm(unix: i64) -> String {
    format!("[{:02}:{:02}] ", unix / 3600 % 24, unix / 60 % 60)
}

/// `[YYYY-MM-DD HH:MM] ` of a unix time, UTC.
fn dated(unix: i64) -> String {
    format!("[{}] ", utc_minute(unix))
}

// ---- 1. restart with the same --db ----

#[test]
fn a_restart_with_the_same_db_replays_the_same_history() {
    let dir = TempDir::new("restart");
    let db = dir.db();

    let server = chatd(&db, &[]);
    let mut a = Client::join(server.addr);
    let lobby_said = vec![
        say(&mut a, "hello lobby"),
        say(&mut a, "/me waves"),
        say(&mut a, "third lobby line"),
    ];
    join(&mut a, "rust");
    let rust_said = vec![
        say(&mut a, "fn main() {}"),
        say(&mut a, "/me compiles"),
        say(&mut a, "it works"),
    ];
    // What a newcomer sees before the restart.
    let mut c = Client::join(server.addr);
    let lobby_block = read_block(&mut c);
    assert_eq!(texts(&lobby_block), lobby_said);
    join(&mut c, "rust");
    let rust_block = read_block(&mut c);
    assert_eq!(texts(&rust_block), rust_said);
    let rust_last2 = history(&mut c, 2);
    assert_eq!(rust_last2, rust_block[1..]);
    assert_eq!(history(&mut c, 5), rust_block);
    stop(server);
    c.skip_until("Server is shutting down");

    // The same file: the same lines, with the same times.
    let server = chatd(&db, &[]);
    let mut d = Client::join(server.addr);
    assert_eq!(
        read_block(&mut d),
        lobby_block,
        "the lobby's block on connect"
    );
    assert_eq!(history(&mut d, 5), lobby_block, "/history 5 in #lobby");
    join(&mut d, "rust");
    assert_eq!(read_block(&mut d), rust_block, "#rust's block on /join");
    assert_eq!(history(&mut d, 5), rust_block, "/history 5 in #rust");
    assert_eq!(history(&mut d, 2), rust_last2, "/history 2 in #rust");
    // Leaving and coming back (any case) loads nothing twice.
    join(&mut d, "lobby");
    assert_eq!(read_block(&mut d), lobby_block, "back in #lobby");
    d.send("/join #RUST");
    d.expect("You are now in #rust");
    assert_eq!(read_block(&mut d), rust_block, "back in #rust");
    // New lines go after the stored ones.
    let new = say(&mut d, "after the restart");
    let block = history(&mut d, 5);
    assert_eq!(block.len(), 4);
    assert_eq!(block[..3], rust_block);
    assert_eq!(text_of(&block[3]), new);
    stop(server);

    // And again: nothing loaded at the last start was written twice.
    let server = chatd(&db, &[]);
    let mut e = Client::join(server.addr);
    assert_eq!(read_block(&mut e), lobby_block, "second restart, #lobby");
    join(&mut e, "rust");
    assert_eq!(read_block(&mut e), block, "second restart, #rust");
    stop(server);
}

// ---- 2. SIGKILL ----

#[test]
fn a_line_broadcast_a_second_before_sigkill_survives() {
    let dir = TempDir::new("sigkill");
    let db = dir.db();

    let server = chatd(&db, &[]);
    let mut a = Client::join(server.addr);
    let mut b = Client::join(server.addr);
    a.skip_until(&format!("{} has arrived", b.name));
    join(&mut b, "rust");
    let rust_said = say(&mut b, "said in #rust before the kill");
    let lobby_said = vec![
        say(&mut a, "said in #lobby before the kill"),
        say(&mut a, "/me is about to be killed"),
    ];
    // The contract's second, from the last echo.
    std::thread::sleep(BEFORE_KILL);
    kill(server);

    let server = chatd(&db, &[]);
    let mut c = Client::join(server.addr);
    assert_eq!(texts(&read_block(&mut c)), lobby_said);
    join(&mut c, "rust");
    assert_eq!(texts(&read_block(&mut c)), [rust_said]);
    stop(server);
}

#[test]
fn a_db_file_removed_while_running_is_made_again() {
    let dir = TempDir::new("removed");
    let db = dir.db();
    let server = chatd(&db, &[]);
    let mut a = Client::join(server.addr);
    let old = say(&mut a, "maybe written to the old file");
    // As `rm chat.db` does; its -wal and -shm stay.
    std::fs::remove_file(&db).unwrap();
    let after = vec![say(&mut a, "said after rm"), say(&mut a, "/me carries on")];
    assert!(
        wait_for(READ_TIMEOUT, || db.exists()),
        "the database was not made again; log:\n{}",
        server.log_text()
    );
    // The contract's second before the kill, from the last echo.
    std::thread::sleep(BEFORE_KILL);
    assert_eq!(server.log_count("ERROR"), 1, "log:\n{}", server.log_text());
    kill(server);

    let server = chatd(&db, &[]);
    let mut b = Client::join(server.addr);
    let block = read_block(&mut b);
    let got = texts(&block);
    // The first line may have gone to the old file before it was removed.
    let got = got.strip_prefix(&[old.as_str()][..]).unwrap_or(&got);
    assert_eq!(got, after, "lines said after the file was removed");
    stop(server);
}

// ---- 3. files that are not chatd's, and files that become chatd's ----

/// Starts chatd on `db` and checks that it refuses it: a non-zero status, a
/// message naming the file, the file byte for byte as it was and nothing
/// else left in its directory (but for what SQLite leaves next to a
/// database in WAL mode, `wal_mode`). Returns the message.
fn assert_refused_untouched_wal(dir: &TempDir, what: &str, wal_mode: bool) -> String {
    let db = dir.db();
    let before = std::fs::read(&db).unwrap();
    let listing = dir.listing();
    let (status, log) = run_to_exit(&db_args(&db, &[]));
    assert!(
        status.code().is_some_and(|code| code != 0),
        "{what}: chatd exited with {status}, not a non-zero status; log:\n{log}"
    );
    let named = log
        .lines()
        .find(|line| line.contains(db.to_str().unwrap()))
        .unwrap_or_else(|| panic!("{what}: no message names {}; log:\n{log}", db.display()));
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "{what}: the file changed"
    );
    let appeared: Vec<String> = dir
        .listing()
        .into_iter()
        .filter(|name| !listing.contains(name))
        .collect();
    if wal_mode {
        // SQLite's read-only look at a WAL database leaves an index and an
        // empty log behind; an empty log adds nothing to the database.
        for name in &appeared {
            let len = std::fs::metadata(dir.path(name)).unwrap().len();
            let harmless = name == "chat.db-shm" || (name == "chat.db-wal" && len == 0);
            assert!(harmless, "{what}: {name} ({len} bytes) appeared next to it");
        }
        if !appeared.is_empty() {
            eprintln!("{what}: left next to it: {appeared:?}");
        }
    } else {
        assert!(
            appeared.is_empty(),
            "{what}: {appeared:?} appeared next to it"
        );
    }
    named.to_string()
}

/// [`assert_refused_untouched_wal`] for a file not in WAL mode.
fn assert_refused_untouched(dir: &TempDir, what: &str) -> String {
    assert_refused_untouched_wal(dir, what, false)
}

/// Bytes that no file format starts with (xorshift).
fn random_bytes(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn a_file_that_is_not_a_chatd_database_is_refused_untouched() {
    let mut messages = Vec::new();

    let dir = TempDir::new("text");
    std::fs::write(dir.db(), "# my notes\nthis is not a database\n").unwrap();
    messages.push(assert_refused_untouched(&dir, "a text file"));

    let dir = TempDir::new("random");
    std::fs::write(dir.db(), random_bytes(16 * 1024)).unwrap();
    messages.push(assert_refused_untouched(&dir, "random bytes"));

    // SQLite's header, then garbage: a damaged SQLite file.
    let dir = TempDir::new("garbage");
    let mut bytes = b"SQLite format 3\0".to_vec();
    bytes.extend(random_bytes(8 * 1024));
    std::fs::write(dir.db(), bytes).unwrap();
    messages.push(assert_refused_untouched(
        &dir,
        "an SQLite header then garbage",
    ));

    // Another application's database, made with rusqlite.
    let dir = TempDir::new("foreign");
    {
        let conn = Connection::open(dir.db()).unwrap();
        conn.execute_batch(
            "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);
             INSERT INTO notes (body) VALUES ('buy milk'), ('call bob');",
        )
        .unwrap();
    }
    messages.push(assert_refused_untouched(
        &dir,
        "another application's database",
    ));

    // The same in WAL mode (closed cleanly: no -wal or -shm next to it).
    let dir = TempDir::new("foreign-wal");
    {
        let conn = Connection::open(dir.db()).unwrap();
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        conn.execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('x');")
            .unwrap();
    }
    messages.push(assert_refused_untouched_wal(
        &dir,
        "another application's database in WAL mode",
        true,
    ));
    eprintln!("refusals:\n{}", messages.join("\n"));
}

/// A real chatd database with lines in it, whose pages after the first
/// are then overwritten: the header and the schema page say "chatd", the
/// tables are garbage. Such a file "cannot be opened" as a database: a
/// server that ran on it would replay no history and write none (every
/// write fails with "database disk image is malformed", and the lines are
/// lost at exit), so it must stop at start like any file it cannot use.
#[test]
fn a_damaged_chatd_database_is_refused_untouched() {
    let dir = TempDir::new("damaged");
    let db = dir.db();
    let server = chatd(&db, &[]);
    let mut a = Client::join(server.addr);
    for i in 0..20 {
        say(&mut a, &format!("line {i} {}", "x".repeat(500)));
    }
    stop(server);
    assert_eq!(dir.listing(), ["chat.db"], "a clean stop leaves no -wal");
    let mut bytes = std::fs::read(&db).unwrap();
    // The page size, from the header (1 stands for 65536).
    let page = match u16::from_be_bytes([bytes[16], bytes[17]]) {
        1 => 65_536,
        n => usize::from(n),
    };
    assert!(bytes.len() >= 4 * page, "{} bytes", bytes.len());
    let garbage = random_bytes(bytes.len() - page);
    bytes[page..].copy_from_slice(&garbage);
    std::fs::write(&db, &bytes).unwrap();
    let message = assert_refused_untouched(&dir, "a damaged chatd database");
    eprintln!("refusal: {message}");
}

/// Starts chatd on `db`, checks that it runs and keeps a line across a
/// restart, and that the file is now marked as chatd's.
fn assert_becomes_a_chatd_database(db: &Path, what: &str) {
    let server = chatd(db, &[]);
    let mut a = Client::join(server.addr);
    let said = say(&mut a, &format!("the first line of {what}"));
    stop(server);
    let server = chatd(db, &[]);
    let mut b = Client::join(server.addr);
    assert_eq!(texts(&read_block(&mut b)), [said], "{what}");
    stop(server);
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let id: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .unwrap();
    assert_eq!(id, CHATD_APPLICATION_ID, "{what}: application_id");
}

#[test]
fn a_missing_or_empty_file_or_a_table_less_sqlite_file_becomes_a_chatd_database() {
    let dir = TempDir::new("missing");
    assert!(!dir.db().exists());
    assert_becomes_a_chatd_database(&dir.db(), "a missing file");

    let dir = TempDir::new("empty");
    std::fs::write(dir.db(), b"").unwrap();
    assert_becomes_a_chatd_database(&dir.db(), "an empty file");

    let dir = TempDir::new("tableless");
    {
        let conn = Connection::open(dir.db()).unwrap();
        conn.execute_batch("CREATE TABLE t (x); DROP TABLE t;")
            .unwrap();
    }
    assert!(std::fs::metadata(dir.db()).unwrap().len() > 0);
    assert_becomes_a_chatd_database(&dir.db(), "an SQLite file with no tables");
}

// ---- 4. writes that fail while running ----

/// True when the environment says this is CI (`CI=1`, `CI=true`).
fn on_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// Runs `prlimit ARGS` and checks that it worked.
fn prlimit(args: &[&str]) {
    let out = Command::new("prlimit")
        .args(args)
        .output()
        .expect("prlimit runs");
    assert!(
        out.status.success(),
        "prlimit {args:?}: {}; {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The soft `Max file size` of process `pid`, as /proc writes it.
fn soft_fsize(pid: u32) -> String {
    proc_word(pid, "limits", "Max file size")
}

/// The file-size limit chatd runs under: room for the new database's first
/// pages and its 32 KiB `-shm`, soon too small for the lines said.
const FSIZE: u64 = 192 * 1024;

/// A line long enough to take a database page of its own, so that the
/// bytes said stand for the bytes the database must hold.
fn long_line(tag: &str, i: usize) -> String {
    format!("{tag} {i:03} {}", "x".repeat(3000))
}

/// `a` says `lines` in bursts of 10; `b` (in the same room) must get every
/// one, in order. Returns the lines as broadcast.
fn say_in_bursts(a: &mut Client, b: &mut Client, lines: &[String]) -> Vec<String> {
    let mut said = Vec::new();
    for burst in lines.chunks(10) {
        let mut bytes = String::new();
        for line in burst {
            bytes.push_str(line);
            bytes.push('\n');
        }
        a.send_raw(bytes.as_bytes());
        for line in burst {
            let echo = broadcast_form(&a.name, line);
            a.skip_until(&echo);
            b.expect(&echo);
            said.push(echo);
        }
    }
    said
}

/// The number in the log's `writing works again after N failed attempts`
/// line number `nth` (from 0).
fn failed_attempts(server: &RealServer, nth: usize) -> u64 {
    let log = server.log_text();
    let line = log
        .lines()
        .filter(|l| l.contains("writing works again"))
        .nth(nth)
        .unwrap_or_else(|| panic!("no recovery line #{nth}; log:\n{log}"));
    let (_, rest) = line
        .split_once("after ")
        .expect("`after N failed attempts`");
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn writes_that_fail_under_a_file_size_limit_lose_nothing() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!(
            "\n*** writes_that_fail_under_a_file_size_limit_lose_nothing DID NOT RUN: \
             `prlimit` (util-linux) is missing ***\n"
        );
        assert!(!on_ci(), "prlimit is required on CI (CI is set)");
        return;
    }
    let dir = TempDir::new("fsize");
    let db = dir.db();
    let db_str = db.to_str().unwrap();
    // A soft limit under an unlimited hard one: raising the soft limit of a
    // running process back to the hard one needs no privilege.
    let mut command = Command::new("prlimit");
    command.arg(format!("--fsize={FSIZE}:unlimited")).args([
        "--",
        CHATD,
        "--db",
        db_str,
        "--flood-rate",
        "0",
    ]);
    let mut server = RealServer::spawn(command);
    let pid = server.pid();
    let pid_flag = format!("--pid={pid}");
    assert_eq!(
        soft_fsize(pid),
        FSIZE.to_string(),
        "chatd runs under the limit"
    );

    let mut a = Client::join(server.addr);
    let mut b = Client::join(server.addr);
    a.skip_until(&format!("{} has arrived", b.name));
    let mut said = Vec::new();

    // Twice the limit in lines: neither the database file nor its log can
    // hold them, so writing fails (once the tick after them tries).
    let lines: Vec<String> = (0..2 * FSIZE as usize / 3000)
        .map(|i| long_line("before", i))
        .collect();
    said.extend(say_in_bursts(&mut a, &mut b, &lines));
    assert!(
        wait_for(READ_TIMEOUT, || server.log_count("writing failed") >= 1),
        "no `writing failed` error under a {FSIZE}-byte file-size limit; log:\n{}",
        server.log_text()
    );
    assert!(server.exited().is_none(), "chatd died under the limit");

    // The chat goes on while writing fails.
    let lines: Vec<String> = (0..20).map(|i| long_line("during", i)).collect();
    said.extend(say_in_bursts(&mut a, &mut b, &lines));
    // A deliberate wait: a few 100 ms ticks, each retrying and failing.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        server.log_count("writing failed"),
        1,
        "one error per episode, not one per tick; log:\n{}",
        server.log_text()
    );
    assert_eq!(server.log_count("ERROR"), 1, "log:\n{}", server.log_text());
    // Memory has every line broadcast.
    assert_eq!(
        texts(&history(&mut b, 1000)),
        said,
        "/history while failing"
    );

    // Lifting the limit ends the episode: the waiting lines are written.
    prlimit(&[&pid_flag, "--fsize=unlimited"]);
    assert!(
        wait_for(READ_TIMEOUT, || server.log_count("writing works again")
            >= 1),
        "writing did not recover once the limit was lifted; log:\n{}",
        server.log_text()
    );
    let attempts = failed_attempts(&server, 0);
    assert!(attempts >= 2, "{attempts} failed attempts: one tick only?");
    said.extend(say_in_bursts(&mut a, &mut b, &["after".to_string()]));

    // A second episode is a second error, and a second recovery.
    prlimit(&[&pid_flag, &format!("--fsize={FSIZE}:unlimited")]);
    let lines: Vec<String> = (0..FSIZE as usize / 3000 + 20)
        .map(|i| long_line("second", i))
        .collect();
    said.extend(say_in_bursts(&mut a, &mut b, &lines));
    assert!(
        wait_for(READ_TIMEOUT, || server.log_count("writing failed") >= 2),
        "no second episode; log:\n{}",
        server.log_text()
    );
    std::thread::sleep(Duration::from_millis(300)); // a few failing ticks
    prlimit(&[&pid_flag, "--fsize=unlimited"]);
    assert!(
        wait_for(READ_TIMEOUT, || server.log_count("writing works again")
            >= 2),
        "no second recovery; log:\n{}",
        server.log_text()
    );
    said.extend(say_in_bursts(&mut a, &mut b, &["last".to_string()]));
    assert_eq!(server.log_count("writing failed"), 2);
    assert_eq!(server.log_count("ERROR"), 2, "log:\n{}", server.log_text());
    assert_eq!(texts(&history(&mut b, 1000)), said, "/history after");

    for line in server.log_text().lines().filter(|l| l.contains("database")) {
        eprintln!("{line}");
    }

    // Written while running, not only at a graceful exit: SIGKILL a second
    // after the last line, and every line is there, once.
    std::thread::sleep(BEFORE_KILL);
    kill(server);
    let server = chatd(&db, &["--history", "0"]);
    let mut c = Client::join(server.addr);
    assert_eq!(texts(&history(&mut c, 1000)), said, "after the restart");
    stop(server);
}

// ---- 5. /history beyond memory ----

#[test]
fn history_1000_after_a_restart_returns_the_last_1000_lines() {
    let dir = TempDir::new("thousand");
    let db = dir.db();
    let flags = ["--flood-rate", "0", "--history", "0"];
    let server = chatd(&db, &flags);
    let mut a = Client::join(server.addr);
    let lines: Vec<String> = (0..1005).map(|i| format!("line {i:04}")).collect();
    let mut bytes = String::new();
    for line in &lines {
        bytes.push_str(line);
        bytes.push('\n');
    }
    a.send_raw(bytes.as_bytes());
    let said: Vec<String> = lines
        .iter()
        .map(|line| {
            let echo = broadcast_form(&a.name, line);
            a.expect(&echo);
            echo
        })
        .collect();
    let before = history(&mut a, 1000);
    assert_eq!(texts(&before), said[5..]);
    stop(server);

    let server = chatd(&db, &flags);
    let mut b = Client::join(server.addr);
    assert_eq!(
        history(&mut b, 1000),
        before,
        "/history 1000 after a restart"
    );
    assert_eq!(history(&mut b, 3), before[997..]);
    stop(server);
}

/// Memory keeps at most 64 MiB of history (PROTOCOL.md); `/history N`
/// past what it kept is answered from the database. (Without `--db` the
/// same `/history 70` answers 63 lines: memory alone does not have them.)
#[test]
fn history_past_the_memory_bound_comes_from_the_database() {
    const LINE: usize = 1 << 20;
    const LINES: usize = 70; // 70 MiB: more than memory keeps
    let dir = TempDir::new("bound");
    let db = dir.db();
    let max_line = (LINE + 16).to_string();
    let server = chatd(
        &db,
        &[
            "--flood-rate",
            "0",
            "--history",
            "0",
            "--max-line",
            &max_line,
            "--max-outbound",
            "200000000",
        ],
    );
    let mut a = Client::join(server.addr);
    let said: Vec<String> = (0..LINES)
        .map(|i| {
            let line = format!("{i:02} {}", "y".repeat(LINE - 3));
            say(&mut a, &line)
        })
        .collect();
    a.send(&format!("/history {LINES}"));
    let block = read_block(&mut a);
    assert_eq!(block.len(), LINES, "/history {LINES}");
    for (got, want) in block.iter().zip(&said) {
        assert!(text_of(got) == want, "line {:?}…", &want[..40]);
    }
    stop(server);
}

// ---- 6. history times ----

#[test]
fn history_times_are_utc_hh_mm_within_a_day_and_dated_before() {
    let dir = TempDir::new("times");
    let db = dir.db();
    // A line more than a day old, put in the database while chatd is
    // stopped. (This writes schema version 1's `history` table directly.)
    let server = chatd(&db, &[]);
    stop(server);
    let old = unix_now() - 3 * 86_400 - 1234;
    {
        let conn = Connection::open(&db).unwrap();
        let version: i32 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, 1, "this test writes schema version 1 rows");
        conn.execute(
            "INSERT INTO history (room, at, text) VALUES ('lobby', ?1, 'old: three days ago')",
            [old],
        )
        .unwrap();
    }

    let server = chatd(&db, &[]);
    let mut a = Client::join(server.addr);
    let head = a.line();
    assert_eq!(head, "1 line of history:");
    assert_eq!(a.line(), format!("{}old: three days ago", dated(old)));
    a.expect("End of history");
    let before = unix_now();
    let said = say(&mut a, "what time is it");
    let after = unix_now();
    let mut c = Client::join(server.addr);
    let block = read_block_any(&mut c, true);
    assert_eq!(block.len(), 2);
    assert_eq!(block[0], format!("{}old: three days ago", dated(old)));
    assert!(has_hhmm(&block[1]), "{:?}", block[1]);
    let time = &block[1][..8];
    assert!(
        time == hhmm(before) || time == hhmm(after),
        "{time:?}: not the UTC minute the line was said ({} or {})",
        hhmm(before),
        hhmm(after)
    );
    assert_eq!(text_of(&block[1]), said);
    stop(server);

    // The same times after a restart: they are stored, not the load time.
    let server = chatd(&db, &[]);
    let mut b = Client::join(server.addr);
    assert_eq!(read_block_any(&mut b, true), block);
    stop(server);
}
