//! The one endpoint parser: method + raw path + query string -> [`Endpoint`].
//!
//! Every entry point (each Lambda function, the local server) calls [`Endpoint::parse`] on the
//! raw request path, because API Gateway cannot route OCI paths: a repository name has any
//! number of segments and comes before `/manifests/...`. Routes are recognised from the end
//! of the path, where the grammar is fixed.

use std::borrow::Cow;

pub use berth_auth::Action;
use berth_core::{
    Digest, ErrorCode, ErrorHint, Reference, RegistryError, RepositoryName, Result, UploadId,
};
use http::Method;
use percent_encoding::percent_decode_str;

/// A registry API endpoint with its typed parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /v2/`: API version check.
    ApiVersion,
    /// `GET /v2/_catalog`.
    Catalog { page: Pagination },
    /// `GET /v2/<name>/tags/list`.
    ListTags {
        name: RepositoryName,
        page: Pagination,
    },
    /// `GET` or `HEAD /v2/<name>/manifests/<reference>`.
    GetManifest {
        name: RepositoryName,
        reference: Reference,
        head: bool,
    },
    /// `PUT /v2/<name>/manifests/<reference>`.
    PutManifest {
        name: RepositoryName,
        reference: Reference,
    },
    /// `DELETE /v2/<name>/manifests/<reference>`.
    DeleteManifest {
        name: RepositoryName,
        reference: Reference,
    },
    /// `GET` or `HEAD /v2/<name>/blobs/<digest>`.
    GetBlob {
        name: RepositoryName,
        digest: Digest,
        head: bool,
    },
    /// `DELETE /v2/<name>/blobs/<digest>`.
    DeleteBlob {
        name: RepositoryName,
        digest: Digest,
    },
    /// `POST /v2/<name>/blobs/uploads/`, optionally monolithic (`?digest=`) or a mount
    /// (`?mount=&from=`).
    StartUpload {
        name: RepositoryName,
        start: UploadKind,
    },
    /// `GET /v2/<name>/blobs/uploads/<id>`.
    UploadStatus { name: RepositoryName, id: UploadId },
    /// `PATCH /v2/<name>/blobs/uploads/<id>`.
    PatchUpload { name: RepositoryName, id: UploadId },
    /// `PUT /v2/<name>/blobs/uploads/<id>?digest=`.
    CompleteUpload {
        name: RepositoryName,
        id: UploadId,
        digest: Digest,
    },
    /// `DELETE /v2/<name>/blobs/uploads/<id>`.
    CancelUpload { name: RepositoryName, id: UploadId },
    /// `GET /v2/<name>/referrers/<digest>`.
    Referrers {
        name: RepositoryName,
        subject: Digest,
        artifact_type: Option<String>,
    },
}

/// What a `POST` to the uploads endpoint asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadKind {
    /// Open a session.
    Session,
    /// The whole blob is in this request's body.
    Monolithic(Digest),
    /// Link a blob from another repository: `from`, or without it one of `discover` (the
    /// repositories the caller's token may pull from, which the auth check fills in) or the
    /// target itself; a session is opened when none links it.
    Mount {
        digest: Digest,
        from: Option<RepositoryName>,
        discover: Vec<RepositoryName>,
    },
}

/// `n` and `last` of a listing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pagination {
    pub n: Option<usize>,
    pub last: Option<String>,
}

/// What a caller must be granted to use an endpoint, in the token service's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Anyone may call it (the version check).
    Public,
    /// `registry:catalog:*`.
    Catalog,
    /// Actions on one repository.
    Repository {
        name: RepositoryName,
        actions: &'static [Action],
    },
    /// Push to `name` and pull from `from` (a cross-repository mount).
    Mount {
        name: RepositoryName,
        from: RepositoryName,
    },
    /// Push to `name`, taking the blob from any repository the token may pull from (a mount
    /// without `from`).
    Discover { name: RepositoryName },
}

/// Which function family serves an endpoint when Berth is split by role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Reads: `GET` and `HEAD`.
    Pull,
    /// Writes: `POST`, `PUT`, `PATCH`, `DELETE`.
    Push,
}

fn not_found(path: &str) -> RegistryError {
    RegistryError::new(
        ErrorCode::NotFound,
        format!("no registry endpoint at {path}"),
    )
}

