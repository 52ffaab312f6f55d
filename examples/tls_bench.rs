//! Two figures for `Stream::Tls`, measured by hand in a release build:
//!
//! ```text
//! cargo run --release --example tls_bench -- handshakes [SECS] [tls12] [p256|p384|ed25519]
//! cargo run --release --example tls_bench -- idle [CONNS]
//! ```
//!
//! `handshakes`: full handshakes per second on one core, an in-process
//! rustls client and a `Stream::Tls` server driven in turns by one thread
//! over loopback (so the figure pays for both sides), and the time spent on
//! the server side alone (accept, `Stream::tls`, its reads), which is what
//! one server core would do per handshake.
//!
//! `idle`: the server's RSS per idle TLS connection. The clients live in a
//! child process (this program again, `idle-client`), so only the server's
//! memory is in the figure: the program opens CONNS connections, each
//! handshakes and echoes one line, then compares VmRSS with the figure
//! before they came. Per connection it holds what the chat server would
//! (the `Stream` in a slab), nothing else.

use chatd::stream::Stream;
use chatd::tls::{TlsFiles, load_config};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, SupportedProtocolVersion};
use std::io::{self, BufRead, Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error>;

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("handshakes") => handshakes(&args[1..]),
        Some("idle") => idle(&args[1..]),
        Some("idle-client") => idle_client(&args[1..]),
        _ => {
            eprintln!(
                "usage: tls_bench handshakes [SECS] [tls12] [p256|p384|ed25519] | idle [CONNS]"
            );
            std::process::exit(2);
        }
    }
}

/// A certificate for `localhost` with a key of `kind`, written to a fresh
/// temp dir; the server config and a client config trusting it.
fn setup(
    kind: &str,
    version: &'static SupportedProtocolVersion,
) -> Result<(Arc<rustls::ServerConfig>, Arc<ClientConfig>), BoxError> {
    let alg = match kind {
        "p384" => &rcgen::PKCS_ECDSA_P384_SHA384,
        "ed25519" => &rcgen::PKCS_ED25519,
        _ => &rcgen::PKCS_ECDSA_P256_SHA256,
    };
    let key = rcgen::KeyPair::generate_for(alg)?;
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])?.self_signed(&key)?;
    let dir = std::env::temp_dir().join(format!("chatd-tls-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&files.cert, cert.pem())?;
    std::fs::write(&files.key, key.serialize_pem())?;
    let server = load_config(&files)?;
    let _ = std::fs::remove_dir_all(&dir);

    let mut roots = RootCertStore::empty();
    roots.add(cert.der().clone())?;
    let client = ClientConfig::builder_with_provider(chatd::tls::provider())
        .with_protocol_versions(&[version])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok((server, Arc::new(client)))
}

/// CPU time this thread has used: the figures must not depend on what else
/// the machine runs.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill in.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn would_block(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::WouldBlock
}

