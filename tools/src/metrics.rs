//! Reading a server's figures from its Prometheus endpoint instead of
//! `/proc`: what lets `chatload --metrics URL` measure a chatd it did not
//! start, even one that runs as another user (whose `/proc/PID` files it
//! could not read).
//!
//! PROTOCOL.md, "Metrics (v2)": `--metrics ADDR` serves `GET /metrics`,
//! answered `200` with the Prometheus text exposition format, including
//! `process_resident_memory_bytes` and `process_cpu_seconds_total`, "read
//! from /proc" by the server itself. chatd also exports
//! `chatd_loop_busy_max_seconds`, the longest single loop iteration since
//! it started, which the tools report when it is there.
//!
//! The request is plain HTTP/1.1 over a `std` `TcpStream` with a deadline:
//! one GET, `Connection: close`, the body read to its `Content-Length` (or
//! to EOF). No HTTP crate: the tools need exactly this one request.
//! [`Scraper`] repeats it from a thread of its own every N ms, for runs
//! that measure what scraping costs the server.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::background::Background;
use crate::procstat::ProcSample;

/// Most bytes of response read (chatd's page is ~3 KiB).
const MAX_RESPONSE: usize = 4 << 20;

/// Where the metrics are: `http://HOST:PORT/PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsUrl {
    /// The address HOST:PORT resolved to (the first one).
    pub addr: SocketAddr,
    /// HOST:PORT as given, for the `Host` header.
    pub host: String,
    /// The path, `/metrics` when the URL has none.
    pub path: String,
}

impl std::fmt::Display for MetricsUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}{}", self.host, self.path)
    }
}

impl MetricsUrl {
    /// The URL of chatd's endpoint at `addr` (`http://ADDR/metrics`).
    pub fn of(addr: SocketAddr) -> MetricsUrl {
        MetricsUrl {
            addr,
            host: addr.to_string(),
            path: "/metrics".into(),
        }
    }

    /// Parses `http://HOST:PORT[/PATH]`, or a bare `HOST:PORT`; the path
    /// defaults to `/metrics`. HOST is resolved now.
    pub fn parse(text: &str) -> Result<MetricsUrl, String> {
        let rest = if let Some(rest) = text.strip_prefix("http://") {
            rest
        } else if text.contains("://") {
            return Err(format!("{text}: only http:// URLs are supported"));
        } else {
            text
        };
        let (host, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/metrics"),
        };
        if host.is_empty() {
            return Err(format!("{text}: no host"));
        }
        let addr = host
            .to_socket_addrs()
            .map_err(|e| format!("{text}: {e} (give HOST:PORT)"))?
            .next()
            .ok_or_else(|| format!("{text}: {host} resolves to no address"))?;
        Ok(MetricsUrl {
            addr,
            host: host.to_string(),
            path: path.to_string(),
        })
    }
}

/// The figures the tools use from one scrape.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// `process_cpu_seconds_total`.
    pub cpu_s: Option<f64>,
    /// `process_resident_memory_bytes`.
    pub rss: Option<u64>,
    /// `chatd_loop_busy_max_seconds` (chatd's own gauge), when exported.
    pub loop_busy_max_s: Option<f64>,
    /// Every unlabelled or labelled series, by its name as written
    /// (`name{label="v"}`), with its value.
    pub series: HashMap<String, f64>,
}

impl Scrape {
    /// The process figures as a [`ProcSample`] (no peak: the endpoint does
    /// not export one, so `hwm` is 0). An error names what is missing.
    pub fn proc_sample(&self) -> Result<ProcSample, String> {
        match (self.cpu_s, self.rss) {
            (Some(cpu_s), Some(rss)) => Ok(ProcSample { cpu_s, rss, hwm: 0 }),
            _ => Err("the page has no process_cpu_seconds_total or \
                      process_resident_memory_bytes"
                .into()),
        }
    }
}

/// One `GET`, bounded by `timeout` as a whole.
pub fn scrape(url: &MetricsUrl, timeout: Duration) -> io::Result<Scrape> {
    let body = get(url, timeout)?;
    Ok(parse_page(&body))
}

