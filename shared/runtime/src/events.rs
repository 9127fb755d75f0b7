//! The events function's handler: it tells its three event sources apart by the event's
//! shape and hands each to the replicator.
//!
//! | event | what it does | answer |
//! |---|---|---|
//! | DynamoDB stream batch (`Records[].eventSource` = `aws:dynamodb`) | each push or deletion ([`berth_meta_dynamodb::stream_changes`]) starts the event-based policies it matches | `batchItemFailures`: the first record whose policies could not be started, so Lambda retries from it |
//! | SQS batch (`Records[].eventSource` = `aws:sqs`) | runs each message's [`Job`] | `batchItemFailures`: the messages whose job failed, which SQS delivers again and, after the queue's `maxReceiveCount`, moves to the dead-letter queue |
//! | EventBridge schedule (`source` = `aws.events`, `detail-type` = `Scheduled Event`) | starts the scheduled policies due in the last [`SCHEDULE_WINDOW`] | the executions started |
//! | SQS message `{"webhook": …}` on the same queue | one attempt of a webhook delivery ([`berth_app::webhooks::Deliverer`]), recorded; after a failed attempt with attempts left, the next is queued with the retry pause as its delay | as for jobs: a delivery whose policy could not be read fails, and ends in the dead-letter queue |
//! | CloudWatch Logs subscription (`awslogs.data`) | the functions' event lines ([`berth_app::event_log`]) recorded in the audit log and the pull and push counters, each once however often it is delivered, and the first attempts of their webhook deliveries queued | how many events, audit entries, counts and deliveries; an error when they could not be recorded or queued, so Lambda delivers the batch again |
//!
//! What the replicator publishes while the function works (a replication run that ended) is
//! followed before the function answers: logged as an event line, recorded, and its webhook
//! deliveries queued.
//!
//! A task that failed and was dispatched again after a delay ([`Outcome::Retrying`]) is a
//! success for SQS: the next attempt is a new message.

use std::io::Read as _;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use berth_app::EventLog;
use berth_app::event_log::read_line;
use berth_app::recorder::{Records, record};
use berth_app::webhooks::{Deliverer, WebhookJob, WebhookQueue};
use berth_core::{Event as RegistryEvent, EventSink};
use berth_meta_dynamodb::{StreamChange, stream_changes};
use berth_replication::engine::{Event, Job, Outcome, Replicator, unix_now};
use flate2::read::GzDecoder;
use lambda_runtime::LambdaEvent;
use serde_json::{Value, json};
use tracing::Instrument;

use crate::replication_aws::WebhookMessage;

/// How far back a scheduled event looks for due schedules, in seconds. Two minutes for a
/// schedule of one minute: an invocation that comes late, or not at all, leaves no fire time
/// behind, and the store's schedule claim starts each fire time once however many
/// invocations see it.
pub const SCHEDULE_WINDOW: i64 = 120;

/// Which of its event sources an event comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventShape {
    /// A batch of records of the metadata table's stream.
    TableStream,
    /// A batch of messages of the replication queue.
    Queue,
    /// An EventBridge scheduled event.
    Schedule,
    /// Log lines from a CloudWatch Logs subscription filter.
    Logs,
    Unknown,
}

/// The source of `event`, by its shape.
pub fn event_shape(event: &Value) -> EventShape {
    if let Some(records) = event.get("Records").and_then(Value::as_array) {
        // Lambda never mixes sources in one batch: the first record tells.
        return match records
            .first()
            .and_then(|record| {
                record
                    .get("eventSource")
                    .or_else(|| record.get("EventSource"))
            })
            .and_then(Value::as_str)
        {
            Some("aws:dynamodb") => EventShape::TableStream,
            Some("aws:sqs") => EventShape::Queue,
            _ => EventShape::Unknown,
        };
    }
    if event.pointer("/awslogs/data").is_some_and(Value::is_string) {
        return EventShape::Logs;
    }
    let field = |name| event.get(name).and_then(Value::as_str);
    if field("source") == Some("aws.events") && field("detail-type") == Some("Scheduled Event") {
        return EventShape::Schedule;
    }
    EventShape::Unknown
}

