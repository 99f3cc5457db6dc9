//! The server's PKI and client configuration: on first start a CA and a serving certificate
//! (rcgen), kept under `DATA_DIR/pki/`; the serving certificate is re-issued when the set of
//! names it must cover changes. [`write_kubeconfig`] writes a kubeconfig kubectl uses as is.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

const CA_CN: &str = "dualstack-ca";

/// Paths of the PKI files.
#[derive(Debug, Clone)]
pub struct Pki {
    /// CA certificate (PEM).
    pub ca_cert: PathBuf,
    ca_key: PathBuf,
    /// Serving certificate (PEM).
    pub server_cert: PathBuf,
    server_key: PathBuf,
    server_sans: PathBuf,
}

impl Pki {
    /// The PKI under `data_dir/pki`.
    pub fn new(data_dir: &Path) -> Self {
        let d = data_dir.join("pki");
        Self {
            ca_cert: d.join("ca.crt"),
            ca_key: d.join("ca.key"),
            server_cert: d.join("apiserver.crt"),
            server_key: d.join("apiserver.key"),
            server_sans: d.join("apiserver.sans"),
        }
    }

    /// Creates the CA if missing, and (re)issues the serving certificate when it does not cover
    /// `sans` (localhost, 127.0.0.1, ::1, the bind and advertise addresses are always added).
    pub fn ensure(&self, extra: &[IpAddr], extra_names: &[String]) -> Result<()> {
        let dir = self.ca_cert.parent().expect("pki dir");
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        if !self.ca_cert.exists() || !self.ca_key.exists() {
            let key = KeyPair::generate().context("generating CA key")?;
            let cert = ca_params().self_signed(&key).context("self-signing CA")?;
            write_private(&self.ca_key, key.serialize_pem().as_bytes())?;
            std::fs::write(&self.ca_cert, cert.pem())?;
            let _ = std::fs::remove_file(&self.server_sans);
        }
        let mut sans: Vec<String> = vec![
            "localhost".into(),
            "kubernetes".into(),
            "kubernetes.default".into(),
            "kubernetes.default.svc".into(),
            "127.0.0.1".into(),
            "::1".into(),
        ];
        for ip in extra {
            if !ip.is_unspecified() {
                sans.push(ip.to_string());
            }
        }
        sans.extend(extra_names.iter().cloned());
        sans.sort();
        sans.dedup();
        let want = sans.join("\n");
        let have = std::fs::read_to_string(&self.server_sans).unwrap_or_default();
        if have == want && self.server_cert.exists() && self.server_key.exists() {
            return Ok(());
        }
        let ca_key =
            KeyPair::from_pem(&std::fs::read_to_string(&self.ca_key)?).context("reading CA key")?;
        let issuer = Issuer::new(ca_params(), ca_key);
        let key = KeyPair::generate().context("generating serving key")?;
        let mut params = CertificateParams::new(sans).context("serving certificate names")?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "kube-apiserver");
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2124, 1, 1);
        let cert = params
            .signed_by(&key, &issuer)
            .context("signing serving certificate")?;
        write_private(&self.server_key, key.serialize_pem().as_bytes())?;
        std::fs::write(&self.server_cert, cert.pem())?;
        std::fs::write(&self.server_sans, want)?;
        Ok(())
    }

    /// A rustls server configuration (ring provider) offering HTTP/2 and HTTP/1.1.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.server_cert)
            .context("reading serving certificate")?
            .collect::<Result<_, _>>()?;
        let key = PrivateKeyDer::from_pem_file(&self.server_key).context("reading serving key")?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> Result<String> {
        Ok(std::fs::read_to_string(&self.ca_cert)?)
    }
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_CN);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    params
}

/// Writes a file readable only by its owner.
pub fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let tmp = path.with_extension("tmp");
    let mut f = opts
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// The URL clients use to reach a server listening on `addr:port`.
pub fn server_url(addr: IpAddr, port: u16) -> String {
    let host = if addr.is_unspecified() {
        match addr {
            IpAddr::V4(_) => "127.0.0.1".to_string(),
            IpAddr::V6(_) => "[::1]".to_string(),
        }
    } else if addr.is_ipv6() {
        format!("[{addr}]")
    } else {
        addr.to_string()
    };
    format!("https://{host}:{port}")
}

/// Writes a kubeconfig with the server URL, the CA and a bearer token (mode 0600).
pub fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca_pem: &str,
    user: &str,
    token: &str,
) -> Result<()> {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: dualstack\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: dualstack\n  context:\n    cluster: dualstack\n    user: {user}\n    namespace: default\ncurrent-context: dualstack\npreferences: {{}}\n"
    );
    write_private(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pki_is_created_once_and_reissued_when_names_change() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path());
        pki.ensure(&[], &[]).unwrap();
        let ca1 = std::fs::read(&pki.ca_cert).unwrap();
        let srv1 = std::fs::read(&pki.server_cert).unwrap();
        pki.ensure(&[], &[]).unwrap();
        assert_eq!(
            std::fs::read(&pki.server_cert).unwrap(),
            srv1,
            "unchanged names keep the certificate"
        );
        pki.ensure(&["10.1.2.3".parse().unwrap()], &[]).unwrap();
        assert_ne!(
            std::fs::read(&pki.server_cert).unwrap(),
            srv1,
            "a new address re-issues"
        );
        assert_eq!(std::fs::read(&pki.ca_cert).unwrap(), ca1, "the CA is kept");
        pki.server_config().unwrap();
    }

    #[test]
    fn server_urls_bracket_ipv6_and_replace_unspecified() {
        assert_eq!(
            server_url("0.0.0.0".parse().unwrap(), 6443),
            "https://127.0.0.1:6443"
        );
        assert_eq!(server_url("::".parse().unwrap(), 1), "https://[::1]:1");
        assert_eq!(
            server_url("fd00::1".parse().unwrap(), 2),
            "https://[fd00::1]:2"
        );
    }
}
