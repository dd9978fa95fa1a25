//! Throwaway PKI for TLS integration tests.
//!
//! This module owns certificate material: [`TestCa`] generates, at runtime and
//! without touching the network, a fresh self-signed CA plus a leaf
//! certificate (SANs `localhost` and `127.0.0.1`) signed by it, writes the CA
//! to a temporary PEM file (so it can be handed to the gateway as a trust
//! root), and builds a BoringSSL [`SslAcceptor`] for the leaf that mock TLS
//! upstreams use.

// Shared test support: not every test binary uses every helper.
#![allow(dead_code)]

use std::path::PathBuf;

use boring::pkey::PKey;
use boring::ssl::{select_next_proto, AlpnError, SslAcceptor, SslMethod};
use boring::x509::X509;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use tempfile::TempDir;

/// ALPN protocols offered by the server, in preference order (wire format).
const SERVER_ALPN: &[u8] = b"\x02h2\x08http/1.1";

/// A freshly generated test CA and a leaf certificate signed by it.
///
/// All keys are ECDSA P-256. The leaf is valid for `localhost` and
/// `127.0.0.1`. The temporary directory holding [`TestCa::ca_file`] is
/// deleted when the `TestCa` is dropped.
pub struct TestCa {
    /// PEM of the CA certificate (the trust root clients should use).
    pub ca_pem: String,
    /// Path of a temporary file containing [`TestCa::ca_pem`].
    pub ca_file: PathBuf,
    /// PEM of the leaf (server) certificate.
    pub leaf_cert_pem: String,
    /// PEM (PKCS#8) of the leaf's private key.
    pub leaf_key_pem: String,
    /// Keeps `ca_file` alive.
    _dir: TempDir,
}

impl TestCa {
    /// Generates a new CA and a leaf certificate for `localhost`/`127.0.0.1`.
    pub fn new() -> Self {
        Self::with_names(&[])
    }

    /// As [`TestCa::new`], the leaf also valid for `names` (hosts that `inspector.resolve`
    /// points at the mock).
    pub fn with_names(names: &[&str]) -> Self {
        let ca_key = KeyPair::generate().expect("generate CA key");
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name = rcgen::DistinguishedName::new();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "ccproxy test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut ca_params);
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("self-sign CA");

        let leaf_key = KeyPair::generate().expect("generate leaf key");
        let mut leaf_params = CertificateParams::new(
            ["localhost", "127.0.0.1"]
                .iter()
                .chain(names)
                .map(|n| (*n).to_owned())
                .collect::<Vec<_>>(),
        )
        .expect("leaf params");
        leaf_params.distinguished_name = rcgen::DistinguishedName::new();
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf_params.use_authority_key_identifier_extension = true;
        set_validity(&mut leaf_params);
        let leaf = leaf_params
            .signed_by(&leaf_key, &ca)
            .expect("sign leaf certificate");

        let ca_pem = ca.pem();
        let dir = tempfile::tempdir().expect("create temp dir for CA");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, &ca_pem).expect("write CA file");

        Self {
            ca_pem,
            ca_file,
            leaf_cert_pem: leaf.pem(),
            leaf_key_pem: leaf_key.serialize_pem(),
            _dir: dir,
        }
    }

    /// Builds a server-side acceptor presenting the leaf certificate.
    ///
    /// ALPN selects `h2` when the client offers it, otherwise `http/1.1`;
    /// clients offering neither (or no ALPN at all) proceed without ALPN.
    pub fn acceptor(&self) -> SslAcceptor {
        let cert = X509::from_pem(self.leaf_cert_pem.as_bytes()).expect("parse leaf cert");
        let key = PKey::private_key_from_pem(self.leaf_key_pem.as_bytes()).expect("parse leaf key");

        let mut builder =
            SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).expect("acceptor builder");
        builder.set_certificate(&cert).expect("set certificate");
        builder.set_private_key(&key).expect("set private key");
        builder
            .check_private_key()
            .expect("key matches certificate");
        builder.set_alpn_select_callback(|_, client| {
            select_next_proto(SERVER_ALPN, client).ok_or(AlpnError::NOACK)
        });
        builder.build()
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// Fixed validity window comfortably around "now" (and within what every
/// X.509 implementation parses).
fn set_validity(params: &mut CertificateParams) {
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2099, 12, 31);
}
