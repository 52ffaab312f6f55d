//! The TLS certificate and key: loading them, checking them, reloading them.
//!
//! PROTOCOL.md ("TLS (v2)") wants bad files to stop the server at start with
//! a message naming the problem and the file, and SIGHUP to swap in new files
//! only when they are good. So loading is done by hand, step by step, rather
//! than with one `with_single_cert` call whose error cannot say which file is
//! at fault: read each file, parse its PEM, load the key with the provider,
//! compare the key with the certificate, and only then build the config.
//!
//! The config is built for a chat server that holds tens of thousands of
//! long-lived connections on one thread, so it is cut down to what keeps a
//! connection small and a handshake cheap:
//!
//! - the `ring` provider is named explicitly (no process-wide default to
//!   install or race over);
//! - TLS 1.3 and 1.2, no client certificates;
//! - no session resumption: no TLS 1.3 tickets are sent after the handshake
//!   (each would cost a ticket encryption and bytes on the wire) and no
//!   stateful session cache is kept (rustls's default keeps 256 sessions
//!   behind a mutex). Chat connections live for minutes or hours, so the
//!   round trip resumption would save on a reconnect is not worth it;
//! - no early data, no half-RTT data (rustls's defaults, restated here so
//!   they are not changed by accident).
//!
//! What a connection then holds, and what it costs, is described in
//! `stream.rs`.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::NoServerSessionStorage;
use rustls::sign::CertifiedKey;
use rustls::{Error as RustlsError, InconsistentKeys, ServerConfig};
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// TLS 1.3 tickets sent after a handshake: none, so no resumption state is
/// produced per connection (see the module documentation).
pub const TLS13_TICKETS: usize = 0;

/// The largest certificate or key file read, so a wrong path (a log file, a
/// device) cannot make the server read without bound. Real chains are a few
/// KiB.
pub const MAX_PEM_FILE_BYTES: u64 = 1024 * 1024;

/// Where the certificate chain and its private key live (`--tls-cert`,
/// `--tls-key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM file holding the certificate chain, end-entity certificate first.
    pub cert: PathBuf,
    /// PEM file holding the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why a certificate and key could not be used. Every variant names the file
