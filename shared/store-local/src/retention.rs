//! The [`RetentionStore`] port over the metadata database.
//!
//! | table                    | key                     | value                          |
//! |--------------------------|-------------------------|--------------------------------|
//! | `retention_policies`     | policy id               | the policy as JSON             |
//! | `retention_projects`     | project                 | its policy's id                |
//! | `retention_ids`          | `"policy"`, `"execution"` | the last id given            |
//! | `retention_executions`   | (policy id, execution id) | the execution as JSON        |
//! | `retention_execution_policies` | execution id      | its policy's id                |
//! | `retention_running`      | execution id            | its policy's id (while running) |
//! | `retention_tasks`        | (execution id, task id) | the task as JSON               |

use async_trait::async_trait;
use berth_core::error::Result;
use berth_core::retention::{RetentionExecution, RetentionPolicy, RetentionStore, RetentionTask};
use redb::{ReadableTable, TableDefinition, WriteTransaction};

use crate::metadata::RedbMetadataStore;

const POLICIES: TableDefinition<u64, &str> = TableDefinition::new("retention_policies");
const PROJECTS: TableDefinition<&str, u64> = TableDefinition::new("retention_projects");
const IDS: TableDefinition<&str, u64> = TableDefinition::new("retention_ids");
const EXECUTIONS: TableDefinition<(u64, u64), &str> = TableDefinition::new("retention_executions");
const EXECUTION_POLICIES: TableDefinition<u64, u64> =
    TableDefinition::new("retention_execution_policies");
const RUNNING: TableDefinition<u64, u64> = TableDefinition::new("retention_running");
const TASKS: TableDefinition<(u64, u64), &str> = TableDefinition::new("retention_tasks");

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(POLICIES)?;
    txn.open_table(PROJECTS)?;
    txn.open_table(IDS)?;
    txn.open_table(EXECUTIONS)?;
    txn.open_table(EXECUTION_POLICIES)?;
    txn.open_table(RUNNING)?;
    txn.open_table(TASKS)?;
    Ok(())
}

fn encode<T: serde::Serialize>(value: &T) -> Result<String, redb::Error> {
    serde_json::to_string(value)
        .map_err(|e| redb::Error::Corrupted(format!("encoding a retention record: {e}")))
}

fn decode<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, redb::Error> {
    serde_json::from_str(json).map_err(|e| {
        redb::Error::Corrupted(format!("a retention record is not what Berth wrote: {e}"))
    })
}

fn next_id(txn: &WriteTransaction, counter: &str) -> Result<u64, redb::Error> {
    let mut ids = txn.open_table(IDS)?;
    let id = ids.get(counter)?.map_or(0, |last| last.value()) + 1;
    ids.insert(counter, id)?;
    Ok(id)
}

/// Writes an execution and keeps the running index in step with its status.
fn store_execution(
    txn: &WriteTransaction,
    execution: &RetentionExecution,
) -> Result<(), redb::Error> {
    let json = encode(execution)?;
    txn.open_table(EXECUTIONS)?
        .insert((execution.policy_id, execution.id), json.as_str())?;
    txn.open_table(EXECUTION_POLICIES)?
        .insert(execution.id, execution.policy_id)?;
    let mut running = txn.open_table(RUNNING)?;
    if execution.is_running() {
        running.insert(execution.id, execution.policy_id)?;
    } else {
        running.remove(execution.id)?;
    }
    Ok(())
}

#[async_trait]
impl RetentionStore for RedbMetadataStore {
    async fn create_policy(&self, policy: &RetentionPolicy) -> Result<Option<u64>> {
        let mut policy = policy.clone();
        self.write(move |txn| {
            let mut projects = txn.open_table(PROJECTS)?;
            if projects.get(policy.project.as_str())?.is_some() {
                return Ok(None);
            }
            policy.id = next_id(txn, "policy")?;
            projects.insert(policy.project.as_str(), policy.id)?;
            txn.open_table(POLICIES)?
                .insert(policy.id, encode(&policy)?.as_str())?;
            Ok(Some(policy.id))
        })
        .await
    }

    async fn update_policy(&self, policy: &RetentionPolicy) -> Result<bool> {
        let policy = policy.clone();
        self.write(move |txn| {
            let mut policies = txn.open_table(POLICIES)?;
            let Some(old) = policies
                .get(policy.id)?
                .map(|json| decode::<RetentionPolicy>(json.value()))
                .transpose()?
            else {
                return Ok(false);
            };
            let kept = RetentionPolicy {
                project: old.project,
                ..policy
            };
            policies.insert(kept.id, encode(&kept)?.as_str())?;
            Ok(true)
        })
        .await
    }

