//! Where blobs and metadata live, chosen by configuration: embedded storage by default, S3 and
//! DynamoDB when `BERTH_BLOB_STORE=s3://...` and `BERTH_METADATA=dynamodb://...` say so.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use berth_core::gc::{GarbageIndex, GcHistory};
use berth_core::ports::{BlobStore, MetadataStore};
use berth_core::quota::QuotaStore;
use berth_core::retention::RetentionStore;
use berth_core::{
    AccountStore, AuditStore, Registry, RegistryError, ReplicationStore, Result, StatisticsStore,
    WebhookStore,
};

#[cfg(feature = "aws")]
use crate::aws::AwsConfig;

/// Stands in for the AWS configuration in a binary built without AWS engines.
#[cfg(not(feature = "aws"))]
#[derive(Debug, Default)]
pub(crate) struct AwsConfig {}

#[cfg(not(feature = "aws"))]
impl AwsConfig {
    /// Nothing to read: such a binary opens no AWS store.
    #[allow(clippy::unnecessary_wraps)]
    pub(crate) fn from_env() -> Result<Self> {
        Ok(Self {})
    }
}

/// Where blob bytes live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobLocation {
    /// The data directory's `blobs/` and `uploads/`.
    Local,
    /// An S3 bucket (AWS, MinIO, Garage...), optionally under a key prefix.
    S3 {
        bucket: String,
        prefix: Option<String>,
    },
}

impl FromStr for BlobLocation {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if matches!(text, "" | "local") {
            return Ok(Self::Local);
        }
        let rest = text.strip_prefix("s3://").ok_or_else(|| {
            format!("blob store {text:?} is neither \"local\" nor s3://bucket[/prefix]")
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("blob store {text:?} names no bucket"));
        }
        check_bucket_name(bucket).map_err(|problem| format!("blob store {text:?}: {problem}"))?;
        Ok(Self::S3 {
            bucket: bucket.to_owned(),
            prefix: (!prefix.is_empty()).then(|| prefix.to_owned()),
        })
    }
}

/// Where registry metadata lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataLocation {
    /// The data directory's embedded database.
    Local,
    /// One DynamoDB table.
    DynamoDb { table: String },
}

impl FromStr for MetadataLocation {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if matches!(text, "" | "local") {
            return Ok(Self::Local);
        }
        match text.strip_prefix("dynamodb://") {
            Some(table) if !table.is_empty() && !table.contains('/') => {
                check_table_name(table)
                    .map_err(|problem| format!("metadata store {text:?}: {problem}"))?;
                Ok(Self::DynamoDb {
                    table: table.to_owned(),
                })
            }
            _ => Err(format!(
                "metadata store {text:?} is neither \"local\" nor dynamodb://table"
            )),
        }
    }
}

/// S3's rules for a bucket name: 3 to 63 lowercase letters, digits, dots and hyphens,
/// starting and ending with a letter or digit, not shaped like an IP address.
fn check_bucket_name(bucket: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-';
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !(3..=63).contains(&bucket.len())
        || !bucket.chars().all(allowed)
        || !edge(bucket.chars().next())
        || !edge(bucket.chars().last())
        || bucket.contains("..")
        || bucket.parse::<std::net::Ipv4Addr>().is_ok()
    {
        return Err(format!(
            "{bucket:?} is not an S3 bucket name (3 to 63 lowercase letters, digits, dots and \
             hyphens, starting and ending with a letter or digit)"
        ));
    }
    Ok(())
}

/// DynamoDB's rules for a table name: 3 to 255 letters, digits, `_`, `-` and `.`.
fn check_table_name(table: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_-.".contains(c);
    if !(3..=255).contains(&table.len()) || !table.chars().all(allowed) {
        return Err(format!(
            "{table:?} is not a DynamoDB table name (3 to 255 letters, digits, _, - and .)"
        ));
    }
    Ok(())
}

