//! The upload front: a host that takes upload-session bytes without a request-size limit,
//! for deployments whose registry endpoints cannot take large bodies (Lambda).
//!
//! The registry's upload `POST`, authorized with a token as usual, answers with an absolute
//! `Location` on the front whose query carries a grant ([`berth_auth::UploadGrant`]) for that
//! one session ([`UploadHandoff`]). The front serves only the session's endpoints (status,
//! `PATCH`, `PUT`, `DELETE`), admits a request by its grant alone ([`admit`]), and keeps the
//! grant in every `Location` it answers, so the client's next request carries it again.

use std::sync::Arc;
use std::time::Duration;

use berth_auth::{GrantError, GrantKey, UploadGrant, unix_now};
use berth_core::{ErrorCode, RegistryError, RepositoryName, Result, UploadId};
use http::header::LOCATION;

use crate::endpoint::Endpoint;
use crate::response::header_value;

/// The query parameter an upload URL on the front carries its grant in.
pub const GRANT_PARAMETER: &str = "grant";

/// How the registry sends upload sessions to the front.
#[derive(Debug)]
pub struct UploadHandoff {
    /// The front's base URL, without a trailing slash.
    base: String,
    key: Arc<GrantKey>,
    lifetime: Duration,
}

impl UploadHandoff {
    /// Sessions continue at `base` (an `https://` URL; `http://` only on a loopback host),
    /// with grants signed by `key` that live `lifetime`.
    pub fn new(
        base: &str,
        key: Arc<GrantKey>,
        lifetime: Duration,
    ) -> std::result::Result<Self, String> {
        if lifetime.is_zero() {
            return Err("the upload grant lifetime is zero".to_owned());
        }
        Ok(Self {
            base: base_url(base)?,
            key,
            lifetime,
        })
    }

    /// The absolute URL the client continues upload `id` of `repository` at, for `actor`.
    pub(crate) fn location(
        &self,
        repository: &RepositoryName,
        id: &UploadId,
        actor: &str,
    ) -> Result<String> {
        let grant = UploadGrant {
            repository: repository.to_string(),
            upload: id.to_string(),
            actor: actor.to_owned(),
            expires_at: unix_now() + self.lifetime.as_secs().max(1),
        };
        let signed = self.key.sign(&grant).map_err(RegistryError::internal)?;
        Ok(format!(
            "{}/v2/{repository}/blobs/uploads/{id}?{GRANT_PARAMETER}={signed}",
            self.base
        ))
    }
}

/// Checks the upload front's base URL: `https://host[:port]`, or `http://` on a loopback host
/// only (a grant must not cross a network in the clear). Returns it without a trailing slash.
pub fn base_url(base: &str) -> std::result::Result<String, String> {
    let base = base.trim_end_matches('/');
    let rest = if let Some(rest) = base.strip_prefix("https://") {
        rest
    } else if let Some(rest) = base.strip_prefix("http://") {
        let host = rest.split(['/', '?', '#']).next().unwrap_or("");
        let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
        if !["127.0.0.1", "localhost", "[::1]"].contains(&name) {
            return Err(format!(
                "{base:?} is plain http on a host other than this machine: use https://"
            ));
        }
        rest
    } else {
        return Err(format!("{base:?} is not an https:// URL"));
    };
    // The front serves `/v2/...` at its root, as a load balancer hands requests on: a base
    // with a path would send clients where nothing answers.
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return Err(format!(
            "{base:?} is not the front's root URL (https://host or https://host:port)"
        ));
    }
    Ok(base.to_owned())
}

/// A request the front admitted: the grant as it came, and what it says.
#[derive(Debug, Clone)]
pub(crate) struct Admitted {
    pub text: String,
    pub grant: UploadGrant,
}

/// Admits a request to the front by the grant in its query: only an upload session's own
/// endpoints, only with a valid grant for that session. Checked before any of the body is
/// read, so a refused request writes nothing.
pub(crate) fn admit(key: &GrantKey, endpoint: &Endpoint, query: Option<&str>) -> Result<Admitted> {
    let (name, id) = match endpoint {
        Endpoint::UploadStatus { name, id }
        | Endpoint::PatchUpload { name, id }
        | Endpoint::CompleteUpload { name, id, .. }
        | Endpoint::CancelUpload { name, id } => (name, id),
        _ => {
            return Err(RegistryError::new(
                ErrorCode::Unsupported,
                "the upload front serves upload sessions only: use the registry's own URL",
            ));
        }
    };
    let text = grant_of(query).ok_or_else(|| {
        RegistryError::new(
            ErrorCode::Unauthorized,
            "this upload URL has no grant: use the Location the registry's upload POST \
             answered with",
        )
    })?;
    let grant = key.verify(&text, unix_now()).map_err(|error| {
        let message = match error {
            GrantError::Expired => "the upload grant has expired: start the upload again",
            GrantError::Invalid => "the upload grant is not valid",
        };
        RegistryError::new(ErrorCode::Unauthorized, message)
    })?;
    if grant.repository != name.as_str() || grant.upload != id.as_str() {
        return Err(RegistryError::new(
            ErrorCode::Denied,
            format!("the upload grant is not for upload {id} of {name}"),
        ));
    }
    Ok(Admitted { text, grant })
}

