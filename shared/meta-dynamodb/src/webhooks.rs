//! The [`WebhookStore`] port over the table. Policies live in their project's partition,
//! which the token function (the management API) writes; deliveries in a partition of
//! their policy.
//!
//! | item          | `PK`                       | `SK`                         | other attributes |
//! |---------------|----------------------------|------------------------------|------------------|
//! | policy        | `PROJECT#<project>`        | `WEBHOOK#<id>` (20 digits)   | `record` (JSON)  |
//! | policy name   | `PROJECT#<project>`        | `WEBHOOKNAME#<name>`         | `id`             |
//! | id counter    | `PROJECT#<project>`        | `WEBHOOKCOUNTER`             | `last_id`        |
//! | delivery      | `HOOKS#<project>#<id>`     | `<created ms>#<delivery id>` | `record` (JSON)  |
//!
//! A policy and its name item are written in one transaction whose condition on the name
//! keeps names unique in a project.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    Delete, DeleteRequest, Put, ReturnValue, TransactWriteItem, WriteRequest,
};
use berth_core::error::{RegistryError, Result};
use berth_core::webhooks::{Delivery, WebhookPolicy, WebhookStore};

use crate::DynamoMetadataStore;
use crate::error::sdk_error;
use crate::schema::{SORT_KEY, project_pk};
use crate::toolkit::{Item, Outcome, Query, key, n, names, number_attr, s, string_attr, values};

const POLICY_PREFIX: &str = "WEBHOOK#";
const NAME_PREFIX: &str = "WEBHOOKNAME#";
const COUNTER_SK: &str = "WEBHOOKCOUNTER";
const RECORD: &str = "record";

fn policy_sk(id: u64) -> String {
    format!("{POLICY_PREFIX}{id:020}")
}

fn deliveries_pk(project: &str, policy: u64) -> String {
    format!("HOOKS#{project}#{policy:020}")
}

fn failed(what: &str) -> impl Fn(aws_sdk_dynamodb::error::BuildError) -> RegistryError + '_ {
    move |e| RegistryError::internal(format!("{what}: {e}"))
}

fn decode<T: serde::de::DeserializeOwned>(item: &Item) -> Result<T> {
    serde_json::from_str(string_attr(item, RECORD)?)
        .map_err(|e| RegistryError::internal(format!("a webhook record: {e}")))
}

fn encode<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|e| RegistryError::internal(format!("encoding a webhook record: {e}")))
}

impl DynamoMetadataStore {
    fn conditional_put(&self, item: Item, condition: &str) -> Result<TransactWriteItem> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names(&[("#sk", SORT_KEY)])))
            .build()
            .map_err(failed("a webhook write"))?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    fn policy_items(
        &self,
        policy: &WebhookPolicy,
        condition: &str,
    ) -> Result<Vec<TransactWriteItem>> {
        let pk = project_pk(&policy.project);
        let mut record = key(&pk, policy_sk(policy.id));
        record.insert(RECORD.to_owned(), s(encode(policy)?));
        let mut name = key(&pk, format!("{NAME_PREFIX}{}", policy.name));
        name.insert("id".to_owned(), n(policy.id));
        Ok(vec![
            self.conditional_put(record, condition)?,
            self.conditional_put(name, "attribute_not_exists(#sk)")?,
        ])
    }

    fn delete_item_of(&self, key: Item) -> Result<TransactWriteItem> {
        let delete = Delete::builder()
            .table_name(&self.table)
            .set_key(Some(key))
            .build()
            .map_err(failed("a webhook delete"))?;
        Ok(TransactWriteItem::builder().delete(delete).build())
    }

    async fn next_webhook_id(&self, project: &str) -> Result<u64> {
        let output = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(project_pk(project), COUNTER_SK)))
            .update_expression("ADD #last :one")
            .set_expression_attribute_names(Some(names(&[("#last", "last_id")])))
            .set_expression_attribute_values(Some(values(vec![(":one", n(1))])))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| sdk_error("UpdateItem", e))?;
        number_attr(&output.attributes.unwrap_or_default(), "last_id")
    }
}

