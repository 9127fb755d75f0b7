//! The AWS clients of one process: the SDK's configuration is loaded once from the standard
//! chain (`AWS_*` variables, profiles, the Lambda role) and every client is built from it.

use aws_config::SdkConfig;
use tokio::sync::OnceCell;

/// The process's AWS configuration, loaded on first use. Makes no request.
#[derive(Debug)]
pub(crate) struct AwsConfig(OnceCell<SdkConfig>);

/// The variables naming where AWS requests go, checked before any client is built.
const ENDPOINT_VARIABLES: [&str; 6] = [
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_ENDPOINT_URL_SSM",
    "AWS_ENDPOINT_URL_SQS",
    "AWS_ENDPOINT_URL_KMS",
];
const REGION_VARIABLES: [&str; 2] = ["AWS_REGION", "AWS_DEFAULT_REGION"];

/// Checks the region and endpoint variables `var` answers (empty counts as unset): a region
/// is a name like `us-east-1`, an endpoint an `http://` or `https://` URL with a host.
/// Returns the first variable that is wrong, and why.
pub(crate) fn check_environment(
    var: impl Fn(&'static str) -> Option<String>,
) -> std::result::Result<(), (&'static str, String)> {
    for name in REGION_VARIABLES {
        let Some(region) = var(name).filter(|value| !value.is_empty()) else {
            continue;
        };
        let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
        if region.len() > 63 || !region.chars().all(allowed) {
            return Err((
                name,
                format!("is {region:?}, not a region name like us-east-1"),
            ));
        }
    }
    for name in ENDPOINT_VARIABLES {
        let Some(url) = var(name).filter(|value| !value.is_empty()) else {
            continue;
        };
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"));
        let host = rest.map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(""));
        if host.is_none_or(str::is_empty) || url.chars().any(char::is_whitespace) {
            return Err((
                name,
                format!("is {url:?}, not an http:// or https:// URL with a host"),
            ));
        }
    }
    Ok(())
}

impl AwsConfig {
    /// The process's AWS configuration, once its region and endpoint variables are checked.
    pub(crate) fn from_env() -> berth_core::Result<Self> {
        check_environment(|name| std::env::var(name).ok()).map_err(|(variable, problem)| {
            berth_core::RegistryError::internal(format!("{variable} {problem}"))
        })?;
        Ok(Self(OnceCell::new()))
    }

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
    fn regions_and_endpoints_are_checked() {
        let check = |pairs: &[(&'static str, &'static str)]| {
            let pairs = pairs.to_vec();
            check_environment(move |name| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| (*v).to_owned())
            })
            .map_err(|(variable, _)| variable)
        };
        assert_eq!(check(&[]), Ok(()));
        assert_eq!(
            check(&[
                ("AWS_REGION", "us-east-1"),
                ("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:3900"),
                ("AWS_ENDPOINT_URL_DYNAMODB", ""),
                ("AWS_ENDPOINT_URL", "https://s3.example.com/base"),
            ]),
            Ok(())
        );
        assert_eq!(check(&[("AWS_REGION", "garage")]), Ok(()));
        assert_eq!(check(&[("AWS_REGION", "US East")]), Err("AWS_REGION"));
        assert_eq!(
            check(&[("AWS_DEFAULT_REGION", "eu_west_1")]),
            Err("AWS_DEFAULT_REGION")
        );
        for bad in ["127.0.0.1:3900", "http://", "ftp://host", "http://host/ x"] {
            assert_eq!(
                check(&[("AWS_ENDPOINT_URL_S3", bad)]),
                Err("AWS_ENDPOINT_URL_S3"),
                "{bad}"
            );
        }
    }

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
