//! The [`WebhookStore`] port over the metadata database.
//!
//! | table             | key                               | value                      |
//! |-------------------|-----------------------------------|----------------------------|
//! | `webhooks`        | (project, id)                     | the policy as JSON         |
//! | `webhook_ids`     | `"policy"`                        | the last id given (ids are unique across projects here) |
//! | `deliveries`      | (policy id, created ms, id)       | the delivery as JSON       |
//! | `delivery_keys`   | delivery id                       | (policy id, created ms)    |

use async_trait::async_trait;
use berth_core::error::{RegistryError, Result};
use berth_core::webhooks::{Delivery, WebhookPolicy, WebhookStore};
use redb::{ReadableTable, TableDefinition, WriteTransaction};

use crate::metadata::RedbMetadataStore;

const WEBHOOKS: TableDefinition<(&str, u64), &str> = TableDefinition::new("webhooks");
const WEBHOOK_IDS: TableDefinition<&str, u64> = TableDefinition::new("webhook_ids");
const DELIVERIES: TableDefinition<(u64, u64, u64), &str> = TableDefinition::new("deliveries");
const DELIVERY_KEYS: TableDefinition<u64, (u64, u64)> = TableDefinition::new("delivery_keys");

pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(WEBHOOKS)?;
    txn.open_table(WEBHOOK_IDS)?;
    txn.open_table(DELIVERIES)?;
    txn.open_table(DELIVERY_KEYS)?;
    Ok(())
}

fn encode<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|e| RegistryError::internal(format!("encoding a webhook record: {e}")))
}

fn decode<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, redb::Error> {
    serde_json::from_str(json).map_err(|e| {
        redb::Error::Corrupted(format!("a webhook record is not what Berth wrote: {e}"))
    })
}

/// The names of `project`'s policies other than `except`.
fn names_taken(
    table: &redb::Table<'_, (&str, u64), &str>,
    project: &str,
    except: u64,
) -> Result<Vec<String>, redb::Error> {
    let mut names = Vec::new();
    for row in table.range((project, 0)..=(project, u64::MAX))? {
        let (key, json) = row?;
        if key.value().1 != except {
            names.push(decode::<WebhookPolicy>(json.value())?.name);
        }
    }
    Ok(names)
}

#[async_trait]
impl WebhookStore for RedbMetadataStore {
    async fn create_webhook(&self, policy: &WebhookPolicy) -> Result<Option<u64>> {
        let mut policy = policy.clone();
        self.write(move |txn| {
            let mut webhooks = txn.open_table(WEBHOOKS)?;
            if names_taken(&webhooks, &policy.project, 0)?.contains(&policy.name) {
                return Ok(None);
            }
            let mut ids = txn.open_table(WEBHOOK_IDS)?;
            let id = ids.get("policy")?.map_or(0, |last| last.value()) + 1;
            ids.insert("policy", id)?;
            policy.id = id;
            let json = serde_json::to_string(&policy)
                .map_err(|e| redb::Error::Corrupted(format!("encoding a policy: {e}")))?;
            webhooks.insert((policy.project.as_str(), id), json.as_str())?;
            Ok(Some(id))
        })
        .await
    }

    async fn update_webhook(&self, policy: &WebhookPolicy) -> Result<bool> {
        let json = encode(policy)?;
        let (project, id, name) = (policy.project.clone(), policy.id, policy.name.clone());
        self.write(move |txn| {
            let mut webhooks = txn.open_table(WEBHOOKS)?;
            if webhooks.get((project.as_str(), id))?.is_none()
                || names_taken(&webhooks, &project, id)?.contains(&name)
            {
                return Ok(false);
            }
            webhooks.insert((project.as_str(), id), json.as_str())?;
            Ok(true)
        })
        .await
    }

    async fn delete_webhook(&self, project: &str, id: u64) -> Result<bool> {
        let project = project.to_owned();
        self.write(move |txn| {
            if txn
                .open_table(WEBHOOKS)?
                .remove((project.as_str(), id))?
                .is_none()
            {
                return Ok(false);
            }
            let mut deliveries = txn.open_table(DELIVERIES)?;
            let mut keys = txn.open_table(DELIVERY_KEYS)?;
            let gone: Vec<(u64, u64, u64)> = deliveries
                .range((id, 0, 0)..=(id, u64::MAX, u64::MAX))?
                .filter_map(|row| row.ok().map(|(key, _)| key.value()))
                .collect();
            for key in gone {
                deliveries.remove(key)?;
                keys.remove(key.2)?;
            }
            Ok(true)
        })
        .await
    }

    async fn webhook(&self, project: &str, id: u64) -> Result<Option<WebhookPolicy>> {
        self.read(|txn| {
            txn.open_table(WEBHOOKS)?
                .get((project, id))?
                .map(|json| decode(json.value()))
                .transpose()
        })
    }

    async fn webhooks(&self, project: &str) -> Result<Vec<WebhookPolicy>> {
        self.read(|txn| {
            let table = txn.open_table(WEBHOOKS)?;
            let mut policies = Vec::new();
            for row in table.range((project, 0)..=(project, u64::MAX))? {
                policies.push(decode(row?.1.value())?);
            }
            Ok(policies)
        })
    }

    async fn record_delivery(&self, delivery: &Delivery) -> Result<()> {
        let json = encode(delivery)?;
        let key = (delivery.policy_id, delivery.created_ms, delivery.id);
        self.write(move |txn| {
            let mut deliveries = txn.open_table(DELIVERIES)?;
            let mut keys = txn.open_table(DELIVERY_KEYS)?;
            if let Some(old) = keys.insert(key.2, (key.0, key.1))? {
                let (policy, created) = old.value();
                drop(old);
                deliveries.remove((policy, created, key.2))?;
            }
            deliveries.insert(key, json.as_str())?;
            Ok(())
        })
        .await
    }

    async fn deliveries(
        &self,
        _project: &str,
        policy_id: u64,
        limit: usize,
    ) -> Result<Vec<Delivery>> {
        self.read(|txn| {
            let table = txn.open_table(DELIVERIES)?;
            let mut found = Vec::new();
            for row in table
                .range((policy_id, 0, 0)..=(policy_id, u64::MAX, u64::MAX))?
                .rev()
                .take(limit)
            {
                found.push(decode(row?.1.value())?);
            }
            Ok(found)
        })
    }
}
