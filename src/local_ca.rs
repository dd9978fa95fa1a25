//! The local certificate authority for TLS interception (issue 11's first piece): created once
//! in the config directory (`ccproxy-ca.pem`, and `ccproxy-ca-key.pem` with mode 0600), loaded
//! after, and minting one leaf certificate per host name on demand (cached), for the MITM path
//! to present to intercepted clients.
//!
//! Keys are ECDSA P-256. The CA is valid for 10 years; leaves for 397 days (under the 398-day
//! limit browsers and Apple clients enforce), with the host as their only SAN (a DNS name, or an
//! IP address for an IP literal; also the common name when it fits in 64 characters) and
//! `serverAuth` usage. One leaf key serves every leaf, as in mitmproxy: minting is then one
//! signature. The cache holds at most 1,024 leaves.

use boring::asn1::Asn1Time;
use boring::bn::{BigNum, MsbOption};
use boring::ec::{EcGroup, EcKey};
use boring::hash::MessageDigest;
use boring::nid::Nid;
use boring::pkey::{PKey, Private};
use boring::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use boring::x509::{X509Builder, X509NameBuilder, X509};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// File name of the CA certificate in the config directory.
pub const CERT_FILE: &str = "ccproxy-ca.pem";
/// File name of the CA key (mode 0600).
pub const KEY_FILE: &str = "ccproxy-ca-key.pem";
/// Common name of the CA.
pub const CA_NAME: &str = "ccproxy local CA";

const CA_DAYS: u32 = 3650;
const LEAF_DAYS: u32 = 397;
/// Most leaves kept; past that, one is dropped for each new one (minting again costs one
/// signature), so a client naming ever new hosts cannot grow memory without bound.
const LEAF_CACHE: usize = 1024;
/// Longest X.509 common name (RFC 5280 `ub-common-name`); longer host names are only in the SAN.
const MAX_COMMON_NAME: usize = 64;

/// Why the CA could not be loaded, created or used; names the file.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("local CA {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("local CA: {0}")]
    Crypto(String),
}

fn crypto(e: impl std::fmt::Display) -> CaError {
    CaError::Crypto(e.to_string())
}

/// A leaf certificate and its key.
pub struct Leaf {
    pub cert: X509,
    pub key: PKey<Private>,
}

/// The local CA with its leaf cache.
pub struct LocalCa {
    cert: X509,
    key: PKey<Private>,
    cert_path: PathBuf,
    leaf_key: PKey<Private>,
    leaves: Mutex<HashMap<String, Arc<Leaf>>>,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa")
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

fn p256() -> Result<PKey<Private>, CaError> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(crypto)?;
    PKey::from_ec_key(EcKey::generate(&group).map_err(crypto)?).map_err(crypto)
}

fn serial() -> Result<boring::asn1::Asn1Integer, CaError> {
    let mut bn = BigNum::new().map_err(crypto)?;
    bn.rand(127, MsbOption::MAYBE_ZERO, false).map_err(crypto)?;
    bn.to_asn1_integer().map_err(crypto)
}

/// A certificate builder with version 3, a random serial, the names, the public key and a
/// validity of `days` from yesterday.
fn builder(
    subject: &boring::x509::X509NameRef,
    issuer: &boring::x509::X509NameRef,
    key: &PKey<Private>,
    days: u32,
) -> Result<X509Builder, CaError> {
    let mut b = X509Builder::new().map_err(crypto)?;
    b.set_version(2).map_err(crypto)?;
    let serial = serial()?;
    b.set_serial_number(&serial).map_err(crypto)?;
    b.set_subject_name(subject).map_err(crypto)?;
    b.set_issuer_name(issuer).map_err(crypto)?;
    b.set_pubkey(key).map_err(crypto)?;
    validity(&mut b, days)?;
    Ok(b)
}

fn validity(b: &mut X509Builder, days: u32) -> Result<(), CaError> {
    // A day of slack for clocks that are behind.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let start = Asn1Time::from_unix(now - 86_400).map_err(crypto)?;
    b.set_not_before(&start).map_err(crypto)?;
    let end = Asn1Time::days_from_now(days).map_err(crypto)?;
    b.set_not_after(&end).map_err(crypto)
}