/// A registry change as replication's event.
pub fn replication_event(change: StreamChange) -> Event {
    match change {
        StreamChange::Pushed {
            repository,
            digest,
            tag,
        } => Event::Pushed {
            repository,
            digest,
            tag,
        },
        StreamChange::ManifestDeleted { repository, digest } => {
            Event::ManifestDeleted { repository, digest }
        }
        StreamChange::TagDeleted {
            repository, tag, ..
        } => Event::TagDeleted { repository, tag },
    }
}

/// What the replicator publishes while the function handles an event, kept until the
/// function follows it, before it answers.
#[derive(Debug, Default)]
pub struct Published(std::sync::Mutex<Vec<RegistryEvent>>);

impl Published {
    fn take(&self) -> Vec<RegistryEvent> {
        std::mem::take(
            &mut *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

impl EventSink for Published {
    fn publish(&self, event: &RegistryEvent) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(event.clone());
    }
}

/// Webhook deliveries: who makes the attempts, and the queue between them.
#[derive(Clone)]
struct Webhooks {
    deliverer: Arc<Deliverer>,
    queue: Arc<dyn WebhookQueue>,
}

/// The events function's handler, built once per cold start.
#[derive(Clone)]
pub struct EventsHandler {
    replicator: Arc<Replicator>,
    records: Records,
    published: Option<Arc<Published>>,
    webhooks: Option<Webhooks>,
}

impl std::fmt::Debug for EventsHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventsHandler")
            .field("records", &self.records)
            .field("webhooks", &self.webhooks.is_some())
            .finish_non_exhaustive()
    }
}

/// The events of a CloudWatch Logs subscription's `awslogs.data`: base64 of gzipped JSON
/// whose `logEvents[].message` are log lines; lines that are not event lines are skipped.
pub fn logged_events(data: &str) -> Result<Vec<RegistryEvent>, String> {
    let gzipped = BASE64
        .decode(data)
        .map_err(|e| format!("awslogs.data is not base64: {e}"))?;
    let mut json = String::new();
    GzDecoder::new(gzipped.as_slice())
        .read_to_string(&mut json)
        .map_err(|e| format!("awslogs.data is not gzipped text: {e}"))?;
    let batch: Value =
        serde_json::from_str(&json).map_err(|e| format!("awslogs.data is not JSON: {e}"))?;
    Ok(batch
        .get("logEvents")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|line| line.get("message").and_then(Value::as_str))
        .filter_map(read_line)
        .collect())
}

impl EventsHandler {
    pub fn new(replicator: Arc<Replicator>) -> Self {
        Self {
            replicator,
            records: Records::default(),
            published: None,
            webhooks: None,
        }
    }

    /// Follows what the replicator publishes to `published` (it was built with it).
    pub fn with_published(mut self, published: Arc<Published>) -> Self {
        self.published = Some(published);
        self
    }

    /// Delivers the events' webhooks with `deliverer`, carrying jobs on `queue` between
    /// attempts.
    pub fn with_webhooks(mut self, deliverer: Deliverer, queue: Arc<dyn WebhookQueue>) -> Self {
        self.webhooks = Some(Webhooks {
            deliverer: Arc::new(deliverer),
            queue,
        });
        self
    }

    /// Records the logged events' audit entries and counts in `records`.
    pub fn with_records(mut self, records: Records) -> Self {
        self.records = records;
        self
    }

    /// The Lambda entry point.
    pub async fn call(&self, event: LambdaEvent<Value>) -> Result<Value, lambda_runtime::Error> {
        let span = tracing::info_span!("event", request_id = %event.context.request_id);
        self.handle(&event.payload)
            .instrument(span)
            .await
            .map_err(Into::into)
    }

    /// Handles one event of any of the function's sources. An error is an event the
    /// function cannot take at all (an unknown shape), or a schedule that could not be
    /// read; failures of single records and messages are in the answer's
    /// `batchItemFailures`.
    pub async fn handle(&self, event: &Value) -> Result<Value, String> {
        let answer = self.handle_shape(event).await;
        self.follow_published().await;
        answer
    }

    async fn handle_shape(&self, event: &Value) -> Result<Value, String> {
        match event_shape(event) {
            EventShape::TableStream => Ok(self.table_stream(records(event)).await),
            EventShape::Queue => Ok(self.queue(records(event)).await),
            EventShape::Schedule => self.schedule().await,
            EventShape::Logs => self.logs(event).await,
            EventShape::Unknown => {
                let problem = "the event is none of a DynamoDB stream batch, an SQS batch, an \
                               EventBridge scheduled event or CloudWatch Logs data";
                tracing::error!(
                    keys = ?event.as_object().map(|o| o.keys().collect::<Vec<_>>()),
                    "{problem}"
                );
                Err(problem.to_owned())
            }
        }
    }