/// Full handshakes in turns on one thread for `SECS` seconds.
fn handshakes(args: &[String]) -> Result<(), BoxError> {
    let secs: f64 = args.iter().find_map(|a| a.parse().ok()).unwrap_or(5.0);
    let version = if args.iter().any(|a| a == "tls12") {
        &rustls::version::TLS12
    } else {
        &rustls::version::TLS13
    };
    let kind = args
        .iter()
        .find(|a| matches!(a.as_str(), "p256" | "p384" | "ed25519"))
        .map(String::as_str)
        .unwrap_or("p256");
    let (server_config, client_config) = setup(kind, version)?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let name = ServerName::try_from("localhost")?;

    let mut buf = vec![0u8; 16 * 1024];
    let mut count = 0u64;
    let mut server_time = Duration::ZERO;
    let start = Instant::now();
    let cpu_start = thread_cpu();
    while start.elapsed().as_secs_f64() < secs {
        let mut client_sock = std::net::TcpStream::connect(addr)?;
        client_sock.set_nodelay(true)?;
        client_sock.set_nonblocking(true)?;
        // Reset on close, so a long run leaves no TIME_WAIT behind.
        socket2::SockRef::from(&client_sock).set_linger(Some(Duration::ZERO))?;
        let mut client = ClientConnection::new(Arc::clone(&client_config), name.clone())?;

        let t = thread_cpu();
        let (socket, _) = listener.accept()?;
        socket.set_nonblocking(true)?;
        socket.set_nodelay(true)?;
        let mut stream = Stream::tls(
            mio::net::TcpStream::from_std(socket),
            Arc::clone(&server_config),
        )?;
        server_time += thread_cpu() - t;

        let deadline = Instant::now() + Duration::from_secs(5);
        let mut server_done = false;
        loop {
            while client.wants_write() {
                match client.write_tls(&mut client_sock) {
                    Ok(_) => {}
                    Err(e) if would_block(&e) => break,
                    Err(e) => return Err(e.into()),
                }
            }
            let t = thread_cpu();
            match stream.read(&mut buf) {
                Err(e) if would_block(&e) => {}
                Ok(n) => return Err(format!("server read {n} bytes of plaintext").into()),
                Err(e) => return Err(e.into()),
            }
            server_done |= stream.take_handshake_completed();
            server_time += thread_cpu() - t;
            if server_done && !client.is_handshaking() {
                break;
            }
            match client.read_tls(&mut client_sock) {
                Ok(0) => return Err("server closed".into()),
                Ok(_) => {
                    client.process_new_packets()?;
                }
                Err(e) if would_block(&e) => {}
                Err(e) => return Err(e.into()),
            }
            if Instant::now() > deadline {
                return Err("handshake stuck".into());
            }
        }
        let t = thread_cpu();
        drop(stream);
        server_time += thread_cpu() - t;
        count += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = (thread_cpu() - cpu_start).as_secs_f64();
    let per_server = server_time.as_secs_f64() / count as f64;
    println!(
        "{kind} {:?}: {count} handshakes in {elapsed:.2} s wall, {cpu:.2} s CPU = {:.0} per CPU second \
         with client and server on one core; server side {:.0} µs CPU each = {:.0} per server CPU second",
        version.version,
        count as f64 / cpu,
        per_server * 1e6,
        1.0 / per_server
    );
    Ok(())
}

/// VmRSS of this process, in bytes.
fn rss() -> Result<u64, BoxError> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS")?;
    let kib: u64 = line.split_whitespace().nth(1).ok_or("bad VmRSS")?.parse()?;
    Ok(kib * 1024)
}

const LISTENER: Token = Token(usize::MAX);

/// The server side of `idle`: echo lines, count handshakes, measure RSS.
fn idle(args: &[String]) -> Result<(), BoxError> {
    let conns: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(1000);
    chatd::fdlimit::raise_to_hard()?;
    let (server_config, _) = setup("p256", &rustls::version::TLS13)?;
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind("127.0.0.1:0".parse()?)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .map_err(|e| format!("register: {e}"))?;
    let addr = listener.local_addr()?;
    // Sized up front, so the table's growth is not counted per connection.
    let mut streams: slab::Slab<Stream> = slab::Slab::with_capacity(conns + 1);
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 16 * 1024];

    // One connection first, so one-time costs are in the baseline.
    let mut warm = spawn_clients(addr, 1)?;
    serve_until(
        &mut poll,
        &mut listener,
        &mut streams,
        &server_config,
        &mut events,
        &mut buf,
        1,
    )?;
    let before = rss()?;
    let mut clients = spawn_clients(addr, conns)?;
    serve_until(
        &mut poll,
        &mut listener,
        &mut streams,
        &server_config,
        &mut events,
        &mut buf,
        conns + 1,
    )?;
    // Let the last echoes go out and the clients settle.
    let settle = Instant::now() + Duration::from_millis(500);
    while Instant::now() < settle {
        serve_once(
            &mut poll,
            &mut listener,
            &mut streams,
            &server_config,
            &mut events,
            &mut buf,
        )?;
    }
    let after = rss()?;
    let per = (after.saturating_sub(before)) as f64 / conns as f64;
    println!(
        "{conns} idle TLS 1.3 connections: server RSS {:.1} MiB -> {:.1} MiB, {per:.0} bytes per connection",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0
    );
    drop(clients.stdin.take());
    drop(warm.stdin.take());
    let _ = clients.wait();
    let _ = warm.wait();
    Ok(())
}

