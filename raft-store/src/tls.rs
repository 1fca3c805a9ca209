//! Mutual TLS for the cluster transport: a cluster CA, node certificates issued by it, and the
//! rustls/quinn configurations that accept only peers holding such a certificate.
//!
//! Every node certificate carries [`CLUSTER_SERVER_NAME`] among its names; clients verify that
//! name, so any node certified by the cluster CA is a valid peer and nothing else is.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;

use crate::error::{Error, Result};

/// The name every node certificate carries and every client verifies.
pub const CLUSTER_SERVER_NAME: &str = "eventgate-node";
/// ALPN protocol of the cluster transport.
pub const ALPN: &[u8] = b"eventgate-cluster/1";

const CA_COMMON_NAME: &str = "eventgate cluster CA";
const ORGANIZATION: &str = "eventgate";

/// A node's TLS identity: the cluster CA certificate, the node's chain and private key.
#[derive(Debug)]
pub struct TlsMaterial {
    pub ca: CertificateDer<'static>,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// A PEM certificate and its PEM private key.
#[derive(Debug, Clone)]
pub struct PemPair {
    pub cert_pem: String,
    pub key_pem: String,
}

fn tls_err(context: &str, e: impl std::fmt::Display) -> Error {
    Error::Tls(format!("{context}: {e}"))
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::ReadFile {
        path: path.display().to_string(),
        source,
    })
}

impl TlsMaterial {
    /// Loads PEM files: the CA certificate, the node certificate (chain) and its key.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Self> {
        let ca_der = CertificateDer::from_pem_slice(&read(ca)?)
            .map_err(|e| tls_err(&format!("{}: no CA certificate", ca.display()), e))?;
        let chain = CertificateDer::pem_slice_iter(&read(cert)?)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| tls_err(&format!("{}: bad certificate", cert.display()), e))?;
        if chain.is_empty() {
            return Err(Error::Tls(format!("{}: no certificate", cert.display())));
        }
        let key_der = PrivateKeyDer::from_pem_slice(&read(key)?)
            .map_err(|e| tls_err(&format!("{}: no private key", key.display()), e))?;
        Ok(Self {
            ca: ca_der,
            chain,
            key: key_der,
        })
    }

    /// Builds from PEM strings (certificates made in memory, tests).
    pub fn from_pem(ca_pem: &str, node: &PemPair) -> Result<Self> {
        let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes())
            .map_err(|e| tls_err("CA certificate", e))?;
        let chain = vec![CertificateDer::from_pem_slice(node.cert_pem.as_bytes())
            .map_err(|e| tls_err("node certificate", e))?];
        let key = PrivateKeyDer::from_pem_slice(node.key_pem.as_bytes())
            .map_err(|e| tls_err("node key", e))?;
        Ok(Self { ca, chain, key })
    }

    fn roots(&self) -> Result<Arc<rustls::RootCertStore>> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.ca.clone())
            .map_err(|e| tls_err("CA certificate", e))?;
        Ok(Arc::new(roots))
    }

    /// The QUIC server configuration: TLS 1.3, client certificates required and verified
    /// against the cluster CA.
    pub fn quic_server_config(&self) -> Result<quinn::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots()?, provider.clone())
            .build()
            .map_err(|e| tls_err("client verifier", e))?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls_err("server config", e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| tls_err("node certificate", e))?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(cfg)
            .map_err(|e| tls_err("quic server config", e))?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server.transport_config(transport_config());
        Ok(server)
    }

    /// The QUIC client configuration: verifies the server against the cluster CA and presents
    /// this node's certificate.
    pub fn quic_client_config(&self) -> Result<quinn::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls_err("client config", e))?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| tls_err("node certificate", e))?;
        cfg.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(cfg)
            .map_err(|e| tls_err("quic client config", e))?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        client.transport_config(transport_config());
        Ok(client)
    }
}

fn transport_config() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_secs(1)));
    t.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(Duration::from_secs(5)).expect("5 s is a valid idle timeout"),
    ));
    t.max_concurrent_bidi_streams(1024u32.into());
    Arc::new(t)
}

fn ca_params() -> Result<CertificateParams> {
    let mut params =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| tls_err("CA params", e))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_COMMON_NAME);
    dn.push(DnType::OrganizationName, ORGANIZATION);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// Creates a new cluster CA.