    async fn table_stream(&self, records: &[Value]) -> Value {
        for (index, change) in stream_changes(records) {
            let change = match change {
                Ok(change) => change,
                Err(problem) => {
                    // Retrying a record that is not a stream record would not help.
                    tracing::error!(%problem, "skipped a record of the table's stream");
                    continue;
                }
            };
            let event = replication_event(change);
            if let Err(error) = self.replicator.on_event(event.clone()).await {
                // Lambda retries the batch from this record on (the earlier ones have
                // started their executions), and sends it to the on-failure destination
                // when its retries are used up.
                let sequence = records[index]
                    .pointer("/dynamodb/SequenceNumber")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                tracing::error!(%error, ?event, sequence, "could not start replication for a registry change");
                return batch_item_failures([sequence]);
            }
        }
        batch_item_failures([])
    }

    async fn queue(&self, records: &[Value]) -> Value {
        let mut failed = Vec::new();
        for record in records {
            let id = record
                .get("messageId")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let body = record
                .get("body")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if let Ok(WebhookMessage { webhook }) = serde_json::from_str(body) {
                if let Err(error) = self.attempt_delivery(&webhook).await {
                    tracing::error!(message = id, project = webhook.project, policy = webhook.policy_id, %error, "a webhook delivery could not be attempted; SQS will deliver it again");
                    failed.push(id);
                }
                continue;
            }
            let job: Job = match serde_json::from_str(body) {
                Ok(job) => job,
                Err(error) => {
                    // Not a job: it fails every attempt and ends in the dead-letter queue,
                    // where operators see it.
                    tracing::error!(message = id, %error, "a message of the replication queue is not a job");
                    failed.push(id);
                    continue;
                }
            };
            match self.replicator.handle(job.clone()).await {
                Ok(Outcome::Done) => {}
                Ok(Outcome::Retrying(delay)) => {
                    tracing::info!(
                        message = id,
                        ?job,
                        ?delay,
                        "replication task failed; dispatched again"
                    );
                }
                Err(error) => {
                    tracing::error!(message = id, ?job, %error, "a replication job failed; SQS will deliver it again");
                    failed.push(id);
                }
            }
        }
        batch_item_failures(failed)
    }

    /// Records the events of logged lines. Recording is idempotent, so a batch that failed
    /// part way is delivered again whole.
    async fn logs(&self, event: &Value) -> Result<Value, String> {
        let data = event
            .pointer("/awslogs/data")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let events = logged_events(data)?;
        let (entries, counts) = record(&self.records, &events)
            .await
            .map_err(|error| format!("the logged events could not be recorded: {error}"))?;
        let deliveries = self.queue_deliveries(&events).await.map_err(|error| {
            format!("the logged events' webhook deliveries could not be queued: {error}")
        })?;
        Ok(json!({
            "events": events.len(),
            "audit_entries": entries,
            "counts": counts,
            "webhook_deliveries": deliveries,
        }))
    }

    /// Queues the first attempts of the webhook deliveries of `events`; returns how many.
    async fn queue_deliveries(&self, events: &[RegistryEvent]) -> berth_core::Result<usize> {
        let Some(webhooks) = &self.webhooks else {
            return Ok(0);
        };
        let jobs = webhooks.deliverer.jobs(events).await?;
        for job in &jobs {
            webhooks
                .queue
                .enqueue(job, std::time::Duration::ZERO)
                .await?;
        }
        Ok(jobs.len())
    }

    /// Makes one attempt of a queued delivery, and queues the next when it failed and
    /// attempts remain.
    async fn attempt_delivery(&self, job: &WebhookJob) -> berth_core::Result<()> {
        let Some(webhooks) = &self.webhooks else {
            return Err(berth_core::RegistryError::internal(
                "a webhook delivery reached a function that sends none",
            ));
        };
        if let Some(pause) = webhooks.deliverer.attempt(job).await? {
            let next = WebhookJob {
                attempt: job.attempt + 1,
                ..job.clone()
            };
            webhooks.queue.enqueue(&next, pause).await?;
        }
        Ok(())
    }

