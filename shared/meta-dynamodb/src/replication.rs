//! The [`ReplicationStore`] port over the same table as the registry metadata: endpoints,
//! policies, executions, tasks, id counters and schedule claims, laid out as the crate
//! documentation describes. Every replication item lives in a partition whose key starts with
//! [`REPLICATION_PREFIX`], so readers of the table's stream (push and delete events) and
//! IAM conditions on leading keys tell them apart from the registry's items at a glance.
//!
//! Ids are written zero-padded to 20 digits (every `u64` fits), so DynamoDB's byte-wise sort
//! key order is the ids' numeric order: listings by id are plain Queries, and "newest
//! execution first" is the same Query backwards.

use async_trait::async_trait;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::ReturnValue;
use berth_core::error::{RegistryError, Result};
use berth_core::replication::{
    Execution, IdKind, Policy, RegistryEndpoint, ReplicationStore, Task, TaskStatus,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{corrupt, sdk_error};
use crate::schema::PARTITION_KEY;
use crate::store::DynamoMetadataStore;
use crate::toolkit::{Condition, Item, Query, key, n, names, number_attr, s, string_attr, values};

/// Every replication item's partition key starts with this, and no other item's does: a
/// reader of the table's stream skips items whose `PK` starts with it.
pub const REPLICATION_PREFIX: &str = "REPL#";
/// The id counters, one item per [`IdKind`] (sort key: its name).
const COUNTERS_PK: &str = "REPL#COUNTER";
/// Every endpoint, sort key its padded id.
const REGISTRIES_PK: &str = "REPL#REGISTRY";
/// Every policy, sort key its padded id.
const POLICIES_PK: &str = "REPL#POLICY";
/// Every execution, sort key its padded id; also the prefix of each execution's task
/// partition.
const EXECUTIONS_PK: &str = "REPL#EXECUTION";
/// The last claimed fire time of each policy's schedule, sort key the padded policy id.
const SCHEDULES_PK: &str = "REPL#SCHEDULE";
/// Every task item's sort key (in its execution's task partition) starts with this.
const TASK_PREFIX: &str = "TASK#";

/// Attribute names of the replication items.
mod attr {
    /// The record as JSON.
    pub const RECORD: &str = "record";
    /// An execution's policy id, for listings of one policy.
    pub const POLICY: &str = "policy";
    /// A task's status, what `update_task` compares.
    pub const STATUS: &str = "status";
    /// A counter's last id drawn.
    pub const LAST_ID: &str = "last_id";
    /// A schedule's last claimed fire time (Unix seconds).
    pub const FIRED: &str = "fired";
}

/// An id as a sort key: 20 digits hold every `u64`, so key order is numeric order.
fn padded(id: u64) -> String {
    format!("{id:020}")
}

/// The partition of an execution's tasks.
fn tasks_pk(execution: u64) -> String {
    format!("{EXECUTIONS_PK}#{}", padded(execution))
}

fn task_sk(id: u64) -> String {
    format!("{TASK_PREFIX}{}", padded(id))
}

/// A task status as its item's `status` attribute: the name the JSON record uses too.
fn status_name(status: TaskStatus) -> &'static str {
    match status {
        TaskStatus::Pending => "pending",
        TaskStatus::Running => "running",
        TaskStatus::Succeeded => "succeeded",
        TaskStatus::Failed => "failed",
        TaskStatus::Stopped => "stopped",
    }
}

/// The item at `pk`/`sk` holding `record` as JSON.
fn record_item(
    pk: impl Into<String>,
    sk: impl Into<String>,
    record: &impl Serialize,
) -> Result<Item> {
    let json = serde_json::to_string(record).map_err(RegistryError::internal)?;
    let mut item = key(pk, sk);
    item.insert(attr::RECORD.to_owned(), s(json));
    Ok(item)
}

fn decode<T: DeserializeOwned>(item: &Item, what: &str) -> Result<T> {
    serde_json::from_str(string_attr(item, attr::RECORD)?).map_err(|_| corrupt(what))
}

fn task_item(task: &Task) -> Result<Item> {
    let mut item = record_item(tasks_pk(task.execution_id), task_sk(task.id), task)?;
    item.insert(attr::STATUS.to_owned(), s(status_name(task.status)));
    Ok(item)
}

/// Whether a failed `UpdateItem` failed only its condition.
fn condition_failed(e: &SdkError<UpdateItemError, HttpResponse>) -> bool {
    matches!(
        e.as_service_error(),
        Some(UpdateItemError::ConditionalCheckFailedException(_))
    )
}