/// at fault; `Display` gives the message for the log or for stderr at start.
#[derive(Debug)]
pub enum TlsError {
    /// A file could not be read (missing, unreadable, too large).
    Read {
        /// The file.
        path: PathBuf,
        /// What reading it failed with.
        error: io::Error,
    },
    /// The certificate file holds no PEM `CERTIFICATE` section.
    NoCertificate {
        /// The certificate file.
        path: PathBuf,
    },
    /// The certificate file's PEM or a certificate in it is malformed.
    BadCertificate {
        /// The certificate file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key file holds no PEM private key section.
    NoKey {
        /// The key file.
        path: PathBuf,
    },
    /// The key file's PEM or the key in it is malformed or of an
    /// unsupported type.
    BadKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The private key is not the one the certificate was issued for.
    KeyMismatch {
        /// The key file (named first: PROTOCOL.md says the message names it).
        key: PathBuf,
        /// The certificate file it was compared with.
        cert: PathBuf,
    },
    /// rustls refused the pair for another reason.
    Rejected {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        error: RustlsError,
    },
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read { path, error } => {
                write!(f, "cannot read {}: {error}", path.display())
            }
            TlsError::NoCertificate { path } => {
                write!(f, "no certificate found in {}", path.display())
            }
            TlsError::BadCertificate { path, reason } => {
                write!(f, "bad certificate in {}: {reason}", path.display())
            }
            TlsError::NoKey { path } => {
                write!(f, "no private key found in {}", path.display())
            }
            TlsError::BadKey { path, reason } => {
                write!(f, "bad private key in {}: {reason}", path.display())
            }
            TlsError::KeyMismatch { key, cert } => write!(
                f,
                "the private key in {} does not belong to the certificate in {}",
                key.display(),
                cert.display()
            ),
            TlsError::Rejected { cert, key, error } => write!(
                f,
                "certificate {} and key {} rejected: {error}",
                cert.display(),
                key.display()
            ),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::Read { error, .. } => Some(error),
            TlsError::Rejected { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl TlsError {
    /// The file the error is about (for a mismatch, the key file).
    pub fn path(&self) -> &Path {
        match self {
            TlsError::Read { path, .. }
            | TlsError::NoCertificate { path }
            | TlsError::BadCertificate { path, .. }
            | TlsError::NoKey { path }
            | TlsError::BadKey { path, .. } => path,
            TlsError::KeyMismatch { key, .. } => key,
            TlsError::Rejected { key, .. } => key,
        }
    }
}

/// The crypto provider every config is built with: `ring`, named here so
/// that nothing depends on a process-wide default being installed.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads, checks and assembles the certificate chain and key in `files`
/// into a server config (TLS 1.3 and 1.2, no client auth, no resumption).
pub fn load_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = load_chain(&files.cert)?;
    let key = load_key(&files.key)?;
    let provider = provider();

    // The same steps `with_single_cert` takes, one at a time so that each
    // failure names its file.
    let signing_key = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|error| TlsError::BadKey {
            path: files.key.clone(),
            reason: error.to_string(),
        })?;
    match CertifiedKey::new(chain.clone(), signing_key).keys_match() {
        // `Unknown`: the key cannot tell its public half; rustls accepts that.
        Ok(()) | Err(RustlsError::InconsistentKeys(InconsistentKeys::Unknown)) => {}
        Err(RustlsError::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
            return Err(TlsError::KeyMismatch {
                key: files.key.clone(),
                cert: files.cert.clone(),
            });
        }
        // Anything else is the end-entity certificate failing to parse.
        Err(error) => {
            return Err(TlsError::BadCertificate {
                path: files.cert.clone(),
                reason: error.to_string(),
            });
        }
    }

    let rejected = |error| TlsError::Rejected {
        cert: files.cert.clone(),
        key: files.key.clone(),
        error,
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(rejected)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(rejected)?;
    config.send_tls13_tickets = TLS13_TICKETS;
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.max_early_data_size = 0;
    config.send_half_rtt_data = false;
    Ok(Arc::new(config))
}

/// Reads a PEM file, refusing anything larger than [`MAX_PEM_FILE_BYTES`].
fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    let read_error = |error| TlsError::Read {
        path: path.to_path_buf(),
        error,
    };
    let file = fs::File::open(path).map_err(read_error)?;
    let len = file.metadata().map_err(read_error)?.len();
    if len > MAX_PEM_FILE_BYTES {
        return Err(read_error(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {MAX_PEM_FILE_BYTES} bytes"),
        )));
    }
    let mut bytes = Vec::with_capacity(len as usize);
    io::Read::read_to_end(&mut io::Read::take(file, MAX_PEM_FILE_BYTES), &mut bytes)
        .map_err(read_error)?;
    Ok(bytes)
}

/// Every certificate in the PEM file at `path`, in file order.
fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_file(path)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|error| TlsError::BadCertificate {
            path: path.to_path_buf(),
            reason: error.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(chain)
}

/// The first private key in the PEM file at `path`.
fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_file(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|error| match error {
        pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_path_buf(),
        },
        error => TlsError::BadKey {
            path: path.to_path_buf(),
            reason: error.to_string(),
        },
    })
}

/// The server's TLS config with the files it came from, so SIGHUP can load
/// them again. New connections take [`Reloadable::current`]; connections
/// already open keep the config they started with (their `Arc`), so a
/// reload never disturbs them.
#[derive(Debug, Clone)]
pub struct Reloadable {
    files: TlsFiles,
    config: Arc<ServerConfig>,
}

impl Reloadable {
    /// Loads `files` for the first time; an error here should stop the
    /// server (exit status 2).
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let config = load_config(&files)?;
        Ok(Reloadable { files, config })
    }

    /// Loads the files again and swaps the new config in. If they are bad,
    /// the old config stays and the error (naming the file) is returned for
    /// the log.
    pub fn reload(&mut self) -> Result<(), TlsError> {
        self.config = load_config(&self.files)?;
        Ok(())
    }

    /// The config for the next connection accepted.
    pub fn current(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.config)
    }

    /// The files this config is loaded from.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }
}
