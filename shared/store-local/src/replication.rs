//! The [`ReplicationStore`] port over the metadata database: replication's endpoints,
//! policies, executions, tasks, id counters and schedule claims live in tables of their own
//! next to the registry's.
//!
//! | table                              | key                  | value                      | DynamoDB item (PK / SK)                              |
//! |------------------------------------|----------------------|----------------------------|------------------------------------------------------|
//! | `replication_counters`             | kind (`registry`...) | the last id drawn          | `REPL#COUNTER` / `<kind>`                            |
//! | `replication_registries`           | id                   | the [`RegistryEndpoint`] as JSON | `REPL#REGISTRY` / `<id>`                       |
//! | `replication_policies`             | id                   | the [`Policy`] as JSON     | `REPL#POLICY` / `<id>`                               |
//! | `replication_executions`           | id                   | (policy, the [`Execution`] as JSON) | `REPL#EXECUTION` / `<id>`                   |
//! | `replication_policy_executions`    | (policy, execution)  | `()`                       | (a filter on the executions' `policy`)               |
//! | `replication_tasks`                | (execution, id)      | (status, the [`Task`] as JSON) | `REPL#EXECUTION#<execution>` / `TASK#<id>`       |
//! | `replication_schedules`            | policy               | the last fire time claimed | `REPL#SCHEDULE` / `<policy>`                         |
//!
//! Ids are `u64` keys, which redb orders as numbers, so listings by id are range scans and
//! "newest first" is the same scan backwards. `replication_policy_executions` indexes
//! executions by policy so that one policy's are a range too; it is written in the same
//! transaction as the execution. A task's status is kept beside its JSON so that
//! `update_task` compares it without decoding; both checks that decide something
//! (`update_task`, `claim_schedule`) read and write in one write transaction, and write
//! transactions are serialised, so exactly one of two racing claims wins.
//!
//! The tables are created by the first write to each; reads of a table not written yet see it
//! empty, so a database of an earlier release needs no migration.

use async_trait::async_trait;
use berth_core::error::{RegistryError, Result};
use berth_core::replication::{
    Execution, IdKind, Policy, RegistryEndpoint, ReplicationStore, Task, TaskStatus,
};
use redb::{
    Key, ReadOnlyTable, ReadTransaction, ReadableTable, TableDefinition, TableError, Value,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::metadata::{RedbMetadataStore, corrupt};

const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("replication_counters");
const REGISTRIES: TableDefinition<u64, &str> = TableDefinition::new("replication_registries");
const POLICIES: TableDefinition<u64, &str> = TableDefinition::new("replication_policies");
/// An execution row: its policy (to keep the index right when it is replaced) and its JSON.
const EXECUTIONS: TableDefinition<u64, (u64, &str)> =
    TableDefinition::new("replication_executions");
const POLICY_EXECUTIONS: TableDefinition<(u64, u64), ()> =
    TableDefinition::new("replication_policy_executions");
/// A task row: its status (what `update_task` compares) and its JSON.
const TASKS: TableDefinition<(u64, u64), (&str, &str)> = TableDefinition::new("replication_tasks");
const SCHEDULES: TableDefinition<u64, u64> = TableDefinition::new("replication_schedules");

/// Endpoints and policies: JSON by id.
type JsonTable = TableDefinition<'static, u64, &'static str>;

fn encode(record: &impl Serialize) -> Result<String> {
    serde_json::to_string(record).map_err(RegistryError::internal)
}

fn decode<T: DeserializeOwned>(json: &str, what: &str) -> Result<T> {
    serde_json::from_str(json).map_err(|_| corrupt(what))
}

/// A task status as its row stores it: the name the JSON record uses too.
fn status_name(status: TaskStatus) -> &'static str {
    match status {
        TaskStatus::Pending => "pending",
        TaskStatus::Running => "running",
        TaskStatus::Succeeded => "succeeded",
        TaskStatus::Failed => "failed",
        TaskStatus::Stopped => "stopped",
    }
}