impl DynamoMetadataStore {
    /// The record stored at `pk`/`sk`, decoded.
    async fn replication_record<T: DeserializeOwned>(
        &self,
        pk: &str,
        sk: &str,
        what: &str,
    ) -> Result<Option<T>> {
        let projection = ("#record", &[("#record", attr::RECORD)][..]);
        self.get(key(pk, sk), Some(projection))
            .await?
            .map(|item| decode(&item, what))
            .transpose()
    }

    /// Every record of `query`'s items, in key order, across all pages.
    async fn replication_records<T: DeserializeOwned>(
        &self,
        mut query: Query,
        what: &str,
    ) -> Result<Vec<T>> {
        query.projection = Some("#record".to_owned());
        query
            .names
            .insert("#record".to_owned(), attr::RECORD.to_owned());
        self.query_all(&query)
            .await?
            .iter()
            .map(|item| decode(item, what))
            .collect()
    }

    async fn put_record(&self, item: Item) -> Result<()> {
        let put = self.put(item, None)?;
        if self.put_item(put).await? {
            Ok(())
        } else {
            Err(RegistryError::internal(
                "DynamoDB refused an unconditional PutItem on a condition",
            ))
        }
    }

    /// Deletes the item at `pk`/`sk`; returns whether it existed.
    async fn delete_record(&self, pk: &str, sk: &str) -> Result<bool> {
        let delete = self.delete(key(pk, sk), Some(Condition::exists()))?;
        self.delete_item(delete).await
    }
}

