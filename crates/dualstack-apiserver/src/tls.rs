//! The server's PKI and client configuration: on first start a CA and a serving certificate
//! (rcgen), kept under `DATA_DIR/pki/`; the serving certificate is re-issued when the set of
//! names it must cover changes, and when it has less than [`RENEW_BEFORE`] left (it is valid for
//! one year, as upstream's self-signed serving certificates; the CA for ten).
//! [`write_kubeconfig`] writes a kubeconfig kubectl uses as is.

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

/// How long a serving certificate is valid (upstream: one year).
pub const SERVING_VALIDITY: time::Duration = time::Duration::days(365);
/// How long the CA is valid (kubeadm: ten years).
pub const CA_VALIDITY: time::Duration = time::Duration::days(3650);
/// A serving certificate with less than this left is re-issued at start.
pub const RENEW_BEFORE: time::Duration = time::Duration::days(90);

/// The `notAfter` of the first certificate of a PEM file.
pub fn not_after(pem_path: &Path) -> Result<time::OffsetDateTime> {
    let pem = std::fs::read(pem_path).with_context(|| format!("reading {}", pem_path.display()))?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem)
        .map_err(|e| anyhow::anyhow!("parsing {}: {e}", pem_path.display()))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| anyhow::anyhow!("parsing {}: {e}", pem_path.display()))?;
    Ok(cert.validity().not_after.to_datetime())
}