impl LocalCa {
    /// Load the CA from `dir`, creating it on first use.
    pub fn load_or_create(dir: &Path) -> Result<Self, CaError> {
        let cert_path = dir.join(CERT_FILE);
        let key_path = dir.join(KEY_FILE);
        let file_err = |path: &Path, message: String| CaError::File {
            path: path.to_path_buf(),
            message,
        };
        let (cert, key) = match (cert_path.exists(), key_path.exists()) {
            (true, true) => {
                let cert = std::fs::read(&cert_path)
                    .map_err(|e| file_err(&cert_path, e.to_string()))
                    .and_then(|pem| {
                        X509::from_pem(&pem).map_err(|e| {
                            file_err(&cert_path, format!("not a PEM certificate ({e})"))
                        })
                    })?;
                let key = std::fs::read(&key_path)
                    .map_err(|e| file_err(&key_path, e.to_string()))
                    .and_then(|pem| {
                        PKey::private_key_from_pem(&pem).map_err(|e| {
                            file_err(&key_path, format!("not a PEM private key ({e})"))
                        })
                    })?;
                let matches = cert
                    .public_key()
                    .map(|p| p.public_eq(&key))
                    .unwrap_or(false);
                if !matches {
                    return Err(file_err(
                        &key_path,
                        format!("does not belong to {}", cert_path.display()),
                    ));
                }
                (cert, key)
            }
            (false, false) => {
                let (cert, key) = Self::generate()?;
                // The key first: a certificate without its key is useless, a key alone is
                // replaced on the next start.
                let key_pem = key.private_key_to_pem_pkcs8().map_err(crypto)?;
                crate::config::paths::write_atomically(&key_path, &key_pem, 0o600)
                    .map_err(|e| file_err(&key_path, e.to_string()))?;
                let cert_pem = cert.to_pem().map_err(crypto)?;
                crate::config::paths::write_atomically(&cert_path, &cert_pem, 0o644)
                    .map_err(|e| file_err(&cert_path, e.to_string()))?;
                tracing::info!(cert = %cert_path.display(), "created the local CA");
                (cert, key)
            }
            (true, false) => {
                return Err(file_err(
                    &key_path,
                    "is missing (the certificate exists); move both files away to make a new CA"
                        .to_owned(),
                ))
            }
            (false, true) => {
                return Err(file_err(
                    &cert_path,
                    "is missing (the key exists); move both files away to make a new CA".to_owned(),
                ))
            }
        };
        Ok(Self {
            cert,
            key,
            cert_path,
            leaf_key: p256()?,
            leaves: Mutex::new(HashMap::new()),
        })
    }

