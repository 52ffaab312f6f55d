//! The measuring side of chatd: the load generator `chatload`
//! (BENCHMARKS.md) and the stress runner `chatstress` (README.md, "Limits
//! and failure behaviour"), and what they share.
//!
//! Why a crate of its own: the tools are instruments, not part of the
//! server. They talk to chatd only over the wire and through its log, as
//! any client would (they start the real binary as a child process and never
//! link its library), so what they measure is what users get, and the
//! server's dependency list stays the server's (the latency histogram, for
//! one, is only here).
//!
//! The wire contract is PROTOCOL.md, which lives outside this repository;
//! where a tool relies on a line of it, the line is quoted next to the code.
//!
//! ```text
//!  bin/chatload ---> load (args, swarm of mio clients, scenarios, suite)
//!  bin/chatstress -> stress (capacity, slow, flood, soak, crowd, churn, rooms)
//!                       |
//!  shared:  chatd (start, watch the log, stop)   procstat (/proc CPU, RSS)
//!           metrics (the same figures over HTTP from chatd's /metrics)
//!           line_client (blocking client)        lines (line splitting)
//!           stats, report (figures and tables)   reference (the split the
//!           tls (rustls client config,            server must agree with)
//!                a throwaway certificate)        background (a thread until stopped)
//!           redis (a throwaway redis-server for the cluster scenarios)
//! ```
//!
//! The server's tests use this library too: `tests/hostile.rs` and the fuzz
//! target check chatd's framer against [`reference`](mod@reference), and
//! `tests/chatload_smoke.rs` runs [`load::smoke`] against the chatd binary.

pub mod background;
pub mod chatd;
pub mod line_client;
pub mod lines;
pub mod load;
pub mod metrics;
pub mod procstat;
pub mod redis;
pub mod reference;
pub mod report;
pub mod stats;
pub mod stress;
pub mod tls;
