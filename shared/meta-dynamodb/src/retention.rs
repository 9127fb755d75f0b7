//! The [`RetentionStore`] port over the table. Every item lives in a `RETENTION#` partition,
//! which the token function (policies, executions started or stopped) and the gc function
//! (executions carried out) write.
//!
//! | item                 | `PK`                    | `SK`                  | other attributes |
//! |----------------------|-------------------------|-----------------------|------------------|
//! | id counters          | `RETENTION#ROOT`        | `COUNTER`             | `policy_id`, `execution_id` |
//! | policy               | `RETENTION#ROOT`        | `POLICY#<id>`         | `record` (JSON)  |
//! | project's policy     | `RETENTION#ROOT`        | `PROJECT#<project>`   | `id`             |
//! | execution's policy   | `RETENTION#ROOT`        | `EXEC#<id>`           | `policy`         |
//! | running execution    | `RETENTION#ROOT`        | `RUNNING#<id>`        | `policy`, `tasks` and `after` (tasks made so far, the last repository done: each step changes it) |
//! | execution            | `RETENTION#P<policy id>` | `EXEC#<id>`          | `record` (JSON)  |
//! | task                 | `RETENTION#E<execution id>` | `TASK#<id>`       | `record` (JSON)  |
//!
//! Ids are written as 20 zero-padded digits. A policy and its project item are written in one
//! transaction whose condition on the project item keeps one policy per project; an
//! execution's record and its running item change in one transaction. The gc function's
//! stream filter picks the running items, so that a new execution, and each step of one, is
//! carried on at once rather than at the next minute's tick.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{TransactWriteItem, Update};
use berth_core::error::{ErrorCode, RegistryError, Result};
use berth_core::retention::{RetentionExecution, RetentionPolicy, RetentionStore, RetentionTask};

use crate::DynamoMetadataStore;
use crate::error::corrupt;
use crate::schema::build_error;
use crate::toolkit::{Condition, Item, Outcome, Query, key, n, number_attr, s, string_attr};

/// The partition of policies, counters and the running executions' items.
pub const ROOT_PK: &str = "RETENTION#ROOT";
/// The sort key prefix of the running executions' items (the gc function's stream filter).
pub const RUNNING_PREFIX: &str = "RUNNING#";
const COUNTER_SK: &str = "COUNTER";
const POLICY_PREFIX: &str = "POLICY#";
const PROJECT_PREFIX: &str = "PROJECT#";
const EXECUTION_PREFIX: &str = "EXEC#";
const TASK_PREFIX: &str = "TASK#";
const RECORD: &str = "record";
const POLICY: &str = "policy";
const TASKS: &str = "tasks";
const AFTER: &str = "after";

fn policy_sk(id: u64) -> String {
    format!("{POLICY_PREFIX}{id:020}")
}

fn project_sk(project: &str) -> String {
    format!("{PROJECT_PREFIX}{project}")
}

fn execution_sk(id: u64) -> String {
    format!("{EXECUTION_PREFIX}{id:020}")
}

fn running_sk(id: u64) -> String {
    format!("{RUNNING_PREFIX}{id:020}")
}

fn executions_pk(policy: u64) -> String {
    format!("RETENTION#P{policy:020}")
}

fn tasks_pk(execution: u64) -> String {
    format!("RETENTION#E{execution:020}")
}

fn task_sk(id: u64) -> String {
    format!("{TASK_PREFIX}{id:020}")
}

fn encode<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|e| RegistryError::internal(format!("encoding a retention record: {e}")))
}

fn decode<T: serde::de::DeserializeOwned>(item: &Item) -> Result<T> {
    serde_json::from_str(string_attr(item, RECORD)?).map_err(|_| corrupt("a retention record"))
}

fn record_item(pk: impl Into<String>, sk: impl Into<String>, json: String) -> Item {
    let mut item = key(pk, sk);
    item.insert(RECORD.to_owned(), s(json));
    item
}