/// The body of a `200` answer to `GET url.path`.
fn get(url: &MetricsUrl, timeout: Duration) -> io::Result<String> {
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&url.addr, timeout)?;
    let left = |deadline: Instant| {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "metrics request timed out"))
    };
    stream.set_write_timeout(Some(left(deadline)?))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n",
        url.path, url.host
    );
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    let mut body_at: Option<(usize, Option<usize>)> = None;
    loop {
        if let Some((at, Some(len))) = body_at
            && response.len() >= at + len
        {
            response.truncate(at + len);
            break;
        }
        stream.set_read_timeout(Some(left(deadline)?))?;
        let n = match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "metrics request timed out",
                ));
            }
            Err(e) => return Err(e),
        };
        response.extend_from_slice(&chunk[..n]);
        if response.len() > MAX_RESPONSE {
            return Err(io::Error::other("metrics response over 4 MiB"));
        }
        if body_at.is_none()
            && let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n")
        {
            let head = String::from_utf8_lossy(&response[..end]).into_owned();
            body_at = Some((end + 4, check_head(&head)?));
        }
    }
    let Some((at, _)) = body_at else {
        return Err(io::Error::other("no complete HTTP response head"));
    };
    Ok(String::from_utf8_lossy(&response[at..]).into_owned())
}

/// Checks a response head: status 200, not chunked. Returns its
/// `Content-Length`, if any.
fn check_head(head: &str) -> io::Result<Option<usize>> {
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    let code = status.split_whitespace().nth(1).unwrap_or("");
    if !status.starts_with("HTTP/1.") || code != "200" {
        return Err(io::Error::other(format!("metrics answered {status:?}")));
    }
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        if name == "content-length" {
            length = value.parse().ok();
        } else if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
            return Err(io::Error::other(
                "chunked metrics responses are not supported",
            ));
        }
    }
    Ok(length)
}

/// Reads the text exposition format: `# ...` lines are comments, every
/// other line is `NAME[{LABELS}] VALUE [TIMESTAMP]`.
pub fn parse_page(body: &str) -> Scrape {
    let mut series = HashMap::new();
    for line in body.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // Label values may hold spaces: the name ends at the closing brace.
        let (name, rest) = match line.find('{') {
            Some(open) if line[..open].find(' ').is_none() => match line.rfind('}') {
                Some(close) => (&line[..=close], &line[close + 1..]),
                None => continue,
            },
            _ => match line.split_once(' ') {
                Some(split) => split,
                None => continue,
            },
        };
        let Some(value) = rest.split_whitespace().next() else {
            continue;
        };
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => match v.parse::<f64>() {
                Ok(v) => v,
                Err(_) => continue,
            },
        };
        series.insert(name.to_string(), value);
    }
    let get = |name: &str| series.get(name).copied();
    Scrape {
        cpu_s: get("process_cpu_seconds_total"),
        rss: get("process_resident_memory_bytes").map(|v| v.max(0.0) as u64),
        loop_busy_max_s: get("chatd_loop_busy_max_seconds"),
        series,
    }
}

/// What a [`Scraper`] did.
#[derive(Debug, Clone, Default)]
pub struct ScrapeStats {
    /// Scrapes that returned a page.
    pub ok: u64,
    /// Scrapes that failed.
    pub failed: u64,
    /// The first failure, as an example.
    pub first_error: Option<String>,
    /// The slowest successful scrape, in seconds (connect to last byte).
    pub max_s: f64,
    /// Sum of the successful scrapes' times, in seconds.
    pub total_s: f64,
    /// The last page read.
    pub last: Option<Scrape>,
}

impl ScrapeStats {
    /// Mean time of a successful scrape, in seconds.
    pub fn mean_s(&self) -> f64 {
        if self.ok == 0 {
            f64::NAN
        } else {
            self.total_s / self.ok as f64
        }
    }
}

/// Scrapes a URL every `every` from a thread of its own until finished, as
/// a Prometheus server would (one request at a time).
#[derive(Debug)]
pub struct Scraper {
    stats: Arc<Mutex<ScrapeStats>>,
    thread: Background,
}

