//! Who may do what in Berth: token scopes, signing keys, JSON Web Tokens, passwords, the
//! permission matrix and the token service that ties them to the account store. Pure logic:
//! no HTTP framework and no AWS; the HTTP edge calls in here and renders the results.
//!
//! The flow of a `docker login` / `docker pull`:
//!
//! 1. The registry answers `401` with a [`challenge`] naming the token realm and the scope it
//!    needs.
//! 2. The client asks the token endpoint for that [`scope`]; the [`service::TokenService`]
//!    authenticates it ([`password`], robot secrets, refresh tokens), intersects the request
//!    with what the [`policy`] allows, and signs a [`token`] with the [`keys`] of the ring.
//! 3. The registry verifies the token with a [`token::TokenVerifier`] and checks
//!    [`token::Claims::allows`] for the endpoint's access.

pub mod challenge;
pub mod grant;
pub mod keys;
pub mod password;
pub mod policy;
pub mod scope;
pub mod service;
pub mod token;

pub use challenge::{ChallengeError, bearer_challenge};
pub use grant::{GrantError, GrantKey, UploadGrant};
pub use keys::{KeyAlgorithm, KeyError, KeyRing, generate_es256_pem};
pub use password::{PasswordHasher, WeakPassword, check_password_policy, generate_robot_secret};
pub use policy::Principal;
pub use scope::{Action, ActionSet, Scope, parse_scopes};
pub use service::{AuthError, Throttle, TokenResponse, TokenService};
pub use token::{Claims, IssuedToken, ResourceAccess, TokenIssuer, TokenVerifier, VerifyError};

/// The current time in Unix seconds, the clock every `now` parameter of this crate expects.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// `secs` after the Unix epoch as an RFC 3339 UTC timestamp (`2023-11-14T22:13:20Z`).
pub fn rfc3339(secs: u64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    i64::try_from(secs)
        .ok()
        .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
        .and_then(|at| at.format(&format).ok())
        .unwrap_or_else(|| "9999-12-31T23:59:59Z".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(951_868_799), "2000-02-29T23:59:59Z");
        assert_eq!(rfc3339(951_868_800), "2000-03-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_107_542_400), "2100-03-01T00:00:00Z");
        assert_eq!(rfc3339(253_402_300_799), "9999-12-31T23:59:59Z");
    }
}