    fn generate() -> Result<(X509, PKey<Private>), CaError> {
        let key = p256()?;
        let mut name = X509NameBuilder::new().map_err(crypto)?;
        name.append_entry_by_nid(Nid::COMMONNAME, CA_NAME)
            .map_err(crypto)?;
        name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "ccproxy")
            .map_err(crypto)?;
        let name = name.build();
        let mut b = builder(&name, &name, &key, CA_DAYS)?;
        let bc = BasicConstraints::new()
            .critical()
            .ca()
            .pathlen(0)
            .build()
            .map_err(crypto)?;
        b.append_extension(&bc).map_err(crypto)?;
        let ku = KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()
            .map_err(crypto)?;
        b.append_extension(&ku).map_err(crypto)?;
        let ski = SubjectKeyIdentifier::new()
            .build(&b.x509v3_context(None, None))
            .map_err(crypto)?;
        b.append_extension(&ski).map_err(crypto)?;
        b.sign(&key, MessageDigest::sha256()).map_err(crypto)?;
        Ok((b.build(), key))
    }

    /// Where the CA certificate is (what clients must trust).
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The CA certificate.
    pub fn cert(&self) -> &X509 {
        &self.cert
    }

    /// The leaf for `host` (a DNS name or an IP literal), minted on first use and cached.
    pub fn leaf(&self, host: &str) -> Result<Arc<Leaf>, CaError> {
        let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
        if host.is_empty() || host.len() > 253 {
            return Err(CaError::Crypto(format!(
                "cannot mint a certificate for {host:?}"
            )));
        }
        if let Some(l) = self
            .leaves
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&host)
        {
            return Ok(l.clone());
        }
        let leaf = Arc::new(self.mint(&host)?);
        let mut leaves = self.leaves.lock().unwrap_or_else(|p| p.into_inner());
        if leaves.len() >= LEAF_CACHE {
            if let Some(old) = leaves.keys().next().cloned() {
                leaves.remove(&old);
            }
        }
        leaves.insert(host, leaf.clone());
        Ok(leaf)
    }

    fn mint(&self, host: &str) -> Result<Leaf, CaError> {
        let mut name = X509NameBuilder::new().map_err(crypto)?;
        name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "ccproxy")
            .map_err(crypto)?;
        if host.len() <= MAX_COMMON_NAME {
            name.append_entry_by_nid(Nid::COMMONNAME, host)
                .map_err(crypto)?;
        }
        let name = name.build();
        let mut b = builder(&name, self.cert.subject_name(), &self.leaf_key, LEAF_DAYS)?;
        let bc = BasicConstraints::new().build().map_err(crypto)?;
        b.append_extension(&bc).map_err(crypto)?;
        let ku = KeyUsage::new()
            .critical()
            .digital_signature()
            .key_encipherment()
            .build()
            .map_err(crypto)?;
        b.append_extension(&ku).map_err(crypto)?;
        let eku = ExtendedKeyUsage::new()
            .server_auth()
            .build()
            .map_err(crypto)?;
        b.append_extension(&eku).map_err(crypto)?;
        let mut san = SubjectAlternativeName::new();
        if host.parse::<std::net::IpAddr>().is_ok() {
            san.ip(host);
        } else {
            san.dns(host);
        }
        let san = san
            .build(&b.x509v3_context(Some(&self.cert), None))
            .map_err(crypto)?;
        b.append_extension(&san).map_err(crypto)?;
        let aki = AuthorityKeyIdentifier::new()
            .keyid(false)
            .build(&b.x509v3_context(Some(&self.cert), None))
            .map_err(crypto)?;
        b.append_extension(&aki).map_err(crypto)?;
        b.sign(&self.key, MessageDigest::sha256()).map_err(crypto)?;
        Ok(Leaf {
            cert: b.build(),
            key: self.leaf_key.clone(),
        })
    }
}

