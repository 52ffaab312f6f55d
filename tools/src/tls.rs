//! The tools' TLS side: a rustls client configuration, and the throwaway
//! certificate the suite gives the chatd it starts.
//!
//! The client is configured like the server (`src/tls.rs`): the `ring`
//! provider named explicitly, TLS 1.3 and 1.2. Resumption is off, so every
//! connect is a full handshake and a connect-rate figure is a handshake
//! figure (chatd sends no tickets and keeps no session cache anyway).
//!
//! Without `--ca FILE` the client accepts any certificate and any handshake
//! signature ([`AcceptAnyServerCert`]): chatload measures a server, it does
//! not authenticate it, and the suite's certificate is made up on the spot.
//! That also keeps the signature check's CPU out of the load generator,
//! which shares the machine with the server it measures. With `--ca FILE`
//! the server is verified ([`CaFileVerifier`]): a certificate that is one of
//! the file's is trusted as it is (a self-signed certificate, such as the
//! README's `openssl req -x509` one, which WebPKI refuses to see used as its
//! own root), any other must chain to one of them and carry the name
//! `--server-name` (default `localhost`); the handshake signature is checked
//! either way.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The name the suite's certificate is issued for, and the default SNI.
pub const TEST_NAME: &str = "localhost";

/// The crypto provider the tools use, the same as chatd's.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Where and how the clients speak TLS: the shared configuration and the
/// name sent as SNI (and checked with `--ca`).
#[derive(Debug, Clone)]
pub struct TlsClient {
    /// rustls's client configuration, shared by every connection.
    pub config: Arc<ClientConfig>,
    /// The server name each connection is made for.
    pub name: ServerName<'static>,
}

impl TlsClient {
    /// A client that verifies against the certificates in `ca` (PEM), or,
    /// without it, accepts any certificate (test-only, see the module docs).
    pub fn new(ca: Option<&Path>, server_name: &str) -> Result<TlsClient, String> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS client configuration: {e}"))?;
        let mut config = match ca {
            Some(path) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(CaFileVerifier::load(path)?))
                .with_no_client_auth(),
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert::new()))
                .with_no_client_auth(),
        };
        config.resumption = Resumption::disabled();
        let name = ServerName::try_from(server_name.to_string())
            .map_err(|e| format!("bad server name {server_name:?}: {e}"))?;
        Ok(TlsClient {
            config: Arc::new(config),
            name,
        })
    }
}

/// `--ca FILE`: trusts the certificates in a PEM file, either as the very
/// certificate the server presents (pinned, for self-signed ones) or as
/// roots a WebPKI chain ends at (the server name checked then). The
/// handshake signature is always checked against the presented certificate.
#[derive(Debug)]
pub struct CaFileVerifier {
    pinned: Vec<CertificateDer<'static>>,
    webpki: Arc<WebPkiServerVerifier>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl CaFileVerifier {
    /// Reads the certificates of `path`.
    pub fn load(path: &Path) -> Result<CaFileVerifier, String> {
        let bad = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
        let pinned = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(&e))?;
        if pinned.is_empty() {
            return Err(format!("no certificate found in {}", path.display()));
        }
        let mut roots = RootCertStore::empty();
        // A certificate WebPKI cannot use as a root may still be pinned.
        let (_added, _ignored) = roots.add_parsable_certificates(pinned.iter().cloned());
        let provider = provider();
        let algorithms = provider.signature_verification_algorithms;
        let webpki = if roots.is_empty() {
            None
        } else {
            Some(
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| bad(&e))?,
            )
        };
        let webpki = match webpki {
            Some(v) => v,
            None => return Err(bad(&"no usable certificate")),
        };
        Ok(CaFileVerifier {
            pinned,
            webpki,
            algorithms,
        })
    }
}

impl ServerCertVerifier for CaFileVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|p| p.as_ref() == end_entity.as_ref())
        {
            return Ok(ServerCertVerified::assertion());
        }
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// TEST ONLY: a certificate verifier that accepts every certificate (the
/// handshake's signatures are still checked against it), so chatload can
/// load a server with a
/// self-signed certificate without being given it. A client configured with
/// it is open to anyone in the middle; it exists for load runs on loopback
/// and nothing else.
#[derive(Debug)]
pub struct AcceptAnyServerCert {
    /// Whose signature algorithms check the handshake's signatures.
    provider: Arc<CryptoProvider>,
}

impl AcceptAnyServerCert {
    /// Accepts any certificate; checks signatures with [`provider`].
    pub fn new() -> Self {
        AcceptAnyServerCert::with_provider(provider())
    }

