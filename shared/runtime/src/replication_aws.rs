//! Replication's carriers and secrets in AWS: jobs travel on an SQS queue
//! ([`SqsDispatch`]), and webhook deliveries between their attempts too
//! ([`WebhookMessage`]); the jobs that failed every attempt are read back from its
//! dead-letter queue ([`SqsDeadLetters`]), and remote credentials are sealed by KMS
//! ([`KmsSecretBox`]).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use berth_app::webhooks::{WebhookJob, WebhookQueue};
use berth_core::{RegistryError, Result};
use berth_replication::engine::{DeadLetter, DeadLetters, Dispatch, Job};
use berth_replication::secrets::SecretBox;

use crate::aws::AwsConfig;

/// The longest delay SQS gives a message; a longer one is cut to it.
pub const MAX_DELAY: Duration = Duration::from_secs(900);

/// The encryption context every sealed credential is bound to: bytes KMS encrypted for
/// another purpose with the same key do not open here, and the key's CloudTrail records say
/// what each decryption was for. IAM policies can require it (`kms:EncryptionContext:berth`).
pub const ENCRYPTION_CONTEXT: (&str, &str) = ("berth", "replication-credential");

/// The first byte of a KMS-sealed secret, after the local box's `1`: a secret sealed by the
/// other box is refused with a clear message instead of a decryption error.
const KMS_FORMAT: u8 = 2;

/// The most messages one `ReceiveMessage` returns.
const RECEIVE_BATCH: usize = 10;

/// Remote registry secrets sealed with a KMS key (`BERTH_REPLICATION_KMS_KEY`).
#[derive(Debug, Clone)]
pub struct KmsSecretBox {
    client: aws_sdk_kms::Client,
    key: String,
}

impl KmsSecretBox {
    /// Seals with `key` (a key id, ARN or alias); makes no request.
    pub(crate) async fn new(aws: &AwsConfig, key: impl Into<String>) -> Self {
        Self::with_client(aws.kms().await, key)
    }

    pub fn with_client(client: aws_sdk_kms::Client, key: impl Into<String>) -> Self {
        Self {
            client,
            key: key.into(),
        }
    }
}

fn context() -> HashMap<String, String> {
    HashMap::from([(
        ENCRYPTION_CONTEXT.0.to_owned(),
        ENCRYPTION_CONTEXT.1.to_owned(),
    )])
}

#[async_trait]
impl SecretBox for KmsSecretBox {
    async fn seal(&self, secret: &str) -> Result<Vec<u8>> {
        let output = self
            .client
            .encrypt()
            .key_id(&self.key)
            .plaintext(Blob::new(secret.as_bytes()))
            .set_encryption_context(Some(context()))
            .send()
            .await
            .map_err(|e| aws_error(&format!("KMS Encrypt with key {}", self.key), &e))?;
        let ciphertext = output
            .ciphertext_blob()
            .ok_or_else(|| RegistryError::internal("KMS Encrypt returned no ciphertext"))?;
        let mut sealed = Vec::with_capacity(1 + ciphertext.as_ref().len());
        sealed.push(KMS_FORMAT);
        sealed.extend_from_slice(ciphertext.as_ref());
        Ok(sealed)
    }

    async fn open(&self, sealed: &[u8]) -> Result<String> {
        let ciphertext = match sealed.split_first() {
            Some((&KMS_FORMAT, ciphertext)) => ciphertext,
            Some((format, _)) => {
                return Err(RegistryError::internal(format!(
                    "a replication credential sealed in format {format}, not by KMS \
                     (format {KMS_FORMAT}): it was stored by another deployment; \
                     enter the registry's credential again"
                )));
            }
            None => return Err(RegistryError::internal("an empty sealed credential")),
        };
        // Naming the key makes KMS refuse ciphertext of any other key.
        let output = self
            .client
            .decrypt()
            .key_id(&self.key)
            .ciphertext_blob(Blob::new(ciphertext))
            .set_encryption_context(Some(context()))
            .send()
            .await
            .map_err(|e| aws_error(&format!("KMS Decrypt with key {}", self.key), &e))?;
        let plaintext = output
            .plaintext()
            .ok_or_else(|| RegistryError::internal("KMS Decrypt returned no plaintext"))?;
        String::from_utf8(plaintext.as_ref().to_vec())
            .map_err(|_| RegistryError::internal("a replication credential is not UTF-8"))
    }
}

/// Replication jobs as messages of an SQS queue (`BERTH_REPLICATION_QUEUE_URL`), which the
/// events function consumes.
#[derive(Debug, Clone)]
pub struct SqsDispatch {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsDispatch {
    pub(crate) async fn new(aws: &AwsConfig, queue_url: impl Into<String>) -> Self {
        Self::with_client(aws.sqs().await, queue_url)
    }

