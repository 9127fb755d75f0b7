//! What an S3 failure means to the registry: a missing object, a retryable outage (503), or
//! an internal error (500). The cause, which may name the endpoint, bucket or key, goes only
//! into the error's private cause, which is logged and never sent.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use berth_core::RegistryError;

/// A failed S3 request, sorted.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The key, or the multipart upload, does not exist.
    NotFound,
    /// Anything else, as the registry reports it.
    Failed(RegistryError),
}

impl Failure {
    /// The failure as a registry error, when a missing object is itself an error.
    pub(crate) fn into_error(self, action: &str) -> RegistryError {
        match self {
            Self::NotFound => RegistryError::internal(format!("S3 {action}: not found")),
            Self::Failed(error) => error,
        }
    }
}

/// Error codes S3 answers when a key or a multipart upload is missing. `NoSuchBucket` is not
/// among them: a missing bucket is a misconfiguration, never an absent blob.
const NOT_FOUND_CODES: &[&str] = &["NoSuchKey", "NotFound", "NoSuchUpload"];

/// Error codes that ask the caller to come back later.
const RETRYABLE_CODES: &[&str] = &[
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "ServiceUnavailable",
    "InternalError",
];

pub(crate) fn classify<E>(action: &str, err: SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let retryable = match &err {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
        SdkError::DispatchFailure(failure) => !failure.is_user(),
        SdkError::ServiceError(_) => {
            let code = err.as_service_error().and_then(ProvideErrorMetadata::code);
            if code.is_some_and(|code| NOT_FOUND_CODES.contains(&code)) {
                return Failure::NotFound;
            }
            let status = err.raw_response().map(|r| r.status().as_u16());
            status.is_some_and(|s| s >= 500 || s == 429)
                || code.is_some_and(|code| RETRYABLE_CODES.contains(&code))
        }
        _ => false,
    };
    let cause = format!("S3 {action}: {}", describe(&err));
    Failure::Failed(if retryable {
        RegistryError::unavailable(cause)
    } else {
        RegistryError::internal(cause)
    })
}

/// A failure in one line for the log: the service's status, code and message when it
/// answered, the whole chain of causes when it could not be reached.
fn describe<E>(err: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match err {
        SdkError::ServiceError(service) => format!(
            "{} {}: {}",
            service.raw().status().as_u16(),
            service.err().code().unwrap_or("(no error code)"),
            service.err().message().unwrap_or("(no message)")
        ),
        other => DisplayErrorContext(other).to_string(),
    }
}

/// Maps an SDK error to a registry error, a missing object included.
pub(crate) fn failed<E>(
    action: &'static str,
) -> impl FnOnce(SdkError<E, HttpResponse>) -> RegistryError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    move |err| classify(action, err).into_error(action)
}

#[cfg(test)]
mod tests {
    use aws_sdk_s3::error::ErrorMetadata;
    use aws_sdk_s3::operation::get_object::GetObjectError;
    use aws_sdk_s3::primitives::SdkBody;
    use berth_core::ErrorCode;

    use super::*;

    fn service_error(status: u16, code: &str) -> SdkError<GetObjectError, HttpResponse> {
        let raw = HttpResponse::new(status.try_into().expect("a status code"), SdkBody::empty());
        let source =
            GetObjectError::generic(ErrorMetadata::builder().code(code).message("m").build());
        SdkError::service_error(source, raw)
    }

    fn code_of(failure: Failure) -> Option<ErrorCode> {
        match failure {
            Failure::NotFound => None,
            Failure::Failed(e) => Some(e.code()),
        }
    }

    #[test]
    fn missing_keys_are_not_found_but_missing_buckets_are_not() {
        assert!(matches!(
            classify("GetObject", service_error(404, "NoSuchKey")),
            Failure::NotFound
        ));
        assert!(matches!(
            classify("GetObject", service_error(404, "NoSuchUpload")),
            Failure::NotFound
        ));
        assert_eq!(
            code_of(classify("GetObject", service_error(404, "NoSuchBucket"))),
            Some(ErrorCode::Unknown)
        );
    }

    #[test]
    fn outages_are_retryable_and_the_rest_internal() {
        for (status, code) in [
            (503, "SlowDown"),
            (500, "InternalError"),
            (400, "RequestTimeout"),
        ] {
            assert_eq!(
                code_of(classify("GetObject", service_error(status, code))),
                Some(ErrorCode::Unavailable),
                "{status} {code}"
            );
        }
        let timeout: SdkError<GetObjectError, HttpResponse> =
            SdkError::timeout_error("took too long");
        assert_eq!(
            code_of(classify("GetObject", timeout)),
            Some(ErrorCode::Unavailable)
        );
        for (status, code) in [(403, "AccessDenied"), (400, "InvalidArgument")] {
            assert_eq!(
                code_of(classify("GetObject", service_error(status, code))),
                Some(ErrorCode::Unknown),
                "{status} {code}"
            );
        }
    }

    #[test]
    fn causes_stay_private() {
        let Failure::Failed(error) = classify("GetObject", service_error(403, "AccessDenied"))
        else {
            panic!("not a missing key");
        };
        let body = error.to_body().to_string();
        assert!(!body.contains("AccessDenied"), "{body}");
        assert!(error.cause().is_some_and(|c| c.contains("AccessDenied")));
    }
}
