//! Browser TLS profiles: BoringSSL configured so a connection's ClientHello looks like a
//! browser's (cipher and signature-algorithm order, groups with `X25519MLKEM768`, GREASE,
//! extension permutation, ALPS, brotli certificate compression, OCSP/SCT requests, ECH GREASE,
//! trust anchors, ALPN). Chrome is what BoringSSL can reproduce exactly, since Chrome is built on
//! it; Firefox and Safari use other TLS stacks whose extension order BoringSSL cannot produce, so
//! their names are refused rather than faked.
//!
//! The table is versioned: a profile names the browser build it was measured against, and the
//! test suite compares it with the Chromium installed on the machine.

use boring::ssl::{
    CertificateCompressionAlgorithm, CertificateCompressor, SslConnector, SslConnectorBuilder,
    SslMethod, SslRef, SslVersion,
};
use foreign_types::ForeignTypeRef;

/// A browser profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Profile {
    /// Chrome / Chromium 156 on Linux (measured: Debian Chromium 156.0.8078.114, JA4
    /// `t13d1517h2_8daaf6152771_cb7bf5808d99`).
    Chrome156,
}

/// The profiles, by the name `fingerprint_profile` takes.
pub const PROFILES: &[(&str, Profile)] = &[("chrome156", Profile::Chrome156)];

/// Names the original (curl-cffi) accepted for Chromium-based browsers, all mapped to the
/// nearest real profile here: the current Chrome.
const CHROMIUM_ALIASES: &[&str] = &["chrome", "edge", "chrome_android"];

impl Profile {
    /// The profile for a configured name: a name in [`PROFILES`], or one the original accepted
    /// for a Chromium browser (`chrome`, `chrome131`, `edge101`, `chrome131_android`, …).
    pub fn by_name(name: &str) -> Result<Profile, String> {
        let n = name.trim().to_ascii_lowercase();
        if let Some((_, p)) = PROFILES.iter().find(|(k, _)| *k == n) {
            return Ok(*p);
        }
        let chromium = CHROMIUM_ALIASES.contains(&n.as_str())
            || ["chrome", "edge"].iter().any(|b| {
                n.strip_prefix(b).is_some_and(|rest| {
                    let digits = rest.trim_end_matches("_android").trim_end_matches('a');
                    !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit())
                })
            });
        if chromium {
            return Ok(Profile::Chrome156);
        }
        Err(format!(
            "unknown fingerprint profile {name:?}; valid: {} (Chrome/Edge version names such as \
             chrome131 map to the current Chrome; Firefox, Safari and Tor profiles cannot be \
             reproduced with BoringSSL)",
            PROFILES
                .iter()
                .map(|(k, _)| *k)
                .chain(CHROMIUM_ALIASES.iter().copied())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }

    pub fn name(self) -> &'static str {
        PROFILES
            .iter()
            .find(|(_, p)| *p == self)
            .map_or("?", |(k, _)| k)
    }

    /// A connector with the profile's settings, trusting BoringSSL's default paths.
    pub fn connector(self) -> Result<SslConnector, String> {
        self.connector_with(|_| Ok(()))
    }

    /// A connector with the profile's settings and whatever `more` adds (trust roots).
    pub fn connector_with(
        self,
        more: impl FnOnce(&mut SslConnectorBuilder) -> Result<(), String>,
    ) -> Result<SslConnector, String> {
        let mut b = SslConnector::builder(SslMethod::tls()).map_err(|e| e.to_string())?;
        self.configure_context(&mut b)?;
        // Secrets go to the key log once `inspector.keylog` opened it (nothing before).
        crate::tls_keylog::attach(&mut b);
        more(&mut b)?;
        Ok(b.build())
    }

