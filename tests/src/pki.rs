//! Certificates and keys for a test control plane: a CA, the API server's serving certificate,
//! a client certificate in `system:masters`, and the service-account signing key.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

use crate::HarnessError;

/// Paths of the PEM files written by [`write`].
#[derive(Debug, Clone)]
pub struct Pki {
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    pub service_account_key: PathBuf,
    pub service_account_public_key: PathBuf,
}

/// Generates every certificate and key into `dir`.
pub fn write(dir: &Path) -> Result<Pki, HarnessError> {
    let pki = Pki {
        ca_cert: dir.join("ca.crt"),
        ca_key: dir.join("ca.key"),
        serving_cert: dir.join("apiserver.crt"),
        serving_key: dir.join("apiserver.key"),
        admin_cert: dir.join("admin.crt"),
        admin_key: dir.join("admin.key"),
        service_account_key: dir.join("service-account.key"),
        service_account_public_key: dir.join("service-account.pub"),
    };
    let fail = |e: rcgen::Error| HarnessError::Pki(e.to_string());

    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "verbund-test-ca");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().map_err(fail)?;
    let ca_key_pem = ca_key.serialize_pem();
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(fail)?;

    // The API server answers on loopback and, inside the simulated cluster, as the
    // `kubernetes` Service.
    let mut serving = CertificateParams::new(vec![
        "localhost".to_string(),
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
        "kubernetes.default.svc.cluster.local".to_string(),
    ])
    .map_err(fail)?;
    serving
        .subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    serving
        .subject_alt_names
        .push(SanType::IpAddress([10, 96, 0, 1].into()));
    serving
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_key = KeyPair::generate().map_err(fail)?;
    let serving_cert = serving.signed_by(&serving_key, &ca).map_err(fail)?;

    // Group `system:masters` makes this client cluster admin.
    let mut admin = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    admin
        .distinguished_name
        .push(DnType::CommonName, "verbund-test-admin");
    admin
        .distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let admin_key = KeyPair::generate().map_err(fail)?;
    let admin_cert = admin.signed_by(&admin_key, &ca).map_err(fail)?;

    let service_account_key = KeyPair::generate().map_err(fail)?;

    for (path, pem) in [
        (&pki.ca_cert, ca.pem()),
        (&pki.ca_key, ca_key_pem),
        (&pki.serving_cert, serving_cert.pem()),
        (&pki.serving_key, serving_key.serialize_pem()),
        (&pki.admin_cert, admin_cert.pem()),
        (&pki.admin_key, admin_key.serialize_pem()),
        (
            &pki.service_account_key,
            service_account_key.serialize_pem(),
        ),
        (
            &pki.service_account_public_key,
            service_account_key.public_key_pem(),
        ),
    ] {
        std::fs::write(path, pem).map_err(|e| HarnessError::io(path, e))?;
    }
    Ok(pki)
}
