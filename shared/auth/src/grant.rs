//! Upload grants: what lets a client write one upload session on the upload front.
//!
//! The push function opens an upload session for a client it has authorized with a token,
//! then sends the client to the upload front with a grant in the upload URL. The front
//! checks nothing but the grant: clients send no `Authorization` header to a host other than
//! the registry's, so the grant itself must say which repository and which upload it opens,
//! for whom (the audit log's actor) and until when.
//!
//! A grant is a compact JWT signed with HMAC-SHA256 under a key only the push function and
//! the front hold. Both sides are trusted with the same writes (the front stores the bytes
//! the push function lets in), so a shared secret gives nothing away that a key pair would
//! keep; it is one random value to provision and a cheap check per request. It is not a
//! token key: a registry token never verifies as a grant, nor a grant as a token.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The audience of every grant: nothing else verifies as one.
const AUDIENCE: &str = "berth-upload";

/// The shortest key accepted, in bytes: as long as the HMAC-SHA256 output.
const MIN_KEY_BYTES: usize = 32;

/// How long a grant lives unless configured: the time a slow client may take to push one
/// large layer.
pub const DEFAULT_GRANT_LIFETIME: Duration = Duration::from_secs(3600);

/// One upload session, opened for one actor until a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadGrant {
    /// The repository the upload belongs to.
    pub repository: String,
    /// The upload session's id.
    pub upload: String,
    /// Who opened it: a user or robot account name, empty for anonymous.
    pub actor: String,
    /// Unix seconds after which the grant is refused.
    pub expires_at: u64,
}

/// Why a grant was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantError {
    /// Not a grant signed with this key: tampered with, cut short, or made elsewhere.
    Invalid,
    /// Signed here, but its time is over.
    Expired,
}

impl std::fmt::Display for GrantError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Invalid => "the upload grant is not valid",
            Self::Expired => "the upload grant has expired",
        })
    }
}

impl std::error::Error for GrantError {}

#[derive(Serialize, Deserialize)]
struct GrantClaims {
    aud: String,
    sub: String,
    jti: String,
    act: String,
    exp: u64,
}

/// The key that signs and checks upload grants.
pub struct GrantKey {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for GrantKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GrantKey(..)")
    }
}

impl GrantKey {
    /// A new random key, in the text form [`GrantKey::from_text`] reads (base64).
    pub fn generate() -> Result<String, String> {
        let mut secret = [0u8; MIN_KEY_BYTES];
        aws_lc_rs::rand::fill(&mut secret)
            .map_err(|_| "the system's random source failed".to_owned())?;
        Ok(STANDARD.encode(secret))
    }

    /// The key written as base64 of at least 32 bytes (surrounding whitespace ignored).
    pub fn from_text(text: &str) -> Result<Self, String> {
        let secret = STANDARD
            .decode(text.trim())
            .map_err(|_| "the upload grant key is not base64".to_owned())?;
        if secret.len() < MIN_KEY_BYTES {
            return Err(format!(
                "the upload grant key holds {} bytes, fewer than {MIN_KEY_BYTES}",
                secret.len()
            ));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["aud", "exp", "sub", "jti"]);
        // Expiry is checked against the caller's clock, below.
        validation.validate_exp = false;
        Ok(Self {
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
            validation,
        })
    }

    /// The grant's signed text, fit for a URL's query (base64url and dots).
    pub fn sign(&self, grant: &UploadGrant) -> Result<String, String> {
        let claims = GrantClaims {
            aud: AUDIENCE.to_owned(),
            sub: grant.repository.clone(),
            jti: grant.upload.clone(),
            act: grant.actor.clone(),
            exp: grant.expires_at,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| format!("signing an upload grant: {e}"))
    }

    /// The grant `text` carries, if this key signed it and it is still valid at `now`.
    pub fn verify(&self, text: &str, now: u64) -> Result<UploadGrant, GrantError> {
        let claims = jsonwebtoken::decode::<GrantClaims>(text, &self.decoding, &self.validation)
            .map_err(|error| match error.kind() {
                ErrorKind::ExpiredSignature => GrantError::Expired,
                _ => GrantError::Invalid,
            })?
            .claims;
        if claims.exp <= now {
            return Err(GrantError::Expired);
        }
        Ok(UploadGrant {
            repository: claims.sub,
            upload: claims.jti,
            actor: claims.act,
            expires_at: claims.exp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn fresh_key() -> GrantKey {
        GrantKey::from_text(&GrantKey::generate().unwrap()).unwrap()
    }

    fn grant() -> UploadGrant {
        UploadGrant {
            repository: "team/app".into(),
            upload: "6f1c2d3e-4a5b-4c6d-8e7f-8091a2b3c4d5".into(),
            actor: "alice".into(),
            expires_at: NOW + 3600,
        }
    }

    #[test]
    fn a_grant_verifies_under_its_key_until_it_expires() {
        let key = fresh_key();
        let text = key.sign(&grant()).unwrap();
        assert_eq!(key.verify(&text, NOW), Ok(grant()));
        assert_eq!(key.verify(&text, NOW + 3599), Ok(grant()));
        assert_eq!(key.verify(&text, NOW + 3600), Err(GrantError::Expired));
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
            "{text}"
        );
    }

    #[test]
    fn tampered_foreign_and_cut_grants_are_invalid() {
        let key = fresh_key();
        let text = key.sign(&grant()).unwrap();
        assert_eq!(
            fresh_key().verify(&text, NOW),
            Err(GrantError::Invalid),
            "another key"
        );
        let (head, rest) = text.split_once('.').unwrap();
        let (_, signature) = rest.split_once('.').unwrap();
        let forged = serde_json::json!({
            "aud": AUDIENCE, "sub": "team/other", "jti": "x", "act": "alice", "exp": NOW + 60,
        });
        let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(
            key.verify(&format!("{head}.{forged}.{signature}"), NOW),
            Err(GrantError::Invalid),
            "a changed payload"
        );
        assert_eq!(
            key.verify(&text[..text.len() - 2], NOW),
            Err(GrantError::Invalid)
        );
        assert_eq!(key.verify("", NOW), Err(GrantError::Invalid));
    }

    #[test]
    fn only_grants_verify_as_grants() {
        // A token of the same algorithm and key but another audience (a registry token).
        let secret = [9u8; 32];
        let key = GrantKey::from_text(&STANDARD.encode(secret)).unwrap();
        let claims = serde_json::json!({
            "aud": "berth", "sub": "team/app", "jti": "x", "act": "", "exp": NOW + 60,
        });
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&secret),
        )
        .unwrap();
        assert_eq!(key.verify(&token, NOW), Err(GrantError::Invalid));
    }

    #[test]
    fn keys_are_base64_of_32_bytes_or_more() {
        assert!(GrantKey::from_text("not base64!").is_err());
        assert!(GrantKey::from_text(&STANDARD.encode([1u8; 16])).is_err());
        assert!(GrantKey::from_text(&format!("{}\n", STANDARD.encode([1u8; 32]))).is_ok());
        assert_ne!(GrantKey::generate().unwrap(), GrantKey::generate().unwrap());
    }
}