#[async_trait]
impl ReplicationStore for DynamoMetadataStore {
    async fn next_id(&self, kind: IdKind) -> Result<u64> {
        let output = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(COUNTERS_PK, kind.as_str())))
            .update_expression("ADD #last :one")
            .set_expression_attribute_names(Some(names(&[("#last", attr::LAST_ID)])))
            .set_expression_attribute_values(Some(values(vec![(":one", n(1))])))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| sdk_error("UpdateItem", e))?;
        number_attr(&output.attributes.unwrap_or_default(), attr::LAST_ID)
    }

    async fn put_registry(&self, registry: &RegistryEndpoint) -> Result<()> {
        self.put_record(record_item(REGISTRIES_PK, padded(registry.id), registry)?)
            .await
    }

    async fn registry(&self, id: u64) -> Result<Option<RegistryEndpoint>> {
        self.replication_record(REGISTRIES_PK, &padded(id), "a registry endpoint")
            .await
    }

    async fn registries(&self) -> Result<Vec<RegistryEndpoint>> {
        self.replication_records(Query::partition(REGISTRIES_PK), "a registry endpoint")
            .await
    }

    async fn delete_registry(&self, id: u64) -> Result<bool> {
        self.delete_record(REGISTRIES_PK, &padded(id)).await
    }

    async fn put_policy(&self, policy: &Policy) -> Result<()> {
        self.put_record(record_item(POLICIES_PK, padded(policy.id), policy)?)
            .await
    }

    async fn policy(&self, id: u64) -> Result<Option<Policy>> {
        self.replication_record(POLICIES_PK, &padded(id), "a replication policy")
            .await
    }

    async fn policies(&self) -> Result<Vec<Policy>> {
        self.replication_records(Query::partition(POLICIES_PK), "a replication policy")
            .await
    }

    async fn delete_policy(&self, id: u64) -> Result<bool> {
        self.delete_record(POLICIES_PK, &padded(id)).await
    }

    async fn put_execution(&self, execution: &Execution) -> Result<()> {
        let mut item = record_item(EXECUTIONS_PK, padded(execution.id), execution)?;
        item.insert(attr::POLICY.to_owned(), n(execution.policy_id));
        self.put_record(item).await
    }

    async fn execution(&self, id: u64) -> Result<Option<Execution>> {
        self.replication_record(EXECUTIONS_PK, &padded(id), "a replication execution")
            .await
    }

    async fn executions(&self, policy: Option<u64>, limit: usize) -> Result<Vec<Execution>> {
        let mut found: Vec<Execution> = Vec::new();
        let mut start: Option<Item> = None;
        while found.len() < limit {
            let mut request = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("#pk = :pk")
                .expression_attribute_names("#pk", PARTITION_KEY)
                .expression_attribute_names("#record", attr::RECORD)
                .expression_attribute_values(":pk", s(EXECUTIONS_PK))
                .projection_expression("#record")
                .scan_index_forward(false)
                .consistent_read(true)
                .set_exclusive_start_key(start.take());
            request = match policy {
                // The filter applies after `Limit`: read whole pages (1 MB) and keep going
                // until enough matched.
                Some(policy) => request
                    .filter_expression("#policy = :policy")
                    .expression_attribute_names("#policy", attr::POLICY)
                    .expression_attribute_values(":policy", n(policy)),
                None => request.limit(i32::try_from(limit - found.len()).unwrap_or(i32::MAX)),
            };
            let output = request.send().await.map_err(|e| sdk_error("Query", e))?;
            for item in output.items() {
                if found.len() == limit {
                    break;
                }
                found.push(decode(item, "a replication execution")?);
            }
            match output.last_evaluated_key {
                Some(next) => start = Some(next),
                None => break,
            }
        }
        Ok(found)
    }

    async fn put_task(&self, task: &Task) -> Result<()> {
        self.put_record(task_item(task)?).await
    }

    async fn task(&self, execution: u64, id: u64) -> Result<Option<Task>> {
        self.replication_record(&tasks_pk(execution), &task_sk(id), "a replication task")
            .await
    }

    async fn tasks(&self, execution: u64) -> Result<Vec<Task>> {
        let query = Query::prefixed(&tasks_pk(execution), TASK_PREFIX);
        self.replication_records(query, "a replication task").await
    }

    async fn update_task(&self, task: &Task, expected: TaskStatus) -> Result<bool> {
        // A missing task fails the comparison too, so nothing is created.
        let condition = Condition::new(
            "#status = :expected",
            &[("#status", attr::STATUS)],
            vec![(":expected", s(status_name(expected)))],
        );
        let put = self.put(task_item(task)?, Some(condition))?;
        self.put_item(put).await
    }

    async fn claim_schedule(&self, policy: u64, fire_time: u64) -> Result<bool> {
        let sent = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(SCHEDULES_PK, padded(policy))))
            .update_expression("SET #fired = :fired")
            .condition_expression("attribute_not_exists(#fired) OR #fired < :fired")
            .set_expression_attribute_names(Some(names(&[("#fired", attr::FIRED)])))
            .set_expression_attribute_values(Some(values(vec![(":fired", n(fire_time))])))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(true),
            Err(e) if condition_failed(&e) => Ok(false),
            Err(e) => Err(sdk_error("UpdateItem", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_ids_sort_as_numbers() {
        let ids = [0, 1, 9, 10, 99, 100, 1_000_000, u64::MAX - 1, u64::MAX];
        for pair in ids.windows(2) {
            assert!(padded(pair[0]) < padded(pair[1]), "{pair:?}");
            assert!(task_sk(pair[0]) < task_sk(pair[1]), "{pair:?}");
        }
        assert_eq!(padded(u64::MAX).len(), 20);
        assert_eq!(padded(7), "00000000000000000007");
    }

    #[test]
    fn every_replication_partition_is_under_the_prefix() {
        for pk in [
            COUNTERS_PK,
            REGISTRIES_PK,
            POLICIES_PK,
            EXECUTIONS_PK,
            SCHEDULES_PK,
            tasks_pk(3).as_str(),
        ] {
            assert!(pk.starts_with(REPLICATION_PREFIX), "{pk}");
        }
        assert_ne!(
            tasks_pk(3),
            EXECUTIONS_PK,
            "tasks are not in the executions' partition"
        );
    }

    #[test]
    fn stored_status_names_are_the_json_names() {
        for status in [
            TaskStatus::Pending,
            TaskStatus::Running,
            TaskStatus::Succeeded,
            TaskStatus::Failed,
            TaskStatus::Stopped,
        ] {
            let json = serde_json::to_value(status).expect("serialising a status");
            assert_eq!(json.as_str(), Some(status_name(status)), "{status:?}");
        }
    }

    #[test]
    fn a_task_item_carries_its_status_beside_its_record() {
        let task = Task {
            id: 12,
            execution_id: 4,
            operation: berth_core::replication::Operation::Deletion,
            source_repository: "library/app".to_owned(),
            destination_repository: "mirror/app".to_owned(),
            reference: "v1".to_owned(),
            status: TaskStatus::Running,
            attempts: 1,
            start_time: Some(1),
            end_time: None,
            error: None,
            bytes: 0,
            note: None,
            attempt_started: None,
        };
        let item = task_item(&task).expect("an item");
        assert_eq!(
            string_attr(&item, PARTITION_KEY).expect("pk"),
            "REPL#EXECUTION#00000000000000000004"
        );
        assert_eq!(
            string_attr(&item, crate::schema::SORT_KEY).expect("sk"),
            "TASK#00000000000000000012"
        );
        assert_eq!(string_attr(&item, attr::STATUS).expect("status"), "running");
        assert_eq!(decode::<Task>(&item, "a task").expect("decode"), task);
        assert!(
            !item.contains_key(crate::schema::TTL_ATTRIBUTE),
            "replication items never expire"
        );
    }
}