/// `table` in a read transaction, or `None` if nothing was ever written to it.
fn open<K: Key + 'static, V: Value + 'static>(
    txn: &ReadTransaction,
    table: TableDefinition<K, V>,
) -> Result<Option<ReadOnlyTable<K, V>>, redb::Error> {
    match txn.open_table(table) {
        Ok(table) => Ok(Some(table)),
        Err(TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl RedbMetadataStore {
    /// The JSON stored under `id` in `table` (endpoints or policies).
    fn json_by_id(&self, table: JsonTable, id: u64) -> Result<Option<String>> {
        self.read(|txn| {
            let Some(table) = open(txn, table)? else {
                return Ok(None);
            };
            Ok(table.get(id)?.map(|row| row.value().to_owned()))
        })
    }

    /// Every JSON value of `table` (endpoints or policies), by id.
    fn all_json(&self, table: JsonTable) -> Result<Vec<String>> {
        self.read(|txn| {
            let Some(table) = open(txn, table)? else {
                return Ok(Vec::new());
            };
            table
                .iter()?
                .map(|row| Ok(row?.1.value().to_owned()))
                .collect()
        })
    }

    async fn put_json(&self, table: JsonTable, id: u64, json: String) -> Result<()> {
        self.write(move |txn| {
            txn.open_table(table)?.insert(id, json.as_str())?;
            Ok(())
        })
        .await
    }

    async fn delete_json(&self, table: JsonTable, id: u64) -> Result<bool> {
        self.write(move |txn| Ok(txn.open_table(table)?.remove(id)?.is_some()))
            .await
    }
}

#[async_trait]
impl ReplicationStore for RedbMetadataStore {
    async fn next_id(&self, kind: IdKind) -> Result<u64> {
        self.write(move |txn| {
            let mut counters = txn.open_table(COUNTERS)?;
            let last = counters.get(kind.as_str())?.map_or(0, |row| row.value());
            let id = last.saturating_add(1);
            counters.insert(kind.as_str(), id)?;
            Ok(id)
        })
        .await
    }

    async fn put_registry(&self, registry: &RegistryEndpoint) -> Result<()> {
        self.put_json(REGISTRIES, registry.id, encode(registry)?)
            .await
    }

    async fn registry(&self, id: u64) -> Result<Option<RegistryEndpoint>> {
        self.json_by_id(REGISTRIES, id)?
            .map(|json| decode(&json, "a registry endpoint"))
            .transpose()
    }

    async fn registries(&self) -> Result<Vec<RegistryEndpoint>> {
        self.all_json(REGISTRIES)?
            .iter()
            .map(|json| decode(json, "a registry endpoint"))
            .collect()
    }

    async fn delete_registry(&self, id: u64) -> Result<bool> {
        self.delete_json(REGISTRIES, id).await
    }

    async fn put_policy(&self, policy: &Policy) -> Result<()> {
        self.put_json(POLICIES, policy.id, encode(policy)?).await
    }

    async fn policy(&self, id: u64) -> Result<Option<Policy>> {
        self.json_by_id(POLICIES, id)?
            .map(|json| decode(&json, "a replication policy"))
            .transpose()
    }

    async fn policies(&self) -> Result<Vec<Policy>> {
        self.all_json(POLICIES)?
            .iter()
            .map(|json| decode(json, "a replication policy"))
            .collect()
    }

    async fn delete_policy(&self, id: u64) -> Result<bool> {
        self.delete_json(POLICIES, id).await
    }

    async fn put_execution(&self, execution: &Execution) -> Result<()> {
        let (id, policy, json) = (execution.id, execution.policy_id, encode(execution)?);
        self.write(move |txn| {
            let replaced = txn
                .open_table(EXECUTIONS)?
                .insert(id, (policy, json.as_str()))?
                .map(|row| row.value().0);
            let mut index = txn.open_table(POLICY_EXECUTIONS)?;
            if let Some(before) = replaced.filter(|before| *before != policy) {
                index.remove((before, id))?;
            }
            index.insert((policy, id), ())?;
            Ok(())
        })
        .await
    }

    async fn execution(&self, id: u64) -> Result<Option<Execution>> {
        let json = self.read(|txn| {
            let Some(executions) = open(txn, EXECUTIONS)? else {
                return Ok(None);
            };
            Ok(executions.get(id)?.map(|row| row.value().1.to_owned()))
        })?;
        json.map(|json| decode(&json, "a replication execution"))
            .transpose()
    }

    async fn executions(&self, policy: Option<u64>, limit: usize) -> Result<Vec<Execution>> {
        let rows: Vec<Option<String>> = self.read(|txn| {
            let Some(executions) = open(txn, EXECUTIONS)? else {
                return Ok(Vec::new());
            };
            let Some(policy) = policy else {
                return executions
                    .iter()?
                    .rev()
                    .take(limit)
                    .map(|row| Ok(Some(row?.1.value().1.to_owned())))
                    .collect();
            };
            let Some(index) = open(txn, POLICY_EXECUTIONS)? else {
                return Ok(Vec::new());
            };
            let mut rows = Vec::new();
            for entry in index
                .range((policy, 0)..=(policy, u64::MAX))?
                .rev()
                .take(limit)
            {
                let (_, id) = entry?.0.value();
                rows.push(executions.get(id)?.map(|row| row.value().1.to_owned()));
            }
            Ok(rows)
        })?;
        rows.iter()
            .map(|json| {
                // The index and the executions are written in one transaction.
                let json = json
                    .as_deref()
                    .ok_or_else(|| corrupt("an indexed execution without its row"))?;
                decode(json, "a replication execution")
            })
            .collect()
    }

    async fn put_task(&self, task: &Task) -> Result<()> {
        let key = (task.execution_id, task.id);
        let (status, json) = (status_name(task.status), encode(task)?);
        self.write(move |txn| {
            txn.open_table(TASKS)?
                .insert(key, (status, json.as_str()))?;
            Ok(())
        })
        .await
    }

    async fn task(&self, execution: u64, id: u64) -> Result<Option<Task>> {
        let json = self.read(|txn| {
            let Some(tasks) = open(txn, TASKS)? else {
                return Ok(None);
            };
            Ok(tasks
                .get((execution, id))?
                .map(|row| row.value().1.to_owned()))
        })?;
        json.map(|json| decode(&json, "a replication task"))
            .transpose()
    }

    async fn tasks(&self, execution: u64) -> Result<Vec<Task>> {
        let rows: Vec<String> = self.read(|txn| {
            let Some(tasks) = open(txn, TASKS)? else {
                return Ok(Vec::new());
            };
            tasks
                .range((execution, 0)..=(execution, u64::MAX))?
                .map(|row| Ok(row?.1.value().1.to_owned()))
                .collect()
        })?;
        rows.iter()
            .map(|json| decode(json, "a replication task"))
            .collect()
    }

    async fn update_task(&self, task: &Task, expected: TaskStatus) -> Result<bool> {
        let key = (task.execution_id, task.id);
        let (status, json) = (status_name(task.status), encode(task)?);
        let expected = status_name(expected);
        self.write(move |txn| {
            let mut tasks = txn.open_table(TASKS)?;
            let stored = tasks.get(key)?.map(|row| row.value().0 == expected);
            if stored != Some(true) {
                return Ok(false);
            }
            tasks.insert(key, (status, json.as_str()))?;
            Ok(true)
        })
        .await
    }

    async fn claim_schedule(&self, policy: u64, fire_time: u64) -> Result<bool> {
        self.write(move |txn| {
            let mut schedules = txn.open_table(SCHEDULES)?;
            let fired = schedules.get(policy)?.map(|row| row.value());
            if fired.is_some_and(|fired| fired >= fire_time) {
                return Ok(false);
            }
            schedules.insert(policy, fire_time)?;
            Ok(true)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use berth_core::replication::Operation;

    use super::*;

    fn open_store(dir: &tempfile::TempDir) -> RedbMetadataStore {
        RedbMetadataStore::open(dir.path().join("metadata.redb")).expect("opening")
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

    /// A database in which nothing of replication was ever written reads as empty.
    #[tokio::test]
    async fn a_database_without_replication_tables_reads_empty() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = open_store(&dir);
        assert_eq!(store.registry(1).await.expect("read"), None);
        assert!(store.registries().await.expect("read").is_empty());
        assert!(store.policies().await.expect("read").is_empty());
        assert!(store.executions(None, 10).await.expect("read").is_empty());
        assert!(
            store
                .executions(Some(1), 10)
                .await
                .expect("read")
                .is_empty()
        );
        assert!(store.tasks(1).await.expect("read").is_empty());
        assert_eq!(store.task(1, 1).await.expect("read"), None);
        assert!(!store.delete_policy(1).await.expect("delete"));
    }

    /// Counters, tasks and schedule claims survive reopening the database.
    #[tokio::test]
    async fn replication_survives_reopening() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let task = Task {
            id: 7,
            execution_id: 3,
            operation: Operation::Copy,
            source_repository: "library/app".to_owned(),
            destination_repository: "mirror/app".to_owned(),
            reference: "v1".to_owned(),
            status: TaskStatus::Pending,
            attempts: 0,
            start_time: None,
            end_time: None,
            error: None,
            bytes: 0,
            note: None,
            attempt_started: None,
        };
        {
            let store = open_store(&dir);
            assert_eq!(store.next_id(IdKind::Task).await.expect("id"), 1);
            assert_eq!(store.next_id(IdKind::Task).await.expect("id"), 2);
            assert_eq!(store.next_id(IdKind::Policy).await.expect("id"), 1);
            store.put_task(&task).await.expect("put");
            assert!(store.claim_schedule(5, 100).await.expect("claim"));
        }
        let store = open_store(&dir);
        assert_eq!(store.next_id(IdKind::Task).await.expect("id"), 3);
        assert_eq!(store.tasks(3).await.expect("read"), [task]);
        assert!(!store.claim_schedule(5, 100).await.expect("claim"));
    }

    /// An execution moved to another policy leaves the first policy's listing.
    #[tokio::test]
    async fn an_execution_moved_to_another_policy_is_listed_there_only() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = open_store(&dir);
        let mut execution = Execution {
            id: 1,
            policy_id: 10,
            trigger: berth_core::replication::TriggerKind::Manual,
            start_time: 1,
            planned: false,
            error: None,
            stop_requested: false,
        };
        store.put_execution(&execution).await.expect("put");
        execution.policy_id = 20;
        store.put_execution(&execution).await.expect("put");
        assert!(
            store
                .executions(Some(10), 10)
                .await
                .expect("read")
                .is_empty()
        );
        assert_eq!(
            store.executions(Some(20), 10).await.expect("read"),
            [execution]
        );
    }
}
