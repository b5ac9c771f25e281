//! TLS on the wire, as both ends of a call see it: PEM certificate and key files read and
//! checked with errors that name the file and what was expected (never a key's bytes), and the
//! client side (`weir` commands, `weir-worker`): an `https://` URL verified against the system's
//! roots or a `--ca` file, with a client certificate for servers that ask for one (mTLS). rustls
//! with ring through tonic; no OpenSSL. The server's acceptor is the engine's (`weir_engine::tls`).

use std::path::{Path, PathBuf};

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// A PEM file bigger than this is refused before it is read whole (a chain is a few KiB).
const MAX_PEM_BYTES: u64 = 1 << 20;

/// Why a certificate or key file cannot be used; names the file and the flag that gave it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{flag} {}: cannot read it: {source}", path.display())]
    Read { flag: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{flag} {}: {what}", path.display())]
    Invalid { flag: &'static str, path: PathBuf, what: String },
    #[error("{0}")]
    Usage(String),
}

fn read_pem(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|source| TlsError::Read { flag, path: path.into(), source })?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1).read_to_end(&mut bytes).map_err(|source| TlsError::Read {
        flag,
        path: path.into(),
        source,
    })?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(TlsError::Invalid { flag, path: path.into(), what: "larger than 1 MiB: not a PEM file".into() });
    }
    Ok(bytes)
}

/// The certificates of the PEM file `path` (`flag` names it in errors): at least one
/// `-----BEGIN CERTIFICATE-----` block, each well formed.
pub fn read_certs(flag: &'static str, path: &Path) -> Result<(Vec<u8>, Vec<CertificateDer<'static>>), TlsError> {
    let bytes = read_pem(flag, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes).collect::<Result<Vec<_>, _>>().map_err(|e| {
        TlsError::Invalid { flag, path: path.into(), what: format!("not a PEM certificate file ({e})") }
    })?;
    if certs.is_empty() {
        return Err(TlsError::Invalid {
            flag,
            path: path.into(),
            what: "holds no certificate: expected PEM blocks `-----BEGIN CERTIFICATE-----`".into(),
        });
    }
    Ok((bytes, certs))
}

/// The private key of the PEM file `path`: PKCS#8, PKCS#1 (RSA) or SEC1 (EC). Warns when group
/// or others can read it.
pub fn read_key(flag: &'static str, path: &Path) -> Result<(Vec<u8>, PrivateKeyDer<'static>), TlsError> {
    let bytes = read_pem(flag, path)?;
    let key = PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Invalid {
        flag,
        path: path.into(),
        what: format!(
            "holds no private key ({e}): expected a PEM block `-----BEGIN PRIVATE KEY-----` (or RSA/EC PRIVATE KEY)"
        ),
    })?;
    if let Some(mode) = crate::auth::loose_mode(path) {
        tracing::warn!(
            file = %path.display(),
            mode = format!("{mode:o}"),
            "the private key file can be read by group or others: `chmod 600` it"
        );
    }
    Ok((bytes, key))
}

/// rustls over ring, the provider tonic's `tls-ring` uses (aws-lc-rs would need a C and cmake
/// build; DEPENDENCIES.md). rustls 0.23.48 deprecated ring's provider for lacking post-quantum key
/// exchange: still supported, and tonic's clients use it too. The engine's acceptor and the
/// worker's direct connection both take it from here.
#[allow(deprecated)]
pub fn ring_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// How a client or worker speaks TLS to the server: the CA to trust (else the system's roots)
/// and a client certificate with its key for mTLS.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientTls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl ClientTls {
    /// Whether any TLS setting is given.
    pub fn is_set(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }

    /// The tonic TLS settings for a server whose URL names `host`, every file read and checked.
    pub fn config(&self) -> Result<ClientTlsConfig, TlsError> {
        let mut config = ClientTlsConfig::new();
        config = match &self.ca {
            Some(ca) => config.ca_certificate(Certificate::from_pem(read_certs("--ca", ca)?.0)),
            None => config.with_native_roots(),
        };
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let (cert, _) = read_certs("--tls-cert", cert)?;
                let (key, _) = read_key("--tls-key", key)?;
                config = config.identity(Identity::from_pem(cert, key));
            }
            (None, None) => {}
            _ => {
                return Err(TlsError::Usage(
                    "--tls-cert and --tls-key go together: give the client certificate and its private key".into(),
                ));
            }
        }
        Ok(config)
    }

    /// The rustls settings for a worker's direct connection ([`crate::direct`]): the same roots
    /// and client certificate as [`ClientTls::config`] (every file read and checked), ring as the
    /// provider, ALPN `h2`.
    pub fn rustls_config(&self) -> Result<std::sync::Arc<rustls::ClientConfig>, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca {
            Some(ca) => {
                for cert in read_certs("--ca", ca)?.1 {
                    roots.add(cert).map_err(|e| TlsError::Invalid {
                        flag: "--ca",
                        path: ca.clone(),
                        what: format!("holds a certificate that cannot be a trust anchor ({e})"),
                    })?;
                }
            }
            // As tonic's `with_native_roots`: what the system has that parses.
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
            }
        }
        let provider = std::sync::Arc::new(ring_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Usage(format!("TLS: {e}")))?
            .with_root_certificates(roots);
        let mut config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let (_, chain) = read_certs("--tls-cert", cert)?;
                let (_, key_der) = read_key("--tls-key", key)?;
                builder.with_client_auth_cert(chain, key_der).map_err(|e| TlsError::Invalid {
                    flag: "--tls-key",
                    path: key.clone(),
                    what: format!("cannot be used with the certificate of --tls-cert ({e})"),
                })?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(TlsError::Usage(
                    "--tls-cert and --tls-key go together: give the client certificate and its private key".into(),
                ));
            }
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(std::sync::Arc::new(config))
    }

    /// An endpoint for `url`: `https://` speaks TLS with these settings, `http://` plain text
    /// (refused when TLS settings are given, which would otherwise be ignored silently).
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, TlsError> {
        match self.parse(url)? {
            (endpoint, true) => endpoint.tls_config(self.config()?).map_err(|e| TlsError::Usage(format!("TLS: {e}"))),
            (endpoint, false) => Ok(endpoint),
        }
    }

    /// Checks `url` as [`ClientTls::endpoint`] does, with its messages, without reading a file;
    /// returns whether it is `https://`.
    pub fn check_url(&self, url: &str) -> Result<bool, TlsError> {
        self.parse(url).map(|(_, https)| https)
    }

    fn parse(&self, url: &str) -> Result<(Endpoint, bool), TlsError> {
        let scheme = url.split_once("://").map(|(s, _)| s);
        let endpoint = Endpoint::from_shared(url.to_string()).map_err(|e| {
            TlsError::Usage(format!("`{url}` is not a URL ({e}); expected like https://weir.internal:7070"))
        })?;
        match scheme {
            Some("https") => Ok((endpoint, true)),
            Some("http") if self.is_set() => Err(TlsError::Usage(format!(
                "`{url}` is a plain-text http:// URL but TLS settings (--ca, --tls-cert, --tls-key) are given: use https://"
            ))),
            Some("http") => Ok((endpoint, false)),
            _ => Err(TlsError::Usage(format!(
                "`{url}` is not an http:// or https:// URL; expected like https://weir.internal:7070"
            ))),
        }
    }
}