fn fresh(pem_path: &Path, now: time::OffsetDateTime) -> bool {
    not_after(pem_path).is_ok_and(|t| t - now > RENEW_BEFORE)
}

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

    /// Creates the CA if missing, and (re)issues the serving certificate when its names are not
    /// `extra` (IPs) and `extra_names` plus the ones always there: localhost, the `kubernetes`
    /// Service's names as kubeadm gives them (up to `kubernetes.default.svc.cluster.local`),
    /// 127.0.0.1 and ::1.
    pub fn ensure(&self, extra: &[IpAddr], extra_names: &[String]) -> Result<()> {
        let dir = self.ca_cert.parent().expect("pki dir");
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let now = time::OffsetDateTime::now_utc();
        self.ensure_ca()?;
        let mut sans: Vec<String> = vec![
            "localhost".into(),
            "kubernetes".into(),
            "kubernetes.default".into(),
            "kubernetes.default.svc".into(),
            "kubernetes.default.svc.cluster.local".into(),
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
        if have == want
            && self.server_cert.exists()
            && self.server_key.exists()
            && fresh(&self.server_cert, now)
        {
            return Ok(());
        }
        let ca_key =
            KeyPair::from_pem(&std::fs::read_to_string(&self.ca_key)?).context("reading CA key")?;
        // The issuer's name is what matters for signing; its validity is the CA file's.
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
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + SERVING_VALIDITY;
        let cert = params
            .signed_by(&key, &issuer)
            .context("signing serving certificate")?;
        write_private(&self.server_key, key.serialize_pem().as_bytes())?;
        std::fs::write(&self.server_cert, cert.pem())?;
        std::fs::write(&self.server_sans, want)?;
        Ok(())
    }

    /// Creates the CA if it is missing or near its end (the first half of [`Pki::ensure`], for
    /// a caller that issues certificates before the server has started).
    pub fn ensure_ca(&self) -> Result<()> {
        let dir = self.ca_cert.parent().expect("pki dir");
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let now = time::OffsetDateTime::now_utc();
        if !self.ca_cert.exists() || !self.ca_key.exists() || !fresh(&self.ca_cert, now) {
            let key = KeyPair::generate().context("generating CA key")?;
            let cert = ca_params().self_signed(&key).context("self-signing CA")?;
            write_private(&self.ca_key, key.serialize_pem().as_bytes())?;
            std::fs::write(&self.ca_cert, cert.pem())?;
            let _ = std::fs::remove_file(&self.server_sans);
        }
        Ok(())
    }

    /// Issues a certificate from the CA into `cert`/`key` (PEM, the key mode 0600) unless the
    /// files hold one for the same request that is still fresh: `cn` and `orgs` name the
    /// subject, `sans` (names or IPs) make a serving certificate, none a client certificate.
    /// The API server's kubelet client certificate and each node's kubelet serving
    /// certificate are made this way by `dualstack up`.
    pub fn issue(
        &self,
        cert: &Path,
        key: &Path,
        cn: &str,
        orgs: &[&str],
        sans: &[String],
    ) -> Result<()> {
        self.ensure_ca()?;
        let now = time::OffsetDateTime::now_utc();
        let request = format!("{cn}\n{}\n{}", orgs.join(","), sans.join(","));
        let stamp = cert.with_extension("req");
        if std::fs::read_to_string(&stamp).is_ok_and(|r| r == request)
            && key.exists()
            && fresh(cert, now)
        {
            return Ok(());
        }
        let ca_key =
            KeyPair::from_pem(&std::fs::read_to_string(&self.ca_key)?).context("reading CA key")?;
        let issuer = Issuer::new(ca_params(), ca_key);
        let pair = KeyPair::generate().context("generating a key")?;
        let mut params = CertificateParams::new(sans.to_vec()).context("certificate names")?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        for o in orgs {
            dn.push(DnType::OrganizationName, *o);
        }
        params.distinguished_name = dn;
        params.extended_key_usages = vec![if sans.is_empty() {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + SERVING_VALIDITY;
        let signed = params
            .signed_by(&pair, &issuer)
            .with_context(|| format!("signing the certificate of {cn}"))?;
        if let Some(d) = cert.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        write_private(key, pair.serialize_pem().as_bytes())?;
        std::fs::write(cert, signed.pem())?;
        std::fs::write(stamp, request)?;
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
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + CA_VALIDITY;
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
    fn issued_certificates_carry_the_subject_and_are_kept_while_the_request_is_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path());
        let (cert, key) = (dir.path().join("c.crt"), dir.path().join("c.key"));
        pki.issue(
            &cert,
            &key,
            "kube-apiserver-kubelet-client",
            &["kubeadm:cluster-admins"],
            &[],
        )
        .unwrap();
        let pem = std::fs::read(&cert).unwrap();
        let (_, p) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        let c = p.parse_x509().unwrap();
        let cn = c
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap();
        assert_eq!(cn, "kube-apiserver-kubelet-client");
        assert!(c.issuer().to_string().contains(CA_CN));
        pki.issue(
            &cert,
            &key,
            "kube-apiserver-kubelet-client",
            &["kubeadm:cluster-admins"],
            &[],
        )
        .unwrap();
        assert_eq!(std::fs::read(&cert).unwrap(), pem, "same request: kept");
        pki.issue(
            &cert,
            &key,
            "node",
            &[],
            &["node-1".into(), "203.0.113.11".into()],
        )
        .unwrap();
        assert_ne!(
            std::fs::read(&cert).unwrap(),
            pem,
            "another request: re-issued"
        );
    }

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
    fn the_serving_certificate_is_valid_for_one_year_and_renewed_near_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path());
        pki.ensure(&[], &[]).unwrap();
        let now = time::OffsetDateTime::now_utc();
        let left = not_after(&pki.server_cert).unwrap() - now;
        assert!(left > SERVING_VALIDITY - time::Duration::days(1), "{left}");
        assert!(left <= SERVING_VALIDITY, "{left}");
        let ca_left = not_after(&pki.ca_cert).unwrap() - now;
        assert!(ca_left > CA_VALIDITY - time::Duration::days(1), "{ca_left}");
        // A certificate close to expiry (an old one, as written before this rule) is re-issued.
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.not_before = now - time::Duration::days(300);
        params.not_after = now + time::Duration::days(30);
        let ca_key = KeyPair::from_pem(&std::fs::read_to_string(&pki.ca_key).unwrap()).unwrap();
        let old = params
            .signed_by(&key, &Issuer::new(ca_params(), ca_key))
            .unwrap();
        std::fs::write(&pki.server_cert, old.pem()).unwrap();
        assert!(not_after(&pki.server_cert).unwrap() - now < RENEW_BEFORE);
        pki.ensure(&[], &[]).unwrap();
        let left = not_after(&pki.server_cert).unwrap() - now;
        assert!(
            left > SERVING_VALIDITY - time::Duration::days(1),
            "renewed: {left}"
        );
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