/// The first `limit` of `items` after `skip`, decoded.
fn page<T: serde::de::DeserializeOwned>(
    items: &[Item],
    skip: usize,
    limit: usize,
) -> Result<Vec<T>> {
    items.iter().skip(skip).take(limit).map(decode).collect()
}

impl DynamoMetadataStore {
    /// The next id of `counter` (`policy_id` or `execution_id`).
    async fn next_retention_id(&self, counter: &str) -> Result<u64> {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(ROOT_PK, COUNTER_SK)))
            .update_expression("ADD #last :one")
            .expression_attribute_names("#last", counter)
            .expression_attribute_values(":one", n(1))
            .build()
            .map_err(build_error)?;
        let counter_item = self
            .update_item(update)
            .await?
            .ok_or_else(|| RegistryError::internal("the retention id counter was not updated"))?;
        number_attr(&counter_item, counter)
    }

    fn put_write(&self, item: Item, condition: Option<Condition>) -> Result<TransactWriteItem> {
        Ok(TransactWriteItem::builder()
            .put(self.put(item, condition)?)
            .build())
    }

    fn delete_write(&self, key: Item, condition: Option<Condition>) -> Result<TransactWriteItem> {
        Ok(TransactWriteItem::builder()
            .delete(self.delete(key, condition)?)
            .build())
    }

    /// The writes of an execution's record and its running item.
    fn execution_writes(&self, execution: &RetentionExecution) -> Result<Vec<TransactWriteItem>> {
        let record = record_item(
            executions_pk(execution.policy_id),
            execution_sk(execution.id),
            encode(execution)?,
        );
        let running = if execution.is_running() {
            let mut item = key(ROOT_PK, running_sk(execution.id));
            item.insert(POLICY.to_owned(), n(execution.policy_id));
            item.insert(TASKS.to_owned(), n(execution.tasks));
            if let Some(after) = &execution.after {
                item.insert(AFTER.to_owned(), s(after.clone()));
            }
            self.put_write(item, None)?
        } else {
            self.delete_write(key(ROOT_PK, running_sk(execution.id)), None)?
        };
        Ok(vec![self.put_write(record, None)?, running])
    }

    async fn execution_in(&self, policy: u64, id: u64) -> Result<Option<RetentionExecution>> {
        self.get(key(executions_pk(policy), execution_sk(id)), None)
            .await?
            .as_ref()
            .map(decode)
            .transpose()
    }
}

#[async_trait]
impl RetentionStore for DynamoMetadataStore {
    async fn create_policy(&self, policy: &RetentionPolicy) -> Result<Option<u64>> {
        let mut policy = policy.clone();
        policy.id = self.next_retention_id("policy_id").await?;
        let mut project = key(ROOT_PK, project_sk(&policy.project));
        project.insert("id".to_owned(), n(policy.id));
        let record = record_item(ROOT_PK, policy_sk(policy.id), encode(&policy)?);
        let items = vec![
            self.put_write(project, Some(Condition::absent()))?,
            self.put_write(record, None)?,
        ];
        Ok(match self.transact(items).await? {
            Outcome::Committed => Some(policy.id),
            Outcome::ConditionFailed => None,
        })
    }

    async fn update_policy(&self, policy: &RetentionPolicy) -> Result<bool> {
        let Some(old) = self.policy(policy.id).await? else {
            return Ok(false);
        };
        let kept = RetentionPolicy {
            project: old.project,
            ..policy.clone()
        };
        let record = record_item(ROOT_PK, policy_sk(kept.id), encode(&kept)?);
        self.put_item(self.put(record, Some(Condition::exists()))?)
            .await
    }

    async fn delete_policy(&self, id: u64) -> Result<bool> {
        let Some(old) = self.policy(id).await? else {
            return Ok(false);
        };
        let items = vec![
            self.delete_write(key(ROOT_PK, policy_sk(id)), Some(Condition::exists()))?,
            self.delete_write(key(ROOT_PK, project_sk(&old.project)), None)?,
        ];
        Ok(matches!(self.transact(items).await?, Outcome::Committed))
    }