fn unsupported(method: &Method, what: &str, allowed: &'static str) -> RegistryError {
    RegistryError::new(
        ErrorCode::Unsupported,
        format!("{method} is not supported on {what}"),
    )
    .with_hint(ErrorHint::AllowedMethods(allowed))
}

/// Decodes one path segment; `code` is the error for the segment's position. A decoded `/`
/// would change the path's structure, so it is refused.
fn decode(segment: &str, code: ErrorCode) -> Result<Cow<'_, str>> {
    let invalid = |why: &str| RegistryError::new(code, format!("path segment {segment:?} {why}"));
    let decoded = percent_decode_str(segment)
        .decode_utf8()
        .map_err(|_| invalid("is not valid UTF-8"))?;
    if decoded.contains('/') {
        return Err(invalid("encodes a '/'"));
    }
    Ok(decoded)
}

fn query_params(query: Option<&str>) -> Result<Vec<(String, String)>> {
    let decode = |s: &str| {
        percent_decode_str(s)
            .decode_utf8()
            .map(Cow::into_owned)
            .map_err(|_| {
                RegistryError::new(ErrorCode::Unsupported, "query string is not valid UTF-8")
            })
    };
    query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(key)?, decode(value)?))
        })
        .collect()
}

struct Query(Vec<(String, String)>);

impl Query {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn pagination(&self) -> Result<Pagination> {
        let n = self
            .get("n")
            .map(|n| {
                n.parse::<usize>().map_err(|_| {
                    RegistryError::new(
                        ErrorCode::PaginationNumberInvalid,
                        format!("n={n:?} is not a non-negative number"),
                    )
                })
            })
            .transpose()?;
        let last = self
            .get("last")
            .filter(|l| !l.is_empty())
            .map(str::to_owned);
        Ok(Pagination { n, last })
    }

    fn digest(&self, key: &str) -> Result<Option<Digest>> {
        self.get(key).map(str::parse).transpose()
    }
}