/// S3 settings beyond the bucket: the `AWS_*` variables (credentials, region,
/// `AWS_ENDPOINT_URL_S3`) are read by the SDK itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Options {
    /// Address buckets in the path, as MinIO and Garage expect.
    pub force_path_style: bool,
    /// Answer blob GETs with a presigned URL (307) instead of streaming the bytes.
    pub redirect: bool,
    /// How long a presigned URL stays valid.
    pub presign_expiry: Duration,
}

impl Default for S3Options {
    fn default() -> Self {
        Self {
            force_path_style: false,
            redirect: true,
            presign_expiry: Duration::from_secs(20 * 60),
        }
    }
}

/// The embedded stores a configuration uses, each `None` when it uses another.
type LocalParts = (Option<Arc<dyn BlobStore>>, Option<MetadataParts>);

/// One metadata adapter seen through both of its ports: registry metadata and accounts live
/// together (one redb database, or one DynamoDB table).
type MetadataParts = (
    Arc<dyn MetadataStore>,
    Arc<dyn AccountStore>,
    Arc<dyn ReplicationStore>,
    Option<Arc<dyn AuditStore>>,
    Option<Arc<dyn StatisticsStore>>,
    Option<Arc<dyn WebhookStore>>,
    Option<GarbageParts>,
    Option<Arc<dyn QuotaStore>>,
    Option<Arc<dyn RetentionStore>>,
);

/// Garbage collection's blob index and run history, for a metadata adapter that keeps them.
pub type GarbageParts = (Arc<dyn GarbageIndex>, Arc<dyn GcHistory>);

/// The storage of one registry process.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    pub blobs: BlobLocation,
    pub metadata: MetadataLocation,
    pub s3: S3Options,
}

/// The opened stores of one registry process, before a [`Registry`] is built over them.
#[derive(Clone)]
pub struct Stores {
    pub blobs: Arc<dyn BlobStore>,
    pub metadata: Arc<dyn MetadataStore>,
    pub accounts: Arc<dyn AccountStore>,
    pub replication: Arc<dyn ReplicationStore>,
    /// Where the audit log is kept, when this storage keeps one.
    pub audit: Option<Arc<dyn AuditStore>>,
    /// Where pulls and pushes are counted, when this storage counts them.
    pub statistics: Option<Arc<dyn StatisticsStore>>,
    /// Where webhook policies and deliveries are kept.
    pub webhooks: Option<Arc<dyn WebhookStore>>,
    /// Garbage collection's blob index and runs, when this storage keeps them.
    pub garbage: Option<GarbageParts>,
    /// Project storage limits and usage, when this storage keeps them.
    pub quotas: Option<Arc<dyn QuotaStore>>,
    /// Tag retention's policies and runs, when this storage keeps them.
    pub retention: Option<Arc<dyn RetentionStore>>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").finish_non_exhaustive()
    }
}

impl Stores {
    pub fn registry(&self) -> Arc<Registry> {
        Arc::new(self.registry_with(|registry| registry))
    }

    /// Garbage collection over these stores, publishing to `events`, when the storage keeps
    /// a garbage index; its runner started in the background of this process (it resumes a
    /// run a restart cut short).
    pub fn start_gc(
        &self,
        events: Arc<dyn berth_core::EventSink>,
        grace: Duration,
    ) -> Option<Arc<berth_app::GarbageCollection>> {
        let gc = self.garbage_collection(events, grace, berth_app::gc::STEP_BUDGET)?;
        berth_app::GcRunner::spawn(gc.clone());
        Some(gc)
    }

    /// Garbage collection over these stores, publishing to `events`, when the storage keeps
    /// a garbage index; nothing runs in the background (a Lambda function's, whose runs the
    /// `gc` function carries out).
    pub fn garbage_collection(
        &self,
        events: Arc<dyn berth_core::EventSink>,
        grace: Duration,
        step_size: usize,
    ) -> Option<Arc<berth_app::GarbageCollection>> {
        let (index, history) = self.garbage.clone()?;
        let collector =
            berth_core::gc::Collector::new(self.metadata.clone(), index, self.blobs.clone())
                .with_events(events.clone());
        Some(Arc::new(
            berth_app::GarbageCollection::new(collector, history, grace)
                .with_events(events)
                .with_step_budget(step_size),
        ))
    }

