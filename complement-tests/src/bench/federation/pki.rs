//! The peer's TLS identity: a CA of its own and a certificate for
//! `127.0.0.1` issued by it. The target is configured to trust the CA
//! (Axon's `federation.trusted_ca`, Synapse's `federation_custom_ca_list`),
//! so the certificate is really checked when it fetches the peer's keys.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

use crate::bench::error::BenchError;

/// The CA certificate the target must trust.
pub(crate) const CA_FILE: &str = "ca.pem";
/// The peer's certificate.
const CERT_FILE: &str = "peer.crt";
/// The peer's private key.
const KEY_FILE: &str = "peer.key";
/// The name the certificate is issued for: the peer listens on loopback and
/// is named by that IP literal.
pub(crate) const LOOPBACK: &str = "127.0.0.1";

/// The peer's certificate and key, as PEM.
#[derive(Clone)]
pub(crate) struct PeerTls {
    pub(crate) cert_pem: Vec<u8>,
    pub(crate) key_pem: Vec<u8>,
    /// Where the CA certificate is, for the target's configuration.
    pub(crate) ca_path: PathBuf,
}

impl std::fmt::Debug for PeerTls {
    // The private key stays out of any output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls")
            .field("ca_path", &self.ca_path)
            .finish_non_exhaustive()
    }
}

fn failed(what: &str, e: impl std::fmt::Display) -> BenchError {
    BenchError::Unsupported(format!("{what}: {e}"))
}

/// Writes a new CA (`ca.pem`) and the peer's certificate and key
/// (`peer.crt`, `peer.key`) into `dir`, creating it if needed.
pub(crate) fn write(dir: &Path) -> Result<(), BenchError> {
    std::fs::create_dir_all(dir).map_err(|e| failed(&format!("creating {}", dir.display()), e))?;
    let ca_key = KeyPair::generate().map_err(|e| failed("generating the CA key", e))?;
    let mut ca_params =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| failed("CA parameters", e))?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "federation_bench CA");
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(|e| failed("signing the CA certificate", e))?;
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate().map_err(|e| failed("generating the peer key", e))?;
    let mut params = CertificateParams::new(vec![LOOPBACK.to_owned()])
        .map_err(|e| failed("certificate parameters", e))?;
    params.distinguished_name.push(DnType::CommonName, LOOPBACK);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| failed("issuing the peer certificate", e))?;

    for (file, contents) in [
        (CA_FILE, ca_cert.pem()),
        (CERT_FILE, cert.pem()),
        (KEY_FILE, key.serialize_pem()),
    ] {
        let path = dir.join(file);
        std::fs::write(&path, contents)
            .map_err(|e| failed(&format!("writing {}", path.display()), e))?;
    }
    Ok(())
}

/// Reads what [`write`] wrote into `dir`.
pub(crate) fn read(dir: &Path) -> Result<PeerTls, BenchError> {
    let load = |file: &str| {
        let path = dir.join(file);
        std::fs::read(&path).map_err(|e| {
            failed(
                &format!(
                    "reading {} (write it with `federation_bench pki DIR`)",
                    path.display()
                ),
                e,
            )
        })
    };
    let ca_path = dir.join(CA_FILE);
    load(CA_FILE)?;
    let ca_path = std::path::absolute(&ca_path).unwrap_or(ca_path);
    Ok(PeerTls {
        cert_pem: load(CERT_FILE)?,
        key_pem: load(KEY_FILE)?,
        ca_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_written_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let pki_dir = dir.path().join("pki");
        write(&pki_dir).unwrap();
        let tls = read(&pki_dir).unwrap();
        assert!(String::from_utf8_lossy(&tls.cert_pem).starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(String::from_utf8_lossy(&tls.key_pem).contains("PRIVATE KEY"));
        assert!(tls.ca_path.is_absolute() && tls.ca_path.is_file());
        assert!(!format!("{tls:?}").contains("PRIVATE"));

        let missing = read(&dir.path().join("nothing")).unwrap_err();
        assert!(
            missing.to_string().contains("federation_bench pki"),
            "{missing}"
        );
    }
}
