//! The `--db PATH` store: history lines and bans in one SQLite file.
//!
//! History in memory ([`crate::history`]) answers every replay; this file
//! is what lets it survive a restart (PROTOCOL.md: "A line broadcast at
//! least 1 s before the server dies, even by SIGKILL, is in the history
//! after the restart"). The store runs on the event loop's thread, so it is
//! built never to stall it:
//!
//! - Lines are not written one by one: [`Store::queue_line`] only appends to
//!   a bounded queue in memory, and [`Store::flush`], called once per 100 ms
//!   tick, writes what waits in one transaction through a cached prepared
//!   statement (a few milliseconds for 2,000 lines, a rate few servers
//!   see; see `benches/store.rs`).
//! - No write waits for a lock: the busy timeout is zero, so a file locked by
//!   someone else fails at once and is retried at the next tick.
//! - No write waits for the disk: WAL mode with `synchronous=NORMAL` does
//!   not `fsync` on commit, and the checkpoints (which do `fsync`) run on a
//!   small helper thread with its own connection instead of inside a
//!   commit.
//! - A failing disk (full, file removed, size limit) does not stop the chat:
//!   the lines stay queued (up to [`MAX_PENDING_LINES`] /
//!   [`MAX_PENDING_BYTES`]; past that the oldest unwritten ones are dropped,
//!   they stay in memory history), one error is logged per episode, and the
//!   next tick tries again. A file removed from under the server is noticed
//!   (SQLite itself would go on writing to the unlinked file, and every line
//!   would be lost at the next start) and made again.
//!
//! Opening is careful the other way round: a file that is not ours is
//! refused and left untouched, byte for byte (see [`Store::open`]).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use log::{debug, error, info, warn};
use rusqlite::{Connection, ErrorCode, OpenFlags, params};

use crate::history::Line;

/// Marks a database as chatd's (`PRAGMA application_id`): "chat" in ASCII.
pub const APPLICATION_ID: i32 = 0x6368_6174;

/// The schema this code writes (`PRAGMA user_version`). A database with a
/// larger number was written by a newer chatd and is refused.
pub const SCHEMA_VERSION: i32 = 1;

/// Lines that may wait to be written; past it the oldest are dropped. At
/// the default flood limits that is seconds of a crowded server's chat, and
/// minutes of an ordinary one, held through a failing disk.
pub const MAX_PENDING_LINES: usize = 100_000;

/// Bytes that may wait to be written (texts, room names and
/// [`PENDING_OVERHEAD`] per line); past it the oldest lines are dropped.
pub const MAX_PENDING_BYTES: usize = 16 * 1024 * 1024;

/// What a waiting line counts beyond its text and room name: the queue entry
/// and the two heap blocks' headers.
pub const PENDING_OVERHEAD: usize = 64;

/// The most lines one [`Store::flush`] writes. In normal operation a tick
/// has far fewer, so every waiting line goes in one transaction; after a
/// failure episode this spreads a long backlog over several ticks (a few
/// milliseconds each, about 1.5 µs per line) instead of holding the event
/// loop for one long write. At 10 ticks a second that still drains 50,000
/// lines a second.
pub const MAX_FLUSH_LINES: usize = 5_000;

/// How long a statement waits for a lock held by another connection: not
/// at all. A busy file fails the flush, which is retried at the next tick.
pub const BUSY_TIMEOUT: Duration = Duration::ZERO;

/// The least time between two checkpoints of the write-ahead log (each
/// copies the log into the database and `fsync`s both, on the helper
/// thread).
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// The first 16 bytes of every SQLite 3 database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// The schema of [`SCHEMA_VERSION`] 1. `id` (the rowid) is assigned by
/// SQLite, one more than the largest so far, so it orders every room's
/// lines; lines are only ever appended, so ids are never reused. (The
/// `AUTOINCREMENT` keyword would guarantee that even after deleting the
/// newest rows, at the price of a second table update per insert: 15% more
/// per flush, measured.) The index on `(room, id)` serves both "the last N
/// lines of room R" and "N lines of room R before id X" without a sort.
const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS history (
        id INTEGER PRIMARY KEY,
        room TEXT NOT NULL,
        at INTEGER NOT NULL,
        text TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS history_room_id ON history (room, id);
    CREATE TABLE IF NOT EXISTS bans (
        key TEXT PRIMARY KEY NOT NULL,
        until INTEGER
    ) WITHOUT ROWID;
";

const INSERT_LINE: &str = "INSERT INTO history (room, at, text) VALUES (?1, ?2, ?3)";
const RECENT_LINES: &str = "SELECT at, text FROM history WHERE room = ?1 ORDER BY id DESC LIMIT ?2";
const SAVE_BAN: &str = "INSERT INTO bans (key, until) VALUES (?1, ?2)
     ON CONFLICT (key) DO UPDATE SET until = excluded.until";
const DELETE_BAN: &str = "DELETE FROM bans WHERE key = ?1";
const LOAD_BANS: &str = "SELECT key, until FROM bans ORDER BY key";

/// Why the store could not be opened or read, naming the file.
#[derive(Debug)]
pub struct StoreError {
    /// The database file.
    path: PathBuf,
    /// What went wrong.
    problem: Problem,
}

/// What went wrong with the database file.
#[derive(Debug)]
#[non_exhaustive]
pub enum Problem {
    /// The file could not be looked at (permissions, a directory, …).
    Io(io::Error),
    /// The file is neither empty nor an SQLite database.
    NotSqlite,
    /// An SQLite database that is not chatd's: it has tables but no chatd
    /// mark, or another application's mark.
    Foreign {
        /// Its `PRAGMA application_id` (0: none).
        application_id: i32,
    },
    /// A chatd database written by a newer chatd.
    NewerSchema {
        /// Its `PRAGMA user_version`.
        version: i32,
    },
    /// SQLite failed.
    Sqlite(rusqlite::Error),
}

impl StoreError {
    fn new(path: &Path, problem: Problem) -> Self {
        StoreError {
            path: path.to_path_buf(),
            problem,
        }
    }

    /// The database file concerned.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What went wrong.
    pub fn problem(&self) -> &Problem {
        &self.problem
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        match &self.problem {
            Problem::Io(e) => write!(f, "database {path}: {e}"),
            Problem::NotSqlite => write!(
                f,
                "database {path}: not a chatd database (not an SQLite file); refusing to use it"
            ),
            Problem::Foreign { application_id: 0 } => write!(
                f,
                "database {path}: not a chatd database (an SQLite database of another \
                 application); refusing to use it"
            ),
            Problem::Foreign { application_id } => write!(
                f,
                "database {path}: not a chatd database (an SQLite database with \
                 application_id {application_id:#010x}); refusing to use it"
            ),
            Problem::NewerSchema { version } => write!(
                f,
                "database {path}: chatd schema version {version} is newer than this chatd \
                 knows ({SCHEMA_VERSION}); refusing to use it"
            ),
            Problem::Sqlite(e) => write!(f, "database {path}: {e}"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.problem {
            Problem::Io(e) => Some(e),
            Problem::Sqlite(e) => Some(e),
            _ => None,
        }
    }
}

/// The bounds of the queue of lines waiting to be written.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// At most this many lines.
    lines: usize,
    /// At most this many bytes, as counted by [`Pending::cost`].
    bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            lines: MAX_PENDING_LINES,
            bytes: MAX_PENDING_BYTES,
        }
    }
}

