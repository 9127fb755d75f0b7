//! Project storage quotas in the table (see `berth_core::quota`).
//!
//! | item    | `PK`               | `SK`            | other attributes                          |
//! |---------|--------------------|-----------------|-------------------------------------------|
//! | quota   | `QUOTA#<project>`  | `META`          | `limit` (bytes; absent: none), `used` (bytes) |
//! | charge  | `QUOTA#<project>`  | `REF#<digest>`  | `refs` ((repository, manifest) pairs of the project naming it), `size` |
//!
//! A charge item that appears or disappears and the usage change are one transaction, whose
//! condition on the quota item refuses a usage past the limit: concurrent pushes never end
//! above it. A manifest put adds its charges in a transaction before the one that writes the
//! manifest item and takes them back if that one finds the manifest stored already or fails;
//! a deletion takes them back after its own transaction. A crash in between leaves a usage
//! too high, never one too low.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem, Update};
use berth_core::error::Result;
use berth_core::manifest::Target;
use berth_core::ports::{MetadataStore, all_manifests};
use berth_core::quota::{Quota, QuotaStore, charges, quota_exceeded};
use berth_core::{Digest, RepositoryName};

use crate::garbage::put_request;
use crate::schema::{META, PARTITION_KEY, build_error};
use crate::store::DynamoMetadataStore;
use crate::toolkit::{
    Condition, FIRST_BACKOFF, Item, TRANSACTION_ITEMS, WRITE_ATTEMPTS, back_off, key, lost_races,
    n, number_attr,
};

const LIMIT: &str = "limit";
const USED: &str = "used";
const REFS: &str = "refs";
const SIZE: &str = "size";
const REF_PREFIX: &str = "REF#";
/// Charges per transaction, beside the quota item's update.
const CHARGES_PER_TRANSACTION: usize = TRANSACTION_ITEMS - 1;

pub(crate) fn quota_pk(project: &str) -> String {
    format!("QUOTA#{project}")
}

fn charge_sk(digest: &Digest) -> String {
    format!("{REF_PREFIX}{digest}")
}

fn quota_of(item: Option<&Item>) -> Result<Quota> {
    let Some(item) = item else {
        return Ok(Quota::default());
    };
    Ok(Quota {
        limit: item
            .contains_key(LIMIT)
            .then(|| number_attr(item, LIMIT))
            .transpose()?,
        used: if item.contains_key(USED) {
            number_attr(item, USED)?
        } else {
            0
        },
    })
}

