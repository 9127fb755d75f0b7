//! Registry tokens: JSON Web Tokens in the shape of Docker's token authentication
//! specification, signed by the [`KeyRing`]'s current key and verified by any key of it.
//!
//! A token's header names its key (`kid`) and algorithm; its claims are the registered ones,
//! all required, and the `access` it grants:
//!
//! ```json
//! {"iss": "berth", "sub": "alice", "aud": "registry.example.com",
//!  "exp": 1700001800, "nbf": 1700000000, "iat": 1700000000,
//!  "jti": "5f2c…", "access": [{"type": "repository", "name": "team/app", "actions": ["pull", "push"]}]}
//! ```
//!
//! Verification trusts nothing the token says about how to check it: the key is looked up
//! by `kid` in the ring, and only that key's own algorithm is accepted, so `alg: none`, an
//! HMAC signature keyed with the public key, or an ES256 header on an RS256 key all fail.
//! `exp` and `nbf` are checked with [`LEEWAY_SECS`] of tolerance for clocks that disagree.
//!
//! Two kinds of token are issued, told apart by their audience so neither can stand in for
//! the other, even before a verifier reads any claim of Berth's own:
//!
//! * an **access token** is addressed to the registry: `aud` is the service name;
//! * a **refresh token** is addressed back to the token service: `aud` is the service name
//!   followed by [`REFRESH_AUDIENCE_SUFFIX`], and its `access` is empty. A registry that
//!   checks `aud` (Berth's, or any other implementing the specification) refuses it, and
//!   [`TokenVerifier::verify_refresh`] refuses an access token.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::Duration;

use berth_core::{RegistryError, RepositoryName};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Header, Validation};
use lru::LruCache;
use serde::{Deserialize, Serialize};

use crate::keys::{KeyError, KeyRing, SigningKey};
use crate::scope::Action;

/// How far `exp` and `nbf` may be off before a token is refused, in seconds: enough for the
/// clocks of the token service and the registry to disagree a little.
pub const LEEWAY_SECS: u64 = 30;
/// Default lifetime of an access token.
pub const DEFAULT_ACCESS_LIFETIME: Duration = Duration::from_secs(30 * 60);
/// Default lifetime of a refresh token.
pub const DEFAULT_REFRESH_LIFETIME: Duration = Duration::from_secs(30 * 24 * 60 * 60);
/// The longest token the verifier's cache keeps (a typical one is under 1 KiB).
const MAX_CACHED_TOKEN_LEN: usize = 4096;
/// What a refresh token's `aud` adds to the service name.
pub const REFRESH_AUDIENCE_SUFFIX: &str = "#refresh";
/// Longest token read, in bytes: far more than the most access one token request can be
/// granted, and a bound on the work an invented token can cause.
pub const MAX_TOKEN_LEN: usize = 64 * 1024;

/// Access to one resource, as a token's `access` claim lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceAccess {
    /// `repository` or `registry`.
    #[serde(rename = "type")]
    pub resource_type: String,
    /// A repository name, or `catalog`.
    pub name: String,
    /// `pull`, `push`, `delete`, or `*` for every action.
    pub actions: Vec<String>,
}

impl ResourceAccess {
    /// Access to a repository.
    pub fn repository(name: &RepositoryName, actions: impl IntoIterator<Item = Action>) -> Self {
        Self {
            resource_type: "repository".to_owned(),
            name: name.as_str().to_owned(),
            actions: actions
                .into_iter()
                .map(|action| action.as_str().to_owned())
                .collect(),
        }
    }

    /// `registry:catalog:*`: listing every repository.
    pub fn catalog() -> Self {
        Self {
            resource_type: "registry".to_owned(),
            name: "catalog".to_owned(),
            actions: vec!["*".to_owned()],
        }
    }
}

/// The claims of a token. Every field is required when a token is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who issued it: the token service's name.
    pub iss: String,
    /// Whom it was issued to: a user or robot account name, empty for anonymous.
    pub sub: String,
    /// Whom it is for: the registry's service name (see the module documentation).
    pub aud: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Not valid before, Unix seconds.
    pub nbf: u64,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// A unique id (a random UUID).
    pub jti: String,
    /// What the token grants.
    pub access: Vec<ResourceAccess>,
}