    async fn delete_policy(&self, id: u64) -> Result<bool> {
        self.write(move |txn| {
            let mut policies = txn.open_table(POLICIES)?;
            let Some(old) = policies
                .remove(id)?
                .map(|json| decode::<RetentionPolicy>(json.value()))
                .transpose()?
            else {
                return Ok(false);
            };
            txn.open_table(PROJECTS)?.remove(old.project.as_str())?;
            Ok(true)
        })
        .await
    }

    async fn policy(&self, id: u64) -> Result<Option<RetentionPolicy>> {
        self.read(|txn| {
            txn.open_table(POLICIES)?
                .get(id)?
                .map(|json| decode(json.value()))
                .transpose()
        })
    }

    async fn project_policy(&self, project: &str) -> Result<Option<u64>> {
        self.read(|txn| Ok(txn.open_table(PROJECTS)?.get(project)?.map(|id| id.value())))
    }

    async fn policies(&self) -> Result<Vec<RetentionPolicy>> {
        self.read(|txn| {
            txn.open_table(POLICIES)?
                .iter()?
                .map(|row| decode(row?.1.value()))
                .collect()
        })
    }

    async fn create_execution(&self, execution: &RetentionExecution) -> Result<u64> {
        let mut execution = execution.clone();
        self.write(move |txn| {
            execution.id = next_id(txn, "execution")?;
            store_execution(txn, &execution)?;
            Ok(execution.id)
        })
        .await
    }

    async fn update_execution(&self, execution: &RetentionExecution) -> Result<()> {
        let execution = execution.clone();
        self.write(move |txn| store_execution(txn, &execution))
            .await
    }

    async fn execution(&self, id: u64) -> Result<Option<RetentionExecution>> {
        self.read(|txn| {
            let Some(policy) = txn
                .open_table(EXECUTION_POLICIES)?
                .get(id)?
                .map(|p| p.value())
            else {
                return Ok(None);
            };
            txn.open_table(EXECUTIONS)?
                .get((policy, id))?
                .map(|json| decode(json.value()))
                .transpose()
        })
    }

    async fn executions(
        &self,
        policy_id: u64,
        skip: usize,
        limit: usize,
    ) -> Result<(Vec<RetentionExecution>, usize)> {
        self.read(|txn| {
            let executions = txn.open_table(EXECUTIONS)?;
            let rows = executions.range((policy_id, 0)..=(policy_id, u64::MAX))?;
            let mut page = Vec::new();
            let mut total = 0;
            for row in rows.rev() {
                let (_, json) = row?;
                if total >= skip && page.len() < limit {
                    page.push(decode(json.value())?);
                }
                total += 1;
            }
            Ok((page, total))
        })
    }

    async fn running_executions(&self) -> Result<Vec<RetentionExecution>> {
        self.read(|txn| {
            let executions = txn.open_table(EXECUTIONS)?;
            let mut running = Vec::new();
            for row in txn.open_table(RUNNING)?.iter()? {
                let (id, policy) = row?;
                if let Some(json) = executions.get((policy.value(), id.value()))? {
                    running.push(decode(json.value())?);
                }
            }
            Ok(running)
        })
    }

    async fn put_task(&self, task: &RetentionTask) -> Result<()> {
        let task = task.clone();
        self.write(move |txn| {
            txn.open_table(TASKS)?
                .insert((task.execution_id, task.id), encode(&task)?.as_str())?;
            Ok(())
        })
        .await
    }

    async fn task(&self, execution_id: u64, id: u64) -> Result<Option<RetentionTask>> {
        self.read(|txn| {
            txn.open_table(TASKS)?
                .get((execution_id, id))?
                .map(|json| decode(json.value()))
                .transpose()
        })
    }

    async fn tasks(
        &self,
        execution_id: u64,
        skip: usize,
        limit: usize,
    ) -> Result<(Vec<RetentionTask>, usize)> {
        self.read(|txn| {
            let tasks = txn.open_table(TASKS)?;
            let range = (execution_id, 0)..=(execution_id, u64::MAX);
            let total = tasks.range(range.clone())?.count();
            let page = tasks
                .range(range)?
                .skip(skip)
                .take(limit)
                .map(|row| decode(row?.1.value()))
                .collect::<Result<_, redb::Error>>()?;
            Ok((page, total))
        })
    }
}