/// The error and its causes, one after another, without repeats (a transport failure's reason,
/// a TLS alert say, is only in its sources).
pub fn causes(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// The hint for a connection to `url` that the server closed or refused: a plain-text URL
/// against a TLS server, or TLS against a plain-text one. Empty when neither fits.
pub fn hint(url: &str, error: &str) -> &'static str {
    let e = error.to_ascii_lowercase();
    if url.starts_with("http://")
        && (e.contains("insufficient security")
            || e.contains("h2 protocol error")
            // the GOAWAY may be lost to the close that follows it
            || e.contains("connection closed")
            || e.contains("connection reset")
            || e.contains("broken pipe"))
    {
        "the server may require TLS: use an https:// URL (with --ca FILE when its certificate is not signed by a public CA)"
    } else if url.starts_with("https://") && (e.contains("invalidcontenttype") || e.contains("corrupt message")) {
        "the server speaks plain text, not TLS: use an http:// URL, or start it with --tls-cert and --tls-key"
    } else if e.contains("alert")
        && (e.contains("unknownca") || e.contains("badcertificate") || e.contains("certificaterequired"))
    {
        "the server refused this client's certificate: give one signed by the server's --client-ca (--tls-cert, --tls-key)"
    } else if e.contains("unknownissuer") || e.contains("invalid peer certificate") {
        "the server's certificate is not trusted: pass its CA with --ca FILE"
    } else if e.contains("connection closed") && !url.starts_with("http://") {
        "the server closed the connection: if it requires client certificates (--client-ca), this one is missing or \
         not signed by that CA (the server's log says why)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_as_endpoints_are_without_reading_a_file() {
        let missing = ClientTls { ca: Some("/nonexistent/ca.pem".into()), ..Default::default() };
        assert!(matches!(missing.check_url("https://weir.internal:7070"), Ok(true)));
        assert!(missing.endpoint("https://weir.internal:7070").is_err(), "endpoint reads the --ca file");
        assert!(matches!(ClientTls::default().check_url("http://127.0.0.1:7070"), Ok(false)));
        let plain = missing.check_url("http://127.0.0.1:7070").unwrap_err().to_string();
        assert!(plain.contains("use https://"), "{plain}");
        for bad in ["ftp://host:1", "host:7070", "http://"] {
            let e = ClientTls::default().check_url(bad).unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("expected like https://"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_file_without_a_certificate_is_named_with_what_was_expected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "hello\n").unwrap();
        let e = read_certs("--ca", &path).unwrap_err().to_string();
        assert!(e.starts_with("--ca ") && e.contains("ca.pem") && e.contains("BEGIN CERTIFICATE"), "{e}");
        let e = read_key("--tls-key", &path).unwrap_err().to_string();
        assert!(e.contains("--tls-key") && e.contains("BEGIN PRIVATE KEY"), "{e}");
        let e = read_certs("--ca", &dir.path().join("missing.pem")).unwrap_err().to_string();
        assert!(e.contains("cannot read it"), "{e}");
    }

    #[test]
    fn tls_settings_with_a_plain_text_url_are_refused() {
        let tls = ClientTls { ca: Some("ca.pem".into()), ..Default::default() };
        let e = tls.endpoint("http://127.0.0.1:7070").unwrap_err().to_string();
        assert!(e.contains("use https://"), "{e}");
        assert!(ClientTls::default().endpoint("ftp://x").is_err());
        let half = ClientTls { cert: Some("c.pem".into()), ..Default::default() };
        assert!(half.config().unwrap_err().to_string().contains("go together"));
    }
}