    /// Tag retention over these stores, deleting through `registry` (which publishes the
    /// deletions), its runs' ends published to `events`, when the storage keeps retention
    /// records; nothing runs in the background (see [`Self::start_retention`]).
    pub fn retention(
        &self,
        registry: Arc<Registry>,
        events: Arc<dyn berth_core::EventSink>,
    ) -> Option<Arc<berth_app::Retention>> {
        let store = self.retention.clone()?;
        let retention = berth_app::Retention::new(store, self.metadata.clone(), registry)
            .with_events(events)
            .with_immutability(Arc::new(berth_app::immutable::ProjectRules::new(
                self.accounts.clone(),
            )));
        Some(Arc::new(match &self.statistics {
            Some(statistics) => retention.with_statistics(statistics.clone()),
            None => retention,
        }))
    }

    /// [`Self::retention`], its runner started in the background of this process (it
    /// resumes a run a restart cut short, and starts the scheduled ones).
    pub fn start_retention(
        &self,
        registry: Arc<Registry>,
        events: Arc<dyn berth_core::EventSink>,
    ) -> Option<Arc<berth_app::Retention>> {
        let retention = self.retention(registry, events)?;
        berth_app::RetentionRunner::spawn(retention.clone());
        Some(retention)
    }

    /// The registry over these stores (claiming blobs in the garbage index when there is
    /// one, enforcing the projects' tag immutability rules, checking blobs against project
    /// quotas when they are kept), as `configure` finishes it.
    pub fn registry_with(&self, configure: impl FnOnce(Registry) -> Registry) -> Registry {
        let registry = Registry::new(self.blobs.clone(), self.metadata.clone())
            .with_immutable_tags(self.accounts.clone());
        let registry = match &self.garbage {
            Some((index, _)) => registry.with_garbage_index(index.clone()),
            None => registry,
        };
        let registry = match &self.quotas {
            Some(quotas) => registry.with_quotas(quotas.clone()),
            None => registry,
        };
        configure(registry)
    }
}

