//! The table's key schema, the keys of every item kind, and [`create_table`].
//!
//! `infra/template.yaml` declares the same table; [`CLOUDFORMATION_TABLE`] is the resource to
//! mirror there.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::BuildError;
use aws_sdk_dynamodb::operation::create_table::CreateTableError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType, TableDescription,
    TableStatus, TimeToLiveSpecification, TimeToLiveStatus,
};
use berth_core::error::{RegistryError, Result};

use crate::error::sdk_error;

/// The table's partition key attribute (a string).
pub const PARTITION_KEY: &str = "PK";
/// The table's sort key attribute (a string).
pub const SORT_KEY: &str = "SK";
/// The sparse global secondary index that lists repositories in lexical order.
pub const CATALOG_INDEX: &str = "catalog";
/// The catalog index's partition key: which listing an item belongs to ([`CATALOG_PARTITION`]
/// on repository items, [`USERS_PARTITION`] on users, [`PROJECTS_PARTITION`] on projects),
/// absent everywhere else.
pub const CATALOG_PARTITION_KEY: &str = "CatalogPK";
/// The catalog index's sort key: the repository, user or project name.
pub const CATALOG_SORT_KEY: &str = "CatalogSK";
/// The time-to-live attribute (Unix seconds) of upload sessions and failed-login counters.
pub const TTL_ATTRIBUTE: &str = "expires_at";

/// The value of [`CATALOG_PARTITION_KEY`] on every repository item.
pub(crate) const CATALOG_PARTITION: &str = "REPOS";
/// The value of [`CATALOG_PARTITION_KEY`] on every user item.
pub(crate) const USERS_PARTITION: &str = "USERS";
/// The value of [`CATALOG_PARTITION_KEY`] on every project item.
pub(crate) const PROJECTS_PARTITION: &str = "PROJECTS";

/// The table as a CloudFormation/SAM resource, for `infra/template.yaml` to mirror. The
/// table name is the template's choice; everything else must match, and [`create_table`]
/// creates exactly this.
pub const CLOUDFORMATION_TABLE: &str = r"MetadataTable:
  Type: AWS::DynamoDB::Table
  Properties:
    BillingMode: PAY_PER_REQUEST
    AttributeDefinitions:
      - { AttributeName: PK, AttributeType: S }
      - { AttributeName: SK, AttributeType: S }
      - { AttributeName: CatalogPK, AttributeType: S }
      - { AttributeName: CatalogSK, AttributeType: S }
    KeySchema:
      - { AttributeName: PK, KeyType: HASH }
      - { AttributeName: SK, KeyType: RANGE }
    GlobalSecondaryIndexes:
      - IndexName: catalog
        KeySchema:
          - { AttributeName: CatalogPK, KeyType: HASH }
          - { AttributeName: CatalogSK, KeyType: RANGE }
        Projection: { ProjectionType: KEYS_ONLY }
    TimeToLiveSpecification:
      AttributeName: expires_at
      Enabled: true
";

/// The sort key of the one item of its kind in a partition: repositories, upload sessions,
/// users, projects and failed-login counters.
pub(crate) const META: &str = "META";
/// Every tag item's sort key starts with this.
pub(crate) const TAG_PREFIX: &str = "TAG#";
/// Sorts just after every key that starts with [`TAG_PREFIX`] (`$` follows `#`).
pub(crate) const TAG_END: &str = "TAG$";

pub(crate) fn repository_pk(repository: &str) -> String {
    format!("REPO#{repository}")
}

pub(crate) fn tag_sk(tag: &str) -> String {
    format!("{TAG_PREFIX}{tag}")
}

/// Every manifest item's sort key (and its parts') starts with this.
pub(crate) const MANIFEST_PREFIX: &str = "MANIFEST#";
/// Sorts just after every key that starts with [`MANIFEST_PREFIX`].
pub(crate) const MANIFEST_END: &str = "MANIFEST$";
/// Marks a manifest part's sort key: `MANIFEST#<digest>#PART#...`.
pub(crate) const PART_MARKER: &str = "#PART#";

pub(crate) fn manifest_sk(digest: &str) -> String {
    format!("{MANIFEST_PREFIX}{digest}")
}

/// The prefix of the part items written by one `put_manifest` (`generation`).
pub(crate) fn parts_prefix(digest: &str, generation: &str) -> String {
    format!("{MANIFEST_PREFIX}{digest}{PART_MARKER}{generation}#")
}

/// Part `index` of a split manifest. Zero-padded so parts sort in order.
pub(crate) fn part_sk(digest: &str, generation: &str, index: usize) -> String {
    format!("{}{index:04}", parts_prefix(digest, generation))
}

pub(crate) fn referrers_prefix(subject: &str) -> String {
    format!("REFERRER#{subject}#")
}

pub(crate) fn referrer_sk(subject: &str, digest: &str) -> String {
    format!("{}{digest}", referrers_prefix(subject))
}

