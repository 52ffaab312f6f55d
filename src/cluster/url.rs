//! `--cluster URL`: where Redis is, and how to reach it.
//!
//! Two forms, as PROTOCOL.md gives them: `redis://HOST:PORT` (TCP; the port
//! defaults to Redis's 6379) and `unix:///PATH` (a Unix socket, absolute
//! path). Anything else — credentials, a database number, `rediss://` — is
//! refused at parse time, so a typo fails at start with exit status 2
//! instead of as a link that never comes up.
//!
//! A host name is resolved at every connection attempt, not once, so a
//! Redis that comes back at a new address (a container restarted) is
//! found; an IP literal needs no lookup at all. Resolution goes through the
//! system resolver and blocks the loop while it runs: a name from
//! `/etc/hosts` costs microseconds, one that needs DNS can cost the chat
//! that long once a second while Redis is down, so give an address.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;

/// Redis's own default port, for `redis://HOST` without one.
pub const DEFAULT_PORT: u16 = 6379;

/// A parsed `--cluster` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterUrl {
    /// `redis://HOST:PORT`.
    Tcp {
        /// A host name or IP address (an IPv6 one without its brackets).
        host: String,
        /// The TCP port.
        port: u16,
    },
    /// `unix:///PATH`: the absolute path of Redis's `unixsocket`.
    Unix(PathBuf),
}

/// Where one connection attempt goes: a resolved [`ClusterUrl`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix socket path.
    Unix(PathBuf),
}

/// Why a URL was refused; its text names the URL and the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlError(String);

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UrlError {}

impl ClusterUrl {
    /// Parses `redis://HOST[:PORT]` or `unix:///PATH`.
    pub fn parse(url: &str) -> Result<ClusterUrl, UrlError> {
        let refuse = |why: &str| UrlError(format!("invalid --cluster URL {url:?}: {why}"));
        if let Some(path) = url.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(refuse("expected unix:///ABSOLUTE/PATH"));
            }
            if path.len() == 1 || path.ends_with('/') {
                return Err(refuse("the path names a directory, not a socket"));
            }
            return Ok(ClusterUrl::Unix(PathBuf::from(path)));
        }
        let Some(rest) = url.strip_prefix("redis://") else {
            return Err(refuse("expected redis://HOST:PORT or unix:///PATH"));
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['@', '/', '?', '#']) {
            return Err(refuse(
                "only HOST:PORT is supported (no credentials, database or options)",
            ));
        }
        let (host, port) = split_host_port(authority).ok_or_else(|| refuse("bad HOST:PORT"))?;
        if host.is_empty() {
            return Err(refuse("the host is missing"));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(text) => match text.parse::<u16>() {
                Ok(port) if port != 0 => port,
                _ => return Err(refuse("the port must be a number from 1 to 65535")),
            },
        };
        Ok(ClusterUrl::Tcp {
            host: host.to_owned(),
            port,
        })
    }

    /// The address for connection attempt number `attempt`: a host name
    /// with several addresses is tried at each of them in turn, one per
    /// attempt (the link never waits on two connects at once).
    pub fn resolve(&self, attempt: u64) -> io::Result<Target> {
        match self {
            ClusterUrl::Unix(path) => Ok(Target::Unix(path.clone())),
            ClusterUrl::Tcp { host, port } => {
                let addrs: Vec<SocketAddr> = (host.as_str(), *port).to_socket_addrs()?.collect();
                if addrs.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{host} has no address"),
                    ));
                }
                let index = (attempt % addrs.len() as u64) as usize;
                Ok(Target::Tcp(addrs[index]))
            }
        }
    }
}

impl FromStr for ClusterUrl {
    type Err = UrlError;

    fn from_str(url: &str) -> Result<ClusterUrl, UrlError> {
        ClusterUrl::parse(url)
    }
}

impl fmt::Display for ClusterUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterUrl::Tcp { host, port } if host.contains(':') => {
                write!(f, "redis://[{host}]:{port}")
            }
            ClusterUrl::Tcp { host, port } => write!(f, "redis://{host}:{port}"),
            ClusterUrl::Unix(path) => write!(f, "unix://{}", path.display()),
        }
    }
}

/// `HOST`, `HOST:PORT`, `[V6]` or `[V6]:PORT` into the host and the port
/// text; `None` for an unbracketed IPv6 address or stray brackets.
fn split_host_port(authority: &str) -> Option<(&str, Option<&str>)> {
    if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    match authority.split_once(':') {
        None => Some((authority, None)),
        Some((_, port)) if port.contains(':') => None,
        Some((host, port)) => Some((host, Some(port))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> ClusterUrl {
        ClusterUrl::Tcp {
            host: host.to_owned(),
            port,
        }
    }

    #[test]
    fn accepts_the_two_forms() {
        assert_eq!(
            ClusterUrl::parse("redis://127.0.0.1:6380"),
            Ok(tcp("127.0.0.1", 6380))
        );
        assert_eq!(
            ClusterUrl::parse("redis://redis.local"),
            Ok(tcp("redis.local", 6379))
        );
        assert_eq!(
            ClusterUrl::parse("redis://[::1]:7000/"),
            Ok(tcp("::1", 7000))
        );
        assert_eq!(
            ClusterUrl::parse("unix:///run/redis/redis.sock"),
            Ok(ClusterUrl::Unix(PathBuf::from("/run/redis/redis.sock")))
        );
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        for bad in [
            "",
            "127.0.0.1:6379",
            "rediss://host:6379",
            "redis://",
            "redis://:6379",
            "redis://host:0",
            "redis://host:65536",
            "redis://host:port",
            "redis://user:secret@host:6379",
            "redis://host:6379/2",
            "redis://::1:6379",
            "redis://[::1",
            "unix://relative/path",
            "unix:///",
            "unix:///run/redis/",
        ] {
            assert!(ClusterUrl::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let error = ClusterUrl::parse("redis://h:x").unwrap_err().to_string();
        assert!(error.contains("redis://h:x"), "{error}");
    }

    #[test]
    fn displays_as_parsed() {
        for url in [
            "redis://127.0.0.1:6380",
            "redis://[::1]:7000",
            "unix:///tmp/r.sock",
        ] {
            assert_eq!(ClusterUrl::parse(url).unwrap().to_string(), url);
        }
    }

    #[test]
    fn an_ip_literal_resolves_without_a_lookup() {
        let url = tcp("127.0.0.1", 6390);
        assert_eq!(
            url.resolve(7).unwrap(),
            Target::Tcp("127.0.0.1:6390".parse().unwrap())
        );
        let unix = ClusterUrl::Unix(PathBuf::from("/tmp/x.sock"));
        assert_eq!(
            unix.resolve(0).unwrap(),
            Target::Unix(PathBuf::from("/tmp/x.sock"))
        );
    }
}