impl Claims {
    /// Whether the token grants `action` on the resource of type `resource_type` named
    /// `name` (`*` in a granted entry grants every action).
    pub fn allows(&self, resource_type: &str, name: &str, action: &str) -> bool {
        self.access.iter().any(|entry| {
            entry.resource_type == resource_type
                && entry.name == name
                && entry.actions.iter().any(|a| a == action || a == "*")
        })
    }

    /// Whether the token grants `action` on `repository`.
    pub fn allows_repository(&self, repository: &RepositoryName, action: Action) -> bool {
        self.allows("repository", repository.as_str(), action.as_str())
    }

    /// Whether the token grants listing the catalog.
    pub fn allows_catalog(&self) -> bool {
        self.allows("registry", "catalog", "*")
    }
}

/// Why a token was refused. Safe to show the client: no part of the token is repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyError {
    /// Not a JWT, or its header or claims are not what Berth issues.
    Malformed,
    /// Its `kid` names no key of the ring.
    UnknownKey,
    /// The signature does not verify with the key, or the algorithm is not the key's.
    BadSignature,
    Expired,
    NotYetValid,
    /// Issued by someone else.
    WrongIssuer,
    /// Meant for another service, or the other kind of token.
    WrongAudience,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Malformed => "the token is malformed",
            Self::UnknownKey => "the token is signed by an unknown key",
            Self::BadSignature => "the token's signature is invalid",
            Self::Expired => "the token has expired",
            Self::NotYetValid => "the token is not valid yet",
            Self::WrongIssuer => "the token was issued by someone else",
            Self::WrongAudience => "the token is not meant for this service",
        })
    }
}

impl std::error::Error for VerifyError {}

impl From<jsonwebtoken::errors::Error> for VerifyError {
    fn from(error: jsonwebtoken::errors::Error) -> Self {
        match error.kind() {
            ErrorKind::InvalidSignature
            | ErrorKind::InvalidAlgorithm
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidKeyFormat => Self::BadSignature,
            ErrorKind::ExpiredSignature => Self::Expired,
            ErrorKind::ImmatureSignature => Self::NotYetValid,
            ErrorKind::InvalidIssuer => Self::WrongIssuer,
            ErrorKind::InvalidAudience => Self::WrongAudience,
            _ => Self::Malformed,
        }
    }
}

/// A signed token and when it expires.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The compact JWT.
    pub token: String,
    pub claims: Claims,
}

impl fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("claims", &self.claims)
            .finish_non_exhaustive()
    }
}

/// Signs access and refresh tokens with the ring's current key.
pub struct TokenIssuer {
    issuer: String,
    service: String,
    refresh_audience: String,
    access_lifetime: u64,
    refresh_lifetime: u64,
    key: SigningKey,
    header: Header,
}

impl fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("issuer", &self.issuer)
            .field("service", &self.service)
            .field("access_lifetime", &self.access_lifetime)
            .field("refresh_lifetime", &self.refresh_lifetime)
            .field("kid", &self.key.kid)
            .finish_non_exhaustive()
    }
}

impl TokenIssuer {
    /// An issuer named `issuer` of tokens for `service` (the registry's service name, which
    /// clients repeat in their token requests), with the default lifetimes. Fails when the
    /// ring's current key is only a public key.
    pub fn new(issuer: &str, service: &str, ring: &KeyRing) -> Result<Self, KeyError> {
        let key = ring.signing_key().ok_or_else(|| {
            KeyError::new("the current token key is a public key: it cannot sign tokens")
        })?;
        let mut header = Header::new(key.algorithm.jwt());
        header.kid = Some(key.kid.clone());
        Ok(Self {
            issuer: issuer.to_owned(),
            refresh_audience: format!("{service}{REFRESH_AUDIENCE_SUFFIX}"),
            service: service.to_owned(),
            access_lifetime: DEFAULT_ACCESS_LIFETIME.as_secs(),
            refresh_lifetime: DEFAULT_REFRESH_LIFETIME.as_secs(),
            key: key.clone(),
            header,
        })
    }

    /// How long access tokens live (30 minutes unless changed; at least a second).
    #[must_use]
    pub fn with_access_lifetime(mut self, lifetime: Duration) -> Self {
        self.access_lifetime = lifetime.as_secs().max(1);
        self
    }