    async fn policy(&self, id: u64) -> Result<Option<RetentionPolicy>> {
        self.get(key(ROOT_PK, policy_sk(id)), None)
            .await?
            .as_ref()
            .map(decode)
            .transpose()
    }

    async fn project_policy(&self, project: &str) -> Result<Option<u64>> {
        self.get(key(ROOT_PK, project_sk(project)), None)
            .await?
            .map(|item| number_attr(&item, "id"))
            .transpose()
    }

    async fn policies(&self) -> Result<Vec<RetentionPolicy>> {
        self.query_all(&Query::prefixed(ROOT_PK, POLICY_PREFIX))
            .await?
            .iter()
            .map(decode)
            .collect()
    }

    async fn create_execution(&self, execution: &RetentionExecution) -> Result<u64> {
        let mut execution = execution.clone();
        execution.id = self.next_retention_id("execution_id").await?;
        let mut lookup = key(ROOT_PK, execution_sk(execution.id));
        lookup.insert(POLICY.to_owned(), n(execution.policy_id));
        let mut items = self.execution_writes(&execution)?;
        items.push(self.put_write(lookup, Some(Condition::absent()))?);
        match self.transact(items).await? {
            Outcome::Committed => Ok(execution.id),
            Outcome::ConditionFailed => Err(RegistryError::new(
                ErrorCode::Conflict,
                format!("retention execution {} exists already", execution.id),
            )),
        }
    }

    async fn update_execution(&self, execution: &RetentionExecution) -> Result<()> {
        self.transact(self.execution_writes(execution)?)
            .await
            .map(drop)
    }

    async fn execution(&self, id: u64) -> Result<Option<RetentionExecution>> {
        let Some(lookup) = self.get(key(ROOT_PK, execution_sk(id)), None).await? else {
            return Ok(None);
        };
        self.execution_in(number_attr(&lookup, POLICY)?, id).await
    }

    async fn executions(
        &self,
        policy_id: u64,
        skip: usize,
        limit: usize,
    ) -> Result<(Vec<RetentionExecution>, usize)> {
        let mut query = Query::prefixed(&executions_pk(policy_id), EXECUTION_PREFIX);
        query.descending = true;
        let items = self.query_all(&query).await?;
        Ok((page(&items, skip, limit)?, items.len()))
    }

    async fn running_executions(&self) -> Result<Vec<RetentionExecution>> {
        let mut running = Vec::new();
        for item in self
            .query_all(&Query::prefixed(ROOT_PK, RUNNING_PREFIX))
            .await?
        {
            let sk = string_attr(&item, crate::schema::SORT_KEY)?;
            let id = sk
                .strip_prefix(RUNNING_PREFIX)
                .and_then(|id| id.parse().ok())
                .ok_or_else(|| corrupt("a running retention execution's key"))?;
            if let Some(execution) = self.execution_in(number_attr(&item, POLICY)?, id).await? {
                running.push(execution);
            }
        }
        Ok(running)
    }

    async fn put_task(&self, task: &RetentionTask) -> Result<()> {
        let item = record_item(tasks_pk(task.execution_id), task_sk(task.id), encode(task)?);
        self.put_item(self.put(item, None)?).await.map(drop)
    }

    async fn task(&self, execution_id: u64, id: u64) -> Result<Option<RetentionTask>> {
        self.get(key(tasks_pk(execution_id), task_sk(id)), None)
            .await?
            .as_ref()
            .map(decode)
            .transpose()
    }

    async fn tasks(
        &self,
        execution_id: u64,
        skip: usize,
        limit: usize,
    ) -> Result<(Vec<RetentionTask>, usize)> {
        let items = self
            .query_all(&Query::prefixed(&tasks_pk(execution_id), TASK_PREFIX))
            .await?;
        Ok((page(&items, skip, limit)?, items.len()))
    }
}