impl Scraper {
    /// Starts scraping `url` every `every` (the first scrape at once).
    pub fn start(url: MetricsUrl, every: Duration) -> Scraper {
        let stats = Arc::new(Mutex::new(ScrapeStats::default()));
        let shared = Arc::clone(&stats);
        let thread = Background::spawn(move |stop| {
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let began = Instant::now();
                let result = scrape(&url, Duration::from_secs(5));
                let took = began.elapsed().as_secs_f64();
                if let Ok(mut s) = shared.lock() {
                    match result {
                        Ok(page) => {
                            s.ok += 1;
                            s.total_s += took;
                            s.max_s = s.max_s.max(took);
                            s.last = Some(page);
                        }
                        Err(e) => {
                            s.failed += 1;
                            s.first_error.get_or_insert_with(|| e.to_string());
                        }
                    }
                }
                next += every;
                let now = Instant::now();
                if next < now {
                    next = now;
                }
                // Sleep in short slices so finishing is prompt.
                while !stop.load(Ordering::Relaxed) && Instant::now() < next {
                    let left = next.saturating_duration_since(Instant::now());
                    std::thread::sleep(left.min(Duration::from_millis(20)));
                }
            }
        });
        Scraper { stats, thread }
    }

    /// Stops the thread; returns what it did.
    pub fn finish(mut self) -> ScrapeStats {
        self.thread.stop();
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    const PAGE: &str = "\
# HELP chatd_connections Chat connections open now.
# TYPE chatd_connections gauge
chatd_connections 3
chatd_disconnects_total{reason=\"closed\"} 7
chatd_odd{label=\"a b\"} 1.5 1700000000000
chatd_loop_busy_max_seconds 0.000028984
process_cpu_seconds_total 12.34
process_resident_memory_bytes 3391488
process_start_time_seconds 1.79530199127e9
";

    #[test]
    fn the_text_format_is_read() {
        let s = parse_page(PAGE);
        assert_eq!(s.cpu_s, Some(12.34));
        assert_eq!(s.rss, Some(3_391_488));
        assert_eq!(s.loop_busy_max_s, Some(0.000028984));
        assert_eq!(s.series["chatd_connections"], 3.0);
        assert_eq!(s.series["chatd_disconnects_total{reason=\"closed\"}"], 7.0);
        assert_eq!(s.series["chatd_odd{label=\"a b\"}"], 1.5);
        let p = s.proc_sample().expect("both process figures");
        assert_eq!((p.rss, p.hwm), (3_391_488, 0));
        assert!(parse_page("x 1\n").proc_sample().is_err());
        assert_eq!(parse_page("only_cpu 1\n").loop_busy_max_s, None);
    }

    #[test]
    fn urls() {
        let u = MetricsUrl::parse("http://127.0.0.1:9100/metrics").expect("parses");
        assert_eq!(u.addr, SocketAddr::from(([127, 0, 0, 1], 9100)));
        assert_eq!(u.path, "/metrics");
        assert_eq!(u.to_string(), "http://127.0.0.1:9100/metrics");
        let u = MetricsUrl::parse("127.0.0.1:9100").expect("bare address");
        assert_eq!(u.path, "/metrics");
        let u = MetricsUrl::parse("http://127.0.0.1:9100/x/y").expect("a path");
        assert_eq!(u.path, "/x/y");
        assert!(MetricsUrl::parse("https://127.0.0.1:9100/metrics").is_err());
        assert!(MetricsUrl::parse("http:///metrics").is_err());
        assert!(MetricsUrl::parse("http://127.0.0.1/metrics").is_err());
    }

    /// Serves `responses` one per connection, as raw bytes.
    fn serve(responses: Vec<Vec<u8>>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for response in responses {
                let Ok((mut s, _)) = listener.accept() else {
                    return;
                };
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && s.read(&mut b).unwrap_or(0) == 1 {
                    head.push(b[0]);
                }
                assert!(head.starts_with(b"GET /metrics HTTP/1.1\r\n"));
                let _ = s.write_all(&response);
            }
        });
        addr
    }

    #[test]
    fn a_scrape_over_http() {
        let ok = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{PAGE}",
            PAGE.len()
        );
        let addr = serve(vec![
            ok.into_bytes(),
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
            format!("HTTP/1.0 200 OK\r\n\r\n{PAGE}").into_bytes(),
        ]);
        let url = MetricsUrl::of(addr);
        let s = scrape(&url, Duration::from_secs(5)).expect("scrape");
        assert_eq!(s.cpu_s, Some(12.34));
        let e = scrape(&url, Duration::from_secs(5)).expect_err("404");
        assert!(e.to_string().contains("404"), "{e}");
        let s = scrape(&url, Duration::from_secs(5)).expect("body to EOF");
        assert_eq!(s.rss, Some(3_391_488));
    }

    #[test]
    fn a_silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = MetricsUrl::of(listener.local_addr().expect("addr"));
        let began = Instant::now();
        assert!(scrape(&url, Duration::from_millis(200)).is_err());
        assert!(began.elapsed() < Duration::from_secs(3));
        drop(listener);
    }
}