    /// How long refresh tokens live (30 days unless changed; at least a second).
    #[must_use]
    pub fn with_refresh_lifetime(mut self, lifetime: Duration) -> Self {
        self.refresh_lifetime = lifetime.as_secs().max(1);
        self
    }

    /// An access token for `subject` granting `access`, valid from `now` for the access
    /// lifetime, or until `not_after` if that comes first (a robot account's expiry).
    pub fn issue(
        &self,
        subject: &str,
        access: Vec<ResourceAccess>,
        now: u64,
        not_after: Option<u64>,
    ) -> Result<IssuedToken, RegistryError> {
        let exp = now.saturating_add(self.access_lifetime);
        let exp = not_after.map_or(exp, |limit| exp.min(limit));
        self.sign(self.service.clone(), subject, access, now, exp)
    }

    /// A refresh token for `subject`, valid from `now` for the refresh lifetime.
    pub fn issue_refresh(&self, subject: &str, now: u64) -> Result<IssuedToken, RegistryError> {
        let exp = now.saturating_add(self.refresh_lifetime);
        self.sign(self.refresh_audience.clone(), subject, Vec::new(), now, exp)
    }

    fn sign(
        &self,
        aud: String,
        subject: &str,
        access: Vec<ResourceAccess>,
        now: u64,
        exp: u64,
    ) -> Result<IssuedToken, RegistryError> {
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: subject.to_owned(),
            aud,
            exp,
            nbf: now,
            iat: now,
            jti: uuid::Uuid::new_v4().simple().to_string(),
            access,
        };
        let token = jsonwebtoken::encode(&self.header, &claims, &self.key.encoding)
            .map_err(|e| RegistryError::internal(format!("signing a token failed: {e}")))?;
        Ok(IssuedToken { token, claims })
    }
}

/// One verification key with everything a verification needs, prepared once.
struct Verifying {
    decoding: jsonwebtoken::DecodingKey,
    access: Validation,
    refresh: Validation,
}

/// Verifies tokens against every key of a ring.
///
/// With [`TokenVerifier::with_cache`], it remembers the claims of access tokens it verified:
/// a client sends the same token with every request of a push or pull, and a remembered
/// token costs a lookup instead of a signature check. Only tokens that verified are
/// remembered, by their exact text, and their `exp` and `nbf` are checked again on every
/// use, so the answer is always the one a full verification would give.
pub struct TokenVerifier {
    keys: HashMap<String, Verifying>,
    verified: Option<Mutex<LruCache<Box<str>, Claims>>>,
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// A verifier of the tokens `issuer` issues for `service` with the keys of `ring`.
    pub fn new(issuer: &str, service: &str, ring: &KeyRing) -> Self {
        let refresh_audience = format!("{service}{REFRESH_AUDIENCE_SUFFIX}");
        let validation = |algorithm, audience: &str| {
            let mut validation = Validation::new(algorithm);
            validation.set_issuer(&[issuer]);
            validation.set_audience(&[audience]);
            validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
            // Time is checked against the caller's clock (`now`), below.
            validation.validate_exp = false;
            validation.validate_nbf = false;
            validation
        };
        let keys = ring
            .verification_keys()
            .iter()
            .map(|key| {
                let algorithm = key.algorithm.jwt();
                let verifying = Verifying {
                    decoding: key.decoding.clone(),
                    access: validation(algorithm, service),
                    refresh: validation(algorithm, &refresh_audience),
                };
                (key.kid.clone(), verifying)
            })
            .collect();
        Self {
            keys,
            verified: None,
        }
    }

    /// Remembers up to `capacity` verified access tokens (see the type's documentation).
    #[must_use]
    pub fn with_cache(mut self, capacity: usize) -> Self {
        self.verified = NonZeroUsize::new(capacity).map(|n| Mutex::new(LruCache::new(n)));
        self
    }

    /// The claims of a valid access token at `now` (Unix seconds).
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, VerifyError> {
        let Some(verified) = &self.verified else {
            return self.verify_with(token, now, |key| &key.access);
        };
        let remembered = lock(verified).get(token).cloned();
        let claims = match remembered {
            Some(claims) => claims,
            None => {
                let claims = self.verify_with(token, now, |key| &key.access)?;
                // Bounded in bytes too: tokens naming many long repositories are not kept.
                if token.len() <= MAX_CACHED_TOKEN_LEN {
                    lock(verified).put(token.into(), claims.clone());
                }
                claims
            }
        };
        check_times(&claims, now)?;
        Ok(claims)
    }