fn grant_of(query: Option<&str>) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(key, _)| key == GRANT_PARAMETER)
        .map(|(_, value)| value.into_owned())
        .filter(|value| !value.is_empty())
}

/// Adds the grant to a `Location` on the upload path the front answered with (a session's
/// progress, or where it stands after a refused chunk), so the client's next request there
/// carries it.
pub(crate) fn keep_grant(headers: &mut http::HeaderMap, admitted: &Admitted) {
    let Some(location) = headers.get(LOCATION).and_then(|v| v.to_str().ok()) else {
        return;
    };
    if !location.contains("/blobs/uploads/") || location.contains('?') {
        return;
    }
    let with_grant = format!("{location}?{GRANT_PARAMETER}={}", admitted.text);
    headers.insert(LOCATION, header_value(&with_grant));
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::*;

    const ID: &str = "6f1c2d3e-4a5b-4c6d-8e7f-8091a2b3c4d5";

    fn key() -> Arc<GrantKey> {
        Arc::new(GrantKey::from_text(&GrantKey::generate().unwrap()).unwrap())
    }

    fn endpoint(method: Method, path: &str) -> Endpoint {
        Endpoint::parse(&method, path, None).unwrap()
    }

    fn query_of(location: &str) -> &str {
        location.split_once('?').unwrap().1
    }

    #[test]
    fn base_urls_are_https_or_loopback() {
        let ok = |base| UploadHandoff::new(base, key(), Duration::from_secs(60)).is_ok();
        assert!(ok("https://uploads.example.com"));
        assert!(ok("https://uploads.example.com/"));
        assert!(ok("http://127.0.0.1:8080"));
        assert!(ok("http://localhost:8080"));
        assert!(!ok("http://uploads.example.com"));
        assert!(!ok("http://127.0.0.1.example.com"));
        assert!(!ok("uploads.example.com"));
        assert!(!ok("https://"));
        assert!(!ok("https://uploads.example.com/?x=1"));
        assert!(!ok("https://uploads.example.com/prefix"));
        assert!(!ok("https://user@uploads.example.com"));
        assert!(ok("https://uploads.example.com:8443"));
        assert!(UploadHandoff::new("https://a.example", key(), Duration::ZERO).is_err());
    }

    #[test]
    fn a_handed_off_session_is_admitted_at_its_own_url_only() {
        let key = key();
        let handoff = UploadHandoff::new(
            "https://up.example.com/",
            key.clone(),
            Duration::from_secs(60),
        )
        .unwrap();
        let name: RepositoryName = "team/app".parse().unwrap();
        let id: UploadId = ID.parse().unwrap();
        let location = handoff.location(&name, &id, "alice").unwrap();
        assert!(
            location.starts_with(&format!(
                "https://up.example.com/v2/team/app/blobs/uploads/{ID}?grant="
            )),
            "{location}"
        );
        let path = format!("/v2/team/app/blobs/uploads/{ID}");
        for method in [Method::GET, Method::PATCH, Method::DELETE] {
            let admitted =
                admit(&key, &endpoint(method, &path), Some(query_of(&location))).expect("admitted");
            assert_eq!(admitted.grant.actor, "alice");
        }
        // The client adds its digest to the URL for the closing PUT.
        let put = format!("{}&digest=sha256:{}", query_of(&location), "a".repeat(64));
        let complete = Endpoint::parse(&Method::PUT, &path, Some(&put)).unwrap();
        admit(&key, &complete, Some(&put)).expect("the closing PUT");

        let other = format!("/v2/team/other/blobs/uploads/{ID}");
        let error = admit(
            &key,
            &endpoint(Method::PATCH, &other),
            Some(query_of(&location)),
        )
        .unwrap_err();
        assert_eq!(error.code(), ErrorCode::Denied);
        let error = admit(&key, &endpoint(Method::PATCH, &path), None).unwrap_err();
        assert_eq!(error.code(), ErrorCode::Unauthorized);
        let error = admit(&key, &endpoint(Method::PATCH, &path), Some("grant=x.y.z")).unwrap_err();
        assert_eq!(error.code(), ErrorCode::Unauthorized);
        let blob = endpoint(
            Method::GET,
            &format!("/v2/team/app/blobs/sha256:{}", "a".repeat(64)),
        );
        let error = admit(&key, &blob, Some(query_of(&location))).unwrap_err();
        assert_eq!(error.code(), ErrorCode::Unsupported);
    }

    #[test]
    fn answers_keep_the_grant() {
        let admitted = Admitted {
            text: "a.b.c".into(),
            grant: UploadGrant {
                repository: "r".into(),
                upload: ID.into(),
                actor: String::new(),
                expires_at: 0,
            },
        };
        let mut headers = http::HeaderMap::new();
        let path = format!("/v2/r/blobs/uploads/{ID}");
        headers.insert(LOCATION, header_value(&path));
        keep_grant(&mut headers, &admitted);
        assert_eq!(headers[LOCATION], format!("{path}?grant=a.b.c").as_str());
        headers.insert(LOCATION, header_value("/v2/r/blobs/sha256:00"));
        keep_grant(&mut headers, &admitted);
        assert_eq!(headers[LOCATION], "/v2/r/blobs/sha256:00");
    }
}
