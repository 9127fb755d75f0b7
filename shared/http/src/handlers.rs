//! One handler per endpoint: each turns a parsed [`Endpoint`] and the request into a call on
//! the [`Registry`] and its answer into a response.

use std::io;

use axum::body::Body;
use axum::response::Response;
use berth_core::manifest::{MAX_MANIFEST_BYTES, media_type};
use berth_core::ports::ByteStream;
use berth_core::range::parse_content_range;
use berth_core::registry::{BlobRead, Page, UploadStart, upload_location};
use berth_core::{
    Actor, ErrorCode, RegistryError, RepositoryName, RequestContext, Result, UploadId,
};
use futures_util::TryStreamExt;
use http::header::{
    ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LINK, LOCATION, RANGE,
};
use http::request::Parts;
use http::{HeaderMap, HeaderName, StatusCode};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

use crate::App;
use crate::endpoint::{Endpoint, Pagination, UploadKind};
use crate::response::{header_value, upload_range};

const DOCKER_CONTENT_DIGEST: HeaderName = HeaderName::from_static("docker-content-digest");
const DOCKER_UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
const OCI_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");
const OCI_CHUNK_MIN_LENGTH: HeaderName = HeaderName::from_static("oci-chunk-min-length");
const OCI_CHUNK_MAX_LENGTH: HeaderName = HeaderName::from_static("oci-chunk-max-length");

