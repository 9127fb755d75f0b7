//! The AWS clients of one process: the SDK's configuration is loaded once from the standard
//! chain (`AWS_*` variables, profiles, the Lambda role) and every client is built from it.

use aws_config::SdkConfig;
use tokio::sync::OnceCell;

/// The process's AWS configuration, loaded on first use. Makes no request.
#[derive(Debug, Default)]
pub(crate) struct AwsConfig(OnceCell<SdkConfig>);

impl AwsConfig {
    async fn shared(&self) -> &SdkConfig {
        self.0
            .get_or_init(|| aws_config::load_defaults(aws_config::BehaviorVersion::latest()))
            .await
    }

    pub(crate) async fn s3(&self) -> aws_sdk_s3::Client {
        let mut settings = aws_sdk_s3::config::Builder::from(self.shared().await);
        if let Some(endpoint) = endpoint_for_empty_variables("AWS_ENDPOINT_URL_S3") {
            settings.set_endpoint_url(endpoint);
        }
        aws_sdk_s3::Client::from_conf(settings.build())
    }

    pub(crate) async fn ssm(&self) -> aws_sdk_ssm::Client {
        let mut settings = aws_sdk_ssm::config::Builder::from(self.shared().await);
        if let Some(endpoint) = endpoint_for_empty_variables("AWS_ENDPOINT_URL_SSM") {
            settings.set_endpoint_url(endpoint);
        }
        aws_sdk_ssm::Client::from_conf(settings.build())
    }

    #[cfg(feature = "aws-replication")]
    pub(crate) async fn sqs(&self) -> aws_sdk_sqs::Client {
        let mut settings = aws_sdk_sqs::config::Builder::from(self.shared().await);
        if let Some(endpoint) = endpoint_for_empty_variables("AWS_ENDPOINT_URL_SQS") {
            settings.set_endpoint_url(endpoint);
        }
        aws_sdk_sqs::Client::from_conf(settings.build())
    }

    #[cfg(feature = "aws-replication")]
    pub(crate) async fn kms(&self) -> aws_sdk_kms::Client {
        let mut settings = aws_sdk_kms::config::Builder::from(self.shared().await);
        if let Some(endpoint) = endpoint_for_empty_variables("AWS_ENDPOINT_URL_KMS") {
            settings.set_endpoint_url(endpoint);
        }
        aws_sdk_kms::Client::from_conf(settings.build())
    }

    pub(crate) async fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        let mut settings = aws_sdk_dynamodb::config::Builder::from(self.shared().await);
        if let Some(endpoint) = endpoint_for_empty_variables("AWS_ENDPOINT_URL_DYNAMODB") {
            settings.set_endpoint_url(endpoint);
        }
        aws_sdk_dynamodb::Client::from_conf(settings.build())
    }
}

fn endpoint_for_empty_variables(service_variable: &str) -> Option<Option<String>> {
    let variable = |name| std::env::var(name).ok();
    endpoint_when_empty(variable(service_variable), variable("AWS_ENDPOINT_URL"))
}

/// The endpoint to give a client when an endpoint variable is set to an empty value, as
/// `sam local` sets one for an empty template parameter: the SDK would take the empty value
/// for a URL and panic on the first request. An empty service variable falls back to a
/// non-empty `AWS_ENDPOINT_URL`, else to the service's own endpoint. `None` when no variable
/// is empty and the SDK's own resolution stands.
fn endpoint_when_empty(service: Option<String>, global: Option<String>) -> Option<Option<String>> {
    let empty = |value: &Option<String>| value.as_deref() == Some("");
    (empty(&service) || (service.is_none() && empty(&global)))
        .then(|| global.filter(|global| !global.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_endpoint_variables_mean_unset() {
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(endpoint_when_empty(None, None), None);
        assert_eq!(endpoint_when_empty(some("http://a"), None), None);
        assert_eq!(endpoint_when_empty(some("http://a"), some("")), None);
        assert_eq!(endpoint_when_empty(some(""), None), Some(None));
        assert_eq!(endpoint_when_empty(some(""), some("")), Some(None));
        assert_eq!(
            endpoint_when_empty(some(""), some("http://b")),
            Some(some("http://b"))
        );
        assert_eq!(endpoint_when_empty(None, some("")), Some(None));
    }
}