pub(crate) fn blob_link_sk(digest: &str) -> String {
    format!("BLOB#{digest}")
}

pub(crate) fn upload_pk(id: &str) -> String {
    format!("UPLOAD#{id}")
}

/// A user's partition: the user item (`META`) and their memberships.
pub(crate) fn user_pk(name: &str) -> String {
    format!("USER#{name}")
}

/// A project's partition: the project item (`META`), its members and its robot accounts.
pub(crate) fn project_pk(name: &str) -> String {
    format!("PROJECT#{name}")
}

/// Every member item's sort key (in the project's partition) starts with this.
pub(crate) const MEMBER_PREFIX: &str = "MEMBER#";
/// Every membership item's sort key (in the user's partition) starts with this.
pub(crate) const MEMBERSHIP_PREFIX: &str = "MEMBERSHIP#";
/// Every robot item's sort key (in the project's partition) starts with this.
pub(crate) const ROBOT_PREFIX: &str = "ROBOT#";

pub(crate) fn member_sk(user: &str) -> String {
    format!("{MEMBER_PREFIX}{user}")
}

pub(crate) fn membership_sk(project: &str) -> String {
    format!("{MEMBERSHIP_PREFIX}{project}")
}

/// A robot account's item, by its full name `robot$<project>+<name>`.
pub(crate) fn robot_sk(name: &str) -> String {
    format!("{ROBOT_PREFIX}{name}")
}

/// The partition of the failed-login counter `key`.
pub(crate) fn login_pk(key: &str) -> String {
    format!("LOGIN#{key}")
}

/// How long `create_table` waits for a new table to become active.
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(120);

/// Creates the metadata table `name` as [`CLOUDFORMATION_TABLE`] declares it: on-demand
/// billing, the catalog index, and time to live on [`TTL_ATTRIBUTE`], with a stream of new
/// and old images as the template adds. For `berth init` and
/// tests; the registry itself never creates tables.
///
/// Idempotent: an existing table with this key schema and index is accepted as it is (its
/// billing mode is the operator's choice) and only gets time to live enabled if it lacks it.
/// A table with another schema is an error.
pub async fn create_table(client: &Client, name: &str) -> Result<()> {
    let created = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_attribute_definitions(Some(vec![
            string_attribute(PARTITION_KEY)?,
            string_attribute(SORT_KEY)?,
            string_attribute(CATALOG_PARTITION_KEY)?,
            string_attribute(CATALOG_SORT_KEY)?,
        ]))
        .set_key_schema(Some(key_schema(PARTITION_KEY, SORT_KEY)?))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(CATALOG_INDEX)
                .set_key_schema(Some(key_schema(CATALOG_PARTITION_KEY, CATALOG_SORT_KEY)?))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::KeysOnly)
                        .build(),
                )
                .build()
                .map_err(build_error)?,
        )
        // The events function reads pushes and deletions from the stream (`crate::stream`),
        // as the template's table has it; an existing table keeps its own.
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::NewAndOldImages)
                .build()
                .map_err(build_error)?,
        )
        .send()
        .await;
    match created {
        Ok(_) => {}
        Err(e)
            if matches!(
                e.as_service_error(),
                Some(CreateTableError::ResourceInUseException(_))
            ) => {}
        Err(e) => return Err(sdk_error("CreateTable", e)),
    }
    let table = wait_until_active(client, name).await?;
    check_schema(&table).map_err(|problem| {
        RegistryError::internal(format!(
            "table {name:?} exists with another schema than Berth's: {problem}"
        ))
    })?;
    enable_time_to_live(client, name).await
}

fn string_attribute(name: &str) -> Result<AttributeDefinition> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .map_err(build_error)
}

fn key_schema(hash: &str, range: &str) -> Result<Vec<KeySchemaElement>> {
    [(hash, KeyType::Hash), (range, KeyType::Range)]
        .into_iter()
        .map(|(name, key_type)| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(key_type)
                .build()
                .map_err(build_error)
        })
        .collect()
}

pub(crate) fn build_error(e: BuildError) -> RegistryError {
    RegistryError::internal(format!("metadata store: building a DynamoDB request: {e}"))
}