impl StorageConfig {
    /// Embedded storage under `data_dir`.
    pub fn local(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            blobs: BlobLocation::Local,
            metadata: MetadataLocation::Local,
            s3: S3Options::default(),
        }
    }

    /// Opens the configured stores (making no request to a cloud service) and the registry
    /// over them.
    pub async fn open(&self) -> Result<Arc<Registry>> {
        Ok(self.open_stores().await?.registry())
    }

    /// Opens the configured stores, making no request to a cloud service.
    pub async fn open_stores(&self) -> Result<Stores> {
        self.open_stores_with(&AwsConfig::from_env()?).await
    }

    /// [`Self::open_stores`] with the process's AWS configuration, which other clients of
    /// the process (queues, keys) are built from too.
    pub(crate) async fn open_stores_with(&self, aws: &AwsConfig) -> Result<Stores> {
        let (local_blobs, local_meta) = self.open_local_parts()?;
        let blobs: Arc<dyn BlobStore> = match &self.blobs {
            BlobLocation::Local => local_blobs.ok_or_else(missing_local)?,
            BlobLocation::S3 { bucket, prefix } => self.open_s3(aws, bucket, prefix).await?,
        };
        let (
            metadata,
            accounts,
            replication,
            audit,
            statistics,
            webhooks,
            garbage,
            quotas,
            retention,
        ) = match &self.metadata {
            MetadataLocation::Local => local_meta.ok_or_else(missing_local)?,
            MetadataLocation::DynamoDb { table } => open_dynamodb(aws, table).await?,
        };
        tracing::info!(blobs = ?self.blobs, metadata = ?self.metadata, "storage opened");
        Ok(Stores {
            blobs,
            metadata,
            accounts,
            replication,
            audit,
            statistics,
            webhooks,
            garbage,
            quotas,
            retention,
        })
    }

    /// Creates what the configured storage needs before first use: the data directory, and
    /// the DynamoDB table (idempotently, with the schema the SAM template declares).
    pub async fn init(&self) -> Result<()> {
        self.open_local_parts()?;
        if let MetadataLocation::DynamoDb { table } = &self.metadata {
            create_dynamodb_table(&AwsConfig::from_env()?, table).await?;
        }
        Ok(())
    }

    /// The embedded stores this configuration uses, opened (each `None` when not used).
    #[cfg(feature = "local")]
    fn open_local_parts(&self) -> Result<LocalParts> {
        let wants_blobs = self.blobs == BlobLocation::Local;
        let wants_meta = self.metadata == MetadataLocation::Local;
        if !wants_blobs && !wants_meta {
            return Ok((None, None));
        }
        std::fs::create_dir_all(&self.data_dir).map_err(|e| {
            RegistryError::internal(format!(
                "cannot create data directory {}: {e}",
                self.data_dir.display()
            ))
        })?;
        let blobs = wants_blobs
            .then(|| berth_store_local::FsBlobStore::open(&self.data_dir))
            .transpose()?;
        let meta = wants_meta
            .then(|| {
                berth_store_local::RedbMetadataStore::open(
                    self.data_dir.join(berth_store_local::METADATA_FILE),
                )
            })
            .transpose()?;
        Ok((
            blobs.map(|b| Arc::new(b) as Arc<dyn BlobStore>),
            meta.map(|m| {
                let m = Arc::new(m);
                (
                    m.clone() as Arc<dyn MetadataStore>,
                    m.clone() as Arc<dyn AccountStore>,
                    m.clone() as Arc<dyn ReplicationStore>,
                    Some(m.clone() as Arc<dyn AuditStore>),
                    Some(m.clone() as Arc<dyn StatisticsStore>),
                    Some(m.clone() as Arc<dyn WebhookStore>),
                    Some((
                        m.clone() as Arc<dyn GarbageIndex>,
                        m.clone() as Arc<dyn GcHistory>,
                    )),
                    Some(m.clone() as Arc<dyn QuotaStore>),
                    Some(m as Arc<dyn RetentionStore>),
                )
            }),
        ))
    }

    #[cfg(not(feature = "local"))]
    fn open_local_parts(&self) -> Result<LocalParts> {
        if self.blobs == BlobLocation::Local || self.metadata == MetadataLocation::Local {
            return Err(not_built_in("embedded storage", "local"));
        }
        Ok((None, None))
    }

    #[cfg(feature = "aws")]
    async fn open_s3(
        &self,
        aws: &AwsConfig,
        bucket: &str,
        prefix: &Option<String>,
    ) -> Result<Arc<dyn BlobStore>> {
        let mut config = berth_store_s3::S3Config::new(bucket);
        config.prefix.clone_from(prefix);
        config.force_path_style = self.s3.force_path_style;
        config.redirect = self.s3.redirect;
        config.presign_expiry = self.s3.presign_expiry;
        Ok(Arc::new(berth_store_s3::S3BlobStore::new(
            aws.s3().await,
            config,
        )?))
    }

    #[cfg(not(feature = "aws"))]
    async fn open_s3(
        &self,
        _: &AwsConfig,
        _: &str,
        _: &Option<String>,
    ) -> Result<Arc<dyn BlobStore>> {
        Err(not_built_in("the S3 blob store", "aws"))
    }
}