/// Starts `count` clients in a child process and waits until they all
/// connected, handshook and got their echo.
fn spawn_clients(addr: SocketAddr, count: usize) -> Result<std::process::Child, BoxError> {
    let mut child = Command::new(std::env::current_exe()?)
        .args(["idle-client", &addr.to_string(), &count.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    Ok({
        // "ready" comes after the last echo; read it in the background of
        // the server loop: the server must keep serving meanwhile.
        let stdout = child.stdout.take().ok_or("no stdout")?;
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = io::BufReader::new(stdout).read_line(&mut line);
        });
        child
    })
}

/// Serves until `joined` connections have echoed a line.
fn serve_until(
    poll: &mut Poll,
    listener: &mut TcpListener,
    streams: &mut slab::Slab<Stream>,
    config: &Arc<rustls::ServerConfig>,
    events: &mut Events,
    buf: &mut [u8],
    joined: usize,
) -> Result<(), BoxError> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while ECHOED.with(|e| e.get()) < joined {
        serve_once(poll, listener, streams, config, events, buf)?;
        if Instant::now() > deadline {
            return Err("clients did not all join".into());
        }
    }
    Ok(())
}

thread_local! {
    /// Connections that echoed their line.
    static ECHOED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// One poll round: accept, read lines, echo them.
fn serve_once(
    poll: &mut Poll,
    listener: &mut TcpListener,
    streams: &mut slab::Slab<Stream>,
    config: &Arc<rustls::ServerConfig>,
    events: &mut Events,
    buf: &mut [u8],
) -> Result<(), BoxError> {
    poll.poll(events, Some(Duration::from_millis(50)))?;
    for event in events.iter() {
        if event.token() == LISTENER {
            loop {
                match listener.accept() {
                    Ok((socket, _)) => {
                        let entry = streams.vacant_entry();
                        let mut stream = Stream::tls(socket, Arc::clone(config))?;
                        poll.registry().register(
                            &mut stream,
                            Token(entry.key()),
                            Interest::READABLE | Interest::WRITABLE,
                        )?;
                        entry.insert(stream);
                    }
                    Err(e) if would_block(&e) => break,
                    Err(e) => return Err(e.into()),
                }
            }
            continue;
        }
        let key = event.token().0;
        let Some(stream) = streams.get_mut(key) else {
            continue;
        };
        let mut closed = false;
        loop {
            match stream.read(buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                // The client sends one short line; echo it as it came.
                Ok(n) => {
                    if stream.write(&buf[..n])? == n {
                        ECHOED.with(|e| e.set(e.get() + 1));
                    }
                }
                Err(e) if would_block(&e) => break,
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        let _ = stream.flush();
        if closed {
            let mut stream = streams.remove(key);
            let _ = poll.registry().deregister(&mut stream);
        }
    }
    Ok(())
}

/// The child process of `idle`: COUNT blocking TLS clients that each
/// handshake and echo a line, then wait for stdin to close.
fn idle_client(args: &[String]) -> Result<(), BoxError> {
    let addr: SocketAddr = args.first().ok_or("address")?.parse()?;
    let count: usize = args.get(1).ok_or("count")?.parse()?;
    chatd::fdlimit::raise_to_hard()?;
    // The client trusts any certificate: only the server's memory matters.
    let config = ClientConfig::builder_with_provider(chatd::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerify))
        .with_no_client_auth();
    let config = Arc::new(config);
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        let sock = std::net::TcpStream::connect(addr)?;
        sock.set_read_timeout(Some(Duration::from_secs(30)))?;
        // Without it, Nagle holds the line behind the unacknowledged
        // Finished until the server's delayed ACK: 40-200 ms per client.
        sock.set_nodelay(true)?;
        let conn = ClientConnection::new(Arc::clone(&config), ServerName::try_from("localhost")?)?;
        let mut tls = rustls::StreamOwned::new(conn, sock);
        tls.write_all(b"hello\n")?;
        tls.flush()?;
        let mut echo = [0u8; 6];
        tls.read_exact(&mut echo)?;
        held.push(tls);
    }
    println!("ready");
    io::stdout().flush()?;
    let mut rest = Vec::new();
    let _ = io::stdin().read_to_end(&mut rest);
    Ok(())
}

/// Accepts any server certificate; the bench measures the server only.
#[derive(Debug)]
struct NoVerify;

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        chatd::tls::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