/// A line waiting to be written.
#[derive(Debug)]
struct Pending {
    /// Its room (lower case, no `#`).
    room: Box<str>,
    /// The line and its time.
    line: Line,
}

impl Pending {
    /// What it counts toward [`MAX_PENDING_BYTES`].
    fn cost(&self) -> usize {
        self.room.len() + self.line.text.len() + PENDING_OVERHEAD
    }
}

/// A ban change not written yet.
#[derive(Debug, Clone, Copy, PartialEq)]
enum BanOp {
    /// Ban until this unix time, or until unbanned (`None`).
    Save(Option<i64>),
    /// Lift the ban.
    Delete,
}

/// What a file turned out to be, before anything is written to it.
#[derive(Debug, PartialEq)]
enum Found {
    /// Nothing there yet, an empty file, or an SQLite file without tables.
    Blank,
    /// A chatd database of this schema version (or an older one).
    Ours,
}

/// An open chatd database, and the lines waiting to be written to it.
#[derive(Debug)]
pub struct Store {
    /// The helper thread running checkpoints; `None` if it could not start
    /// (SQLite's automatic checkpoints are then left on). Declared before
    /// `conn` so that it stops before the main connection closes.
    checkpointer: Option<Checkpointer>,
    /// The connection all reads and writes of the event loop use (an
    /// empty in-memory database while `file` is `None`).
    conn: Connection,
    /// The identity of the file `conn` has open; `None` after the file was
    /// removed or replaced and opening the path again failed.
    file: Option<FileId>,
    /// The file, for messages.
    path: PathBuf,
    /// Lines waiting for [`Store::flush`], oldest first.
    pending: VecDeque<Pending>,
    /// Sum of [`Pending::cost`] over `pending`.
    pending_bytes: usize,
    /// The queue's bounds.
    limits: Limits,
    /// Ban changes not written yet (a failed write), by address key.
    ban_ops: BTreeMap<String, BanOp>,
    /// Failed writes in the current failure episode; `None` when writing
    /// works.
    failing: Option<u64>,
    /// Lines dropped in the current overflow episode; `None` when the queue
    /// has not overflowed since it was last empty.
    overflow: Option<u64>,
    /// Lines dropped unwritten since the store was opened.
    dropped: u64,
    /// Failure episodes since the store was opened (one error logged each).
    failure_episodes: u64,
}