    /// Follows what the replicator published while the function worked: each event logged,
    /// recorded, and its webhook deliveries queued. The work that published them is done,
    /// so a failure here is logged, not answered.
    async fn follow_published(&self) {
        let Some(published) = &self.published else {
            return;
        };
        let events = published.take();
        if events.is_empty() {
            return;
        }
        for event in &events {
            EventLog.publish(event);
        }
        if let Err(error) = record(&self.records, &events).await {
            tracing::error!(%error, events = events.len(), "published events could not be recorded in the audit log");
        }
        if let Err(error) = self.queue_deliveries(&events).await {
            tracing::error!(%error, events = events.len(), "published events' webhook deliveries could not be queued");
        }
    }

    async fn schedule(&self) -> Result<Value, String> {
        let now = i64::try_from(unix_now()).unwrap_or(i64::MAX);
        match self.replicator.tick(now - SCHEDULE_WINDOW, now).await {
            Ok(started) => {
                let ids: Vec<u64> = started.iter().map(|execution| execution.id).collect();
                if !ids.is_empty() {
                    tracing::info!(executions = ?ids, "scheduled replication started");
                }
                Ok(json!({ "started": ids }))
            }
            Err(error) => {
                tracing::error!(%error, "could not start the scheduled replication policies");
                Err(format!("scheduled replication: {error}"))
            }
        }
    }
}