    /// The same, checking signatures with `provider`'s algorithms (the
    /// server's tests pass the provider of the client config it goes in).
    pub fn with_provider(provider: Arc<CryptoProvider>) -> Self {
        AcceptAnyServerCert { provider }
    }
}

impl Default for AcceptAnyServerCert {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A self-signed ECDSA P-256 certificate for [`TEST_NAME`] and its key,
/// written as PEM into a fresh temporary directory that goes away with the
/// value (chatd reads both at start, and again only on SIGHUP).
#[derive(Debug)]
pub struct TestCert {
    dir: PathBuf,
    /// The certificate (PEM); also usable as `--ca`.
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key: PathBuf,
}

impl TestCert {
    /// Generates the pair and writes it out.
    pub fn generate() -> Result<TestCert, String> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| format!("cannot generate a key: {e}"))?;
        let cert = rcgen::CertificateParams::new(vec![TEST_NAME.to_string()])
            .and_then(|p| p.self_signed(&key))
            .map_err(|e| format!("cannot make a certificate: {e}"))?;
        let dir = unique_temp_dir("chatload-tls")?;
        let pair = TestCert {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            dir,
        };
        std::fs::write(&pair.cert, cert.pem())
            .and_then(|()| std::fs::write(&pair.key, key.serialize_pem()))
            .map_err(|e| format!("cannot write into {}: {e}", pair.dir.display()))?;
        Ok(pair)
    }

    /// The flags that make chatd listen for TLS on a free loopback port
    /// with this pair.
    pub fn chatd_flags(&self) -> Vec<String> {
        vec![
            "--tls-listen".into(),
            "127.0.0.1:0".into(),
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
        ]
    }
}

impl Drop for TestCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// For tests: a CA, a certificate for [`TEST_NAME`] it signed, and that
/// certificate's key, as PEM files in a temporary directory (removed on
/// drop), to check `--ca` on a chain rather than a pinned certificate.
#[cfg(test)]
#[derive(Debug)]
pub struct TestChain {
    dir: PathBuf,
    /// The CA's certificate, for `--ca`.
    pub ca: PathBuf,
    /// The server's certificate, signed by the CA.
    pub cert: PathBuf,
    /// The server's key.
    pub key: PathBuf,
}

#[cfg(test)]
impl TestChain {
    /// Generates the three and writes them out.
    pub fn generate() -> TestChain {
        let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
        let ca_key = rcgen::KeyPair::generate_for(alg).expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA");
        let key = rcgen::KeyPair::generate_for(alg).expect("key");
        let cert = rcgen::CertificateParams::new(vec![TEST_NAME.to_string()])
            .and_then(|p| p.signed_by(&key, &ca))
            .expect("leaf");
        let dir = unique_temp_dir("chatload-tls-chain").expect("temp dir");
        let chain = TestChain {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            dir,
        };
        std::fs::write(&chain.ca, ca.pem()).expect("write");
        std::fs::write(&chain.cert, cert.pem()).expect("write");
        std::fs::write(&chain.key, key.serialize_pem()).expect("write");
        chain
    }
}

#[cfg(test)]
impl Drop for TestChain {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A new, empty, private directory under the system's temp dir.
fn unique_temp_dir(prefix: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    for attempt in 0..100u32 {
        let dir = base.join(format!(
            "{prefix}-{}-{nanos:x}-{attempt}",
            std::process::id()
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
        }
    }
    Err(format!("cannot create a directory in {}", base.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_cert_is_written_and_removed() {
        let pair = TestCert::generate().expect("generates");
        let cert = std::fs::read_to_string(&pair.cert).expect("cert written");
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(
            std::fs::read_to_string(&pair.key)
                .expect("key written")
                .contains("PRIVATE KEY")
        );
        let flags = pair.chatd_flags();
        assert_eq!(flags[0], "--tls-listen");
        // Usable as --ca: the certificate is its own root.
        TlsClient::new(Some(&pair.cert), TEST_NAME).expect("a CA file");
        let dir = pair.dir.clone();
        drop(pair);
        assert!(!dir.exists());
    }

    #[test]
    fn bad_ca_and_name_are_refused() {
        assert!(TlsClient::new(Some(Path::new("/nonexistent/ca.pem")), TEST_NAME).is_err());
        assert!(TlsClient::new(None, "").is_err());
        assert!(TlsClient::new(None, TEST_NAME).is_ok());
    }
}