/// Serves one parsed endpoint.
pub(crate) async fn handle(
    app: &App,
    endpoint: Endpoint,
    parts: &Parts,
    body: Body,
    context: &RequestContext,
) -> Result<Response> {
    let registry = &app.registry;
    match endpoint {
        Endpoint::ApiVersion => Ok(json(StatusCode::OK, b"{}".to_vec(), "application/json")),

        Endpoint::GetManifest {
            name,
            reference,
            head,
        } => {
            let manifest = if head {
                registry.manifest(&name, &reference).await?
            } else {
                registry.pull_manifest(context, &name, &reference).await?
            };
            let response = Response::builder()
                .status(StatusCode::OK)
                .header(CONTENT_TYPE, header_value(&manifest.media_type))
                .header(CONTENT_LENGTH, manifest.bytes.len())
                .header(
                    DOCKER_CONTENT_DIGEST,
                    header_value(manifest.digest.as_str()),
                );
            let body = if head {
                Body::empty()
            } else {
                Body::from(manifest.bytes)
            };
            build(response, body)
        }

        Endpoint::PutManifest { name, reference } => {
            let content_type = parts
                .headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            let bytes = read_manifest_body(&parts.headers, body).await?;
            let manifest = registry
                .put_manifest(context, &name, &reference, content_type, bytes)
                .await?;
            let mut response = Response::builder()
                .status(StatusCode::CREATED)
                .header(
                    LOCATION,
                    header_value(&format!("/v2/{name}/manifests/{}", manifest.digest)),
                )
                .header(
                    DOCKER_CONTENT_DIGEST,
                    header_value(manifest.digest.as_str()),
                )
                .header(CONTENT_LENGTH, 0);
            if let Some((subject, _)) = &manifest.referrer {
                response = response.header(OCI_SUBJECT, header_value(subject.as_str()));
            }
            build(response, Body::empty())
        }

        Endpoint::DeleteManifest { name, reference } => {
            registry.delete_manifest(context, &name, &reference).await?;
            empty(StatusCode::ACCEPTED)
        }

        Endpoint::GetBlob {
            name,
            digest,
            head: true,
        } => {
            let size = registry.blob_size(&name, &digest).await?;
            build(
                Response::builder()
                    .status(StatusCode::OK)
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, size)
                    .header(ACCEPT_RANGES, "bytes")
                    .header(DOCKER_CONTENT_DIGEST, header_value(digest.as_str())),
                Body::empty(),
            )
        }

        Endpoint::GetBlob {
            name,
            digest,
            head: false,
        } => {
            let range = parts.headers.get(RANGE).and_then(|v| v.to_str().ok());
            match registry.read_blob(context, &name, &digest, range).await? {
                BlobRead::Redirect(url) => build(
                    Response::builder()
                        .status(StatusCode::TEMPORARY_REDIRECT)
                        .header(LOCATION, header_value(&url))
                        .header(DOCKER_CONTENT_DIGEST, header_value(digest.as_str()))
                        .header(CONTENT_LENGTH, 0),
                    Body::empty(),
                ),
                BlobRead::Bytes { size, range, body } => {
                    let mut response = Response::builder()
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .header(ACCEPT_RANGES, "bytes")
                        .header(DOCKER_CONTENT_DIGEST, header_value(digest.as_str()));
                    response = match range {
                        Some(range) => response
                            .status(StatusCode::PARTIAL_CONTENT)
                            .header(CONTENT_LENGTH, range.end - range.start)
                            .header(
                                CONTENT_RANGE,
                                format!("bytes {}-{}/{size}", range.start, range.end - 1),
                            ),
                        None => response.status(StatusCode::OK).header(CONTENT_LENGTH, size),
                    };
                    build(response, Body::from_stream(body.0))
                }
            }
        }

        Endpoint::DeleteBlob { name, digest } => {
            registry.delete_blob(context, &name, &digest).await?;
            empty(StatusCode::ACCEPTED)
        }

        Endpoint::StartUpload { name, start } => match start {
            UploadKind::Monolithic(digest) => {
                registry
                    .upload_whole(context, &name, &digest, body_stream(body))
                    .await?;
                blob_created(&name, digest.as_str())
            }
            UploadKind::Session => {
                let started = registry.start_upload(context, &name, None).await?;
                upload_started(app, &name, started, context)
            }
            UploadKind::Mount {
                digest,
                from,
                discover,
            } => {
                let sources = match from {
                    Some(from) => vec![from],
                    None => std::iter::once(name.clone())
                        .chain(discover.into_iter().filter(|source| source != &name))
                        .collect(),
                };
                let started = registry
                    .start_upload(context, &name, Some((&digest, &sources)))
                    .await?;
                upload_started(app, &name, started, context)
            }
        },

        Endpoint::UploadStatus { name, id } => {
            let size = registry.upload_progress(&name, &id).await?;
            upload_accepted(StatusCode::NO_CONTENT, &name, &id, size)
        }

        Endpoint::PatchUpload { name, id } => {
            let range = content_range(&parts.headers)?;
            let size = registry
                .append_upload(&name, &id, range, body_stream(body))
                .await?;
            upload_accepted(StatusCode::ACCEPTED, &name, &id, size)
        }

        Endpoint::CompleteUpload { name, id, digest } => {
            let last_chunk = if crate::has_body(&parts.headers) {
                Some((content_range(&parts.headers)?, body_stream(body)))
            } else {
                None
            };
            registry
                .complete_upload(context, &name, &id, &digest, last_chunk)
                .await?;
            blob_created(&name, digest.as_str())
        }

        Endpoint::CancelUpload { name, id } => {
            registry.cancel_upload(&name, &id).await?;
            empty(StatusCode::NO_CONTENT)
        }

        Endpoint::ListTags { name, page } => {
            let listed = registry.tags(&name, page.n, page.last.as_deref()).await?;
            let link = next_link(&format!("/v2/{name}/tags/list"), &page, &listed);
            let body = serde_json::json!({ "name": name, "tags": listed.entries });
            listing(body, link)
        }

        Endpoint::Catalog { page } => {
            let listed = registry.catalog(page.n, page.last.as_deref()).await?;
            let link = next_link("/v2/_catalog", &page, &listed);
            listing(serde_json::json!({ "repositories": listed.entries }), link)
        }

        Endpoint::Referrers {
            name,
            subject,
            artifact_type,
        } => {
            let referrers = registry
                .referrers(&name, &subject, artifact_type.as_deref())
                .await?;
            let index = serde_json::json!({
                "schemaVersion": 2,
                "mediaType": media_type::OCI_INDEX,
                "manifests": referrers.manifests,
            });
            let mut response = json(
                StatusCode::OK,
                index.to_string().into_bytes(),
                media_type::OCI_INDEX,
            );
            if referrers.filtered {
                response
                    .headers_mut()
                    .insert(OCI_FILTERS_APPLIED, header_value("artifactType"));
            }
            Ok(response)
        }
    }
}

fn build(builder: http::response::Builder, body: Body) -> Result<Response> {
    builder.body(body).map_err(RegistryError::internal)
}

fn empty(status: StatusCode) -> Result<Response> {
    build(
        Response::builder().status(status).header(CONTENT_LENGTH, 0),
        Body::empty(),
    )
}