impl Store {
    /// Opens the chatd database at `path`, creating it if the file is
    /// missing or empty, or an SQLite file with no tables.
    ///
    /// Refused, with the file left untouched: a file that is not SQLite, an
    /// SQLite database of another application (tables but not our
    /// `application_id`, or another `application_id`), and a chatd database
    /// of a newer schema. The error's `Display` names the file.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        Store::open_with(path.as_ref(), Limits::default())
    }

    fn open_with(path: &Path, limits: Limits) -> Result<Store, StoreError> {
        let (conn, checkpointer, file) = connect(path)?;
        Ok(Store {
            checkpointer,
            conn,
            file: Some(file),
            path: path.to_path_buf(),
            pending: VecDeque::new(),
            pending_bytes: 0,
            limits,
            ban_ops: BTreeMap::new(),
            failing: None,
            overflow: None,
            dropped: 0,
            failure_episodes: 0,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues a history line of `room` (lower case, no `#`) sent at `at`
    /// (unix seconds) for the next [`flush`](Self::flush). Never touches the
    /// disk. Past [`MAX_PENDING_LINES`] or [`MAX_PENDING_BYTES`] the oldest
    /// waiting lines are dropped and counted, with one warning per episode.
    pub fn queue_line(&mut self, room: &str, at: i64, text: &str) {
        let p = Pending {
            room: room.into(),
            line: Line::new(at, text),
        };
        self.pending_bytes += p.cost();
        self.pending.push_back(p);
        while self.pending.len() > self.limits.lines || self.pending_bytes > self.limits.bytes {
            let Some(gone) = self.pending.pop_front() else {
                break;
            };
            self.pending_bytes -= gone.cost();
            self.dropped += 1;
            match &mut self.overflow {
                Some(n) => *n += 1,
                None => {
                    warn!(
                        "database {}: {} lines ({} bytes) wait to be written; dropping the \
                         oldest unwritten lines (they stay in memory history)",
                        self.path.display(),
                        self.pending.len(),
                        self.pending_bytes
                    );
                    self.overflow = Some(1);
                }
            }
        }
    }

    /// Writes the waiting lines (at most [`MAX_FLUSH_LINES`], oldest first)
    /// and ban changes in one transaction; the server calls it once per
    /// tick. Returns the lines written. On failure everything stays queued
    /// for the next call, and one error is logged per episode; the first
    /// success after it is logged too.
    pub fn flush(&mut self) -> usize {
        if self.pending.is_empty() && self.ban_ops.is_empty() {
            return 0;
        }
        if let Err(e) = self.check_file() {
            self.write_failed(&e);
            return 0;
        }
        let n = self.pending.len().min(MAX_FLUSH_LINES);
        match write(&mut self.conn, self.pending.range(..n), &self.ban_ops) {
            Ok(()) => {
                for p in self.pending.drain(..n) {
                    self.pending_bytes -= p.cost();
                }
                self.ban_ops.clear();
                self.wrote();
                if let Some(c) = &self.checkpointer {
                    c.nudge();
                }
                n
            }
            Err(e) => {
                self.write_failed(&e);
                0
            }
        }
    }

    /// The last `n` lines of `room`, oldest first, including those still
    /// waiting to be written (they are the newest). While the file is gone
    /// (removed, and not yet made again) only those are known.
    pub fn recent(&self, room: &str, n: usize) -> Result<Vec<Line>, StoreError> {
        let mut newest: Vec<Line> = self
            .pending
            .iter()
            .rev()
            .filter(|p| &*p.room == room)
            .take(n)
            .map(|p| p.line.clone())
            .collect();
        let wanted = n - newest.len();
        let mut lines = Vec::with_capacity(n);
        if wanted > 0 && self.file.is_some() {
            self.stored_recent(room, wanted, &mut lines)
                .map_err(|e| StoreError::new(&self.path, Problem::Sqlite(e)))?;
        }
        newest.reverse();
        lines.extend(newest);
        Ok(lines)
    }

    /// Saves a ban of address key `key` until `until` (unix seconds; `None`:
    /// until unbanned), replacing any earlier one. Written at once (with
    /// any lines waiting, which would have gone at the next tick anyway);
    /// if that fails it stays queued and is written by a later
    /// [`flush`](Self::flush).
    pub fn save_ban(&mut self, key: &str, until: Option<i64>) {
        self.ban_ops.insert(key.to_owned(), BanOp::Save(until));
        self.flush();
    }

    /// Deletes the ban of `key` (if any), like [`save_ban`](Self::save_ban).
    pub fn delete_ban(&mut self, key: &str) {
        self.ban_ops.insert(key.to_owned(), BanOp::Delete);
        self.flush();
    }

    /// Every ban (address key, until), by key, including changes not
    /// written yet. Expired bans are included: the caller ignores them (and
    /// deletes them).
    pub fn load_bans(&self) -> Result<Vec<(String, Option<i64>)>, StoreError> {
        let mut bans = self
            .stored_bans()
            .map_err(|e| StoreError::new(&self.path, Problem::Sqlite(e)))?;
        for (key, op) in &self.ban_ops {
            match op {
                BanOp::Save(until) => {
                    bans.insert(key.clone(), *until);
                }
                BanOp::Delete => {
                    bans.remove(key);
                }
            }
        }
        Ok(bans.into_iter().collect())
    }

    /// Lines waiting to be written.
    pub fn pending_lines(&self) -> usize {
        self.pending.len()
    }

    /// Lines dropped unwritten (queue overflow) since the store was opened.
    pub fn dropped_lines(&self) -> u64 {
        self.dropped
    }

    /// True while writing fails (since the last failed write).
    pub fn is_failing(&self) -> bool {
        self.failing.is_some()
    }

    /// Makes sure `conn` still writes to the file at `path`. SQLite keeps
    /// writing happily to a file that was removed (its inode lives on while
    /// open), so that every line would be lost at the next start: when the
    /// path no longer leads to the file we have open, it is opened again,
    /// which makes a new chatd database if nothing is there. (A file put in
    /// its place that is not ours is refused, as at start, until it goes.)
    fn check_file(&mut self) -> Result<(), StoreError> {
        let now = file_id(&self.path).ok();
        if self.file.is_some() && self.file == now {
            return Ok(());
        }
        if self.file.is_some() {
            self.write_failed(&"the file was removed or replaced; opening the path again");
            // Close the old file first: closing removes its -wal and -shm,
            // which must never be taken for those of a new file. Until a
            // new file is open, an empty in-memory database stands in.
            let stand_in = Connection::open_in_memory()
                .map_err(|e| StoreError::new(&self.path, Problem::Sqlite(e)))?;
            self.checkpointer = None;
            let old = std::mem::replace(&mut self.conn, stand_in);
            self.file = None;
            if let Err((_, e)) = old.close() {
                debug!(
                    "database {}: closing the old file: {e}",
                    self.path.display()
                );
            }
        }
        let (conn, checkpointer, file) = connect(&self.path)?;
        self.conn = conn;
        self.checkpointer = checkpointer;
        self.file = Some(file);
        Ok(())
    }

    /// A write succeeded: ends the failure and overflow episodes.
    fn wrote(&mut self) {
        if let Some(attempts) = self.failing.take() {
            info!(
                "database {}: writing works again after {attempts} failed attempts; {} lines \
                 still wait",
                self.path.display(),
                self.pending.len()
            );
        }
        if self.pending.is_empty()
            && let Some(dropped) = self.overflow.take()
        {
            info!(
                "database {}: caught up; {dropped} unwritten lines were dropped",
                self.path.display()
            );
        }
    }

    /// A write failed: logs the first failure of an episode only.
    fn write_failed(&mut self, e: &dyn fmt::Display) {
        match &mut self.failing {
            Some(attempts) => *attempts += 1,
            None => {
                self.failure_episodes += 1;
                self.failing = Some(1);
                error!(
                    "database {}: writing failed: {e}; the chat goes on, {} lines wait and \
                     writing is retried every tick",
                    self.path.display(),
                    self.pending.len()
                );
            }
        }
    }

    /// Appends the last `n` stored lines of `room` to `out`, oldest first.
    fn stored_recent(&self, room: &str, n: usize, out: &mut Vec<Line>) -> rusqlite::Result<()> {
        let limit = i64::try_from(n).unwrap_or(i64::MAX);
        let mut stmt = self.conn.prepare_cached(RECENT_LINES)?;
        let start = out.len();
        let rows = stmt.query_map(params![room, limit], |row| {
            Ok(Line::new(row.get(0)?, row.get::<_, String>(1)?))
        })?;
        for row in rows {
            out.push(row?);
        }
        out[start..].reverse();
        Ok(())
    }

    /// The bans in the file.
    fn stored_bans(&self) -> rusqlite::Result<BTreeMap<String, Option<i64>>> {
        let mut stmt = self.conn.prepare_cached(LOAD_BANS)?;
        let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        rows.collect()
    }
}

impl Drop for Store {
    /// Writes what still waits (shutdown), as far as the disk lets it.
    fn drop(&mut self) {
        while !(self.pending.is_empty() && self.ban_ops.is_empty()) {
            self.flush();
            if self.failing.is_some() {
                error!(
                    "database {}: closing with {} lines unwritten",
                    self.path.display(),
                    self.pending.len()
                );
                break;
            }
        }
    }
}

/// Opens (creating if need be) the chatd database at `path`: the event
/// loop's connection, the checkpoint thread, and the file's identity.
fn connect(path: &Path) -> Result<(Connection, Option<Checkpointer>, FileId), StoreError> {
    let fail = |problem| StoreError::new(path, problem);
    let found = inspect(path).map_err(fail)?;
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| fail(Problem::Sqlite(e)))?;
    if found == Found::Ours {
        readable(&conn).map_err(|e| fail(Problem::Sqlite(e)))?;
    }
    let wal = configure(&conn).map_err(|e| fail(Problem::Sqlite(e)))?;
    create_schema(&conn).map_err(|e| fail(Problem::Sqlite(e)))?;
    let file = file_id(path).map_err(|e| fail(Problem::Io(e)))?;
    if found == Found::Blank {
        info!("database {}: new chatd database", path.display());
    }
    let checkpointer = if wal {
        match Checkpointer::start(path) {
            Ok(c) => {
                conn.pragma_update(None, "wal_autocheckpoint", 0)
                    .map_err(|e| fail(Problem::Sqlite(e)))?;
                Some(c)
            }
            Err(e) => {
                warn!(
                    "database {}: no checkpoint thread ({e}); checkpoints run inside commits",
                    path.display()
                );
                None
            }
        }
    } else {
        warn!(
            "database {}: WAL mode unavailable; commits wait for the disk",
            path.display()
        );
        None
    };
    Ok((conn, checkpointer, file))
}

/// Which file a path leads to: device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    /// The device holding it.
    dev: u64,
    /// Its inode on that device.
    ino: u64,
}