#[cfg(feature = "aws")]
async fn open_dynamodb(aws: &AwsConfig, table: &str) -> Result<MetadataParts> {
    let store = Arc::new(berth_meta_dynamodb::DynamoMetadataStore::new(
        aws.dynamodb().await,
        table,
    ));
    Ok((
        store.clone() as Arc<dyn MetadataStore>,
        store.clone() as Arc<dyn AccountStore>,
        store.clone() as Arc<dyn ReplicationStore>,
        Some(store.clone() as Arc<dyn AuditStore>),
        Some(store.clone() as Arc<dyn StatisticsStore>),
        Some(store.clone() as Arc<dyn WebhookStore>),
        Some((
            store.clone() as Arc<dyn GarbageIndex>,
            store.clone() as Arc<dyn GcHistory>,
        )),
        Some(store.clone() as Arc<dyn QuotaStore>),
        Some(store as Arc<dyn RetentionStore>),
    ))
}

#[cfg(not(feature = "aws"))]
async fn open_dynamodb(_: &AwsConfig, _: &str) -> Result<MetadataParts> {
    Err(not_built_in("the DynamoDB metadata store", "aws"))
}

/// Creates the table if it is missing, and counts the blob references of a table written
/// before garbage collection and the quota charges of one written before quotas (instant on
/// a new table).
#[cfg(feature = "aws")]
async fn create_dynamodb_table(aws: &AwsConfig, table: &str) -> Result<()> {
    let client = aws.dynamodb().await;
    berth_meta_dynamodb::create_table(&client, table).await?;
    let store = berth_meta_dynamodb::DynamoMetadataStore::new(client, table);
    if !store.references_counted().await? {
        let records = store
            .count_blob_references(berth_core::gc::now_ms())
            .await?;
        tracing::info!(
            table,
            records,
            "counted the references of every blob: garbage collection may run"
        );
    }
    if !store.quota_charges_counted().await? {
        let charges = store.count_quota_charges().await?;
        tracing::info!(table, charges, "counted every project's storage usage");
    }
    Ok(())
}

#[cfg(not(feature = "aws"))]
async fn create_dynamodb_table(_: &AwsConfig, _: &str) -> Result<()> {
    Err(not_built_in("the DynamoDB metadata store", "aws"))
}

/// A storage engine this binary was built without.
#[cfg(not(all(feature = "local", feature = "aws")))]
fn not_built_in(engine: &str, feature: &str) -> RegistryError {
    RegistryError::internal(format!(
        "{engine} is not built into this binary (berth-runtime feature `{feature}`)"
    ))
}

fn missing_local() -> RegistryError {
    RegistryError::internal("local storage was not opened")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_locations() {
        assert_eq!("local".parse(), Ok(BlobLocation::Local));
        assert_eq!(
            "s3://images".parse(),
            Ok(BlobLocation::S3 {
                bucket: "images".into(),
                prefix: None
            })
        );
        assert_eq!(
            "s3://images/berth/prod".parse(),
            Ok(BlobLocation::S3 {
                bucket: "images".into(),
                prefix: Some("berth/prod".into())
            })
        );
        for bad in [
            "s3://",
            "s3:///x",
            "file:///tmp",
            "images",
            "s3://ab",
            "s3://Images",
            "s3://images_1",
            "s3://-images",
            "s3://images.",
            "s3://192.168.0.1",
            "s3://a..b",
        ] {
            assert!(bad.parse::<BlobLocation>().is_err(), "{bad}");
        }
    }

    #[test]
    fn metadata_locations() {
        assert_eq!("local".parse(), Ok(MetadataLocation::Local));
        assert_eq!(
            "dynamodb://berth".parse(),
            Ok(MetadataLocation::DynamoDb {
                table: "berth".into()
            })
        );
        assert!(
            "dynamodb://Berth_table-1.v2"
                .parse::<MetadataLocation>()
                .is_ok()
        );
        for bad in [
            "dynamodb://",
            "dynamodb://a/b",
            "redis://x",
            "dynamodb://tr",
            "dynamodb://berth table",
            "dynamodb://berth:prod",
        ] {
            assert!(bad.parse::<MetadataLocation>().is_err(), "{bad}");
        }
    }
}
