//! The `WWW-Authenticate` challenge of a `401`: where to get a token, and for what.
//!
//! ```text
//! Bearer realm="https://registry.example.com/service/token",service="registry.example.com",scope="repository:team/app:pull,push"
//! ```
//!
//! Docker clients read `realm`, `service` and `scope` and ask the realm for a token with the
//! same `service` and `scope`. `error` follows RFC 6750: `invalid_token` when the token
//! presented could not be verified, `insufficient_scope` when it was valid but does not
//! grant the access needed.

use std::fmt::Write;

use crate::scope::Scope;

/// Why a presented token was not enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeError {
    /// Expired, badly signed, not for this service, or otherwise unusable.
    InvalidToken,
    /// Valid, but it does not grant the access the request needs.
    InsufficientScope,
}

impl ChallengeError {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidToken => "invalid_token",
            Self::InsufficientScope => "insufficient_scope",
        }
    }
}

/// The value of a `WWW-Authenticate` header asking for a bearer token from `realm` for
/// `service` granting `scopes` (omitted when empty, as for the version check). Values are
/// quoted, with `"` and `\` escaped and control characters dropped, so the result is always
/// a valid header value.
pub fn bearer_challenge(
    realm: &str,
    service: &str,
    scopes: &[Scope],
    error: Option<ChallengeError>,
) -> String {
    let mut header = String::from("Bearer ");
    push_param(&mut header, "realm", realm);
    header.push(',');
    push_param(&mut header, "service", service);
    if !scopes.is_empty() {
        let mut joined = String::new();
        for (i, scope) in scopes.iter().enumerate() {
            if i > 0 {
                joined.push(' ');
            }
            let _ = write!(joined, "{scope}");
        }
        header.push(',');
        push_param(&mut header, "scope", &joined);
    }
    if let Some(error) = error {
        header.push(',');
        push_param(&mut header, "error", error.as_str());
    }
    header
}

fn push_param(header: &mut String, name: &str, value: &str) {
    header.push_str(name);
    header.push_str("=\"");
    for c in value.chars().filter(|c| !c.is_control()) {
        if matches!(c, '"' | '\\') {
            header.push('\\');
        }
        header.push(c);
    }
    header.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::Action;

    const REALM: &str = "https://registry.example.com/service/token";
    const SERVICE: &str = "registry.example.com";

    fn repo(name: &str, actions: &[Action]) -> Scope {
        Scope::repository(
            name.parse().unwrap(),
            actions.iter().copied().collect::<crate::ActionSet>(),
        )
    }

    #[test]
    fn a_challenge_for_a_repository() {
        assert_eq!(
            bearer_challenge(
                REALM,
                SERVICE,
                &[repo("team/app", &[Action::Pull, Action::Push])],
                None
            ),
            "Bearer realm=\"https://registry.example.com/service/token\",\
             service=\"registry.example.com\",scope=\"repository:team/app:pull,push\""
        );
    }

    #[test]
    fn insufficient_scope_and_invalid_token() {
        let scopes = [repo("a", &[Action::Delete])];
        assert_eq!(
            bearer_challenge(
                REALM,
                SERVICE,
                &scopes,
                Some(ChallengeError::InsufficientScope)
            ),
            format!(
                "Bearer realm=\"{REALM}\",service=\"{SERVICE}\",\
                 scope=\"repository:a:delete\",error=\"insufficient_scope\""
            )
        );
        assert!(
            bearer_challenge(REALM, SERVICE, &scopes, Some(ChallengeError::InvalidToken))
                .ends_with(",error=\"invalid_token\"")
        );
    }

    #[test]
    fn several_scopes_share_one_parameter() {
        let scopes = [
            repo("to", &[Action::Pull, Action::Push]),
            repo("from", &[Action::Pull]),
        ];
        let header = bearer_challenge(REALM, SERVICE, &scopes, None);
        assert!(
            header.ends_with(",scope=\"repository:to:pull,push repository:from:pull\""),
            "{header}"
        );
        let header = bearer_challenge(REALM, SERVICE, &[Scope::Catalog], None);
        assert!(
            header.ends_with(",scope=\"registry:catalog:*\""),
            "{header}"
        );
    }

    #[test]
    fn no_scope_no_scope_parameter() {
        assert_eq!(
            bearer_challenge(REALM, SERVICE, &[], None),
            format!("Bearer realm=\"{REALM}\",service=\"{SERVICE}\"")
        );
    }

    #[test]
    fn values_are_escaped() {
        let header = bearer_challenge("https://x/\"token\"\\", "a\r\nSet-Cookie: b", &[], None);
        assert_eq!(
            header,
            "Bearer realm=\"https://x/\\\"token\\\"\\\\\",service=\"aSet-Cookie: b\""
        );
        assert!(!header.chars().any(char::is_control));
    }
}