fn records(event: &Value) -> &[Value] {
    event
        .get("Records")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// The partial batch response of SQS and stream event sources.
fn batch_item_failures<'a>(ids: impl IntoIterator<Item = &'a str>) -> Value {
    let failures: Vec<Value> = ids
        .into_iter()
        .map(|id| json!({ "itemIdentifier": id }))
        .collect();
    json!({ "batchItemFailures": failures })
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use berth_core::{Actor, EntryPoint, EventKind, RequestContext};

    use super::*;

    /// `lines` as CloudWatch Logs delivers them to a subscribed function.
    fn awslogs(lines: &[String]) -> Value {
        let batch = json!({
            "messageType": "DATA_MESSAGE",
            "logGroup": "/aws/lambda/berth-registry-pull",
            "logEvents": lines.iter().enumerate().map(|(i, line)| json!({
                "id": i.to_string(), "timestamp": 1_700_000_000_000u64, "message": line,
            })).collect::<Vec<_>>(),
        });
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(batch.to_string().as_bytes())
            .expect("compressed");
        json!({ "awslogs": { "data": BASE64.encode(gzip.finish().expect("compressed")) } })
    }

    #[test]
    fn logged_event_lines_are_read_back_and_other_lines_skipped() {
        let context = RequestContext::new(
            Actor::named("dev"),
            "gw-1",
            "10.0.0.9",
            EntryPoint::Registry,
        );
        let event = berth_core::Event::now(
            &context,
            EventKind::TagDeleted {
                repository: "team/app".parse().expect("a name"),
                tag: "v1".parse().expect("a tag"),
            },
        );
        let line = json!({
            "level": "INFO",
            "target": "berth::event",
            "event": "tag_deleted",
            "record": serde_json::to_string(&event).expect("JSON"),
        });
        let payload = awslogs(&[
            line.to_string(),
            r#"{"level":"INFO","target":"berth::access","status":200}"#.to_owned(),
            "START RequestId: 1 Version: $LATEST".to_owned(),
        ]);
        assert_eq!(event_shape(&payload), EventShape::Logs);
        let data = payload
            .pointer("/awslogs/data")
            .and_then(Value::as_str)
            .expect("data");
        assert_eq!(logged_events(data).expect("read"), vec![event]);
        assert!(logged_events("not base64!").is_err());
    }

    #[test]
    fn webhook_messages_are_told_apart_from_replication_jobs() {
        let context = RequestContext::new(
            Actor::named("dev"),
            "gw-2",
            "10.0.0.9",
            EntryPoint::Registry,
        );
        let job = WebhookJob {
            project: "team".into(),
            policy_id: 3,
            target: 0,
            event: berth_core::Event::now(
                &context,
                EventKind::TagDeleted {
                    repository: "team/app".parse().expect("a name"),
                    tag: "v1".parse().expect("a tag"),
                },
            ),
            attempt: 2,
        };
        let body = serde_json::to_string(&WebhookMessage {
            webhook: job.clone(),
        })
        .expect("JSON");
        let read: WebhookMessage = serde_json::from_str(&body).expect("a webhook message");
        assert_eq!(read.webhook, job);
        assert!(serde_json::from_str::<Job>(&body).is_err());
        let plan = r#"{"job":"plan","execution":1}"#;
        assert!(serde_json::from_str::<WebhookMessage>(plan).is_err());
        assert_eq!(
            serde_json::from_str::<Job>(plan).expect("a job"),
            Job::Plan { execution: 1 }
        );
    }

    #[test]
    fn shapes() {
        let stream =
            json!({ "Records": [{ "eventSource": "aws:dynamodb", "eventName": "INSERT" }] });
        let queue =
            json!({ "Records": [{ "eventSource": "aws:sqs", "messageId": "1", "body": "{}" }] });
        let schedule = json!({
            "version": "0",
            "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": "123456789012",
            "time": "2026-11-26T06:00:00Z",
            "region": "eu-west-1",
            "resources": ["arn:aws:events:eu-west-1:123456789012:rule/berth-schedule"],
            "detail": {}
        });
        assert_eq!(event_shape(&stream), EventShape::TableStream);
        assert_eq!(event_shape(&queue), EventShape::Queue);
        assert_eq!(event_shape(&schedule), EventShape::Schedule);
        for unknown in [
            json!({}),
            json!({ "Records": [] }),
            json!({ "Records": [{ "eventSource": "aws:s3" }] }),
            json!({ "Records": [{ "EventSource": "aws:sns" }] }),
            json!({ "source": "aws.events", "detail-type": "EC2 Instance State-change Notification" }),
            json!({ "source": "berth", "detail-type": "Scheduled Event" }),
            json!({ "rawPath": "/v2/", "requestContext": {} }),
        ] {
            assert_eq!(event_shape(&unknown), EventShape::Unknown, "{unknown}");
        }
    }

    #[test]
    fn changes_become_replication_events() {
        assert_eq!(
            replication_event(StreamChange::TagDeleted {
                repository: "app".into(),
                tag: "v1".into(),
                digest: Some("sha256:00".into()),
            }),
            Event::TagDeleted {
                repository: "app".into(),
                tag: "v1".into()
            }
        );
        assert_eq!(
            replication_event(StreamChange::Pushed {
                repository: "app".into(),
                digest: "sha256:00".into(),
                tag: Some("v1".into()),
            }),
            Event::Pushed {
                repository: "app".into(),
                digest: "sha256:00".into(),
                tag: Some("v1".into()),
            }
        );
        assert_eq!(
            replication_event(StreamChange::ManifestDeleted {
                repository: "app".into(),
                digest: "sha256:00".into(),
            }),
            Event::ManifestDeleted {
                repository: "app".into(),
                digest: "sha256:00".into(),
            }
        );
    }

    /// The sample events of `infra/events/replication/` (for `sam local invoke` and
    /// `cargo lambda invoke`) are the shapes the handler takes.
    #[test]
    fn sample_events() {
        let sample = |text: &str| -> Value { serde_json::from_str(text).expect("JSON") };
        let stream = sample(include_str!(
            "../../../infra/events/replication/stream-tag-pushed.json"
        ));
        assert_eq!(event_shape(&stream), EventShape::TableStream);
        let changes = stream_changes(records(&stream));
        assert!(
            matches!(
                changes.as_slice(),
                [(0, Ok(StreamChange::Pushed { tag: Some(tag), .. }))] if tag == "v1"
            ),
            "{changes:?}"
        );
        let queue = sample(include_str!(
            "../../../infra/events/replication/queue-plan.json"
        ));
        assert_eq!(event_shape(&queue), EventShape::Queue);
        let body = records(&queue)[0]["body"].as_str().expect("a body");
        assert_eq!(
            serde_json::from_str::<Job>(body).expect("a job"),
            Job::Plan { execution: 1 }
        );
        let schedule = sample(include_str!(
            "../../../infra/events/replication/schedule.json"
        ));
        assert_eq!(event_shape(&schedule), EventShape::Schedule);
    }

    #[test]
    fn partial_batch_responses() {
        assert_eq!(
            batch_item_failures(["a", "b"]),
            json!({ "batchItemFailures": [{ "itemIdentifier": "a" }, { "itemIdentifier": "b" }] })
        );
        assert_eq!(batch_item_failures([]), json!({ "batchItemFailures": [] }));
    }
}