#[async_trait]
impl WebhookStore for DynamoMetadataStore {
    async fn create_webhook(&self, policy: &WebhookPolicy) -> Result<Option<u64>> {
        let mut policy = policy.clone();
        policy.id = self.next_webhook_id(&policy.project).await?;
        let items = self.policy_items(&policy, "attribute_not_exists(#sk)")?;
        Ok(match self.transact(items).await? {
            Outcome::Committed => Some(policy.id),
            Outcome::ConditionFailed => None,
        })
    }

    async fn update_webhook(&self, policy: &WebhookPolicy) -> Result<bool> {
        let Some(old) = self.webhook(&policy.project, policy.id).await? else {
            return Ok(false);
        };
        let mut items = vec![
            self.policy_items(policy, "attribute_exists(#sk)")?
                .remove(0),
        ];
        if old.name != policy.name {
            items.push(
                self.policy_items(policy, "attribute_exists(#sk)")?
                    .remove(1),
            );
            items.push(self.delete_item_of(key(
                project_pk(&policy.project),
                format!("{NAME_PREFIX}{}", old.name),
            ))?);
        }
        Ok(matches!(self.transact(items).await?, Outcome::Committed))
    }

    async fn delete_webhook(&self, project: &str, id: u64) -> Result<bool> {
        let Some(old) = self.webhook(project, id).await? else {
            return Ok(false);
        };
        let pk = project_pk(project);
        let items = vec![
            self.delete_item_of(key(&pk, policy_sk(id)))?,
            self.delete_item_of(key(&pk, format!("{NAME_PREFIX}{}", old.name)))?,
        ];
        if !matches!(self.transact(items).await?, Outcome::Committed) {
            return Ok(false);
        }
        let deliveries = self
            .query_all(&Query::partition(&deliveries_pk(project, id)))
            .await?;
        let requests = deliveries
            .into_iter()
            .map(|item| {
                let sk = string_attr(&item, SORT_KEY)?.to_owned();
                let delete = DeleteRequest::builder()
                    .set_key(Some(key(deliveries_pk(project, id), sk)))
                    .build()
                    .map_err(failed("a delivery delete"))?;
                Ok(WriteRequest::builder().delete_request(delete).build())
            })
            .collect::<Result<Vec<_>>>()?;
        self.batch_write(requests).await?;
        Ok(true)
    }

    async fn webhook(&self, project: &str, id: u64) -> Result<Option<WebhookPolicy>> {
        self.get(key(project_pk(project), policy_sk(id)), None)
            .await?
            .as_ref()
            .map(decode)
            .transpose()
    }

    async fn webhooks(&self, project: &str) -> Result<Vec<WebhookPolicy>> {
        self.query_all(&Query::prefixed(&project_pk(project), POLICY_PREFIX))
            .await?
            .iter()
            .map(decode)
            .collect()
    }

    async fn record_delivery(&self, delivery: &Delivery) -> Result<()> {
        let mut item = key(
            deliveries_pk(&delivery.project, delivery.policy_id),
            format!("{:013}#{:020}", delivery.created_ms, delivery.id),
        );
        item.insert(RECORD.to_owned(), s(encode(delivery)?));
        self.put_item(self.put(item, None)?).await.map(drop)
    }

    async fn deliveries(
        &self,
        project: &str,
        policy_id: u64,
        limit: usize,
    ) -> Result<Vec<Delivery>> {
        let mut items = self
            .query_all(&Query::partition(&deliveries_pk(project, policy_id)))
            .await?;
        items.sort_by(|a, b| {
            let sk = |item: &Item| {
                string_attr(item, SORT_KEY)
                    .map(str::to_owned)
                    .unwrap_or_default()
            };
            sk(b).cmp(&sk(a))
        });
        items.iter().take(limit).map(decode).collect()
    }
}