pub fn generate_ca() -> Result<PemPair> {
    let key = KeyPair::generate().map_err(|e| tls_err("CA key", e))?;
    let cert = ca_params()?
        .self_signed(&key)
        .map_err(|e| tls_err("CA certificate", e))?;
    Ok(PemPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Issues a certificate for node `name`, signed by the cluster CA. `extra_names` are added to
/// its subject alternative names (DNS names or IP addresses). The result is checked against the
/// CA certificate, so a CA key that does not belong to the CA certificate is caught here.
pub fn issue_node_cert(ca: &PemPair, name: &str, extra_names: &[String]) -> Result<PemPair> {
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(|e| tls_err("CA key", e))?;
    // The CA's own parameters are fixed by `generate_ca`, so its subject can be rebuilt from
    // them without parsing the certificate.
    let issuer = Issuer::new(ca_params()?, ca_key);
    let mut names = vec![CLUSTER_SERVER_NAME.to_owned(), name.to_owned()];
    for extra in extra_names {
        if !names.contains(extra) {
            names.push(extra.clone());
        }
    }
    let mut params = CertificateParams::new(names).map_err(|e| tls_err("node name", e))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, ORGANIZATION);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().map_err(|e| tls_err("node key", e))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| tls_err("node certificate", e))?;
    let pair = PemPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    };
    verify_issued(&ca.cert_pem, &pair.cert_pem)?;
    Ok(pair)
}

fn verify_issued(ca_pem: &str, cert_pem: &str) -> Result<()> {
    let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes())
        .map_err(|e| tls_err("CA certificate", e))?;
    let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|e| tls_err("node certificate", e))?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).map_err(|e| tls_err("CA certificate", e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| tls_err("verifier", e))?;
    let server_name = ServerName::try_from(CLUSTER_SERVER_NAME).expect("valid DNS name");
    verifier
        .verify_server_cert(&cert, &[], &server_name, &[], UnixTime::now())
        .map_err(|e| {
            tls_err(
                "issued certificate does not verify against the CA certificate (is the CA key the one of this CA certificate?)",
                e,
            )
        })?;
    Ok(())
}

use rustls::client::danger::ServerCertVerifier as _;

/// Writes a PEM pair to `<dir>/<stem>.pem` and `<dir>/<stem>.key` (the key readable by the
/// owner only), refusing to overwrite existing files.
pub fn write_pair(dir: &Path, stem: &str, pair: &PemPair) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::ReadFile {
        path: dir.display().to_string(),
        source,
    })?;
    let cert_path = dir.join(format!("{stem}.pem"));
    let key_path = dir.join(format!("{stem}.key"));
    for path in [&cert_path, &key_path] {
        if path.exists() {
            return Err(Error::Tls(format!(
                "{} exists already; refusing to overwrite",
                path.display()
            )));
        }
    }
    write_file(&cert_path, pair.cert_pem.as_bytes(), 0o644)?;
    write_file(&key_path, pair.key_pem.as_bytes(), 0o600)?;
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| Error::ReadFile {
        path: path.display().to_string(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(())
}

/// Reads a PEM pair written by [`write_pair`].
pub fn read_pair(dir: &Path, stem: &str) -> Result<PemPair> {
    let cert_pem = read_string(&dir.join(format!("{stem}.pem")))?;
    let key_pem = read_string(&dir.join(format!("{stem}.key")))?;
    Ok(PemPair { cert_pem, key_pem })
}

fn read_string(path: &Path) -> Result<String> {
    String::from_utf8(read(path)?)
        .map_err(|e| Error::Tls(format!("{}: not UTF-8 PEM: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_verify_only_against_their_ca() {
        let ca = generate_ca().unwrap();
        let node = issue_node_cert(&ca, "node-1", &["127.0.0.1".to_owned()]).unwrap();
        let material = TlsMaterial::from_pem(&ca.cert_pem, &node).unwrap();
        material.quic_server_config().unwrap();
        material.quic_client_config().unwrap();

        let other = generate_ca().unwrap();
        assert!(verify_issued(&other.cert_pem, &node.cert_pem).is_err());
        // A CA key that is not the CA certificate's key is caught when issuing.
        let mixed = PemPair {
            cert_pem: ca.cert_pem.clone(),
            key_pem: other.key_pem.clone(),
        };
        assert!(issue_node_cert(&mixed, "node-2", &[]).is_err());
    }
}