/// The identity of the file at `path` now.
fn file_id(path: &Path) -> io::Result<FileId> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    Ok(FileId {
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

/// Writes `lines` and `bans` in one transaction (all or nothing).
fn write<'a>(
    conn: &mut Connection,
    lines: impl Iterator<Item = &'a Pending>,
    bans: &BTreeMap<String, BanOp>,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare_cached(INSERT_LINE)?;
        for p in lines {
            insert.execute(params![&*p.room, p.line.at, &*p.line.text])?;
        }
        for (key, op) in bans {
            match op {
                BanOp::Save(until) => tx.prepare_cached(SAVE_BAN)?.execute(params![key, until])?,
                BanOp::Delete => tx.prepare_cached(DELETE_BAN)?.execute(params![key])?,
            };
        }
    }
    tx.commit()
}

/// Looks at `path` without changing it: what is it, and may we use it?
fn inspect(path: &Path) -> Result<Found, Problem> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::Blank),
        Err(e) => return Err(Problem::Io(e)),
    };
    if !meta.is_file() {
        return Err(Problem::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    if meta.len() == 0 {
        return Ok(Found::Blank);
    }
    let mut header = [0u8; 16];
    match File::open(path).and_then(|mut f| f.read_exact(&mut header)) {
        Ok(()) if &header == SQLITE_HEADER => {}
        Ok(()) => return Err(Problem::NotSqlite),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(Problem::NotSqlite),
        Err(e) => return Err(Problem::Io(e)),
    }
    // Read-only: whatever the file turns out to be, it is not changed.
    let sqlite = |e: rusqlite::Error| match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => Problem::NotSqlite,
        _ => Problem::Sqlite(e),
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite)?;
    let application_id: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(sqlite)?;
    let version: i32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sqlite)?;
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(sqlite)?;
    match application_id {
        APPLICATION_ID if version > SCHEMA_VERSION => Err(Problem::NewerSchema { version }),
        APPLICATION_ID => Ok(Found::Ours),
        0 if tables == 0 => Ok(Found::Blank),
        _ => Err(Problem::Foreign { application_id }),
    }
}

/// Sets the connection up for the event loop; returns whether WAL is on.
fn configure(conn: &Connection) -> rusqlite::Result<bool> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL: a commit appends to the log, readers never block the writer.
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    // NORMAL in WAL mode: a commit is complete once its frames are written
    // to the log with write(2), without fsync. They are then in the kernel's
    // page cache, which outlives the process, so a transaction committed
    // before a SIGKILL (or a crash of chatd) is found in the log, and
    // replayed, by the next open. Only a power loss or kernel crash can undo
    // the last commits, never corrupt the file (the log is checksummed);
    // that is the price of a commit that costs no disk wait.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.set_prepared_statement_cache_capacity(16);
    Ok(mode.eq_ignore_ascii_case("wal"))
}

