//! Certificates made in the test, for TLS over loopback: a CA, a server certificate for
//! `localhost` and `127.0.0.1`, a worker (client) certificate it signs, and a second CA with its
//! own worker certificate that the first CA never signed. Written as PEM files (keys `chmod 600`)
//! into a folder, as an operator would have them; rustls reads them back on the other side.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

/// The PEM files of a test PKI.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub worker_cert: PathBuf,
    pub worker_key: PathBuf,
    /// A worker certificate signed by another CA: refused under mTLS.
    pub rogue_cert: PathBuf,
    pub rogue_key: PathBuf,
}

fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

fn leaf(issuer: &Issuer<'_, KeyPair>, names: &[&str], purpose: ExtendedKeyUsagePurpose) -> (String, String) {
    let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    params.extended_key_usages = vec![purpose];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn write(path: &Path, text: &str, private: bool) {
    std::fs::write(path, text).unwrap();
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

impl Pki {
    /// Makes the certificates and writes them into `dir`.
    pub fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        let (ca_pem, issuer) = ca("weir test CA");
        let (server, server_key) = leaf(&issuer, &["localhost", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
        let (worker, worker_key) = leaf(&issuer, &["worker-1"], ExtendedKeyUsagePurpose::ClientAuth);
        let (_, rogue_issuer) = ca("someone else's CA");
        let (rogue, rogue_key) = leaf(&rogue_issuer, &["worker-rogue"], ExtendedKeyUsagePurpose::ClientAuth);
        let pki = Pki {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            worker_cert: dir.join("worker.pem"),
            worker_key: dir.join("worker.key"),
            rogue_cert: dir.join("rogue.pem"),
            rogue_key: dir.join("rogue.key"),
        };
        write(&pki.ca, &ca_pem, false);
        write(&pki.server_cert, &server, false);
        write(&pki.server_key, &server_key, true);
        write(&pki.worker_cert, &worker, false);
        write(&pki.worker_key, &worker_key, true);
        write(&pki.rogue_cert, &rogue, false);
        write(&pki.rogue_key, &rogue_key, true);
        pki
    }

    /// `weir server`'s TLS flags; with the worker CA (`--client-ca`) when `mtls`.
    pub fn server_args(&self, mtls: bool) -> Vec<String> {
        let mut args = vec![
            "--tls-cert".to_string(),
            self.server_cert.display().to_string(),
            "--tls-key".to_string(),
            self.server_key.display().to_string(),
        ];
        if mtls {
            args.extend(["--client-ca".to_string(), self.ca.display().to_string()]);
        }
        args
    }
}