    pub fn with_client(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }
}

/// SQS's `DelaySeconds` for `delay`: whole seconds, at most [`MAX_DELAY`]. The replicator's
/// retry delays stay far below it.
pub fn delay_seconds(delay: Duration) -> i32 {
    let seconds = delay.min(MAX_DELAY).as_secs();
    i32::try_from(seconds).unwrap_or(i32::MAX)
}

impl SqsDispatch {
    /// Sends `message` as JSON, to be received after `delay`.
    async fn send(
        &self,
        message: &impl serde::Serialize,
        delay: Duration,
        what: &str,
    ) -> Result<()> {
        let body = serde_json::to_string(message)
            .map_err(|e| RegistryError::internal(format!("{what} as JSON: {e}")))?;
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .delay_seconds(delay_seconds(delay))
            .send()
            .await
            .map_err(|e| aws_unavailable(&format!("SQS SendMessage of {what}"), &e))?;
        Ok(())
    }
}

#[async_trait]
impl Dispatch for SqsDispatch {
    async fn dispatch(&self, job: Job, delay: Duration) -> Result<()> {
        self.send(&job, delay, "a replication job").await
    }
}

/// A webhook job as a message of the events function's queue: `{"webhook": job}`, told
/// apart from replication's jobs by its one key.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookMessage {
    pub webhook: WebhookJob,
}

/// Webhook deliveries travel on the replication queue too, between their attempts: the
/// events function consumes both.
#[async_trait]
impl WebhookQueue for SqsDispatch {
    async fn enqueue(&self, job: &WebhookJob, delay: Duration) -> Result<()> {
        let message = WebhookMessage {
            webhook: job.clone(),
        };
        self.send(&message, delay, "a webhook delivery").await
    }
}

/// The replication dead-letter queue (`BERTH_REPLICATION_DLQ_URL`), read without consuming
/// it: its messages are received with a visibility timeout of 0, so they stay visible and
/// in the queue (each read counts as a receive, and SQS still expires them after the
/// queue's retention period).
#[derive(Debug, Clone)]
pub struct SqsDeadLetters {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl SqsDeadLetters {
    pub(crate) async fn new(aws: &AwsConfig, queue_url: impl Into<String>) -> Self {
        Self::with_client(aws.sqs().await, queue_url)
    }

    pub fn with_client(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }
}

#[async_trait]
impl DeadLetters for SqsDeadLetters {
    async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        let mut letters: Vec<(u64, DeadLetter)> = Vec::new();
        // SQS samples its servers on each receive, so one call may miss messages another
        // returns; a few calls more than the limit needs, stopping when one brings nothing
        // new, see most of a small queue. It is a view for operators, not an inventory.
        let rounds = limit.div_ceil(RECEIVE_BATCH) + 2;
        for _ in 0..rounds {
            if letters.len() >= limit {
                break;
            }
            let wanted = (limit - letters.len()).clamp(1, RECEIVE_BATCH);
            let output = self
                .client
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(i32::try_from(wanted).unwrap_or(1))
                .visibility_timeout(0)
                .wait_time_seconds(0)
                .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
                .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
                .send()
                .await
                .map_err(|e| {
                    aws_unavailable(
                        "SQS ReceiveMessage from the replication dead-letter queue",
                        &e,
                    )
                })?;
            let mut new = 0;
            for message in output.messages() {
                let Some(id) = message.message_id() else {
                    continue;
                };
                if letters.iter().any(|(_, letter)| letter.id == id) {
                    continue;
                }
                let attribute = |name: MessageSystemAttributeName| {
                    message
                        .attributes()
                        .and_then(|attributes| attributes.get(&name))
                        .and_then(|value| value.parse::<u64>().ok())
                };
                let sent_ms = attribute(MessageSystemAttributeName::SentTimestamp);
                letters.push((
                    sent_ms.unwrap_or(u64::MAX),
                    DeadLetter {
                        id: id.to_owned(),
                        body: message.body().unwrap_or_default().to_owned(),
                        attempts: attribute(MessageSystemAttributeName::ApproximateReceiveCount)
                            .and_then(|count| u32::try_from(count).ok())
                            .unwrap_or(0),
                        // SQS keeps no error with a message; the function's log has it.
                        error: None,
                        first_attempt: sent_ms.map(|ms| ms / 1000),
                    },
                ));
                new += 1;
            }
            if new == 0 {
                break;
            }
        }
        letters.sort_by_key(|(sent, _)| *sent);
        letters.truncate(limit);
        Ok(letters.into_iter().map(|(_, letter)| letter).collect())
    }
}

/// An AWS error with its chain of causes, as an internal error.
fn aws_error(doing: &str, error: &dyn std::error::Error) -> RegistryError {
    RegistryError::internal(format!("{doing}: {}", causes(error)))
}

/// An AWS error of a queue, which callers may retry.
fn aws_unavailable(doing: &str, error: &dyn std::error::Error) -> RegistryError {
    RegistryError::unavailable(format!("{doing}: {}", causes(error)))
}

fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text = format!("{text}: {inner}");
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_whole_seconds_up_to_sqs_maximum() {
        assert_eq!(delay_seconds(Duration::ZERO), 0);
        assert_eq!(delay_seconds(Duration::from_millis(1500)), 1);
        assert_eq!(delay_seconds(Duration::from_secs(80)), 80);
        assert_eq!(delay_seconds(Duration::from_secs(900)), 900);
        assert_eq!(delay_seconds(Duration::from_secs(86_400)), 900);
    }
}
