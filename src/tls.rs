//! TLS for the link between client and relay: the relay's certificate (loaded from PEM files,
//! or created self-signed and kept in the relay's data directory), the client's pin of it
//! (CA-verified, or the SHA-256 of the certificate seen at first contact), the certificate
//! verifiers that enforce that pin, the rustls configurations of both sides, and the rule for
//! which relay URLs may go without TLS.
//!
//! Owns the certificate and key files and every rustls configuration, always built on ring's
//! provider (passed explicitly, so nothing depends on a process-wide default). Must not open
//! sockets, touch a database, or log or print a private key.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore, ServerConfig,
    SignatureScheme,
};
use sha2::{Digest, Sha256};

/// The SHA-256 of a certificate's DER encoding: what a client pins.
pub type Fingerprint = [u8; 32];

/// The file a relay keeps its self-signed certificate in, under its data directory.
pub const CERT_FILE: &str = "tls-cert.pem";
/// The file beside it with the certificate's private key (mode 0600).
pub const KEY_FILE: &str = "tls-key.pem";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "{url:?} is not a relay URL ({reason}); use wss://HOST:PORT (or ws://127.0.0.1:PORT for a relay on this machine)"
    )]
    BadUrl { url: String, reason: String },
    #[error(
        "refusing plain ws:// to {host}, which is not this machine: messages, handles and tokens would cross the network unencrypted. Use the relay's wss:// URL; only if a TLS tunnel or proxy protects the connection, pass --insecure-transport (or set insecure_transport = true in the config)"
    )]
    Insecure { host: String },
    #[error("cannot read {path}: {reason}; pass a PEM file (--tls-cert, --tls-key)")]
    Pem { path: String, reason: String },
    #[error("{path} holds no certificate; it must contain a PEM \"CERTIFICATE\" block")]
    NoCertificate { path: String },
    #[error(
        "only one of {present} and {missing} exists; restore the missing file, or remove both to create a new certificate (clients that pinned the old one will then refuse the relay until they pin the new one)"
    )]
    HalfPair { present: String, missing: String },
    #[error("cannot write the relay's certificate to {path}: {cause}")]
    Write {
        path: String,
        // Shown in the message, so not a `source` too (see `private::PrivateError`).
        cause: std::io::Error,
    },
    /// Shown in the message, so not a `source` too (see `private::PrivateError`).
    #[error("cannot create a certificate for the relay: {0}")]
    Generate(rcgen::Error),
    #[error(
        "the relay's certificate and key cannot be used ({0}); check that the key belongs to the certificate"
    )]
    Config(rustls::Error),
    #[error("the profile's pinned relay certificate is unreadable ({0}); the profile is damaged")]
    BadPin(String),
}

/// ring, the one crypto provider sotto's TLS uses (no aws-lc, no OpenSSL).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The SHA-256 of `der`.
pub fn fingerprint(der: &[u8]) -> Fingerprint {
    Sha256::digest(der).into()
}

/// A fingerprint as `openssl x509 -fingerprint -sha256` prints it: `AB:CD:…`.
pub fn show(fp: &Fingerprint) -> String {
    let hex: Vec<String> = fp.iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

/// Reads a fingerprint in the form `show` writes (colons and case optional).
pub fn parse_fingerprint(s: &str) -> Option<Fingerprint> {
    let hex: String = s.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut fp = [0u8; 32];
    for (i, b) in fp.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(fp)
}

/// A relay's TLS identity: its certificate chain and private key.
pub struct RelayCert {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// SHA-256 of the end-entity certificate, what clients pin.
    pub fingerprint: Fingerprint,
}

impl std::fmt::Debug for RelayCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("RelayCert")
            .field("fingerprint", &show(&self.fingerprint))
            .field("chain", &self.chain.len())
            .finish()
    }
}