fn json(status: StatusCode, body: Vec<u8>, content_type: &'static str) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    headers.insert(CONTENT_LENGTH, header_value(&body.len().to_string()));
    *response.body_mut() = Body::from(body);
    response
}

fn listing(body: serde_json::Value, link: Option<String>) -> Result<Response> {
    let mut response = json(
        StatusCode::OK,
        body.to_string().into_bytes(),
        "application/json",
    );
    if let Some(link) = link {
        response.headers_mut().insert(LINK, header_value(&link));
    }
    Ok(response)
}

fn next_link(path: &str, asked: &Pagination, listed: &Page) -> Option<String> {
    let last = listed.entries.last().filter(|_| listed.more)?;
    let last = utf8_percent_encode(last, NON_ALPHANUMERIC);
    let n = asked.n.unwrap_or(listed.entries.len());
    Some(format!("<{path}?n={n}&last={last}>; rel=\"next\""))
}

fn blob_created(name: &RepositoryName, digest: &str) -> Result<Response> {
    build(
        Response::builder()
            .status(StatusCode::CREATED)
            .header(
                LOCATION,
                header_value(&format!("/v2/{name}/blobs/{digest}")),
            )
            .header(DOCKER_CONTENT_DIGEST, header_value(digest))
            .header(CONTENT_LENGTH, 0),
        Body::empty(),
    )
}

fn upload_started(
    app: &App,
    name: &RepositoryName,
    started: UploadStart,
    context: &RequestContext,
) -> Result<Response> {
    match started {
        UploadStart::Mounted(digest) => blob_created(name, digest.as_str()),
        UploadStart::Session { id, size } => {
            let mut response = upload_accepted(StatusCode::ACCEPTED, name, &id, size)?;
            let headers = response.headers_mut();
            if let Some(handoff) = &app.settings.upload_handoff {
                // The bytes go to the upload front, which takes any size: no chunk limit.
                let actor = match &context.actor {
                    Actor::User(name) | Actor::Robot(name) => name.as_str(),
                    Actor::Anonymous | Actor::System(_) => "",
                };
                headers.insert(LOCATION, header_value(&handoff.location(name, &id, actor)?));
                headers.insert(OCI_CHUNK_MIN_LENGTH, header_value("1"));
                return Ok(response);
            }
            headers.insert(
                OCI_CHUNK_MIN_LENGTH,
                header_value(&app.settings.chunk_min_length.to_string()),
            );
            if let Some(max) = app.settings.chunk_max_length {
                headers.insert(OCI_CHUNK_MAX_LENGTH, header_value(&max.to_string()));
            }
            Ok(response)
        }
    }
}

fn upload_accepted(
    status: StatusCode,
    name: &RepositoryName,
    id: &UploadId,
    size: u64,
) -> Result<Response> {
    build(
        Response::builder()
            .status(status)
            .header(LOCATION, header_value(&upload_location(name, id)))
            .header(RANGE, upload_range(size))
            .header(DOCKER_UPLOAD_UUID, header_value(id.as_str()))
            .header(CONTENT_LENGTH, 0),
        Body::empty(),
    )
}

fn content_range(headers: &HeaderMap) -> Result<Option<berth_core::range::ChunkRange>> {
    headers
        .get(CONTENT_RANGE)
        .map(|value| {
            let text = value.to_str().map_err(|_| {
                RegistryError::new(ErrorCode::RangeInvalid, "Content-Range is not text")
            })?;
            parse_content_range(text)
        })
        .transpose()
}

fn body_stream(body: Body) -> ByteStream {
    Box::pin(body.into_data_stream().map_err(io::Error::other))
}

async fn read_manifest_body(headers: &HeaderMap, body: Body) -> Result<bytes::Bytes> {
    let too_large = || {
        RegistryError::new(
            ErrorCode::PayloadTooLarge,
            format!("manifest is larger than the {MAX_MANIFEST_BYTES} byte limit"),
        )
    };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_MANIFEST_BYTES as u64) {
        return Err(too_large());
    }
    let limited = http_body_util::Limited::new(body, MAX_MANIFEST_BYTES);
    match http_body_util::BodyExt::collect(limited).await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(error) => Err(RegistryError::new(
            ErrorCode::ManifestInvalid,
            format!("the manifest body could not be read: {error}"),
        )),
    }
}
