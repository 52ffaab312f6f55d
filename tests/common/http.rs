//! One HTTP request to the server's metrics endpoint, and reading a series
//! off the page.

use super::READ_TIMEOUT;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

/// Sends `request` and reads the whole answer (the server closes).
pub fn http(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect to metrics");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.write_all(request).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// `GET /metrics`, split into head and body (whatever the status).
pub fn metrics_page(addr: SocketAddr) -> (String, String) {
    let answer = http(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    (head.to_string(), body.to_string())
}

/// The value of the series `name` (with its labels, e.g.
/// `chatd_disconnects_total{reason="quit"}`) in a metrics page's body.
pub fn series_value(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            (series == name).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or_else(|| panic!("no series {name} in\n{body}"))
}
