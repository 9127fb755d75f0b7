//! The one router builder: what a process serves (the registry, the token endpoint and the
//! management API, the replication API), each part optional, and where its events go.

use std::sync::Arc;

use berth_app::{Accounts, GarbageCollection, Retention};
use berth_core::ports::MetadataStore;
use berth_core::quota::QuotaStore;
use berth_core::{AccountStore, AuditStore, EventSink, Registry, StatisticsStore, WebhookStore};
use berth_http::{ManagementApi, Router, Settings, TokenEndpoint, api_router_with, token_router};

use crate::auth::Auth;

/// The parts of one router; [`Routes::build`] puts them together.
#[must_use]
#[derive(Default)]
pub struct Routes<'a> {
    registry: Option<(Arc<Registry>, Settings)>,
    accounts: Option<AccountParts<'a>>,
    #[cfg(feature = "replication")]
    replication: Option<ReplicationApiMaker<'a>>,
    events: Option<Arc<dyn EventSink>>,
    audit: Option<Arc<dyn AuditStore>>,
    statistics: Option<Arc<dyn StatisticsStore>>,
    quotas: Option<Arc<dyn QuotaStore>>,
    webhooks: Option<Arc<dyn WebhookStore>>,
    gc: Option<Arc<GarbageCollection>>,
    retention: Option<Arc<Retention>>,
}

/// What the token endpoint and the management API are built from.
type AccountParts<'a> = (&'a Auth, Arc<dyn AccountStore>, Arc<dyn MetadataStore>);

/// Makes the replication API given the management API its callers sign in with (`None`
/// without auth).
#[cfg(feature = "replication")]
type ReplicationApiMaker<'a> =
    Box<dyn FnOnce(Option<Arc<ManagementApi>>) -> berth_http::replication::ReplicationApi + 'a>;

impl std::fmt::Debug for Routes<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes")
            .field("registry", &self.registry.is_some())
            .field("accounts", &self.accounts.is_some())
            .field("events", &self.events.is_some())
            .finish_non_exhaustive()
    }
}

impl<'a> Routes<'a> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The registry under `/v2/`, as `settings` say. With [`Routes::accounts`], it checks
    /// the tokens that auth signs unless `settings` name another check.
    pub fn registry(mut self, registry: Arc<Registry>, settings: Settings) -> Self {
        self.registry = Some((registry, settings));
        self
    }

    /// The token endpoint and the management API over `accounts`, signing with `auth`.
    pub fn accounts(
        mut self,
        auth: &'a Auth,
        accounts: Arc<dyn AccountStore>,
        metadata: Arc<dyn MetadataStore>,
    ) -> Self {
        self.accounts = Some((auth, accounts, metadata));
        self
    }

    /// The replication API, under the management API's prefix.
    #[cfg(feature = "replication")]
    pub fn replication(
        mut self,
        api: impl FnOnce(Option<Arc<ManagementApi>>) -> berth_http::replication::ReplicationApi + 'a,
    ) -> Self {
        self.replication = Some(Box::new(api));
        self
    }

    /// Where sign-ins and account changes are published (the registry publishes to what
    /// it was built with).
    pub fn events(mut self, events: Arc<dyn EventSink>) -> Self {
        self.events = Some(events);
        self
    }

    /// Where the management API reads the audit log from.
    pub fn audit(mut self, audit: Option<Arc<dyn AuditStore>>) -> Self {
        self.audit = audit;
        self
    }

    /// Where the management API reads pull and push counts from.
    pub fn statistics(mut self, statistics: Option<Arc<dyn StatisticsStore>>) -> Self {
        self.statistics = statistics;
        self
    }

    /// Where the management API keeps project storage limits and reads their usage.
    pub fn quotas(mut self, quotas: Option<Arc<dyn QuotaStore>>) -> Self {
        self.quotas = quotas;
        self
    }

    /// Where the management API keeps webhook policies.
    pub fn webhooks(mut self, webhooks: Option<Arc<dyn WebhookStore>>) -> Self {
        self.webhooks = webhooks;
        self
    }

    /// Garbage collection, served under `/system/gc` by the management API.
    pub fn gc(mut self, gc: Option<Arc<GarbageCollection>>) -> Self {
        self.gc = gc;
        self
    }

    /// Tag retention, served under `/retentions` by the management API.
    pub fn retention(mut self, retention: Option<Arc<Retention>>) -> Self {
        self.retention = retention;
        self
    }

    pub fn build(self) -> Router {
        let mut router = Router::new();
        let management = self.accounts.as_ref().map(|(auth, accounts, metadata)| {
            let accounts = Accounts::new(
                accounts.clone(),
                metadata.clone(),
                auth.tokens.clone(),
                auth.config.accounts,
            );
            let accounts = match &self.events {
                Some(events) => accounts.with_events(events.clone()),
                None => accounts,
            };
            let accounts = match &self.audit {
                Some(audit) => accounts.with_audit(audit.clone()),
                None => accounts,
            };
            let accounts = match &self.statistics {
                Some(statistics) => accounts.with_statistics(statistics.clone()),
                None => accounts,
            };
            let accounts = match &self.quotas {
                Some(quotas) => accounts.with_quotas(quotas.clone()),
                None => accounts,
            };
            let api = ManagementApi::new(match &self.webhooks {
                Some(webhooks) => accounts.with_webhooks(webhooks.clone()),
                None => accounts,
            });
            let api = match &self.gc {
                Some(gc) => api.with_gc(gc.clone()),
                None => api,
            };
            Arc::new(match &self.retention {
                Some(retention) => api.with_retention(retention.clone()),
                None => api,
            })
        });
        if let Some((auth, ..)) = &self.accounts {
            let endpoint = TokenEndpoint::new(auth.tokens.clone(), &auth.config.service);
            let endpoint = match &self.events {
                Some(events) => endpoint.with_events(events.clone()),
                None => endpoint,
            };
            router = router.merge(token_router(Arc::new(endpoint)));
        }
        #[cfg(feature = "replication")]
        let extra = match self.replication {
            Some(make) => {
                let api = Arc::new(make(management.clone()));
                if management.is_none() {
                    router = router.merge(berth_http::replication::replication_router(api));
                    Router::new()
                } else {
                    berth_http::replication::replication_routes(api)
                }
            }
            None => Router::new(),
        };
        #[cfg(not(feature = "replication"))]
        let extra = Router::new();
        if let Some(management) = management {
            router = router.merge(api_router_with(management, extra));
        }
        if let Some((registry, mut settings)) = self.registry {
            if let Some((auth, ..)) = &self.accounts
                && settings.auth.is_none()
                && settings.upload_front.is_none()
            {
                settings.auth = Some(auth.registry.clone());
            }
            router = router.merge(berth_http::router(registry, settings));
        }
        router
    }
}