impl DynamoMetadataStore {
    fn quota_update(
        &self,
        item_key: Item,
        expression: &str,
        condition: &str,
        names: &[(&str, &str)],
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<Update> {
        let mut builder = Update::builder()
            .table_name(&self.table)
            .set_key(Some(item_key))
            .update_expression(expression)
            .set_condition_expression((!condition.is_empty()).then(|| condition.to_owned()));
        for (placeholder, name) in names {
            builder = builder.expression_attribute_names(*placeholder, *name);
        }
        for (placeholder, value) in values {
            builder = builder.expression_attribute_values(placeholder, value);
        }
        builder.build().map_err(build_error)
    }

    async fn read_quota(&self, project: &str) -> Result<Quota> {
        quota_of(self.get(key(quota_pk(project), META), None).await?.as_ref())
    }

    /// The charge items of `targets` found, by digest: (references, size).
    async fn charge_counts(
        &self,
        project: &str,
        targets: &[Target],
    ) -> Result<HashMap<String, (u64, u64)>> {
        let sort_keys: Vec<String> = targets.iter().map(|t| charge_sk(&t.digest)).collect();
        let found = self
            .batch_get(&quota_pk(project), &sort_keys, &[REFS, SIZE])
            .await?;
        found
            .into_iter()
            .map(|(sk, item)| {
                let digest = sk.strip_prefix(REF_PREFIX).unwrap_or(&sk).to_owned();
                Ok((
                    digest,
                    (number_attr(&item, REFS)?, number_attr(&item, SIZE)?),
                ))
            })
            .collect()
    }

    /// The update of the quota item that adds `delta` bytes of usage (a negative one takes
    /// them off). Adding is conditional on the limit read (`quota`) and on the usage staying
    /// within it.
    fn usage_change(&self, project: &str, quota: &Quota, delta: i128) -> Result<Update> {
        let names = [("#used", USED), ("#limit", LIMIT)];
        let value = AttributeValue::N(delta.to_string());
        if delta <= 0 {
            return self.quota_update(
                key(quota_pk(project), META),
                "ADD #used :delta",
                "",
                &names[..1],
                vec![(":delta", value)],
            );
        }
        match quota.limit {
            None => self.quota_update(
                key(quota_pk(project), META),
                "ADD #used :delta",
                "attribute_not_exists(#limit)",
                &names,
                vec![(":delta", value)],
            ),
            Some(limit) => {
                let cap = i128::from(limit) - delta;
                self.quota_update(
                    key(quota_pk(project), META),
                    "ADD #used :delta",
                    "#limit = :limit AND (attribute_not_exists(#used) OR #used <= :cap)",
                    &names,
                    vec![
                        (":delta", value),
                        (":limit", n(limit)),
                        (":cap", AttributeValue::N(cap.to_string())),
                    ],
                )
            }
        }
    }

    /// Adds one reference of a manifest new in a repository of `project` to each of
    /// `targets`, or refuses (with [`quota_exceeded`], nothing left added) when the digests
    /// new to the project would take it past its limit.
    pub(crate) async fn charge(&self, project: &str, targets: &[Target]) -> Result<()> {
        for (done, chunk) in targets.chunks(CHARGES_PER_TRANSACTION).enumerate() {
            if let Err(refused) = self.charge_chunk(project, chunk).await {
                let charged = &targets[..done * CHARGES_PER_TRANSACTION];
                self.discharge(project, charged).await?;
                return Err(refused);
            }
        }
        Ok(())
    }

    /// The transaction items that add one reference of a manifest new in `project` to each
    /// of `targets` and the bytes new to the project to its usage, as the counts read now
    /// say; their conditions fail if those counts or the limit change before they are
    /// written. Refused with [`quota_exceeded`] when the new bytes do not fit.
    pub(crate) async fn charge_items(
        &self,
        project: &str,
        targets: &[Target],
    ) -> Result<Vec<TransactWriteItem>> {
        let pk = quota_pk(project);
        let quota = self.read_quota(project).await?;
        let counts = self.charge_counts(project, targets).await?;
        let adding: u64 = targets
            .iter()
            .filter(|t| !counts.contains_key(t.digest.as_str()))
            .map(|t| t.size)
            .sum();
        if !quota.fits(adding) {
            return Err(quota_exceeded(project, &quota, adding));
        }
        let mut items = Vec::with_capacity(targets.len() + 1);
        for target in targets {
            let item_key = key(&pk, charge_sk(&target.digest));
            let item = if counts.contains_key(target.digest.as_str()) {
                let update = self.quota_update(
                    item_key,
                    "ADD #refs :one",
                    "attribute_exists(#pk)",
                    &[("#refs", REFS), ("#pk", PARTITION_KEY)],
                    vec![(":one", n(1))],
                )?;
                TransactWriteItem::builder().update(update).build()
            } else {
                let mut item = item_key;
                item.insert(REFS.to_owned(), n(1));
                item.insert(SIZE.to_owned(), n(target.size));
                let put = self.put(item, Some(Condition::absent()))?;
                TransactWriteItem::builder().put(put).build()
            };
            items.push(item);
        }
        if adding > 0 {
            let update = self.usage_change(project, &quota, i128::from(adding))?;
            items.push(TransactWriteItem::builder().update(update).build());
        }
        Ok(items)
    }

    async fn charge_chunk(&self, project: &str, targets: &[Target]) -> Result<()> {
        let mut delay = FIRST_BACKOFF;
        for _ in 0..WRITE_ATTEMPTS {
            let items = self.charge_items(project, targets).await?;
            if self.transact_checked(items).await?.is_ok() {
                return Ok(());
            }
            // Another push or deletion changed a count or the usage first: read again.
            back_off(&mut delay).await;
        }
        Err(lost_races("a quota charge"))
    }

    /// Takes back one reference of each of `targets` in `project`; a digest left with none
    /// leaves the usage.
    pub(crate) async fn discharge(&self, project: &str, targets: &[Target]) -> Result<()> {
        let once: Vec<(Target, u64)> = targets.iter().map(|t| (t.clone(), 1)).collect();
        for chunk in once.chunks(CHARGES_PER_TRANSACTION) {
            self.discharge_chunk(project, chunk).await?;
        }
        Ok(())
    }

    /// [`Self::discharge`] of targets that may repeat (the charges of several manifests).
    pub(crate) async fn discharge_each(&self, project: &str, targets: &[Target]) -> Result<()> {
        let mut times: Vec<(Target, u64)> = Vec::new();
        let mut positions: HashMap<&str, usize> = HashMap::new();
        for target in targets {
            match positions.get(target.digest.as_str()) {
                Some(&at) => times[at].1 += 1,
                None => {
                    positions.insert(target.digest.as_str(), times.len());
                    times.push((target.clone(), 1));
                }
            }
        }
        for chunk in times.chunks(CHARGES_PER_TRANSACTION) {
            self.discharge_chunk(project, chunk).await?;
        }
        Ok(())
    }

    /// Takes `times` references back from each target, in one transaction.
    async fn discharge_chunk(&self, project: &str, targets: &[(Target, u64)]) -> Result<()> {
        let pk = quota_pk(project);
        let plain: Vec<Target> = targets.iter().map(|(t, _)| t.clone()).collect();
        let mut delay = FIRST_BACKOFF;
        for _ in 0..WRITE_ATTEMPTS {
            let counts = self.charge_counts(project, &plain).await?;
            let mut freed = 0;
            let mut items = Vec::with_capacity(targets.len() + 1);
            for (target, times) in targets {
                let Some(&(refs, size)) = counts.get(target.digest.as_str()) else {
                    continue;
                };
                let item_key = key(&pk, charge_sk(&target.digest));
                // Conditions that concurrent charges and discharges rarely break: a count
                // that stays above zero is decremented whatever it is; the last references
                // are deleted only as they were read.
                let item = if refs <= *times {
                    freed += size;
                    let last = Condition::new(
                        "#refs <= :times",
                        &[("#refs", REFS)],
                        vec![(":times", n(*times))],
                    );
                    TransactWriteItem::builder()
                        .delete(self.delete(item_key, Some(last))?)
                        .build()
                } else {
                    let update = self.quota_update(
                        item_key,
                        "ADD #refs :minus",
                        "#refs > :times",
                        &[("#refs", REFS)],
                        vec![
                            (":minus", AttributeValue::N(format!("-{times}"))),
                            (":times", n(*times)),
                        ],
                    )?;
                    TransactWriteItem::builder().update(update).build()
                };
                items.push(item);
            }
            if items.is_empty() {
                return Ok(());
            }
            if freed > 0 {
                let update = self.usage_change(project, &Quota::default(), -i128::from(freed))?;
                items.push(TransactWriteItem::builder().update(update).build());
            }
            if self.transact_checked(items).await?.is_ok() {
                return Ok(());
            }
            back_off(&mut delay).await;
        }
        Err(lost_races("a quota discharge"))
    }
}

#[async_trait]
impl QuotaStore for DynamoMetadataStore {
    async fn quota(&self, project: &str) -> Result<Quota> {
        self.read_quota(project).await
    }