    fn configure_context(self, b: &mut SslConnectorBuilder) -> Result<(), String> {
        let err = |what: &str| {
            let what = what.to_owned();
            move |e: boring::error::ErrorStack| format!("{what}: {e}")
        };
        match self {
            Profile::Chrome156 => {
                b.set_min_proto_version(Some(SslVersion::TLS1_2))
                    .map_err(err("versions"))?;
                b.set_max_proto_version(Some(SslVersion::TLS1_3))
                    .map_err(err("versions"))?;
                // TLS 1.2 suites in Chrome's order (BoringSSL puts its fixed TLS 1.3 suites,
                // AES-128-GCM, AES-256-GCM, ChaCha20, first, as Chrome does).
                b.set_cipher_list(
                    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
                     ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
                     ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:\
                     ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA:AES128-GCM-SHA256:\
                     AES256-GCM-SHA384:AES128-SHA:AES256-SHA",
                )
                .map_err(err("ciphers"))?;
                b.set_sigalgs_list(
                    "mldsa44:mldsa65:mldsa87:ecdsa_secp256r1_sha256:rsa_pss_rsae_sha256:\
                     rsa_pkcs1_sha256:ecdsa_secp384r1_sha384:rsa_pss_rsae_sha384:\
                     rsa_pkcs1_sha384:rsa_pss_rsae_sha512:rsa_pkcs1_sha512",
                )
                .map_err(err("signature algorithms"))?;
                b.set_curves_list("X25519MLKEM768:X25519:P-256:P-384")
                    .map_err(err("groups"))?;
                b.set_grease_enabled(true);
                b.set_permute_extensions(true);
                b.enable_ocsp_stapling();
                b.enable_signed_cert_timestamps();
                b.add_certificate_compression_algorithm(Brotli)
                    .map_err(err("certificate compression"))?;
                b.set_alpn_protos(b"\x02h2\x08http/1.1")
                    .map_err(err("ALPN"))?;
            }
        }
        Ok(())
    }

    /// The per-connection settings (those BoringSSL keeps on the `SSL`, not the context).
    pub fn configure_connection(self, ssl: &mut SslRef) -> Result<(), String> {
        match self {
            Profile::Chrome156 => {
                ssl.set_enable_ech_grease(true);
                // ALPS for h2 with the new code point (0x44cd), and the trust_anchors
                // extension (0xca34, empty here; Chromium lists 186 bytes of anchor IDs, which
                // JA4 does not see): neither has a safe call in `boring`.
                let raw = ssl.as_ptr();
                let proto = b"h2";
                // SAFETY: `raw` is the live `SSL` behind `ssl`, borrowed mutably for this call;
                // the buffers are valid for their lengths and BoringSSL copies them; an empty
                // settings buffer may be null.
                #[allow(unsafe_code)]
                let (alps, anchors) = unsafe {
                    use pingora::tls::ssl_sys as ffi;
                    let alps = ffi::SSL_add_application_settings(
                        raw,
                        proto.as_ptr(),
                        proto.len(),
                        std::ptr::null(),
                        0,
                    );
                    ffi::SSL_set_alps_use_new_codepoint(raw, 1);
                    let anchors = ffi::SSL_set1_requested_trust_anchors(raw, [].as_ptr(), 0);
                    (alps, anchors)
                };
                if alps != 1 || anchors != 1 {
                    return Err("cannot set ALPS or trust anchors".to_owned());
                }
            }
        }
        Ok(())
    }
}

/// Brotli certificate decompression (RFC 8879), which Chrome offers.
struct Brotli;

impl CertificateCompressor for Brotli {
    const ALGORITHM: CertificateCompressionAlgorithm = CertificateCompressionAlgorithm::BROTLI;
    const CAN_COMPRESS: bool = false;
    const CAN_DECOMPRESS: bool = true;

    fn decompress<W: std::io::Write>(&self, input: &[u8], output: &mut W) -> std::io::Result<()> {
        let mut input = input;
        brotli_decompressor::BrotliDecompress(&mut input, output)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_real_profiles_or_are_refused_with_the_list() {
        for n in [
            "chrome156",
            "Chrome",
            "chrome131",
            "chrome133a",
            "edge101",
            "chrome131_android",
            "chrome_android",
        ] {
            assert_eq!(Profile::by_name(n), Ok(Profile::Chrome156), "{n}");
        }
        for n in [
            "firefox133",
            "safari17_0",
            "tor145",
            "chromex",
            "chrome_",
            "",
        ] {
            let e = Profile::by_name(n).unwrap_err();
            assert!(e.contains("valid: chrome156"), "{n}: {e}");
        }
    }

    #[test]
    fn the_chrome_profile_builds() {
        let c = Profile::Chrome156.connector().unwrap();
        let mut cfg = c.configure().unwrap();
        Profile::Chrome156.configure_connection(&mut cfg).unwrap();
    }
}
