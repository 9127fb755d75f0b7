//! The token signing keys: one current key that signs, and the keys that verify, so a key
//! can be rotated without logging anyone out.
//!
//! Keys are PEM text, as `openssl` writes them:
//!
//! | algorithm | private key | public key |
//! |---|---|---|
//! | ES256 (ECDSA P-256, SHA-256) | `PRIVATE KEY` (PKCS#8) or `EC PRIVATE KEY` (SEC 1) | `PUBLIC KEY` (SPKI) |
//! | RS256 (RSA PKCS#1 v1.5, SHA-256, 2048 to 8192 bits) | `PRIVATE KEY` (PKCS#8) or `RSA PRIVATE KEY` (PKCS#1) | `PUBLIC KEY` (SPKI) or `RSA PUBLIC KEY` (PKCS#1) |
//!
//! A key's algorithm is the key's, never a token's: an ES256 key verifies ES256 signatures
//! only. ES256 is the default (local mode generates one with [`generate_es256_pem`]): its
//! signatures are small and it verifies fast.
//!
//! Every key has a `kid`, the key id a token's header names: the first 16 bytes of the
//! SHA-256 of the key's DER `SubjectPublicKeyInfo`, as 32 lower-case hex digits. It is
//! derived from the public key alone, so the private and the public PEM of a key share it,
//! and every process computes the same id without it being configured anywhere.
//!
//! Rotation: put the new private key first and keep the old one (private or public) after
//! it. Tokens signed by the old key stay valid until they expire; once the longest token
//! lifetime (a refresh token's) has passed, drop the old key.

use std::borrow::Cow;
use std::fmt;

use aws_lc_rs::digest;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair,
    ParsedPublicKey, RsaKeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};

/// Smallest RSA modulus accepted, in bytes (2048 bits).
const MIN_RSA_MODULUS_LEN: usize = 256;
/// Largest RSA modulus accepted, in bytes (8192 bits): what the verifier supports.
const MAX_RSA_MODULUS_LEN: usize = 1024;
/// An uncompressed P-256 point: `04 || x || y`.
const P256_POINT_LEN: usize = 65;

/// The signature algorithm of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    /// ECDSA on P-256 with SHA-256.
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
}