    async fn set_limit(&self, project: &str, limit: Option<u64>) -> Result<()> {
        let item_key = key(quota_pk(project), META);
        let update = match limit {
            Some(bytes) => self.quota_update(
                item_key,
                "SET #limit = :limit",
                "",
                &[("#limit", LIMIT)],
                vec![(":limit", n(bytes))],
            )?,
            None => {
                self.quota_update(item_key, "REMOVE #limit", "", &[("#limit", LIMIT)], vec![])?
            }
        };
        self.update_item(update).await.map(drop)
    }

    async fn counted(&self, project: &str, digests: &[Digest]) -> Result<Vec<bool>> {
        let targets: Vec<Target> = digests
            .iter()
            .map(|digest| Target {
                digest: digest.clone(),
                size: 0,
            })
            .collect();
        let counts = self.charge_counts(project, &targets).await?;
        Ok(digests
            .iter()
            .map(|d| counts.contains_key(d.as_str()))
            .collect())
    }
}

/// Where a table records that its quota charges are counted (no project name is empty).
const COUNTED_SK: &str = "COUNTED";

impl DynamoMetadataStore {
    /// Whether the table's quota charges are counted.
    pub async fn quota_charges_counted(&self) -> Result<bool> {
        Ok(self
            .get(key(quota_pk(""), COUNTED_SK), None)
            .await?
            .is_some())
    }

    /// Counts the quota charges of a table written before quotas: each project's charge
    /// items and usage, from every stored manifest; then marks the table counted. Run it
    /// while no pushes or deletions run. Returns how many charge items it wrote.
    pub async fn count_quota_charges(&self) -> Result<usize> {
        let mut projects: HashMap<String, HashMap<String, (u64, u64)>> = HashMap::new();
        let mut after: Option<String> = None;
        loop {
            let repositories = self.repositories(after.as_deref(), 100).await?;
            for name in &repositories {
                let repository: RepositoryName = name.parse()?;
                let counts = projects.entry(repository.project().to_owned()).or_default();
                for manifest in all_manifests(self, &repository).await? {
                    let charged = charges(&manifest.digest, &manifest.media_type, &manifest.bytes);
                    for target in charged {
                        counts
                            .entry(target.digest.to_string())
                            .or_insert((0, target.size))
                            .0 += 1;
                    }
                }
            }
            if repositories.len() < 100 {
                break;
            }
            after = repositories.last().cloned();
        }
        let mut requests = Vec::new();
        let mut written = 0;
        for (project, counts) in &projects {
            let pk = quota_pk(project);
            for (digest, (refs, size)) in counts {
                let mut item = key(&pk, format!("{REF_PREFIX}{digest}"));
                item.insert(REFS.to_owned(), n(*refs));
                item.insert(SIZE.to_owned(), n(*size));
                requests.push(put_request(item)?);
                written += 1;
            }
            let used: u64 = counts.values().map(|(_, size)| size).sum();
            let update = self.quota_update(
                key(&pk, META),
                "SET #used = :used",
                "",
                &[("#used", USED)],
                vec![(":used", n(used))],
            )?;
            self.update_item(update).await?;
        }
        self.batch_write(requests).await?;
        self.put_item(self.put(key(quota_pk(""), COUNTED_SK), None)?)
            .await?;
        Ok(written)
    }
}