impl Endpoint {
    /// Parses a request. `raw_path` must be the path as sent, still percent-encoded.
    pub fn parse(method: &Method, raw_path: &str, query: Option<&str>) -> Result<Self> {
        let rest = match raw_path.strip_prefix("/v2") {
            Some("" | "/") => {
                return match *method {
                    Method::GET | Method::HEAD => Ok(Self::ApiVersion),
                    _ => Err(unsupported(method, "/v2/", "GET, HEAD")),
                };
            }
            Some(rest) => rest.strip_prefix('/').ok_or_else(|| not_found(raw_path))?,
            None => return Err(not_found(raw_path)),
        };
        // Route words are matched as sent; the name and the parameter are decoded, each with
        // the error code of its position.
        let segments: Vec<&str> = rest.split('/').collect();
        let query = Query(query_params(query)?);
        let name = |len: usize| -> Result<RepositoryName> {
            let parts = segments[..len]
                .iter()
                .map(|s| decode(s, ErrorCode::NameInvalid))
                .collect::<Result<Vec<_>>>()?;
            parts.join("/").parse()
        };
        let digest = |s: &str| -> Result<Digest> { decode(s, ErrorCode::DigestInvalid)?.parse() };
        let is_read = matches!(*method, Method::GET | Method::HEAD);
        let head = *method == Method::HEAD;

        match segments.as_slice() {
            ["_catalog"] => match *method {
                Method::GET => Ok(Self::Catalog {
                    page: query.pagination()?,
                }),
                _ => Err(unsupported(method, "the catalog", "GET")),
            },
            [.., _, "tags", "list"] => match *method {
                Method::GET => Ok(Self::ListTags {
                    name: name(segments.len() - 2)?,
                    page: query.pagination()?,
                }),
                _ => Err(unsupported(method, "tag listings", "GET")),
            },
            [.., _, "manifests", reference] => {
                let name = name(segments.len() - 2)?;
                let parsed = if percent_decode_str(reference).any(|b| b == b':') {
                    digest(reference).map(Reference::Digest)
                } else {
                    decode(reference, ErrorCode::ManifestInvalid).and_then(|r| r.parse())
                };
                let reference = match parsed {
                    Ok(reference) => reference,
                    // Nothing can be stored under a reference that is neither a tag nor a
                    // digest: reading one finds nothing, as in any other registry.
                    Err(error) if is_read => {
                        return Err(RegistryError::new(
                            ErrorCode::ManifestUnknown,
                            format!("no manifest can exist there: {}", error.message()),
                        ));
                    }
                    Err(error) => return Err(error),
                };
                match *method {
                    _ if is_read => Ok(Self::GetManifest {
                        name,
                        reference,
                        head,
                    }),
                    Method::PUT => Ok(Self::PutManifest { name, reference }),
                    Method::DELETE => Ok(Self::DeleteManifest { name, reference }),
                    _ => Err(unsupported(method, "manifests", "GET, HEAD, PUT, DELETE")),
                }
            }
            [.., _, "blobs", "uploads", id] => {
                let name = name(segments.len() - 3)?;
                if id.is_empty() {
                    return match *method {
                        Method::POST => Ok(Self::StartUpload {
                            name,
                            start: upload_kind(&query)?,
                        }),
                        _ => Err(unsupported(method, "the uploads endpoint", "POST")),
                    };
                }
                let id: UploadId = decode(id, ErrorCode::BlobUploadUnknown)?.parse()?;
                match *method {
                    Method::GET => Ok(Self::UploadStatus { name, id }),
                    Method::PATCH => Ok(Self::PatchUpload { name, id }),
                    Method::PUT => {
                        let digest = query.digest("digest")?.ok_or_else(|| {
                            RegistryError::new(
                                ErrorCode::DigestInvalid,
                                "closing an upload needs ?digest=",
                            )
                        })?;
                        Ok(Self::CompleteUpload { name, id, digest })
                    }
                    Method::DELETE => Ok(Self::CancelUpload { name, id }),
                    _ => Err(unsupported(
                        method,
                        "upload sessions",
                        "GET, PATCH, PUT, DELETE",
                    )),
                }
            }
            [.., _, "blobs", "uploads"] if *method == Method::POST => Ok(Self::StartUpload {
                name: name(segments.len() - 2)?,
                start: upload_kind(&query)?,
            }),
            [.., _, "blobs", param] => {
                let name = name(segments.len() - 2)?;
                let digest = digest(param)?;
                match *method {
                    _ if is_read => Ok(Self::GetBlob { name, digest, head }),
                    Method::DELETE => Ok(Self::DeleteBlob { name, digest }),
                    _ => Err(unsupported(method, "blobs", "GET, HEAD, DELETE")),
                }
            }
            [.., _, "referrers", subject] => match *method {
                Method::GET => Ok(Self::Referrers {
                    name: name(segments.len() - 2)?,
                    subject: digest(subject)?,
                    artifact_type: query.get("artifactType").map(str::to_owned),
                }),
                _ => Err(unsupported(method, "referrers", "GET")),
            },
            _ => Err(not_found(raw_path)),
        }
    }

    /// The access a caller needs: decided here for every endpoint, checked in one place.
    pub fn required_access(&self) -> Access {
        use Action::{Delete, Pull, Push};
        let repository = |name: &RepositoryName, actions| Access::Repository {
            name: name.clone(),
            actions,
        };
        match self {
            Self::ApiVersion => Access::Public,
            Self::Catalog { .. } => Access::Catalog,
            Self::ListTags { name, .. }
            | Self::GetManifest { name, .. }
            | Self::GetBlob { name, .. }
            | Self::Referrers { name, .. } => repository(name, &[Pull]),
            Self::StartUpload {
                name,
                start:
                    UploadKind::Mount {
                        from: Some(from), ..
                    },
            } => Access::Mount {
                name: name.clone(),
                from: from.clone(),
            },
            Self::StartUpload {
                name,
                start: UploadKind::Mount { from: None, .. },
            } => Access::Discover { name: name.clone() },
            Self::PutManifest { name, .. }
            | Self::StartUpload { name, .. }
            | Self::UploadStatus { name, .. }
            | Self::PatchUpload { name, .. }
            | Self::CompleteUpload { name, .. }
            | Self::CancelUpload { name, .. } => repository(name, &[Pull, Push]),
            Self::DeleteManifest { name, .. } | Self::DeleteBlob { name, .. } => {
                repository(name, &[Delete])
            }
        }
    }