    /// Whether the key `token` names (its `kid`) is one of this verifier's; `None` when the
    /// token is not a JWT or names no key. Cheap: the signature is not checked.
    pub fn knows_key_of(&self, token: &str) -> Option<bool> {
        if token.len() > MAX_TOKEN_LEN {
            return None;
        }
        let header = jsonwebtoken::decode_header(token).ok()?;
        Some(self.keys.contains_key(header.kid.as_deref()?))
    }

    /// The claims of a valid refresh token at `now` (Unix seconds).
    pub fn verify_refresh(&self, token: &str, now: u64) -> Result<Claims, VerifyError> {
        self.verify_with(token, now, |key| &key.refresh)
    }

    fn verify_with(
        &self,
        token: &str,
        now: u64,
        validation: impl Fn(&Verifying) -> &Validation,
    ) -> Result<Claims, VerifyError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(VerifyError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| VerifyError::Malformed)?;
        let kid = header.kid.as_deref().ok_or(VerifyError::UnknownKey)?;
        let key = self.keys.get(kid).ok_or(VerifyError::UnknownKey)?;
        let claims = jsonwebtoken::decode::<Claims>(token, &key.decoding, validation(key))?.claims;
        check_times(&claims, now)?;
        Ok(claims)
    }
}

/// `exp` and `nbf` against `now`, with [`LEEWAY_SECS`] either way.
fn check_times(claims: &Claims, now: u64) -> Result<(), VerifyError> {
    if now >= claims.exp.saturating_add(LEEWAY_SECS) {
        return Err(VerifyError::Expired);
    }
    if now.saturating_add(LEEWAY_SECS) < claims.nbf {
        return Err(VerifyError::NotYetValid);
    }
    Ok(())
}

