//! Turning results into HTTP responses: the one place a `RegistryError` becomes a status,
//! headers and an OCI error body.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use berth_core::{ErrorCode, ErrorHint, RegistryError};
use http::header::{
    ALLOW, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE, WWW_AUTHENTICATE,
};
use http::{HeaderValue, StatusCode};

/// What the access log needs to know about a failed request.
#[derive(Debug, Clone)]
pub struct Failure {
    pub code: ErrorCode,
    /// The private cause of an internal failure; logged once, never sent.
    pub cause: Option<String>,
}

/// A `RegistryError` on its way to the client.
#[derive(Debug)]
pub struct ApiError(pub RegistryError);

impl From<RegistryError> for ApiError {
    fn from(error: RegistryError) -> Self {
        Self(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let error = self.0;
        let status = StatusCode::from_u16(error.code().status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = error.to_body().to_string();
        let mut response = Response::builder()
            .status(status)
            .header(CONTENT_TYPE, "application/json")
            .header(CONTENT_LENGTH, body.len())
            .body(Body::from(body))
            .unwrap_or_default();
        let headers = response.headers_mut();
        match error.hint() {
            Some(ErrorHint::UploadProgress { location, size }) => {
                if let Ok(location) = HeaderValue::from_str(location) {
                    headers.insert(LOCATION, location);
                }
                headers.insert(RANGE, upload_range(*size));
            }
            Some(ErrorHint::BlobSize(size)) => {
                headers.insert(CONTENT_RANGE, header_value(&format!("bytes */{size}")));
            }
            Some(ErrorHint::AllowedMethods(allowed)) => {
                headers.insert(ALLOW, HeaderValue::from_static(allowed));
            }
            Some(ErrorHint::Challenge(challenge)) => {
                headers.insert(WWW_AUTHENTICATE, header_value(challenge));
            }
            Some(ErrorHint::QuotaExceeded(_)) | None => {}
        }
        response.extensions_mut().insert(Failure {
            code: error.code(),
            cause: error.cause().map(str::to_owned),
        });
        response
    }
}

/// The `Range` header of an upload holding `size` bytes: the inclusive span received.
pub fn upload_range(size: u64) -> HeaderValue {
    header_value(&format!("0-{}", size.saturating_sub(1)))
}

/// A header value from text Berth built itself (digests, paths of validated names, numbers).
pub fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}