async fn wait_until_active(client: &Client, name: &str) -> Result<TableDescription> {
    let deadline = tokio::time::Instant::now() + ACTIVE_TIMEOUT;
    loop {
        let described = client
            .describe_table()
            .table_name(name)
            .send()
            .await
            .map_err(|e| sdk_error("DescribeTable", e))?;
        let table = described.table.ok_or_else(|| {
            RegistryError::internal("metadata store: DescribeTable returned no table")
        })?;
        let indexes_active = table
            .global_secondary_indexes()
            .iter()
            .all(|index| index.index_status().is_none_or(|s| s.as_str() == "ACTIVE"));
        if table.table_status() == Some(&TableStatus::Active) && indexes_active {
            return Ok(table);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(RegistryError::unavailable(format!(
                "table {name:?} did not become active within {ACTIVE_TIMEOUT:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What differs between `table` and the schema Berth needs, if anything.
fn check_schema(table: &TableDescription) -> Result<(), String> {
    let keys = |elements: &[KeySchemaElement]| -> Vec<(String, KeyType)> {
        elements
            .iter()
            .map(|e| (e.attribute_name().to_owned(), e.key_type().clone()))
            .collect()
    };
    let expected = |hash: &str, range: &str| {
        vec![
            (hash.to_owned(), KeyType::Hash),
            (range.to_owned(), KeyType::Range),
        ]
    };
    if keys(table.key_schema()) != expected(PARTITION_KEY, SORT_KEY) {
        return Err(format!("key schema {:?}", table.key_schema()));
    }
    let catalog = table
        .global_secondary_indexes()
        .iter()
        .find(|index| index.index_name() == Some(CATALOG_INDEX))
        .ok_or_else(|| format!("no index {CATALOG_INDEX:?}"))?;
    if keys(catalog.key_schema()) != expected(CATALOG_PARTITION_KEY, CATALOG_SORT_KEY) {
        return Err(format!(
            "index {CATALOG_INDEX:?} has key schema {:?}",
            catalog.key_schema()
        ));
    }
    for name in [
        PARTITION_KEY,
        SORT_KEY,
        CATALOG_PARTITION_KEY,
        CATALOG_SORT_KEY,
    ] {
        let definition = table
            .attribute_definitions()
            .iter()
            .find(|d| d.attribute_name() == name);
        if definition.map(AttributeDefinition::attribute_type) != Some(&ScalarAttributeType::S) {
            return Err(format!("attribute {name:?} is not a string"));
        }
    }
    Ok(())
}

async fn enable_time_to_live(client: &Client, name: &str) -> Result<()> {
    let described = client
        .describe_time_to_live()
        .table_name(name)
        .send()
        .await
        .map_err(|e| sdk_error("DescribeTimeToLive", e))?;
    let current = described.time_to_live_description();
    let status = current.and_then(|d| d.time_to_live_status());
    let attribute = current.and_then(|d| d.attribute_name());
    match status {
        Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
            if attribute == Some(TTL_ATTRIBUTE) =>
        {
            Ok(())
        }
        Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling) => {
            Err(RegistryError::internal(format!(
                "table {name:?} has time to live on {attribute:?}, Berth needs {TTL_ATTRIBUTE:?}"
            )))
        }
        _ => {
            let specification = TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name(TTL_ATTRIBUTE)
                .build()
                .map_err(build_error)?;
            client
                .update_time_to_live()
                .table_name(name)
                .time_to_live_specification(specification)
                .send()
                .await
                .map_err(|e| sdk_error("UpdateTimeToLive", e))?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_declares_what_the_code_uses() {
        for name in [
            PARTITION_KEY,
            SORT_KEY,
            CATALOG_INDEX,
            CATALOG_PARTITION_KEY,
            CATALOG_SORT_KEY,
            TTL_ATTRIBUTE,
        ] {
            assert!(CLOUDFORMATION_TABLE.contains(name), "{name}");
        }
    }

    #[test]
    fn tag_keys_sort_inside_their_range() {
        let longest = tag_sk(&"~".repeat(128));
        for tag in ["A", "_", "0", "a", "z", "zzzz", longest.as_str()] {
            let sk = if tag.starts_with(TAG_PREFIX) {
                tag.to_owned()
            } else {
                tag_sk(tag)
            };
            assert!(sk.as_str() > TAG_PREFIX && sk.as_str() < TAG_END, "{sk}");
        }
        assert!(manifest_sk("sha256:0") < part_sk("sha256:0", "g", 0));
        assert!(part_sk("sha256:0", "g", 9) < part_sk("sha256:0", "g", 10));
    }

    /// In a user's or a project's partition, the parent item and each kind of child have
    /// sort keys no prefix query of another kind matches; the catalog index keeps users,
    /// projects and repositories apart.
    #[test]
    fn account_keys_stay_apart() {
        let prefixes = [MEMBER_PREFIX, MEMBERSHIP_PREFIX, ROBOT_PREFIX];
        let keys = [
            (MEMBER_PREFIX, member_sk("META")),
            (MEMBERSHIP_PREFIX, membership_sk("meta")),
            (ROBOT_PREFIX, robot_sk("robot$p+MEMBER#x")),
        ];
        for (own, sk) in &keys {
            for prefix in prefixes {
                assert_eq!(sk.starts_with(prefix), prefix == *own, "{sk} and {prefix}");
            }
        }
        assert!(prefixes.iter().all(|prefix| !META.starts_with(prefix)));
        let listings = [CATALOG_PARTITION, USERS_PARTITION, PROJECTS_PARTITION];
        for (i, a) in listings.iter().enumerate() {
            assert!(listings[i + 1..].iter().all(|b| a != b));
        }
    }
}