impl RelayCert {
    /// Reads a certificate chain (end entity first) and its private key from PEM files, e.g.
    /// ones a certificate authority issued.
    pub fn load(cert: &Path, key: &Path) -> Result<RelayCert, TlsError> {
        let pem_err = |path: &Path, e: rustls::pki_types::pem::Error| TlsError::Pem {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| pem_err(cert, e))?;
        let first = chain.first().ok_or_else(|| TlsError::NoCertificate {
            path: cert.display().to_string(),
        })?;
        let fingerprint = fingerprint(first);
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_err(key, e))?;
        Ok(RelayCert {
            chain,
            key,
            fingerprint,
        })
    }

    /// The relay's own certificate in `data_dir`: read if it is there, else created
    /// self-signed for `localhost`, `127.0.0.1`, `::1` and the host of `listen` (an address
    /// like `0.0.0.0:7878` or `relay.example:7878`) and written there, the key with mode
    /// 0600. Later starts reuse it, so pinned clients keep trusting the relay.
    pub fn load_or_create(data_dir: &Path, listen: &str) -> Result<RelayCert, TlsError> {
        let (cert, key) = (data_dir.join(CERT_FILE), data_dir.join(KEY_FILE));
        match (cert.exists(), key.exists()) {
            (true, true) => return RelayCert::load(&cert, &key),
            (true, false) => return Err(half_pair(&cert, &key)),
            (false, true) => return Err(half_pair(&key, &cert)),
            (false, false) => {}
        }
        create_private_dir(data_dir).map_err(|cause| TlsError::Write {
            path: data_dir.display().to_string(),
            cause,
        })?;
        let mut names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "::1".to_string(),
        ];
        if let Some(host) = listen_host(listen)
            && !names.contains(&host)
        {
            names.push(host);
        }
        let pair = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(names)?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "sotto relay");
        let made = params.self_signed(&pair)?;
        // Both files are written under temporary names first, so a crash leaves either
        // nothing or (in the moment between the two renames) a pair `load` reports.
        let key_tmp = write_temp(data_dir, pair.serialize_pem().as_bytes())?;
        let cert_tmp = write_temp(data_dir, made.pem().as_bytes())?;
        persist(key_tmp, &key)?;
        persist(cert_tmp, &cert)?;
        tracing::info!(fingerprint = %show(&fingerprint(made.der())), "created a self-signed relay certificate");
        RelayCert::load(&cert, &key)
    }

    /// The rustls configuration of a relay serving this certificate.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(TlsError::Config)?;
        Ok(Arc::new(config))
    }
}

fn half_pair(present: &Path, missing: &Path) -> TlsError {
    TlsError::HalfPair {
        present: present.display().to_string(),
        missing: missing.display().to_string(),
    }
}

/// The host part of a listen address, unless it is a wildcard (`0.0.0.0`, `::`).
fn listen_host(listen: &str) -> Option<String> {
    let host = match listen.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => listen,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<IpAddr>() {
        Ok(ip) if ip.is_unspecified() => None,
        Ok(ip) => Some(ip.to_string()),
        Err(_) if host.is_empty() => None,
        Err(_) => Some(host.to_string()),
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

fn write_temp(dir: &Path, bytes: &[u8]) -> Result<tempfile::NamedTempFile, TlsError> {
    use std::io::Write as _;
    let write_err = |cause| TlsError::Write {
        path: dir.display().to_string(),
        cause,
    };
    // tempfile creates the file with mode 0600.
    let mut f = tempfile::NamedTempFile::new_in(dir).map_err(write_err)?;
    f.write_all(bytes).map_err(write_err)?;
    f.as_file().sync_all().map_err(write_err)?;
    Ok(f)
}

impl From<rcgen::Error> for TlsError {
    fn from(e: rcgen::Error) -> TlsError {
        TlsError::Generate(e)
    }
}

fn persist(tmp: tempfile::NamedTempFile, to: &PathBuf) -> Result<(), TlsError> {
    tmp.persist_noclobber(to).map_err(|e| TlsError::Write {
        path: to.display().to_string(),
        cause: e.error,
    })?;
    Ok(())
}

/// How a profile trusts its relay's TLS certificate; decided at `sotto init`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pin {
    /// The relay's chain verified against the web PKI roots for its host name at first
    /// contact: every later connection is verified the same way.
    Ca,
    /// It did not (self-signed): the SHA-256 of the end-entity certificate seen at first
    /// contact, the only certificate accepted from then on.
    Certificate(Fingerprint),
}

impl Pin {
    /// The form kept in the profile: `ca` or `sha256:` and 64 hex digits.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Pin::Ca => b"ca".to_vec(),
            Pin::Certificate(fp) => {
                let hex: String = fp.iter().map(|b| format!("{b:02x}")).collect();
                format!("sha256:{hex}").into_bytes()
            }
        }
    }

    pub fn decode(raw: &[u8]) -> Result<Pin, TlsError> {
        let text = std::str::from_utf8(raw).map_err(|e| TlsError::BadPin(e.to_string()))?;
        if text == "ca" {
            return Ok(Pin::Ca);
        }
        text.strip_prefix("sha256:")
            .and_then(parse_fingerprint)
            .map(Pin::Certificate)
            .ok_or_else(|| TlsError::BadPin(format!("{text:?}")))
    }

    /// For `sotto info` and `sotto init`.
    pub fn describe(&self) -> String {
        match self {
            Pin::Ca => "verified by a certificate authority (checked on every connection)".into(),
            Pin::Certificate(fp) => format!("pinned, SHA-256 {}", show(fp)),
        }
    }
}