/// Reads the newest line and every ban of an existing chatd database, so a
/// damaged file (pages overwritten, truncated) is refused at start, before
/// anything is written to it, rather than found out at the first write.
/// This touches a handful of pages, not the whole file (a full
/// `PRAGMA quick_check` would grow with the history); damage elsewhere is
/// reported when those pages are read, as a failed read or write.
fn readable(conn: &Connection) -> rusqlite::Result<()> {
    let tables: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name IN ('history', 'bans')",
        [],
        |row| row.get(0),
    )?;
    if tables == 2 {
        conn.query_row("SELECT max(id) FROM history", [], |row| {
            row.get::<_, Option<i64>>(0)
        })?;
        conn.query_row("SELECT count(*) FROM bans", [], |row| row.get::<_, i64>(0))?;
    }
    Ok(())
}

/// Creates (or completes) the schema and marks the file as chatd's, in one
/// transaction.
fn create_schema(conn: &Connection) -> rusqlite::Result<()> {
    let version: i32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let id: i32 = conn.pragma_query_value(None, "application_id", |r| r.get(0))?;
    if version == SCHEMA_VERSION && id == APPLICATION_ID {
        return Ok(());
    }
    conn.execute_batch(&format!(
        "BEGIN;
         {SCHEMA}
         PRAGMA application_id = {APPLICATION_ID};
         PRAGMA user_version = {SCHEMA_VERSION};
         COMMIT;"
    ))
    .inspect_err(|_| {
        // Leave no transaction open behind a failed statement.
        let _ = conn.execute_batch("ROLLBACK");
    })
}

/// What the event loop and the checkpoint thread share.
#[derive(Debug, Default)]
struct CheckpointState {
    /// Something was committed since the last checkpoint.
    dirty: bool,
    /// The store is closing.
    stop: bool,
}

/// A helper thread that checkpoints the write-ahead log with its own
/// connection, so that no commit of the event loop waits for an fsync.
#[derive(Debug)]
struct Checkpointer {
    /// The state, and the condition the thread waits on.
    shared: Arc<(Mutex<CheckpointState>, Condvar)>,
    /// The thread, joined on drop.
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Opens a second connection to `path` and starts the thread.
    fn start(path: &Path) -> Result<Checkpointer, Box<dyn std::error::Error>> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // Off the event loop, a short wait for a lock is harmless.
        conn.busy_timeout(Duration::from_millis(100))?;
        let shared = Arc::new((Mutex::new(CheckpointState::default()), Condvar::new()));
        let state = Arc::clone(&shared);
        let label = path.display().to_string();
        let thread = std::thread::Builder::new()
            .name("chatd-checkpoint".to_owned())
            .spawn(move || checkpoint_loop(&conn, &label, &state))?;
        Ok(Checkpointer {
            shared,
            thread: Some(thread),
        })
    }

    /// Tells the thread that something was committed. Never blocks for
    /// long: the thread holds the lock only to read and reset the flags.
    fn nudge(&self) {
        let (lock, wake) = &*self.shared;
        let mut state = lock.lock().unwrap_or_else(PoisonError::into_inner);
        if !state.dirty {
            state.dirty = true;
            wake.notify_one();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        {
            let (lock, wake) = &*self.shared;
            let mut state = lock.lock().unwrap_or_else(PoisonError::into_inner);
            state.stop = true;
            wake.notify_one();
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            error!("the database checkpoint thread panicked");
        }
    }
}