impl KeyAlgorithm {
    /// The JOSE name: `ES256` or `RS256`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::Rs256 => "RS256",
        }
    }

    pub(crate) fn jwt(self) -> Algorithm {
        match self {
            Self::Es256 => Algorithm::ES256,
            Self::Rs256 => Algorithm::RS256,
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key that could not be read or made. The message names the problem, never key bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError(Cow<'static, str>);

impl KeyError {
    pub(crate) fn new(message: impl Into<Cow<'static, str>>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KeyError {}

/// The private half of the current key.
#[derive(Clone)]
pub(crate) struct SigningKey {
    pub(crate) kid: String,
    pub(crate) algorithm: KeyAlgorithm,
    pub(crate) encoding: EncodingKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// A public key that verifies tokens.
pub(crate) struct VerificationKey {
    pub(crate) kid: String,
    pub(crate) algorithm: KeyAlgorithm,
    pub(crate) decoding: DecodingKey,
    spki: Vec<u8>,
}

impl fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerificationKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// The signing key and the verification keys.
#[derive(Debug)]
pub struct KeyRing {
    signing: Option<SigningKey>,
    /// The current key first, then the previous ones; no `kid` twice.
    verification: Vec<VerificationKey>,
}

impl KeyRing {
    /// A ring from PEM texts: the first is the current key, the rest are previous keys.
    ///
    /// A private current key signs; a public one makes a ring that only verifies (for
    /// processes that check tokens but never issue them). Previous keys may be private or
    /// public; only their public half is kept. A key given twice counts once.
    pub fn from_pems<S: AsRef<str>>(pems: &[S]) -> Result<Self, KeyError> {
        let mut parsed = pems.iter().enumerate().map(|(i, pem)| {
            parse_pem(pem.as_ref()).map_err(|e| KeyError::new(format!("key {}: {e}", i + 1)))
        });
        let (signing, current) = parsed
            .next()
            .ok_or_else(|| KeyError::new("no token signing key given"))??;
        let mut verification = vec![current];
        for key in parsed {
            let (_, key) = key?;
            if verification.iter().all(|known| known.kid != key.kid) {
                verification.push(key);
            }
        }
        Ok(Self {
            signing,
            verification,
        })
    }

    /// The `kid` of the current key.
    pub fn current_kid(&self) -> &str {
        self.verification.first().map_or("", |key| key.kid.as_str())
    }

    /// Whether the current key is private, so the ring can issue tokens.
    pub fn can_sign(&self) -> bool {
        self.signing.is_some()
    }

    /// The `kid` and algorithm of every verification key, current first.
    pub fn keys(&self) -> impl Iterator<Item = (&str, KeyAlgorithm)> {
        self.verification
            .iter()
            .map(|key| (key.kid.as_str(), key.algorithm))
    }

    /// Every verification key as public PEM (SPKI), current first: what a process that only
    /// verifies tokens needs.
    pub fn public_pems(&self) -> Vec<String> {
        self.verification
            .iter()
            .map(|key| pem_encode("PUBLIC KEY", &key.spki))
            .collect()
    }

    pub(crate) fn signing_key(&self) -> Option<&SigningKey> {
        self.signing.as_ref()
    }

    pub(crate) fn verification_keys(&self) -> &[VerificationKey] {
        &self.verification
    }
}

/// A fresh ES256 (P-256) private key as PKCS#8 PEM.
pub fn generate_es256_pem() -> Result<String, KeyError> {
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
            .map_err(|_| KeyError::new("could not generate a P-256 key"))?;
    Ok(pem_encode("PRIVATE KEY", pkcs8.as_ref()))
}

/// The key id of a public key given as DER `SubjectPublicKeyInfo`.
fn kid_of(spki: &[u8]) -> String {
    let hash = digest::digest(&digest::SHA256, spki);
    hash.as_ref()
        .iter()
        .take(16)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn parse_pem(text: &str) -> Result<(Option<SigningKey>, VerificationKey), KeyError> {
    let (label, der) = pem_decode(text)?;
    let unsupported_private =
        || KeyError::new("not a P-256 (ES256) or 2048 to 8192-bit RSA (RS256) private key");
    match label {
        "PRIVATE KEY" => {
            if let Ok(pair) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der) {
                ec_private(&pair, der)
            } else if let Ok(pair) = RsaKeyPair::from_pkcs8(&der) {
                let pkcs1 = pkcs8_private_key(&der).ok_or_else(unsupported_private)?;
                rsa_private(&pair, pkcs1)
            } else {
                Err(unsupported_private())
            }
        }
        "EC PRIVATE KEY" => {
            let pair = EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
                .map_err(|_| unsupported_private())?;
            let pkcs8 = pair.to_pkcs8v1().map_err(|_| unsupported_private())?;
            ec_private(&pair, pkcs8.as_ref().to_vec())
        }
        "RSA PRIVATE KEY" => {
            let pair = RsaKeyPair::from_der(&der).map_err(|_| unsupported_private())?;
            rsa_private(&pair, &der)
        }
        "PUBLIC KEY" | "RSA PUBLIC KEY" => {
            let key = match ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &der) {
                Ok(parsed) => ec_public(&parsed)?,
                Err(_) => rsa_public(&der)?,
            };
            Ok((None, key))
        }
        "ENCRYPTED PRIVATE KEY" => Err(KeyError::new(
            "encrypted private keys are not supported: give the key unencrypted",
        )),
        other => Err(KeyError::new(format!(
            "a PEM {other:?} is not a key Berth can use"
        ))),
    }
}

fn ec_private(
    pair: &EcdsaKeyPair,
    pkcs8: Vec<u8>,
) -> Result<(Option<SigningKey>, VerificationKey), KeyError> {
    let spki = pair
        .public_key()
        .as_der()
        .map_err(|_| KeyError::new("could not encode the public key"))?;
    let verification = VerificationKey {
        kid: kid_of(spki.as_ref()),
        algorithm: KeyAlgorithm::Es256,
        decoding: DecodingKey::from_ec_der(pair.public_key().as_ref()),
        spki: spki.as_ref().to_vec(),
    };
    let signing = SigningKey {
        kid: verification.kid.clone(),
        algorithm: KeyAlgorithm::Es256,
        encoding: EncodingKey::from_ec_der(&pkcs8),
    };
    check_pair(&signing, &verification)?;
    Ok((Some(signing), verification))
}

fn rsa_private(
    pair: &RsaKeyPair,
    pkcs1: &[u8],
) -> Result<(Option<SigningKey>, VerificationKey), KeyError> {
    check_rsa_size(pair.public_modulus_len())?;
    let public = pair.public_key();
    let spki = public
        .as_der()
        .map_err(|_| KeyError::new("could not encode the public key"))?;
    let verification = VerificationKey {
        kid: kid_of(spki.as_ref()),
        algorithm: KeyAlgorithm::Rs256,
        decoding: DecodingKey::from_rsa_der(public.as_ref()),
        spki: spki.as_ref().to_vec(),
    };
    let signing = SigningKey {
        kid: verification.kid.clone(),
        algorithm: KeyAlgorithm::Rs256,
        encoding: EncodingKey::from_rsa_der(pkcs1),
    };
    check_pair(&signing, &verification)?;
    Ok((Some(signing), verification))
}

fn ec_public(parsed: &ParsedPublicKey) -> Result<VerificationKey, KeyError> {
    let spki = parsed
        .as_der()
        .map_err(|_| KeyError::new("could not encode the public key"))?;
    let spki = spki.as_ref();
    // A P-256 SubjectPublicKeyInfo ends with the point; the verifier wants it uncompressed.
    let point = spki
        .len()
        .checked_sub(P256_POINT_LEN)
        .map(|start| &spki[start..])
        .filter(|point| point.first() == Some(&4))
        .ok_or_else(|| KeyError::new("the P-256 public key must use an uncompressed point"))?;
    Ok(VerificationKey {
        kid: kid_of(spki),
        algorithm: KeyAlgorithm::Es256,
        decoding: DecodingKey::from_ec_der(point),
        spki: spki.to_vec(),
    })
}

fn rsa_public(der: &[u8]) -> Result<VerificationKey, KeyError> {
    let public = rsa::PublicKey::from_der(der).map_err(|_| {
        KeyError::new("not a P-256 (ES256) or 2048 to 8192-bit RSA (RS256) public key")
    })?;
    check_rsa_size(public.modulus_len())?;
    let spki = public
        .as_der()
        .map_err(|_| KeyError::new("could not encode the public key"))?;
    Ok(VerificationKey {
        kid: kid_of(spki.as_ref()),
        algorithm: KeyAlgorithm::Rs256,
        decoding: DecodingKey::from_rsa_der(public.as_ref()),
        spki: spki.as_ref().to_vec(),
    })
}

fn check_rsa_size(modulus_len: usize) -> Result<(), KeyError> {
    if (MIN_RSA_MODULUS_LEN..=MAX_RSA_MODULUS_LEN).contains(&modulus_len) {
        Ok(())
    } else {
        Err(KeyError::new(format!(
            "an RSA key of {} bits: RS256 keys must have 2048 to 8192 bits",
            modulus_len * 8
        )))
    }
}

/// Signs and verifies once, so a key the signer and the verifier read differently fails at
/// start-up rather than at the first login.
fn check_pair(signing: &SigningKey, verification: &VerificationKey) -> Result<(), KeyError> {
    let message = b"berth key check";
    let algorithm = signing.algorithm.jwt();
    let works = jsonwebtoken::crypto::sign(message, &signing.encoding, algorithm)
        .and_then(|signature| {
            jsonwebtoken::crypto::verify(&signature, message, &verification.decoding, algorithm)
        })
        .unwrap_or(false);
    if works {
        Ok(())
    } else {
        Err(KeyError::new(
            "the key cannot sign tokens that its public half verifies",
        ))
    }
}

/// The label and the DER bytes of the first PEM block of `text`.
fn pem_decode(text: &str) -> Result<(&str, Vec<u8>), KeyError> {
    let malformed =
        || KeyError::new("not a PEM text (-----BEGIN ...----- base64 -----END ...-----)");
    let (_, after_begin) = text.split_once("-----BEGIN ").ok_or_else(malformed)?;
    let (label, rest) = after_begin.split_once("-----").ok_or_else(malformed)?;
    let end = format!("-----END {label}-----");
    let (body, _) = rest.split_once(end.as_str()).ok_or_else(malformed)?;
    let body: String = body.split_whitespace().collect();
    let der = STANDARD.decode(body).map_err(|_| malformed())?;
    Ok((label, der))
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

/// One DER element at the start of `input`: its tag, its contents and what follows it.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (len, rest) = rest.split_at(count);
        let len = len
            .iter()
            .fold(0usize, |len, byte| (len << 8) | usize::from(*byte));
        (len, rest)
    };
    (rest.len() >= len).then(|| {
        let (contents, rest) = rest.split_at(len);
        (tag, contents, rest)
    })
}

/// The algorithm-specific key inside a PKCS#8 `PrivateKeyInfo` (for RSA, the PKCS#1
/// `RSAPrivateKey` the signer wants).
fn pkcs8_private_key(pkcs8: &[u8]) -> Option<&[u8]> {
    const SEQUENCE: u8 = 0x30;
    const INTEGER: u8 = 0x02;
    const OCTET_STRING: u8 = 0x04;
    let (SEQUENCE, info, _) = der_element(pkcs8)? else {
        return None;
    };
    let (INTEGER, _version, rest) = der_element(info)? else {
        return None;
    };
    let (SEQUENCE, _algorithm, rest) = der_element(rest)? else {
        return None;
    };
    let (OCTET_STRING, key, _) = der_element(rest)? else {
        return None;
    };
    Some(key)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::OnceLock;

    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::EcdsaKeyPair;

    use super::*;

    /// A 2048-bit RSA private key as PKCS#8 PEM, made once per test run.
    pub(crate) fn rsa_pem() -> &'static str {
        static PEM: OnceLock<String> = OnceLock::new();
        PEM.get_or_init(|| {
            let pair = rsa::KeyPair::generate(rsa::KeySize::Rsa2048).unwrap();
            pem_encode("PRIVATE KEY", pair.as_der().unwrap().as_ref())
        })
    }

    pub(crate) fn public_pem_of(private_pem: &str) -> String {
        KeyRing::from_pems(&[private_pem]).unwrap().public_pems()[0].clone()
    }

    // A 1024-bit RSA public key: too short to be trusted.
    const RSA_1024_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQCvyAuaLWBvH7nM+etk5gXOcIT3
co1HjU6/LJviFghGzh/rxOVSLvoy8beUV0Sras01QfqMCSzUe1hmeWH/jX2ktoFx
yBT3hgENDfzcr/6LR/8WHLNm2MzSt2al4XTmJVGf08+qY1UtRB8mJ7dxqLyqksUt
2fHA9RWtv32O2SgHpQIDAQAB
-----END PUBLIC KEY-----
";

    #[test]
    fn generated_es256_keys_sign() {
        let pem = generate_es256_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
        let ring = KeyRing::from_pems(&[&pem]).unwrap();
        assert!(ring.can_sign());
        let kid = ring.current_kid();
        assert_eq!(kid.len(), 32);
        assert!(
            kid.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(
            ring.keys().collect::<Vec<_>>(),
            [(kid, KeyAlgorithm::Es256)]
        );
        assert_ne!(generate_es256_pem().unwrap(), pem);
    }

    #[test]
    fn private_and_public_halves_share_the_kid() {
        let ec = generate_es256_pem().unwrap();
        for private in [ec.as_str(), rsa_pem()] {
            let ring = KeyRing::from_pems(&[private]).unwrap();
            let public = public_pem_of(private);
            assert!(public.starts_with("-----BEGIN PUBLIC KEY-----\n"));
            let public_ring = KeyRing::from_pems(&[&public]).unwrap();
            assert!(!public_ring.can_sign());
            assert_eq!(public_ring.current_kid(), ring.current_kid());
            assert_eq!(public_ring.public_pems(), [public]);
        }
    }

    #[test]
    fn every_supported_encoding_reads() {
        // SEC 1 and PKCS#1 private keys, PKCS#1 public keys: what older openssl commands write.
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let pkcs8 = pair.to_pkcs8v1().unwrap();
        let sec1 = pair.private_key().as_der().unwrap();
        let ec_pkcs8 = pem_encode("PRIVATE KEY", pkcs8.as_ref());
        let ec_sec1 = pem_encode("EC PRIVATE KEY", sec1.as_ref());
        let kid = KeyRing::from_pems(&[&ec_pkcs8])
            .unwrap()
            .current_kid()
            .to_owned();
        assert_eq!(KeyRing::from_pems(&[&ec_sec1]).unwrap().current_kid(), kid);

        let (_, rsa_der) = pem_decode(rsa_pem()).unwrap();
        let rsa_pkcs1 = pem_encode("RSA PRIVATE KEY", pkcs8_private_key(&rsa_der).unwrap());
        let rsa_ring = KeyRing::from_pems(&[&rsa_pkcs1]).unwrap();
        assert!(rsa_ring.can_sign());
        assert_eq!(
            rsa_ring.current_kid(),
            KeyRing::from_pems(&[rsa_pem()]).unwrap().current_kid()
        );
        assert_eq!(rsa_ring.keys().next().unwrap().1, KeyAlgorithm::Rs256);
        let rsa_public = rsa::KeyPair::from_pkcs8(&rsa_der).unwrap();
        let rsa_public_pkcs1 = pem_encode("RSA PUBLIC KEY", rsa_public.public_key().as_ref());
        assert_eq!(
            KeyRing::from_pems(&[&rsa_public_pkcs1])
                .unwrap()
                .current_kid(),
            rsa_ring.current_kid()
        );

        // Windows line ends, text around the block.
        let crlf = format!("my key:\r\n{}\r\n", ec_pkcs8.replace('\n', "\r\n"));
        assert_eq!(KeyRing::from_pems(&[&crlf]).unwrap().current_kid(), kid);
    }

    #[test]
    fn rotation_ring_keeps_previous_keys_once() {
        let new = generate_es256_pem().unwrap();
        let old = generate_es256_pem().unwrap();
        let old_public = public_pem_of(&old);
        let ring = KeyRing::from_pems(&[&new, &old_public, &old, &new]).unwrap();
        assert!(ring.can_sign());
        let kids: Vec<_> = ring.keys().map(|(kid, _)| kid.to_owned()).collect();
        assert_eq!(
            kids,
            [
                KeyRing::from_pems(&[&new]).unwrap().current_kid(),
                KeyRing::from_pems(&[&old]).unwrap().current_kid()
            ]
        );
        assert_eq!(ring.signing_key().unwrap().kid, kids[0]);
    }

    #[test]
    fn unusable_keys_are_refused() {
        let p384 = EcdsaKeyPair::generate_pkcs8(
            &aws_lc_rs::signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            &SystemRandom::new(),
        )
        .unwrap();
        let p384 = pem_encode("PRIVATE KEY", p384.as_ref());
        let cases = [
            (String::new(), "not a PEM"),
            ("hello".to_owned(), "not a PEM"),
            (
                "-----BEGIN PRIVATE KEY-----\n!!!\n-----END PRIVATE KEY-----\n".to_owned(),
                "not a PEM",
            ),
            (
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".to_owned(),
                "not a P-256",
            ),
            (p384, "not a P-256"),
            (RSA_1024_PUBLIC.to_owned(), "1024 bits"),
            (
                pem_encode("CERTIFICATE", b"x"),
                "a PEM \"CERTIFICATE\" is not a key",
            ),
            (pem_encode("ENCRYPTED PRIVATE KEY", b"x"), "encrypted"),
        ];
        for (pem, expected) in cases {
            let err = KeyRing::from_pems(&[&pem]).unwrap_err().to_string();
            assert!(err.contains(expected), "{err:?} for {pem:?}");
            assert!(err.starts_with("key 1: "), "{err}");
        }
        let err = KeyRing::from_pems::<&str>(&[]).unwrap_err();
        assert_eq!(err.to_string(), "no token signing key given");
        let good = generate_es256_pem().unwrap();
        let err = KeyRing::from_pems(&[good.as_str(), "junk"]).unwrap_err();
        assert!(err.to_string().starts_with("key 2: "), "{err}");
    }

    #[test]
    fn debug_output_holds_no_key_material() {
        let pem = generate_es256_pem().unwrap();
        let ring = KeyRing::from_pems(&[&pem]).unwrap();
        let debug = format!("{ring:?}");
        assert!(debug.contains(ring.current_kid()), "{debug}");
        let (_, der) = pem_decode(&pem).unwrap();
        let body = STANDARD.encode(&der);
        assert!(!debug.contains(&body[40..60]), "{debug}");
        assert!(!debug.contains("encoding:"), "{debug}");
    }

    #[test]
    fn der_walker_refuses_truncated_input() {
        assert_eq!(der_element(&[]), None);
        assert_eq!(der_element(&[0x30]), None);
        assert_eq!(der_element(&[0x30, 0x02, 0x01]), None);
        assert_eq!(der_element(&[0x30, 0x80]), None);
        assert_eq!(
            der_element(&[0x30, 0x81, 0x01, 0x05]),
            Some((0x30, &[5u8][..], &[][..]))
        );
        assert_eq!(pkcs8_private_key(&[0x04, 0x00]), None);
    }
}