/// A pinned relay presented another certificate. Its text is what the user reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the relay's TLS certificate changed: pinned {}, offered {}; refusing to connect. If the operator replaced it on purpose, compare the offered fingerprint with the one the relay prints when it starts, then run `sotto pin-cert {}`; otherwise someone may be intercepting the connection",
    show(.pinned), show(.offered), show(.offered)
)]
pub struct CertificateChanged {
    pub pinned: Fingerprint,
    pub offered: Fingerprint,
}

impl CertificateChanged {
    /// Finds this error inside a connection error (rustls wraps it in an `io::Error`).
    pub fn find(mut e: &(dyn std::error::Error + 'static)) -> Option<CertificateChanged> {
        loop {
            if let Some(io) = e.downcast_ref::<std::io::Error>()
                && let Some(inner) = io.get_ref()
            {
                e = inner;
                continue;
            }
            if let Some(rustls::Error::InvalidCertificate(CertificateError::Other(other))) =
                e.downcast_ref::<rustls::Error>()
            {
                return other.0.downcast_ref::<CertificateChanged>().copied();
            }
            if let Some(c) = e.downcast_ref::<CertificateChanged>() {
                return Some(*c);
            }
            e = e.source()?;
        }
    }
}

/// The two kinds of relay URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `wss://`: WebSocket over TLS.
    Wss,
    /// `ws://`: plain WebSocket.
    Ws,
}

/// Checks a relay URL before any connection is attempted: `wss://`, or plain `ws://` only to
/// this machine (`localhost`, `127.0.0.0/8`, `::1`) unless `insecure_transport`.
pub fn check_url(url: &str, insecure_transport: bool) -> Result<Scheme, TlsError> {
    let bad = |reason: &str| TlsError::BadUrl {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let uri: tokio_tungstenite::tungstenite::http::Uri =
        url.parse().map_err(|e| bad(&format!("{e}")))?;
    let host = uri
        .host()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("it names no host"))?;
    match uri.scheme_str() {
        Some("wss") => Ok(Scheme::Wss),
        Some("ws") => {
            if insecure_transport || is_loopback(host) {
                Ok(Scheme::Ws)
            } else {
                Err(TlsError::Insecure {
                    host: host.to_string(),
                })
            }
        }
        _ => Err(bad("it must start with wss:// or ws://")),
    }
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Where a relay is and how to trust it: all a client needs to open a connection.
#[derive(Clone)]
pub struct Endpoint {
    url: String,
    /// None for `ws://`.
    tls: Option<Arc<ClientConfig>>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.url)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Endpoint {
    /// The relay at `url`, trusted as `pin` says: a pinned certificate is compared with what
    /// the relay presents; `Ca` or no pin means the usual verification against the web PKI
    /// roots for the URL's host. Refuses `ws://` off this machine unless
    /// `insecure_transport`.
    pub fn new(
        url: &str,
        pin: Option<Pin>,
        insecure_transport: bool,
    ) -> Result<Endpoint, TlsError> {
        let config = match (check_url(url, insecure_transport)?, pin) {
            (Scheme::Ws, _) => None,
            (Scheme::Wss, Some(Pin::Certificate(pinned))) => {
                Some(client_config(Arc::new(PinnedCert::new(pinned)))?)
            }
            (Scheme::Wss, Some(Pin::Ca) | None) => Some(client_config(web_pki()?)?),
        };
        Ok(Endpoint {
            url: url.to_string(),
            tls: config,
        })
    }

    /// The relay at `url` met for the first time (`sotto init`): whatever certificate it
    /// presents is accepted, and `FirstContact` says how to trust it from now on.
    pub fn first_contact(
        url: &str,
        insecure_transport: bool,
    ) -> Result<(Endpoint, FirstContact), TlsError> {
        let scheme = check_url(url, insecure_transport)?;
        let seen = FirstContact::default();
        let config = if scheme == Scheme::Wss {
            Some(client_config(Arc::new(TrustOnFirstUse {
                web_pki: web_pki()?,
                seen: seen.clone(),
            }))?)
        } else {
            None
        };
        Ok((
            Endpoint {
                url: url.to_string(),
                tls: config,
            },
            seen,
        ))
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The rustls configuration for a `wss://` URL; None for `ws://`.
    pub fn tls_config(&self) -> Option<Arc<ClientConfig>> {
        self.tls.clone()
    }
}

/// What a first contact saw: filled in during the TLS handshake.
#[derive(Clone, Default, Debug)]
pub struct FirstContact(Arc<Mutex<Option<Seen>>>);

/// How the relay's certificate looked at first contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub pin: Pin,
    /// Why the chain did not verify against the web PKI roots, if it did not.
    pub not_ca: Option<String>,
}

impl FirstContact {
    /// The pin to keep, once a handshake happened (None for `ws://`).
    pub fn seen(&self) -> Option<Seen> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn record(&self, seen: Seen) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(seen);
    }
}