    /// The function family that owns this endpoint.
    pub fn role(&self) -> Role {
        match self {
            Self::ApiVersion
            | Self::Catalog { .. }
            | Self::ListTags { .. }
            | Self::GetManifest { .. }
            | Self::GetBlob { .. }
            | Self::UploadStatus { .. }
            | Self::Referrers { .. } => Role::Pull,
            Self::PutManifest { .. }
            | Self::DeleteManifest { .. }
            | Self::DeleteBlob { .. }
            | Self::StartUpload { .. }
            | Self::PatchUpload { .. }
            | Self::CompleteUpload { .. }
            | Self::CancelUpload { .. } => Role::Push,
        }
    }
}

fn upload_kind(query: &Query) -> Result<UploadKind> {
    if let Some(digest) = query.digest("mount")? {
        let from = query.get("from").map(str::parse).transpose()?;
        return Ok(UploadKind::Mount {
            digest,
            from,
            discover: Vec::new(),
        });
    }
    Ok(match query.digest("digest")? {
        Some(digest) => UploadKind::Monolithic(digest),
        None => UploadKind::Session,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const ID: &str = "0f9c1d52-3c1a-4d2b-9a53-6a3c1f3b2e10";

    fn parse(method: &str, path: &str) -> Result<Endpoint> {
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        Endpoint::parse(&method.parse().unwrap(), path, query)
    }

    fn name(s: &str) -> RepositoryName {
        s.parse().unwrap()
    }

    fn digest() -> Digest {
        D.parse().unwrap()
    }

    #[test]
    fn every_route() {
        let id: UploadId = ID.parse().unwrap();
        let latest = Reference::Tag("latest".parse().unwrap());
        let cases: Vec<(&str, String, Endpoint)> = vec![
            ("GET", "/v2/".into(), Endpoint::ApiVersion),
            ("HEAD", "/v2".into(), Endpoint::ApiVersion),
            (
                "GET",
                "/v2/_catalog?n=10&last=a".into(),
                Endpoint::Catalog {
                    page: Pagination {
                        n: Some(10),
                        last: Some("a".into()),
                    },
                },
            ),
            (
                "GET",
                "/v2/a/b/tags/list".into(),
                Endpoint::ListTags {
                    name: name("a/b"),
                    page: Pagination::default(),
                },
            ),
            (
                "GET",
                "/v2/a/manifests/latest".into(),
                Endpoint::GetManifest {
                    name: name("a"),
                    reference: latest.clone(),
                    head: false,
                },
            ),
            (
                "HEAD",
                format!("/v2/a/manifests/{D}"),
                Endpoint::GetManifest {
                    name: name("a"),
                    reference: Reference::Digest(digest()),
                    head: true,
                },
            ),
            (
                "PUT",
                "/v2/a/manifests/latest".into(),
                Endpoint::PutManifest {
                    name: name("a"),
                    reference: latest.clone(),
                },
            ),
            (
                "DELETE",
                "/v2/a/manifests/latest".into(),
                Endpoint::DeleteManifest {
                    name: name("a"),
                    reference: latest,
                },
            ),
            (
                "GET",
                format!("/v2/a/blobs/{D}"),
                Endpoint::GetBlob {
                    name: name("a"),
                    digest: digest(),
                    head: false,
                },
            ),
            (
                "HEAD",
                format!("/v2/a/blobs/{D}"),
                Endpoint::GetBlob {
                    name: name("a"),
                    digest: digest(),
                    head: true,
                },
            ),
            (
                "DELETE",
                format!("/v2/a/blobs/{D}"),
                Endpoint::DeleteBlob {
                    name: name("a"),
                    digest: digest(),
                },
            ),
            (
                "POST",
                "/v2/a/blobs/uploads/".into(),
                Endpoint::StartUpload {
                    name: name("a"),
                    start: UploadKind::Session,
                },
            ),
            (
                "POST",
                "/v2/a/blobs/uploads".into(),
                Endpoint::StartUpload {
                    name: name("a"),
                    start: UploadKind::Session,
                },
            ),
            (
                "POST",
                format!("/v2/a/blobs/uploads/?digest={D}"),
                Endpoint::StartUpload {
                    name: name("a"),
                    start: UploadKind::Monolithic(digest()),
                },
            ),
            (
                "POST",
                format!("/v2/a/blobs/uploads/?mount={D}&from=b/c"),
                Endpoint::StartUpload {
                    name: name("a"),
                    start: UploadKind::Mount {
                        digest: digest(),
                        from: Some(name("b/c")),
                        discover: Vec::new(),
                    },
                },
            ),
            (
                "GET",
                format!("/v2/a/blobs/uploads/{ID}"),
                Endpoint::UploadStatus {
                    name: name("a"),
                    id: id.clone(),
                },
            ),
            (
                "PATCH",
                format!("/v2/a/blobs/uploads/{ID}"),
                Endpoint::PatchUpload {
                    name: name("a"),
                    id: id.clone(),
                },
            ),
            (
                "PUT",
                format!("/v2/a/blobs/uploads/{ID}?digest={D}"),
                Endpoint::CompleteUpload {
                    name: name("a"),
                    id: id.clone(),
                    digest: digest(),
                },
            ),
            (
                "DELETE",
                format!("/v2/a/blobs/uploads/{ID}"),
                Endpoint::CancelUpload {
                    name: name("a"),
                    id,
                },
            ),
            (
                "GET",
                format!("/v2/a/referrers/{D}?artifactType=application/x%2Bjson"),
                Endpoint::Referrers {
                    name: name("a"),
                    subject: digest(),
                    artifact_type: Some("application/x+json".into()),
                },
            ),
        ];
        for (method, path, expected) in cases {
            assert_eq!(parse(method, &path).unwrap(), expected, "{method} {path}");
        }
    }

    #[test]
    fn names_with_many_segments_and_route_words() {
        let ep = parse("GET", "/v2/a/b/c/d/e/f/g/manifests/v1").unwrap();
        assert!(
            matches!(ep, Endpoint::GetManifest { name, .. } if name.as_str() == "a/b/c/d/e/f/g")
        );
        // Route words are valid name components: the route is read from the end.
        let ep = parse("GET", "/v2/blobs/manifests/tags/manifests/latest").unwrap();
        assert!(
            matches!(ep, Endpoint::GetManifest { name, .. } if name.as_str() == "blobs/manifests/tags")
        );
        let ep = parse("GET", &format!("/v2/x/blobs/uploads/blobs/{D}")).unwrap();
        assert!(matches!(ep, Endpoint::GetBlob { name, .. } if name.as_str() == "x/blobs/uploads"));
        let ep = parse("GET", "/v2/tags/list/tags/list").unwrap();
        assert!(matches!(ep, Endpoint::ListTags { name, .. } if name.as_str() == "tags/list"));
        let err = parse("GET", "/v2/_catalog/tags/list").unwrap_err();
        assert_eq!(err.code(), ErrorCode::NameInvalid);
    }

    #[test]
    fn percent_encoding() {
        let encoded = D.replace(':', "%3A");
        let ep = parse("GET", &format!("/v2/a/blobs/{encoded}")).unwrap();
        assert_eq!(
            ep,
            Endpoint::GetBlob {
                name: name("a"),
                digest: digest(),
                head: false
            }
        );
        let ep = parse("GET", "/v2/%61pp/manifests/latest").unwrap();
        assert!(matches!(ep, Endpoint::GetManifest { name, .. } if name.as_str() == "app"));
        let ep = parse(
            "POST",
            &format!("/v2/a/blobs/uploads/?mount={encoded}&from=b%2Fc"),
        )
        .unwrap();
        assert!(
            matches!(ep, Endpoint::StartUpload { start: UploadKind::Mount { from: Some(f), .. }, .. } if f.as_str() == "b/c")
        );
        let err = parse("GET", "/v2/a%2Fb/manifests/latest").unwrap_err();
        assert_eq!(err.code(), ErrorCode::NameInvalid);
        let err = parse("GET", "/v2/a%ff/manifests/latest").unwrap_err();
        assert_eq!(err.code(), ErrorCode::NameInvalid);
    }

    #[test]
    fn invalid_input_gets_its_error_code() {
        let cases = [
            (
                "GET",
                "/v2/A/manifests/latest".to_string(),
                ErrorCode::NameInvalid,
            ),
            (
                "GET",
                "/v2/a/../b/manifests/latest".into(),
                ErrorCode::NameInvalid,
            ),
            (
                "GET",
                "/v2/a//b/manifests/latest".into(),
                ErrorCode::NameInvalid,
            ),
            (
                "GET",
                "/v2//manifests/latest".into(),
                ErrorCode::NameInvalid,
            ),
            ("GET", "/v2/manifests/latest".into(), ErrorCode::NotFound),
            (
                "GET",
                "/v2/a/manifests/-bad".into(),
                ErrorCode::ManifestUnknown,
            ),
            (
                "HEAD",
                "/v2/a/manifests/sha256:abc".into(),
                ErrorCode::ManifestUnknown,
            ),
            (
                "PUT",
                "/v2/a/manifests/-bad".into(),
                ErrorCode::ManifestInvalid,
            ),
            (
                "DELETE",
                "/v2/a/manifests/sha256:abc".into(),
                ErrorCode::DigestInvalid,
            ),
            (
                "GET",
                "/v2/a/blobs/sha256:abc".into(),
                ErrorCode::DigestInvalid,
            ),
            ("GET", "/v2/a/blobs/latest".into(), ErrorCode::DigestInvalid),
            (
                "GET",
                "/v2/a/referrers/latest".into(),
                ErrorCode::DigestInvalid,
            ),
            (
                "GET",
                "/v2/a/blobs/uploads/not-a-uuid".into(),
                ErrorCode::BlobUploadUnknown,
            ),
            (
                "PUT",
                format!("/v2/a/blobs/uploads/{ID}"),
                ErrorCode::DigestInvalid,
            ),
            (
                "PUT",
                format!("/v2/a/blobs/uploads/{ID}?digest=sha256:1"),
                ErrorCode::DigestInvalid,
            ),
            (
                "POST",
                "/v2/a/blobs/uploads/?digest=md5:x".into(),
                ErrorCode::DigestInvalid,
            ),
            (
                "GET",
                "/v2/a/tags/list?n=-1".into(),
                ErrorCode::PaginationNumberInvalid,
            ),
            (
                "GET",
                "/v2/a/tags/list?n=lots".into(),
                ErrorCode::PaginationNumberInvalid,
            ),
            (
                "GET",
                "/v2/_catalog?n=99999999999999999999999".into(),
                ErrorCode::PaginationNumberInvalid,
            ),
            (
                "POST",
                "/v2/a/manifests/latest".into(),
                ErrorCode::Unsupported,
            ),
            ("PATCH", format!("/v2/a/blobs/{D}"), ErrorCode::Unsupported),
            ("POST", "/v2/".into(), ErrorCode::Unsupported),
            ("DELETE", "/v2/_catalog".into(), ErrorCode::Unsupported),
            ("GET", "/v3/".into(), ErrorCode::NotFound),
            ("GET", "/v2x".into(), ErrorCode::NotFound),
            ("GET", "/v2/a/unknown/x".into(), ErrorCode::NotFound),
        ];
        for (method, path, code) in cases {
            let err = parse(method, &path).unwrap_err();
            assert_eq!(err.code(), code, "{method} {path}: {err}");
        }
    }

    #[test]
    fn access_and_roles() {
        let ep = parse("GET", "/v2/p/app/manifests/latest").unwrap();
        assert_eq!(
            ep.required_access(),
            Access::Repository {
                name: name("p/app"),
                actions: &[Action::Pull]
            }
        );
        assert_eq!(ep.role(), Role::Pull);
        let ep = parse(
            "POST",
            &format!("/v2/p/app/blobs/uploads/?mount={D}&from=q/lib"),
        )
        .unwrap();
        assert_eq!(
            ep.required_access(),
            Access::Mount {
                name: name("p/app"),
                from: name("q/lib")
            }
        );
        assert_eq!(ep.role(), Role::Push);
        let ep = parse("DELETE", "/v2/p/app/manifests/v1").unwrap();
        assert_eq!(
            ep.required_access(),
            Access::Repository {
                name: name("p/app"),
                actions: &[Action::Delete]
            }
        );
        assert_eq!(
            parse("GET", "/v2/").unwrap().required_access(),
            Access::Public
        );
        assert_eq!(
            parse("GET", "/v2/_catalog").unwrap().required_access(),
            Access::Catalog
        );
    }
}