/// The cache's lock; a panic while it was held cannot leave it inconsistent (a lookup or an
/// insert), so a poisoned lock is used as it is.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;
    use crate::keys::generate_es256_pem;
    use crate::keys::tests::{public_pem_of, rsa_pem};

    const NOW: u64 = 1_700_000_000;
    const ISSUER: &str = "berth-token";
    const SERVICE: &str = "registry.example.com";

    fn ring(pems: &[&str]) -> KeyRing {
        KeyRing::from_pems(pems).unwrap()
    }

    fn pair(ring: &KeyRing) -> (TokenIssuer, TokenVerifier) {
        (
            TokenIssuer::new(ISSUER, SERVICE, ring).unwrap(),
            TokenVerifier::new(ISSUER, SERVICE, ring),
        )
    }

    fn typical_access() -> Vec<ResourceAccess> {
        vec![ResourceAccess::repository(
            &"team/app".parse().unwrap(),
            [Action::Pull, Action::Push],
        )]
    }

    fn b64(json: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(json.to_string())
    }

    fn claims_json(now: u64) -> serde_json::Value {
        serde_json::json!({
            "iss": ISSUER, "sub": "mallory", "aud": SERVICE,
            "exp": now + 600, "nbf": now, "iat": now, "jti": "x",
            "access": [{"type": "repository", "name": "team/app", "actions": ["pull", "push", "delete"]}],
        })
    }

    #[test]
    fn a_cached_token_is_still_checked_for_time_and_only_good_tokens_are_cached() {
        let ring = ring(&[&generate_es256_pem().unwrap()]);
        let (issuer, verifier) = pair(&ring);
        let verifier = verifier.with_cache(4);
        let issuer = issuer.with_access_lifetime(Duration::from_secs(60));
        let token = issuer.issue("alice", typical_access(), NOW, None).unwrap();
        assert_eq!(verifier.verify(&token.token, NOW).unwrap(), token.claims);
        assert_eq!(
            verifier.verify(&token.token, NOW + 1).unwrap(),
            token.claims
        );
        assert_eq!(
            verifier.verify(&token.token, NOW + 60 + LEEWAY_SECS),
            Err(VerifyError::Expired),
            "remembered, but expired"
        );
        assert_eq!(
            verifier.verify(&token.token, NOW - LEEWAY_SECS - 1),
            Err(VerifyError::NotYetValid)
        );
        // A character well inside the signature (the last one may only hold padding bits).
        let at = token.token.len() - 10;
        let swapped = if &token.token[at..=at] == "A" {
            "B"
        } else {
            "A"
        };
        let tampered = format!("{}{swapped}{}", &token.token[..at], &token.token[at + 1..]);
        for _ in 0..2 {
            assert!(verifier.verify(&tampered, NOW).is_err(), "never remembered");
        }
        let others: Vec<String> = (0..8)
            .map(|_| issuer.issue("bob", Vec::new(), NOW, None).unwrap().token)
            .collect();
        for other in &others {
            verifier.verify(other, NOW).unwrap();
        }
        assert_eq!(
            verifier.verify(&token.token, NOW).unwrap(),
            token.claims,
            "evicted, then verified again"
        );
    }

    #[test]
    fn issued_tokens_verify_and_carry_their_claims() {
        let es = generate_es256_pem().unwrap();
        for pem in [es.as_str(), rsa_pem()] {
            let ring = ring(&[pem]);
            let (issuer, verifier) = pair(&ring);
            let issued = issuer.issue("alice", typical_access(), NOW, None).unwrap();
            let claims = verifier.verify(&issued.token, NOW).unwrap();
            assert_eq!(claims, issued.claims);
            assert_eq!(claims.iss, ISSUER);
            assert_eq!(claims.sub, "alice");
            assert_eq!(claims.aud, SERVICE);
            assert_eq!((claims.iat, claims.nbf, claims.exp), (NOW, NOW, NOW + 1800));
            assert_eq!(claims.jti.len(), 32);

            let header = jsonwebtoken::decode_header(&issued.token).unwrap();
            assert_eq!(header.kid.as_deref(), Some(ring.current_kid()));
            let algorithm = ring.keys().next().unwrap().1;
            assert_eq!(header.alg, algorithm.jwt());
        }
    }

    #[test]
    fn a_verifier_tells_whether_it_knows_a_tokens_key() {
        let old = generate_es256_pem().unwrap();
        let new = generate_es256_pem().unwrap();
        let (old_issuer, old_verifier) = pair(&ring(&[&old]));
        let (new_issuer, _) = pair(&ring(&[&new, &old]));
        let by_old = old_issuer.issue("alice", Vec::new(), NOW, None).unwrap();
        let by_new = new_issuer.issue("alice", Vec::new(), NOW, None).unwrap();
        assert_eq!(old_verifier.knows_key_of(&by_old.token), Some(true));
        assert_eq!(old_verifier.knows_key_of(&by_new.token), Some(false));
        assert_eq!(old_verifier.knows_key_of("not-a-jwt"), None);
        let no_kid = format!(
            "{}.{}.",
            b64(&serde_json::json!({"alg": "ES256", "typ": "JWT"})),
            b64(&claims_json(NOW))
        );
        assert_eq!(old_verifier.knows_key_of(&no_kid), None);
    }

    #[test]
    fn every_token_has_its_own_id() {
        let ring = ring(&[&generate_es256_pem().unwrap()]);
        let (issuer, _) = pair(&ring);
        let a = issuer.issue("alice", vec![], NOW, None).unwrap();
        let b = issuer.issue("alice", vec![], NOW, None).unwrap();
        assert_ne!(a.claims.jti, b.claims.jti);
    }

    #[test]
    fn lifetimes_and_caps() {
        let ring = ring(&[&generate_es256_pem().unwrap()]);
        let issuer = TokenIssuer::new(ISSUER, SERVICE, &ring)
            .unwrap()
            .with_access_lifetime(Duration::from_secs(60))
            .with_refresh_lifetime(Duration::from_secs(3600));
        assert_eq!(
            issuer.issue("a", vec![], NOW, None).unwrap().claims.exp,
            NOW + 60
        );
        assert_eq!(
            issuer
                .issue("a", vec![], NOW, Some(NOW + 10))
                .unwrap()
                .claims
                .exp,
            NOW + 10
        );
        assert_eq!(
            issuer
                .issue("a", vec![], NOW, Some(NOW + 1000))
                .unwrap()
                .claims
                .exp,
            NOW + 60
        );
        let refresh = issuer.issue_refresh("a", NOW).unwrap();
        assert_eq!(refresh.claims.exp, NOW + 3600);
        assert!(refresh.claims.access.is_empty());
        assert_eq!(refresh.claims.aud, format!("{SERVICE}#refresh"));
    }

    #[test]
    fn expiry_and_not_before_allow_the_leeway_and_no_more() {
        let ring = ring(&[&generate_es256_pem().unwrap()]);
        let (issuer, verifier) = pair(&ring);
        let token = issuer
            .issue("alice", typical_access(), NOW, None)
            .unwrap()
            .token;
        let exp = NOW + 1800;
        assert!(verifier.verify(&token, exp).is_ok());
        assert!(verifier.verify(&token, exp + LEEWAY_SECS - 1).is_ok());
        assert_eq!(
            verifier.verify(&token, exp + LEEWAY_SECS),
            Err(VerifyError::Expired)
        );
        assert_eq!(verifier.verify(&token, u64::MAX), Err(VerifyError::Expired));
        assert!(verifier.verify(&token, NOW - LEEWAY_SECS).is_ok());
        assert_eq!(
            verifier.verify(&token, NOW - LEEWAY_SECS - 1),
            Err(VerifyError::NotYetValid)
        );
    }

    #[test]
    fn a_flipped_byte_breaks_the_signature() {
        let es = generate_es256_pem().unwrap();
        for pem in [es.as_str(), rsa_pem()] {
            let (issuer, verifier) = pair(&ring(&[pem]));
            let token = issuer
                .issue("alice", typical_access(), NOW, None)
                .unwrap()
                .token;
            let (message, signature) = token.rsplit_once('.').unwrap();
            let mut signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
            signature[5] ^= 1;
            let forged = format!("{message}.{}", URL_SAFE_NO_PAD.encode(&signature));
            assert_eq!(
                verifier.verify(&forged, NOW),
                Err(VerifyError::BadSignature)
            );

            // The claims changed under a valid signature.
            let (header, _) = message.split_once('.').unwrap();
            let tampered = format!(
                "{header}.{}.{}",
                b64(&claims_json(NOW)),
                token.rsplit('.').next().unwrap()
            );
            assert_eq!(
                verifier.verify(&tampered, NOW),
                Err(VerifyError::BadSignature)
            );
        }
    }

    #[test]
    fn unsigned_tokens_are_refused() {
        let ring = ring(&[&generate_es256_pem().unwrap()]);
        let (_, verifier) = pair(&ring);
        let kid = ring.current_kid();
        let claims = b64(&claims_json(NOW));
        for alg in ["none", "None", "NONE"] {
            let header = b64(&serde_json::json!({"alg": alg, "typ": "JWT", "kid": kid}));
            for signature in ["", "AAAA"] {
                let token = format!("{header}.{claims}.{signature}");
                assert_eq!(
                    verifier.verify(&token, NOW),
                    Err(VerifyError::Malformed),
                    "{alg}"
                );
            }
        }
    }

    #[test]
    fn hmac_signed_with_the_public_key_is_refused() {
        let es = generate_es256_pem().unwrap();
        for pem in [es.as_str(), rsa_pem()] {
            let ring = ring(&[pem]);
            let (_, verifier) = pair(&ring);
            let public = public_pem_of(pem);
            let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
            header.kid = Some(ring.current_kid().to_owned());
            for secret in [public.as_bytes(), public.trim().as_bytes()] {
                let key = jsonwebtoken::EncodingKey::from_secret(secret);
                let token = jsonwebtoken::encode(&header, &claims_json(NOW), &key).unwrap();
                assert_eq!(verifier.verify(&token, NOW), Err(VerifyError::BadSignature));
            }
        }
    }

    #[test]
    fn the_header_cannot_choose_another_algorithm_for_a_key() {
        // An ES256-signed token whose header names the kid of an RS256 key.
        let es = generate_es256_pem().unwrap();
        let es_ring = ring(&[&es]);
        let rs_ring = ring(&[rsa_pem()]);
        let (_, verifier) = pair(&ring(&[rsa_pem(), &es]));
        let (es_issuer, _) = pair(&es_ring);
        let mut token = es_issuer
            .issue("alice", typical_access(), NOW, None)
            .unwrap()
            .token;
        let header =
            b64(&serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": rs_ring.current_kid()}));
        let rest = token.split_once('.').unwrap().1.to_owned();
        token = format!("{header}.{rest}");
        assert_eq!(verifier.verify(&token, NOW), Err(VerifyError::BadSignature));
        // And an RS256 header on the ES256 key.
        let header =
            b64(&serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": es_ring.current_kid()}));
        let token = format!("{header}.{rest}");
        assert_eq!(verifier.verify(&token, NOW), Err(VerifyError::BadSignature));
    }

    #[test]
    fn wrong_audience_and_issuer_are_refused() {
        let ring = ring(&[&generate_es256_pem().unwrap()]);
        let verifier = TokenVerifier::new(ISSUER, SERVICE, &ring);
        let other_service = TokenIssuer::new(ISSUER, "other.example.com", &ring).unwrap();
        let token = other_service
            .issue("alice", typical_access(), NOW, None)
            .unwrap()
            .token;
        assert_eq!(
            verifier.verify(&token, NOW),
            Err(VerifyError::WrongAudience)
        );
        let other_issuer = TokenIssuer::new("someone-else", SERVICE, &ring).unwrap();
        let token = other_issuer
            .issue("alice", typical_access(), NOW, None)
            .unwrap()
            .token;
        assert_eq!(verifier.verify(&token, NOW), Err(VerifyError::WrongIssuer));
    }

    #[test]
    fn unknown_and_foreign_keys_are_refused() {
        let ring_a = ring(&[&generate_es256_pem().unwrap()]);
        let ring_b = ring(&[&generate_es256_pem().unwrap()]);
        let (_, verifier) = pair(&ring_a);
        let (foreign, _) = pair(&ring_b);
        let token = foreign
            .issue("alice", typical_access(), NOW, None)
            .unwrap()
            .token;
        assert_eq!(verifier.verify(&token, NOW), Err(VerifyError::UnknownKey));

        // A foreign key's signature under a trusted kid.
        let rest = token.split_once('.').unwrap().1;
        let header =
            b64(&serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": ring_a.current_kid()}));
        let token = format!("{header}.{rest}");
        assert_eq!(verifier.verify(&token, NOW), Err(VerifyError::BadSignature));

        // No kid at all.
        let header = b64(&serde_json::json!({"alg": "ES256", "typ": "JWT"}));
        let token = format!("{header}.{rest}");
        assert_eq!(verifier.verify(&token, NOW), Err(VerifyError::UnknownKey));
    }

    #[test]
    fn refresh_and_access_tokens_do_not_stand_in_for_each_other() {
        let ring = ring(&[&generate_es256_pem().unwrap()]);
        let (issuer, verifier) = pair(&ring);
        let refresh = issuer.issue_refresh("alice", NOW).unwrap().token;
        let access = issuer
            .issue("alice", typical_access(), NOW, None)
            .unwrap()
            .token;
        assert_eq!(
            verifier.verify(&refresh, NOW),
            Err(VerifyError::WrongAudience)
        );
        assert_eq!(
            verifier.verify_refresh(&access, NOW),
            Err(VerifyError::WrongAudience)
        );
        assert_eq!(verifier.verify_refresh(&refresh, NOW).unwrap().sub, "alice");
        let late = NOW + DEFAULT_REFRESH_LIFETIME.as_secs() + LEEWAY_SECS;
        assert_eq!(
            verifier.verify_refresh(&refresh, late),
            Err(VerifyError::Expired)
        );
    }

    #[test]
    fn keys_rotate_without_logging_anyone_out() {
        let old = generate_es256_pem().unwrap();
        let new = generate_es256_pem().unwrap();
        let (old_issuer, _) = pair(&ring(&[&old]));
        let token = old_issuer
            .issue("alice", typical_access(), NOW, None)
            .unwrap()
            .token;

        let rotated = ring(&[&new, &public_pem_of(&old)]);
        let (new_issuer, verifier) = pair(&rotated);
        assert!(verifier.verify(&token, NOW).is_ok());
        let fresh = new_issuer
            .issue("alice", typical_access(), NOW, None)
            .unwrap()
            .token;
        assert!(verifier.verify(&fresh, NOW).is_ok());

        let (_, verifier) = pair(&ring(&[&new]));
        assert_eq!(verifier.verify(&token, NOW), Err(VerifyError::UnknownKey));
        assert!(verifier.verify(&fresh, NOW).is_ok());
    }

    #[test]
    fn a_public_ring_verifies_but_cannot_issue() {
        let private = generate_es256_pem().unwrap();
        let public = ring(&[&public_pem_of(&private)]);
        assert!(TokenIssuer::new(ISSUER, SERVICE, &public).is_err());
        let (issuer, _) = pair(&ring(&[&private]));
        let token = issuer
            .issue("alice", typical_access(), NOW, None)
            .unwrap()
            .token;
        let verifier = TokenVerifier::new(ISSUER, SERVICE, &public);
        assert!(verifier.verify(&token, NOW).is_ok());
    }

    #[test]
    fn missing_claims_and_garbage_are_malformed() {
        let ring = ring(&[&generate_es256_pem().unwrap()]);
        let (issuer, verifier) = pair(&ring);
        let mut header = Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(ring.current_kid().to_owned());
        for claim in ["iss", "sub", "aud", "exp", "nbf", "iat", "jti", "access"] {
            let mut claims = claims_json(NOW);
            claims.as_object_mut().unwrap().remove(claim);
            let token = jsonwebtoken::encode(&header, &claims, &issuer.key.encoding).unwrap();
            assert!(verifier.verify(&token, NOW).is_err(), "without {claim}");
        }
        let mut claims = claims_json(NOW);
        claims["aud"] = serde_json::json!([SERVICE]);
        let token = jsonwebtoken::encode(&header, &claims, &issuer.key.encoding).unwrap();
        assert_eq!(verifier.verify(&token, NOW), Err(VerifyError::Malformed));
        for garbage in ["", ".", "..", "a.b.c", "a.b", "a.b.c.d", "Bearer x"] {
            assert!(verifier.verify(garbage, NOW).is_err(), "{garbage:?}");
        }
        let huge = issuer
            .issue("alice", vec![typical_access()[0].clone(); 2000], NOW, None)
            .unwrap()
            .token;
        assert!(huge.len() > MAX_TOKEN_LEN);
        assert_eq!(verifier.verify(&huge, NOW), Err(VerifyError::Malformed));
    }

    #[test]
    fn claims_answer_access_questions() {
        let claims = Claims {
            iss: ISSUER.into(),
            sub: "alice".into(),
            aud: SERVICE.into(),
            exp: NOW,
            nbf: NOW,
            iat: NOW,
            jti: "x".into(),
            access: vec![
                ResourceAccess::repository(
                    &"team/app".parse().unwrap(),
                    [Action::Pull, Action::Push],
                ),
                ResourceAccess::catalog(),
            ],
        };
        let app: RepositoryName = "team/app".parse().unwrap();
        let other: RepositoryName = "team/other".parse().unwrap();
        assert!(claims.allows_repository(&app, Action::Pull));
        assert!(claims.allows_repository(&app, Action::Push));
        assert!(!claims.allows_repository(&app, Action::Delete));
        assert!(!claims.allows_repository(&other, Action::Pull));
        assert!(claims.allows_catalog());
        assert!(!claims.allows("registry", "team/app", "pull"));
        assert!(claims.allows("registry", "catalog", "anything"));

        let json = serde_json::to_value(&claims.access).unwrap();
        assert_eq!(
            json,
            serde_json::json!([
                {"type": "repository", "name": "team/app", "actions": ["pull", "push"]},
                {"type": "registry", "name": "catalog", "actions": ["*"]},
            ])
        );
    }

    #[test]
    fn debug_output_holds_no_token_or_key() {
        let ring = ring(&[&generate_es256_pem().unwrap()]);
        let (issuer, verifier) = pair(&ring);
        let issued = issuer.issue("alice", vec![], NOW, None).unwrap();
        let debug = format!("{issued:?} {issuer:?} {verifier:?}");
        let signature = issued.token.rsplit('.').next().unwrap();
        assert!(!debug.contains(signature), "{debug}");
        assert!(!debug.contains(&issued.token[..20]), "{debug}");
    }
}