fn client_config(verifier: Arc<dyn ServerCertVerifier>) -> Result<Arc<ClientConfig>, TlsError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn web_pki() -> Result<Arc<WebPkiServerVerifier>, TlsError> {
    let roots = RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))
}

fn algorithms() -> WebPkiSupportedAlgorithms {
    provider().signature_verification_algorithms
}

/// Accepts exactly the pinned end-entity certificate, whatever name or dates it carries;
/// the handshake's signatures are still checked against that certificate's key, so the peer
/// must hold the pinned certificate's private key.
#[derive(Debug)]
struct PinnedCert {
    pinned: Fingerprint,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedCert {
    fn new(pinned: Fingerprint) -> PinnedCert {
        PinnedCert {
            pinned,
            algorithms: algorithms(),
        }
    }
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let offered = fingerprint(end_entity);
        if offered == self.pinned {
            return Ok(ServerCertVerified::assertion());
        }
        tracing::warn!(pinned = %show(&self.pinned), offered = %show(&offered), "relay certificate differs from the pin");
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(
            OtherError(Arc::new(CertificateChanged {
                pinned: self.pinned,
                offered,
            })),
        )))
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

/// First contact: a chain that verifies against the web PKI roots for the host is recorded
/// as CA-verified; any other certificate is accepted and its fingerprint recorded, to be
/// pinned (trust on first use, as the relay's trust root is).
#[derive(Debug)]
struct TrustOnFirstUse {
    web_pki: Arc<WebPkiServerVerifier>,
    seen: FirstContact,
}

impl ServerCertVerifier for TrustOnFirstUse {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen = match self.web_pki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Ok(_) => Seen {
                pin: Pin::Ca,
                not_ca: None,
            },
            Err(e) => Seen {
                pin: Pin::Certificate(fingerprint(end_entity)),
                not_ca: Some(e.to_string()),
            },
        };
        self.seen.record(seen);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.web_pki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.web_pki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.web_pki.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_ws_is_for_this_machine_unless_opted_in() {
        for url in [
            "ws://127.0.0.1:7878",
            "ws://localhost:7878",
            "ws://[::1]:7878",
            "ws://127.1.2.3:1",
        ] {
            assert_eq!(check_url(url, false).unwrap(), Scheme::Ws, "{url}");
        }
        for url in [
            "ws://192.0.2.1:7878",
            "ws://relay.example:7878",
            "ws://[2001:db8::1]:1",
        ] {
            let e = check_url(url, false).unwrap_err();
            assert!(matches!(e, TlsError::Insecure { .. }), "{url}: {e}");
            assert!(e.to_string().contains("--insecure-transport"), "{e}");
            assert_eq!(check_url(url, true).unwrap(), Scheme::Ws, "{url}");
        }
        assert_eq!(
            check_url("wss://relay.example:443", false).unwrap(),
            Scheme::Wss
        );
        for url in ["http://relay.example", "relay.example:7878", "wss://", ""] {
            assert!(
                matches!(check_url(url, true), Err(TlsError::BadUrl { .. })),
                "{url}"
            );
        }
    }

    #[test]
    fn pins_and_fingerprints_round_trip() {
        let fp = fingerprint(b"certificate");
        for pin in [Pin::Ca, Pin::Certificate(fp)] {
            assert_eq!(Pin::decode(&pin.encode()).unwrap(), pin);
        }
        assert!(Pin::decode(b"sha256:00").is_err());
        assert_eq!(parse_fingerprint(&show(&fp)), Some(fp));
        assert_eq!(parse_fingerprint(&show(&fp).to_lowercase()), Some(fp));
        assert_eq!(show(&fp).len(), 95);
    }

    #[test]
    fn listen_hosts_that_name_something_go_into_the_certificate() {
        assert_eq!(listen_host("0.0.0.0:7878"), None);
        assert_eq!(listen_host("[::]:7878"), None);
        assert_eq!(listen_host("192.0.2.7:7878").as_deref(), Some("192.0.2.7"));
        assert_eq!(
            listen_host("[2001:db8::1]:1").as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(
            listen_host("relay.example:443").as_deref(),
            Some("relay.example")
        );
    }

    #[test]
    fn a_relay_certificate_is_created_once_with_a_private_key_file_and_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("relay");
        let first = RelayCert::load_or_create(&dir, "127.0.0.1:0").unwrap();
        let again = RelayCert::load_or_create(&dir, "127.0.0.1:0").unwrap();
        assert_eq!(first.fingerprint, again.fingerprint);
        first.server_config().unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(!format!("{first:?}").contains("PRIVATE"));
        std::fs::remove_file(dir.join(CERT_FILE)).unwrap();
        assert!(matches!(
            RelayCert::load_or_create(&dir, "127.0.0.1:0"),
            Err(TlsError::HalfPair { .. })
        ));
    }
}