/// The checkpoint thread: after each commit (at most once per
/// [`CHECKPOINT_INTERVAL`]) copies the log into the database file. Asleep
/// while nothing is written.
fn checkpoint_loop(conn: &Connection, label: &str, shared: &(Mutex<CheckpointState>, Condvar)) {
    let (lock, wake) = shared;
    let mut failing = false;
    loop {
        {
            let state = lock.lock().unwrap_or_else(PoisonError::into_inner);
            let mut state = wake
                .wait_while(state, |s| !s.dirty && !s.stop)
                .unwrap_or_else(PoisonError::into_inner);
            if state.stop {
                return;
            }
            state.dirty = false;
        }
        // PASSIVE: copies what it can without waiting for anyone.
        match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        }) {
            Ok((log, copied)) => {
                debug!("database {label}: checkpoint copied {copied} of {log} log pages");
                if failing {
                    info!("database {label}: checkpoints work again");
                    failing = false;
                }
            }
            Err(e) => {
                if !failing {
                    warn!("database {label}: checkpoint failed: {e}; retried after the next write");
                    failing = true;
                }
            }
        }
        let state = lock.lock().unwrap_or_else(PoisonError::into_inner);
        let (state, _) = wake
            .wait_timeout_while(state, CHECKPOINT_INTERVAL, |s| !s.stop)
            .unwrap_or_else(PoisonError::into_inner);
        if state.stop {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A database path in the temp directory, unique per process and test,
    /// removed (with its `-wal` and `-shm` files) on drop.
    struct TempDb(PathBuf);

    impl TempDb {
        fn new(tag: &str) -> TempDb {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let name = format!("chatd-store-{}-{n}-{tag}.db", std::process::id());
            let db = TempDb(std::env::temp_dir().join(name));
            db.remove();
            db
        }

        fn path(&self) -> &Path {
            &self.0
        }

        fn remove(&self) {
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let mut p = self.0.clone().into_os_string();
                p.push(suffix);
                let _ = std::fs::remove_file(p);
            }
        }
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            self.remove();
        }
    }

    fn texts(lines: &[Line]) -> Vec<&str> {
        lines.iter().map(|l| &*l.text).collect()
    }

    fn open(db: &TempDb) -> Store {
        match Store::open(db.path()) {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        }
    }

    fn refused(db: &TempDb) -> StoreError {
        match Store::open(db.path()) {
            Ok(_) => panic!("{} was accepted", db.path().display()),
            Err(e) => e,
        }
    }

    /// Asserts that opening the file is refused, with a message naming it,
    /// and leaves it byte for byte as it was.
    fn assert_refused_untouched(db: &TempDb, says: &str) {
        let before = std::fs::read(db.path()).unwrap();
        let e = refused(db);
        let message = e.to_string();
        assert!(
            message.contains(&db.path().display().to_string()),
            "{message}"
        );
        assert!(message.contains(says), "{message}");
        assert_eq!(std::fs::read(db.path()).unwrap(), before, "file changed");
    }

    /// The server may be built on one thread and run on another.
    #[test]
    fn the_store_can_move_between_threads() {
        fn send<T: Send>() {}
        send::<Store>();
        send::<crate::history::History>();
    }

    #[test]
    fn lines_and_bans_survive_a_restart() {
        let db = TempDb::new("restart");
        {
            let mut s = open(&db);
            s.queue_line("lobby", 100, "alice: hi");
            s.queue_line("rust", 101, "bob: fn");
            s.queue_line("lobby", 102, "* bob waves");
            assert_eq!(s.flush(), 3);
            assert_eq!(s.flush(), 0);
            s.save_ban("203.0.113.7", Some(5_000));
            s.save_ban("2001:db8:0:1::/64", None);
            s.queue_line("lobby", 103, "alice: unflushed, written on close");
        }
        let s = open(&db);
        let lobby = s.recent("lobby", 20).unwrap();
        assert_eq!(
            texts(&lobby),
            [
                "alice: hi",
                "* bob waves",
                "alice: unflushed, written on close"
            ]
        );
        assert_eq!(lobby[0].at, 100);
        assert_eq!(texts(&s.recent("rust", 20).unwrap()), ["bob: fn"]);
        assert!(s.recent("nowhere", 20).unwrap().is_empty());
        assert_eq!(
            s.load_bans().unwrap(),
            [
                ("2001:db8:0:1::/64".to_owned(), None),
                ("203.0.113.7".to_owned(), Some(5_000))
            ]
        );
    }

    #[test]
    fn a_new_database_is_marked_and_in_wal_mode() {
        let db = TempDb::new("marks");
        let s = open(&db);
        let get = |name: &str| -> String {
            s.conn
                .pragma_query_value(None, name, |r| r.get::<_, rusqlite::types::Value>(0))
                .map(|v| format!("{v:?}"))
                .unwrap()
        };
        assert_eq!(get("application_id"), format!("Integer({APPLICATION_ID})"));
        assert_eq!(get("user_version"), format!("Integer({SCHEMA_VERSION})"));
        assert_eq!(get("journal_mode"), "Text(\"wal\")");
        assert_eq!(get("synchronous"), "Integer(1)"); // NORMAL
        assert_eq!(get("busy_timeout"), "Integer(0)");
        assert!(s.checkpointer.is_some());
    }

    #[test]
    fn recent_is_served_by_the_index() {
        let db = TempDb::new("plan");
        let s = open(&db);
        for sql in [
            RECENT_LINES.replace("?2", "20"),
            // "N lines of room R before id X", for paging further back.
            "SELECT at, text FROM history WHERE room = ?1 AND id < 1000 ORDER BY id DESC LIMIT 20"
                .to_owned(),
        ] {
            let mut stmt = s
                .conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap();
            let plan: Vec<String> = stmt
                .query_map(params!["lobby"], |r| r.get(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let plan = plan.join("; ");
            assert!(plan.contains("USING INDEX history_room_id"), "{plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{plan}");
        }
    }

    #[test]
    fn recent_merges_lines_not_written_yet() {
        let db = TempDb::new("merge");
        let mut s = open(&db);
        for i in 0..5 {
            s.queue_line("lobby", i, &format!("a: {i}"));
        }
        s.queue_line("rust", 5, "b: other room");
        assert_eq!(s.flush(), 6);
        for i in 5..8 {
            s.queue_line("lobby", i, &format!("a: {i}"));
            s.queue_line("rust", i, "b: other room");
        }
        assert_eq!(s.pending_lines(), 6);
        let all = s.recent("lobby", 100).unwrap();
        assert_eq!(
            texts(&all),
            (0..8).map(|i| format!("a: {i}")).collect::<Vec<_>>()
        );
        assert_eq!(
            texts(&s.recent("lobby", 4).unwrap()),
            ["a: 4", "a: 5", "a: 6", "a: 7"]
        );
        assert_eq!(texts(&s.recent("lobby", 2).unwrap()), ["a: 6", "a: 7"]);
        assert!(s.recent("lobby", 0).unwrap().is_empty());
        assert_eq!(s.recent("rust", 100).unwrap().len(), 4);
    }

    #[test]
    fn missing_and_empty_files_and_table_less_sqlite_become_chatd_databases() {
        let missing = TempDb::new("missing");
        open(&missing);
        assert!(missing.path().exists());

        let empty = TempDb::new("empty");
        std::fs::write(empty.path(), b"").unwrap();
        let mut s = open(&empty);
        s.queue_line("lobby", 1, "a: b");
        assert_eq!(s.flush(), 1);
        drop(s);

        let bare = TempDb::new("bare");
        {
            let c = Connection::open(bare.path()).unwrap();
            c.execute_batch("CREATE TABLE t (x); DROP TABLE t;")
                .unwrap();
        }
        assert!(std::fs::metadata(bare.path()).unwrap().len() > 0);
        let s = open(&bare);
        assert!(s.recent("lobby", 1).unwrap().is_empty());
        drop(s);
        open(&bare); // and it is ours now
    }

    #[test]
    fn a_file_that_is_not_sqlite_is_refused_untouched() {
        let text = TempDb::new("text");
        std::fs::write(text.path(), "# my notes\nnot a database\n").unwrap();
        assert_refused_untouched(&text, "not an SQLite file");

        let random = TempDb::new("random");
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let bytes: Vec<u8> = (0..8192)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        std::fs::write(random.path(), bytes).unwrap();
        assert_refused_untouched(&random, "not an SQLite file");

        let short = TempDb::new("short");
        std::fs::write(short.path(), b"SQLite").unwrap();
        assert_refused_untouched(&short, "not an SQLite file");

        // The right header, then garbage.
        let fake = TempDb::new("fake");
        let mut bytes = SQLITE_HEADER.to_vec();
        bytes.extend(std::iter::repeat_n(0xa5u8, 4096));
        std::fs::write(fake.path(), bytes).unwrap();
        let before = std::fs::read(fake.path()).unwrap();
        let e = refused(&fake);
        assert!(e.to_string().contains(&fake.path().display().to_string()));
        assert_eq!(std::fs::read(fake.path()).unwrap(), before);

        let dir = TempDb::new("dir");
        std::fs::create_dir(dir.path()).unwrap();
        let e = refused(&dir);
        assert!(e.to_string().contains("not a regular file"), "{e}");
        std::fs::remove_dir(dir.path()).unwrap();
    }

    #[test]
    fn another_applications_database_is_refused_untouched() {
        let foreign = TempDb::new("foreign");
        {
            let c = Connection::open(foreign.path()).unwrap();
            c.execute_batch("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('x');")
                .unwrap();
        }
        assert_refused_untouched(&foreign, "another application");

        let marked = TempDb::new("marked");
        {
            let c = Connection::open(marked.path()).unwrap();
            c.execute_batch("PRAGMA application_id = 1234; CREATE TABLE t (x); DROP TABLE t;")
                .unwrap();
        }
        assert_refused_untouched(&marked, "application_id 0x000004d2");
    }

    #[test]
    fn a_newer_schema_is_refused_untouched() {
        let db = TempDb::new("newer");
        {
            let mut s = open(&db);
            s.queue_line("lobby", 1, "a: b");
            s.flush();
        }
        {
            let c = Connection::open(db.path()).unwrap();
            c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
                .unwrap();
        }
        assert_refused_untouched(&db, "schema version 2 is newer");
    }

    /// Makes every write that needs a new page fail, as a full disk would.
    fn fill_disk(s: &Store, full: bool) {
        let pages = if full { 1 } else { 1_000_000 };
        s.conn.pragma_update(None, "max_page_count", pages).unwrap();
    }

    #[test]
    fn a_failing_disk_keeps_lines_until_it_recovers() {
        let db = TempDb::new("full");
        let mut s = open(&db);
        s.queue_line("lobby", 0, "a: before");
        assert_eq!(s.flush(), 1);
        fill_disk(&s, true);
        let big = "x".repeat(2000);
        for i in 1..=50 {
            s.queue_line("lobby", i, &format!("a: {i} {big}"));
        }
        assert_eq!(s.flush(), 0);
        assert!(s.is_failing());
        assert_eq!(s.flush(), 0);
        s.queue_line("lobby", 51, "a: during");
        assert_eq!(s.flush(), 0);
        assert_eq!(s.failure_episodes, 1, "one episode, however many ticks");
        // A lock held by someone else fails a write at once, and a ban that
        // cannot be written stays queued.
        let other = Connection::open(db.path()).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let started = std::time::Instant::now();
        s.save_ban("198.51.100.1", Some(99));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "waited for the lock"
        );
        assert_eq!(s.ban_ops.len(), 1);
        other.execute_batch("ROLLBACK").unwrap();
        assert_eq!(s.failure_episodes, 1);
        assert_eq!(s.pending_lines(), 51);
        // Reads still see everything.
        assert_eq!(s.recent("lobby", 100).unwrap().len(), 52);
        assert_eq!(
            s.load_bans().unwrap(),
            [("198.51.100.1".to_owned(), Some(99))]
        );

        fill_disk(&s, false);
        assert_eq!(s.flush(), 51);
        assert!(!s.is_failing());
        assert_eq!(s.pending_lines(), 0);
        drop(s);
        let s = open(&db);
        let lines = s.recent("lobby", 100).unwrap();
        assert_eq!(lines.len(), 52, "nothing lost, nothing written twice");
        assert!(lines.windows(2).all(|w| w[0].at + 1 == w[1].at));
        assert_eq!(&*lines[51].text, "a: during");
        assert_eq!(
            s.load_bans().unwrap(),
            [("198.51.100.1".to_owned(), Some(99))]
        );

        // A second episode is a second error.
        let mut s = s;
        fill_disk(&s, true);
        s.queue_line("lobby", 60, &big);
        s.queue_line("lobby", 61, &big);
        s.queue_line("lobby", 62, &big);
        s.flush();
        fill_disk(&s, false);
        s.flush();
        fill_disk(&s, true);
        s.queue_line("lobby", 63, &big);
        s.queue_line("lobby", 64, &big);
        s.queue_line("lobby", 65, &big);
        s.flush();
        assert_eq!(s.failure_episodes, 2);
        fill_disk(&s, false);
    }

    #[test]
    fn a_removed_file_is_made_again() {
        let db = TempDb::new("removed");
        let mut s = open(&db);
        s.queue_line("lobby", 1, "a: into the old file");
        assert_eq!(s.flush(), 1);
        // As `rm chat.db` does: the -wal and -shm files stay.
        std::fs::remove_file(db.path()).unwrap();
        s.queue_line("lobby", 2, "a: after rm");
        assert_eq!(s.flush(), 1);
        assert_eq!(s.failure_episodes, 1, "the removal is logged as an error");
        assert!(!s.is_failing());
        s.queue_line("lobby", 3, "a: and on");
        assert_eq!(s.flush(), 1);
        drop(s);
        let s = open(&db);
        assert_eq!(
            texts(&s.recent("lobby", 10).unwrap()),
            ["a: after rm", "a: and on"]
        );
    }

    #[test]
    fn a_removed_directory_fails_until_it_is_back() {
        /// Removes the directory, whatever is in it.
        struct Dir(PathBuf);
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
        let dir = Dir(TempDb::new("dir").path().with_extension("d"));
        std::fs::create_dir(&dir.0).unwrap();
        let path = dir.0.join("chat.db");
        let mut s = Store::open(&path).unwrap();
        s.queue_line("lobby", 1, "a: 1");
        assert_eq!(s.flush(), 1);
        std::fs::remove_dir_all(&dir.0).unwrap();
        s.queue_line("lobby", 2, "a: 2");
        s.queue_line("lobby", 3, "a: 3");
        assert_eq!(s.flush(), 0);
        assert_eq!(s.flush(), 0);
        assert!(s.is_failing());
        assert_eq!(s.failure_episodes, 1);
        assert_eq!(s.pending_lines(), 2);
        assert_eq!(texts(&s.recent("lobby", 10).unwrap()), ["a: 2", "a: 3"]);
        std::fs::create_dir(&dir.0).unwrap();
        assert_eq!(s.flush(), 2);
        assert!(!s.is_failing());
        drop(s);
        let s = Store::open(&path).unwrap();
        assert_eq!(texts(&s.recent("lobby", 10).unwrap()), ["a: 2", "a: 3"]);
    }

    #[test]
    fn the_queue_is_bounded_by_dropping_the_oldest() {
        let db = TempDb::new("bound");
        let mut s = Store::open_with(
            db.path(),
            Limits {
                lines: 10,
                bytes: usize::MAX,
            },
        )
        .unwrap();
        for i in 0..15 {
            s.queue_line("lobby", i, &format!("a: {i}"));
        }
        assert_eq!(s.pending_lines(), 10);
        assert_eq!(s.dropped_lines(), 5);
        assert_eq!(s.overflow, Some(5));
        let newest = s.recent("lobby", 100).unwrap();
        assert_eq!(newest.first().map(|l| l.at), Some(5));
        assert_eq!(s.flush(), 10);
        assert_eq!(s.overflow, None, "episode over once caught up");
        assert_eq!(s.recent("lobby", 100).unwrap(), newest);

        let line = "a: 0123456789"; // 13 bytes
        let cost = "lobby".len() + line.len() + PENDING_OVERHEAD;
        let mut s = Store::open_with(
            db.path(),
            Limits {
                lines: usize::MAX,
                bytes: 3 * cost,
            },
        )
        .unwrap();
        for i in 0..5 {
            s.queue_line("lobby", i, line);
        }
        assert_eq!((s.pending_lines(), s.pending_bytes), (3, 3 * cost));
        assert_eq!(s.dropped_lines(), 2);
    }

    #[test]
    fn one_flush_writes_at_most_a_bounded_batch() {
        let db = TempDb::new("batch");
        let mut s = open(&db);
        for i in 0..MAX_FLUSH_LINES + 5 {
            s.queue_line("lobby", i as i64, "a: b");
        }
        assert_eq!(s.flush(), MAX_FLUSH_LINES);
        assert_eq!(s.flush(), 5);
        assert_eq!(s.recent("lobby", 3).unwrap().len(), 3);
    }

    #[test]
    fn bans_are_saved_replaced_and_deleted_at_once() {
        let db = TempDb::new("bans");
        let mut s = open(&db);
        s.save_ban("203.0.113.7", Some(10));
        s.save_ban("203.0.113.7", Some(20));
        s.save_ban("203.0.113.8", None);
        s.delete_ban("203.0.113.8");
        s.delete_ban("192.0.2.1"); // not banned: nothing happens
        assert!(s.ban_ops.is_empty(), "written at once");
        let other = Connection::open(db.path()).unwrap();
        let n: i64 = other
            .query_row("SELECT count(*) FROM bans", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
        assert_eq!(
            s.load_bans().unwrap(),
            [("203.0.113.7".to_owned(), Some(20))]
        );
    }

    /// The paths measured in `benches/store.rs`, at small sizes.
    #[test]
    fn flush_of_a_tick_and_recent_reads() {
        let db = TempDb::new("paths");
        let mut s = open(&db);
        for i in 0..2_000 {
            let room = format!("room{}", i % 10);
            s.queue_line(&room, i, &format!("user{i}: a line of ordinary chat"));
        }
        assert_eq!(s.flush(), 2_000);
        let last = s.recent("room3", 20).unwrap();
        assert_eq!(last.len(), 20);
        assert_eq!(last.last().map(|l| l.at), Some(1_993));
        assert!(last.windows(2).all(|w| w[0].at + 10 == w[1].at));
        assert_eq!(s.recent("room3", 1_000).unwrap().len(), 200);
    }

    /// Set by [`a_killed_server_keeps_what_it_flushed`] for the child it
    /// starts: the database the child writes to.
    const CHILD_DB: &str = "CHATD_STORE_TEST_CHILD_DB";

    /// The child half of [`a_killed_server_keeps_what_it_flushed`]: does
    /// nothing unless started by it.
    #[test]
    fn sigkill_child() {
        let Some(path) = std::env::var_os(CHILD_DB) else {
            return;
        };
        let mut s = Store::open(&path).unwrap();
        for i in 0..100 {
            s.queue_line("lobby", i, &format!("a: {i}"));
        }
        assert_eq!(s.flush(), 100);
        s.queue_line("lobby", 100, "a: never flushed");
        println!("flushed");
        std::thread::sleep(Duration::from_secs(30)); // killed long before
    }

    #[test]
    fn a_killed_server_keeps_what_it_flushed() {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let db = TempDb::new("sigkill");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "store::tests::sigkill_child", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(CHILD_DB, db.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let flushed = io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.contains("flushed"));
        child.kill().unwrap(); // SIGKILL: no destructor, no close, no checkpoint
        child.wait().unwrap();
        assert!(flushed, "the child did not get to flush");
        let s = open(&db);
        let lines = s.recent("lobby", 1_000).unwrap();
        assert_eq!(lines.len(), 100);
        assert_eq!(&*lines[99].text, "a: 99");
    }
}