/// How to make clients trust the CA at `path` (what `ccproxy ca` prints).
pub fn trust_instructions(path: &Path) -> String {
    let p = path.display();
    format!(
        "ccproxy's local CA certificate: {p}\n\
         \n\
         Trust it for one program (no root needed):\n\
         \x20 Node.js (Claude Code, Gemini CLI): NODE_EXTRA_CA_CERTS={p}\n\
         \x20 Python requests / httpx:           REQUESTS_CA_BUNDLE=<bundle> SSL_CERT_FILE=<bundle>\n\
         \x20 curl:                              CURL_CA_BUNDLE=<bundle>\n\
         \x20 where <bundle> is the system roots plus this file, e.g.\n\
         \x20   cat /etc/ssl/certs/ca-certificates.crt {p} > ~/.config/ccproxy/ca-bundle.pem\n\
         \n\
         Trust it system-wide (Debian/Ubuntu, as root):\n\
         \x20 cp {p} /usr/local/share/ca-certificates/ccproxy.crt && update-ca-certificates\n\
         \n\
         The key next to it ({KEY_FILE}, mode 0600) can sign certificates for any host: keep it private.\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use boring::x509::store::X509StoreBuilder;
    use boring::x509::X509StoreContext;
    use std::os::unix::fs::PermissionsExt;

    fn verifies(ca: &X509, leaf: &X509, host: &str) -> bool {
        let mut store = X509StoreBuilder::new().unwrap();
        store.add_cert(ca.clone()).unwrap();
        let store = store.build();
        let chain = boring::stack::Stack::new().unwrap();
        let mut ctx = X509StoreContext::new().unwrap();
        let chain_ok = ctx.init(&store, leaf, &chain, |c| c.verify_cert()).unwrap();
        let names = leaf.subject_alt_names().unwrap();
        let name_ok = names.iter().any(|n| {
            n.dnsname() == Some(host)
                || n.ipaddress().is_some_and(|ip| {
                    host.parse::<std::net::IpAddr>().is_ok_and(|h| match h {
                        std::net::IpAddr::V4(v4) => ip == v4.octets(),
                        std::net::IpAddr::V6(v6) => ip == v6.octets(),
                    })
                })
        });
        chain_ok && name_ok
    }

    #[test]
    fn created_once_with_a_private_key_then_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::load_or_create(dir.path()).unwrap();
        let key_mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(key_mode, 0o600);
        let again = LocalCa::load_or_create(dir.path()).unwrap();
        assert_eq!(
            ca.cert().to_der().unwrap(),
            again.cert().to_der().unwrap(),
            "the second start loads the same CA"
        );
        assert!(trust_instructions(ca.cert_path()).contains("NODE_EXTRA_CA_CERTS="));
    }

    #[test]
    fn leaves_verify_against_the_ca_for_their_host_only() {
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::load_or_create(dir.path()).unwrap();
        let leaf = ca.leaf("API.Anthropic.com.").unwrap();
        assert!(verifies(ca.cert(), &leaf.cert, "api.anthropic.com"));
        assert!(!verifies(ca.cert(), &leaf.cert, "api.openai.com"));
        let ip = ca.leaf("127.0.0.1").unwrap();
        assert!(verifies(ca.cert(), &ip.cert, "127.0.0.1"));
        // Cached: the same leaf comes back.
        assert!(Arc::ptr_eq(&leaf, &ca.leaf("api.anthropic.com").unwrap()));
        // Another CA's leaf does not verify.
        let other_dir = tempfile::tempdir().unwrap();
        let other = LocalCa::load_or_create(other_dir.path()).unwrap();
        assert!(!verifies(
            ca.cert(),
            &other.leaf("api.anthropic.com").unwrap().cert,
            "api.anthropic.com"
        ));
    }

    #[test]
    fn a_host_name_longer_than_a_common_name_still_gets_a_leaf() {
        // 64 characters is the most an X.509 common name may hold; DNS names go to 253.
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::load_or_create(dir.path()).unwrap();
        let host = format!("{}.{}.example.com", "a".repeat(63), "b".repeat(40));
        assert!(host.len() > 64);
        let leaf = ca.leaf(&host).unwrap();
        assert!(verifies(ca.cert(), &leaf.cert, &host));
    }

    #[test]
    fn the_leaf_cache_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::load_or_create(dir.path()).unwrap();
        for i in 0..LEAF_CACHE + 10 {
            ca.leaf(&format!("h{i}.example.com")).unwrap();
        }
        let cached = ca.leaves.lock().unwrap().len();
        assert!(cached <= LEAF_CACHE, "{cached} leaves cached");
        // A host minted again after eviction is still a good leaf.
        let again = ca.leaf("h0.example.com").unwrap();
        assert!(verifies(ca.cert(), &again.cert, "h0.example.com"));
    }

    #[test]
    fn half_a_ca_is_a_clear_error_naming_the_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        LocalCa::load_or_create(dir.path()).unwrap();
        std::fs::remove_file(dir.path().join(KEY_FILE)).unwrap();
        let e = LocalCa::load_or_create(dir.path()).unwrap_err().to_string();
        assert!(e.contains(KEY_FILE) && e.contains("missing"), "{e}");
        std::fs::write(dir.path().join(KEY_FILE), "junk").unwrap();
        let e = LocalCa::load_or_create(dir.path()).unwrap_err().to_string();
        assert!(e.contains("not a PEM private key"), "{e}");
    }
}
