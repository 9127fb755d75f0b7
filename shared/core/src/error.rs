//! The registry's error type and its table of error codes, each with its HTTP status.

use std::borrow::Cow;
use std::fmt;

/// An error code on the wire. The status each code carries is decided here and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    TooManyRequests,
    /// A chunk or byte range that does not fit the upload or blob (416).
    RangeInvalid,
    /// The `n` of a paginated listing is not a number Berth will serve.
    PaginationNumberInvalid,
    /// No endpoint of the API lives at this path.
    NotFound,
    /// A request body larger than Berth accepts for that endpoint (413).
    PayloadTooLarge,
    /// A storage backend could not be reached; the request may be retried (503).
    Unavailable,
    /// A management or token request that is malformed (400).
    BadRequest,
    /// A management request that would create what exists (409).
    Conflict,
    /// A management request refused because of what exists, such as deleting a project
    /// that still holds repositories (412).
    PreconditionFailed,
    /// Anything else: an internal failure whose detail is logged, never sent.
    Unknown,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        self.entry().0
    }

    pub fn status(self) -> u16 {
        self.entry().1
    }

    fn entry(self) -> (&'static str, u16) {
        match self {
            Self::BlobUnknown => ("BLOB_UNKNOWN", 404),
            Self::BlobUploadInvalid => ("BLOB_UPLOAD_INVALID", 400),
            Self::BlobUploadUnknown => ("BLOB_UPLOAD_UNKNOWN", 404),
            Self::DigestInvalid => ("DIGEST_INVALID", 400),
            Self::ManifestBlobUnknown => ("MANIFEST_BLOB_UNKNOWN", 400),
            Self::ManifestInvalid => ("MANIFEST_INVALID", 400),
            Self::ManifestUnknown => ("MANIFEST_UNKNOWN", 404),
            Self::NameInvalid => ("NAME_INVALID", 400),
            Self::NameUnknown => ("NAME_UNKNOWN", 404),
            Self::SizeInvalid => ("SIZE_INVALID", 400),
            Self::Unauthorized => ("UNAUTHORIZED", 401),
            Self::Denied => ("DENIED", 403),
            Self::Unsupported => ("UNSUPPORTED", 405),
            Self::TooManyRequests => ("TOOMANYREQUESTS", 429),
            Self::RangeInvalid => ("RANGE_INVALID", 416),
            Self::PaginationNumberInvalid => ("PAGINATION_NUMBER_INVALID", 400),
            Self::NotFound => ("NOT_FOUND", 404),
            Self::PayloadTooLarge => ("PAYLOAD_TOO_LARGE", 413),
            Self::Unavailable => ("UNAVAILABLE", 503),
            Self::BadRequest => ("BAD_REQUEST", 400),
            Self::Conflict => ("CONFLICT", 409),
            Self::PreconditionFailed => ("PRECONDITION", 412),
            Self::Unknown => ("UNKNOWN", 500),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Facts an error carries that become response headers at the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorHint {
    /// The upload's current extent: the client should continue after `size` bytes.
    UploadProgress { location: String, size: u64 },
    /// The full size of a blob whose requested range could not be served.
    BlobSize(u64),
    /// The methods the path does support, for a refused method.
    AllowedMethods(&'static str),
    /// A `WWW-Authenticate` value: how to obtain the credentials the request lacked.
    Challenge(String),
    /// A push refused by its project's storage quota (the body says the same in words).
    QuotaExceeded(Box<crate::quota::Refusal>),
}

/// A failure with a code from the table, a message safe to show the client, and, for
/// internal failures, a private cause that is logged once and never sent.
#[derive(Debug)]
pub struct RegistryError {
    code: ErrorCode,
    message: Cow<'static, str>,
    detail: Option<serde_json::Value>,
    hint: Option<ErrorHint>,
    cause: Option<String>,
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

impl RegistryError {
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
            detail: None,
            hint: None,
            cause: None,
        }
    }

    /// An internal failure: the client sees only a generic message.
    pub fn internal(cause: impl fmt::Display) -> Self {
        Self::with_cause(ErrorCode::Unknown, "internal error", cause)
    }

    /// A backend that could not be reached: the client sees a retryable 503.
    pub fn unavailable(cause: impl fmt::Display) -> Self {
        Self::with_cause(
            ErrorCode::Unavailable,
            "storage is temporarily unavailable",
            cause,
        )
    }

    fn with_cause(code: ErrorCode, message: &'static str, cause: impl fmt::Display) -> Self {
        Self {
            cause: Some(cause.to_string()),
            ..Self::new(code, message)
        }
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }

    pub fn with_hint(mut self, hint: ErrorHint) -> Self {
        self.hint = Some(hint);
        self
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn detail(&self) -> Option<&serde_json::Value> {
        self.detail.as_ref()
    }

    pub fn hint(&self) -> Option<&ErrorHint> {
        self.hint.as_ref()
    }

    /// The private cause of an internal failure, for the log.
    pub fn cause(&self) -> Option<&str> {
        self.cause.as_deref()
    }

    /// The error body of the distribution spec.
    pub fn to_body(&self) -> serde_json::Value {
        let mut error = serde_json::json!({
            "code": self.code.as_str(),
            "message": self.message,
        });
        if let Some(detail) = &self.detail {
            error["detail"] = detail.clone();
        }
        serde_json::json!({ "errors": [error] })
    }
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if let Some(cause) = &self.cause {
            write!(f, " ({cause})")?;
        }
        Ok(())
    }
}

impl std::error::Error for RegistryError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_cause_never_reaches_the_body() {
        let err = RegistryError::internal("disk /secret/path on fire");
        let body = err.to_body().to_string();
        assert!(!body.contains("secret"), "{body}");
        assert_eq!(err.code().status(), 500);
        assert_eq!(err.cause(), Some("disk /secret/path on fire"));
    }

    #[test]
    fn body_has_the_spec_shape() {
        let err = RegistryError::new(ErrorCode::BlobUnknown, "blob unknown to registry")
            .with_detail(serde_json::json!({"digest": "sha256:x"}));
        let body = err.to_body();
        assert_eq!(body["errors"][0]["code"], "BLOB_UNKNOWN");
        assert_eq!(body["errors"][0]["detail"]["digest"], "sha256:x");
        assert_eq!(err.code().status(), 404);
    }
}
