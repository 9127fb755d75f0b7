//! How DynamoDB failures become registry errors: transient ones (throttling, timeouts,
//! connection failures, 5xx) are `UNAVAILABLE` (503, retryable), everything else is an internal
//! error. Either way the client sees only the generic message; the cause, which may name the
//! table or the endpoint, is kept for the log.

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use berth_core::error::RegistryError;

/// Service error codes that say "try again later".
const TRANSIENT_CODES: &[&str] = &[
    "ThrottlingException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "TransactionConflictException",
    "TransactionInProgressException",
    "ReplicatedWriteConflictException",
    "InternalServerError",
    "ServiceUnavailable",
];

/// Cancellation reasons of a transaction that say "try again later".
pub(crate) const TRANSIENT_CANCELLATIONS: &[&str] = &[
    "TransactionConflict",
    "ThrottlingError",
    "ProvisionedThroughputExceeded",
    "RequestLimitExceeded",
];

/// A failed DynamoDB call (`operation` names it in the log).
pub(crate) fn sdk_error<E>(operation: &str, err: SdkError<E, HttpResponse>) -> RegistryError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let transient = match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(service) => {
            transient_service_error(service.raw().status().as_u16(), service.err().code())
        }
        _ => false,
    };
    let cause = format!("DynamoDB {operation}: {}", describe(&err));
    if transient {
        RegistryError::unavailable(cause)
    } else {
        RegistryError::internal(cause)
    }
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

/// Whether an error answer with this status and code may succeed when tried again.
fn transient_service_error(status: u16, code: Option<&str>) -> bool {
    status >= 500 || code.is_some_and(|code| TRANSIENT_CODES.contains(&code))
}

/// An item that does not have the shape this code writes.
pub(crate) fn corrupt(what: &str) -> RegistryError {
    RegistryError::internal(format!("metadata store: {what} is corrupt"))
}

#[cfg(test)]
mod tests {
    use berth_core::ErrorCode;

    use super::*;

    #[test]
    fn throttling_and_server_errors_are_transient() {
        assert!(transient_service_error(400, Some("ThrottlingException")));
        assert!(transient_service_error(
            400,
            Some("ProvisionedThroughputExceededException")
        ));
        assert!(transient_service_error(500, None));
        assert!(transient_service_error(503, Some("Whatever")));
        assert!(!transient_service_error(400, Some("ValidationException")));
        assert!(!transient_service_error(
            400,
            Some("ResourceNotFoundException")
        ));
        assert!(!transient_service_error(400, None));
    }

    #[test]
    fn causes_stay_out_of_the_body() {
        let err = corrupt("an item of table berth-secret-name");
        assert_eq!(err.code(), ErrorCode::Unknown);
        assert!(!err.to_body().to_string().contains("berth-secret-name"));
    }
}
