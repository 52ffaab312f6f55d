//! The open-file limit: raised at start, and turned into `--max-clients`.
//!
//! Every user is a descriptor, so the soft RLIMIT_NOFILE (often 1024) would
//! cap the room long before memory does. The server raises it to the hard
//! limit, which needs no privilege, and keeps a small reserve for its own
//! descriptors when it derives the default client limit.

use log::{info, warn};

/// Soft and hard RLIMIT_NOFILE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    /// What this process may open now.
    pub soft: u64,
    /// What the soft limit may be raised to.
    pub hard: u64,
}

/// Reads the current limit.
pub fn current() -> std::io::Result<FdLimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass, which outlives the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(FdLimit {
        soft: limit.rlim_cur,
        hard: limit.rlim_max,
    })
}

/// Raises the soft limit to the hard one and logs both; returns the limit in
/// force afterwards (the old one if raising failed).
pub fn raise_to_hard() -> std::io::Result<FdLimit> {
    let before = current()?;
    if before.soft >= before.hard {
        info!(
            "open-file limit: soft {} = hard {}",
            before.soft, before.hard
        );
        return Ok(before);
    }
    let raised = libc::rlimit {
        rlim_cur: before.hard,
        rlim_max: before.hard,
    };
    // SAFETY: setrlimit only reads the struct we pass, which outlives the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        let error = std::io::Error::last_os_error();
        warn!(
            "could not raise open-file limit from {} to {}: {error}",
            before.soft, before.hard
        );
        return Ok(before);
    }
    info!(
        "open-file limit: soft {} raised to hard {}",
        before.soft, before.hard
    );
    current()
}

/// The default `--max-clients`: the soft limit less `reserve`, at least 1.
pub fn max_clients(limit: FdLimit, reserve: u64) -> usize {
    usize::try_from(limit.soft.saturating_sub(reserve).max(1)).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_is_kept_back_but_never_below_one() {
        let limit = FdLimit {
            soft: 20_000,
            hard: 20_000,
        };
        assert_eq!(max_clients(limit, 32), 19_968);
        let tiny = FdLimit { soft: 10, hard: 10 };
        assert_eq!(max_clients(tiny, 32), 1);
    }

    #[test]
    fn current_limit_is_readable() {
        let limit = current().expect("getrlimit works");
        assert!(limit.soft <= limit.hard);
    }
}
