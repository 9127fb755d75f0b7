//! The replication API, in the shape of Harbor's `/api/v2.0`: registry endpoints, replication
//! policies, executions and their tasks. Only system administrators may use it (everyone when
//! the registry runs without authentication).
//!
//! | endpoint | does |
//! |---|---|
//! | `GET`, `POST /registries`; `GET`, `PUT`, `DELETE /registries/{id}` | remote endpoints; the secret is sealed and never answered |
//! | `POST /registries/ping` | `{"id": N}` or an unsaved endpoint: reachable? credentials accepted? |
//! | `GET`, `POST /replication/policies`; `GET`, `PUT`, `DELETE /replication/policies/{id}` | policies |
//! | `GET /replication/executions?policy_id=`, `POST /replication/executions` | list, start by hand |
//! | `GET /replication/executions/{id}`, `PUT /replication/executions/{id}` | status and counts; stop |
//! | `GET /replication/executions/{id}/tasks`, `GET .../tasks/{task}/log` | per-artifact status and errors |
//! | `GET /replication/deadletters` | jobs that failed every attempt (in AWS: the dead-letter queue) |

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::routing::{get, post};
use berth_auth::rfc3339;
use berth_core::replication::{
    Direction, Execution, Filter, FilterKind, IdKind, Operation, Policy, RegistryEndpoint,
    SealedCredential, Task, TaskStatus, Trigger, TriggerKind,
};
use berth_core::{ErrorCode, RegistryError, Result};
use berth_replication::engine::{DeadLetters, ExecutionView, Replicator, unix_now};
use berth_replication::remote::{RemoteConfig, RemoteRegistry};
use berth_replication::{rules, schedule};
use http::StatusCode;
use http::request::Parts;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Router;
use crate::api::{
    API_PREFIX, ManagementApi, Reply, bad_request, created, json_reply, not_found, ok, page,
    query_value, read_json,
};

/// What the replication API works on.
#[derive(Clone)]
pub struct ReplicationApi {
    replicator: Arc<Replicator>,
    dead_letters: Option<Arc<dyn DeadLetters>>,
    /// Who may call: `None` when the registry runs without authentication.
    accounts: Option<Arc<ManagementApi>>,
}

impl ReplicationApi {
    pub fn new(replicator: Arc<Replicator>, accounts: Option<Arc<ManagementApi>>) -> Self {
        Self {
            replicator,
            dead_letters: None,
            accounts,
        }
    }

    /// Serves `GET /replication/deadletters` from `dead_letters`.
    pub fn with_dead_letters(mut self, dead_letters: Arc<dyn DeadLetters>) -> Self {
        self.dead_letters = Some(dead_letters);
        self
    }

    async fn admit(&self, parts: &Parts) -> Result<()> {
        match &self.accounts {
            Some(api) => api.admin_caller(parts).await.map(drop),
            None => Ok(()),
        }
    }
}

impl std::fmt::Debug for ReplicationApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicationApi").finish_non_exhaustive()
    }
}

type Api = State<Arc<ReplicationApi>>;

/// The replication API alone, under [`API_PREFIX`] (a registry without authentication has
/// no management API to share the prefix with).
pub fn replication_router(api: Arc<ReplicationApi>) -> Router {
    let routes = replication_routes(api).fallback(crate::api::unknown_endpoint);
    Router::new()
        .nest(API_PREFIX, routes)
        .layer(axum::middleware::from_fn(crate::access_log))
}

/// The replication routes relative to [`API_PREFIX`], for
/// [`api_router_with`](crate::api::api_router_with).
pub fn replication_routes(api: Arc<ReplicationApi>) -> Router {
    Router::new()
        .route("/registries", get(list_registries).post(create_registry))
        .route("/registries/ping", post(ping_registry))
        .route(
            "/registries/{id}",
            get(get_registry)
                .put(update_registry)
                .delete(delete_registry),
        )
        .route(
            "/replication/policies",
            get(list_policies).post(create_policy),
        )
        .route(
            "/replication/policies/{id}",
            get(get_policy).put(update_policy).delete(delete_policy),
        )
        .route(
            "/replication/executions",
            get(list_executions).post(start_execution),
        )
        .route(
            "/replication/executions/{id}",
            get(get_execution).put(stop_execution),
        )
        .route("/replication/executions/{id}/tasks", get(list_tasks))
        .route("/replication/deadletters", get(list_dead_letters))
        .route(
            "/replication/executions/{id}/tasks/{task}/log",
            get(task_log),
        )
        .method_not_allowed_fallback(crate::token::method_not_allowed)
        .with_state(api)
}

/// `name`, trimmed, if it is 1 to 128 characters long and no other `kind` (by id) has it.
fn unique_name<'a>(
    kind: &str,
    name: &str,
    own_id: u64,
    others: impl IntoIterator<Item = (u64, &'a str)>,
) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 128 {
        return Err(bad_request(format!(
            "the {kind} name must be 1 to 128 characters"
        )));
    }
    if others
        .into_iter()
        .any(|(id, other)| other == name && id != own_id)
    {
        return Err(RegistryError::new(
            ErrorCode::Conflict,
            format!("a {kind} named {name:?} exists"),
        ));
    }
    Ok(name.to_owned())
}

/// An endpoint with nothing set yet, for the given fields to fill.
fn blank_registry(now: u64) -> RegistryEndpoint {
    RegistryEndpoint {
        id: 0,
        name: String::new(),
        description: String::new(),
        url: String::new(),
        kind: "docker-registry".to_owned(),
        insecure: false,
        credential: None,
        created: now,
        updated: now,
    }
}

fn number(text: &str, what: &str) -> Result<u64> {
    text.parse()
        .map_err(|_| bad_request(format!("{what} {text:?} is not a number")))
}

// --- registries ----------------------------------------------------------------------------

/// Harbor's credential object.
#[derive(Debug, Deserialize)]
struct CredentialField {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    access_key: Option<String>,
    #[serde(default)]
    access_secret: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RegistryFields {
    name: Option<String>,
    description: Option<String>,
    url: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    insecure: Option<bool>,
    credential: Option<CredentialField>,
    // Harbor's update body names the credential fields flat.
    access_key: Option<String>,
    access_secret: Option<String>,
    credential_type: Option<String>,
    id: Option<u64>,
}

const REGISTRY_KINDS: &[&str] = &["docker-registry", "harbor", "berth"];

fn registry_json(registry: &RegistryEndpoint) -> Value {
    let credential = registry.credential.as_ref().map_or_else(
        || json!({"type": "basic", "access_key": "", "access_secret": ""}),
        |c| json!({"type": "basic", "access_key": c.access_key, "access_secret": "*****"}),
    );
    json!({
        "id": registry.id,
        "name": registry.name,
        "description": registry.description,
        "url": registry.url,
        "type": registry.kind,
        "insecure": registry.insecure,
        "credential": credential,
        "creation_time": rfc3339(registry.created),
        "update_time": rfc3339(registry.updated),
    })
}

async fn existing_registry(api: &ReplicationApi, id: &str) -> Result<RegistryEndpoint> {
    let id = number(id, "registry id")?;
    api.replicator
        .store()
        .registry(id)
        .await?
        .ok_or_else(|| not_found(&format!("registry {id}")))
}

/// Applies the fields given to `registry`, checking them.
async fn apply_registry(
    api: &ReplicationApi,
    registry: &mut RegistryEndpoint,
    fields: RegistryFields,
) -> Result<()> {
    if let Some(name) = fields.name {
        let others = api.replicator.store().registries().await?;
        registry.name = unique_name(
            "registry",
            &name,
            registry.id,
            others.iter().map(|r| (r.id, r.name.as_str())),
        )?;
    }
    if let Some(description) = fields.description {
        registry.description = description;
    }
    if let Some(url) = fields.url {
        let url = url.trim().trim_end_matches('/').to_owned();
        // The client checks the scheme, host and the absence of a path.
        RemoteRegistry::new(RemoteConfig {
            url: url.clone(),
            insecure: false,
            credential: None,
        })
        .map_err(|e| bad_request(format!("url: {e}")))?;
        registry.url = url;
    }
    if let Some(kind) = fields.kind {
        if !REGISTRY_KINDS.contains(&kind.as_str()) {
            return Err(bad_request(format!(
                "type {kind:?} is not one of {}",
                REGISTRY_KINDS.join(", ")
            )));
        }
        registry.kind = kind;
    }
    if let Some(insecure) = fields.insecure {
        registry.insecure = insecure;
    }
    let (kind, key, secret) = match fields.credential {
        Some(c) => (c.kind, c.access_key, c.access_secret),
        None => (
            fields.credential_type,
            fields.access_key,
            fields.access_secret,
        ),
    };
    if let Some(kind) = kind.filter(|k| !k.is_empty() && k != "basic") {
        return Err(bad_request(format!(
            "credential type {kind:?} is not supported: use \"basic\""
        )));
    }
    match (key, secret) {
        (Some(key), _) if key.is_empty() => registry.credential = None,
        (Some(key), Some(secret)) => {
            registry.credential = Some(SealedCredential {
                access_key: key,
                sealed_secret: api.replicator.secrets().seal(&secret).await?,
            });
        }
        (Some(key), None) => match &mut registry.credential {
            Some(existing) => existing.access_key = key,
            None => return Err(bad_request("access_secret is required with access_key")),
        },
        (None, Some(secret)) => match &mut registry.credential {
            Some(existing) => {
                existing.sealed_secret = api.replicator.secrets().seal(&secret).await?;
            }
            None => return Err(bad_request("access_key is required with access_secret")),
        },
        (None, None) => {}
    }
    Ok(())
}

async fn create_registry(State(api): Api, request: Request) -> Reply {
    let (parts, body) = request.into_parts();
    api.admit(&parts).await?;
    let fields: RegistryFields = read_json(body).await?;
    if fields.name.is_none() || fields.url.is_none() {
        return Err(bad_request("name and url are required").into());
    }
    let now = unix_now();
    let mut registry = blank_registry(now);
    apply_registry(&api, &mut registry, fields).await?;
    registry.id = api.replicator.store().next_id(IdKind::Registry).await?;
    api.replicator.store().put_registry(&registry).await?;
    tracing::info!(registry = registry.id, url = %registry.url, "registry endpoint created");
    created(
        &format!("/registries/{}", registry.id),
        Some(&registry_json(&registry)),
    )
}

async fn list_registries(State(api): Api, request: Request) -> Reply {
    let (parts, _) = request.into_parts();
    api.admit(&parts).await?;
    let (page, size) = page(parts.uri.query())?;
    let wanted = query_value(&parts, "name");
    let registries: Vec<Value> = api
        .replicator
        .store()
        .registries()
        .await?
        .iter()
        .filter(|r| {
            wanted
                .as_ref()
                .is_none_or(|name| r.name.contains(name.as_str()))
        })
        .skip((page - 1) * size)
        .take(size)
        .map(registry_json)
        .collect();
    json_reply(StatusCode::OK, &Value::Array(registries))
}

async fn get_registry(State(api): Api, Path(id): Path<String>, request: Request) -> Reply {
    let (parts, _) = request.into_parts();
    api.admit(&parts).await?;
    json_reply(
        StatusCode::OK,
        &registry_json(&existing_registry(&api, &id).await?),
    )
}

async fn update_registry(State(api): Api, Path(id): Path<String>, request: Request) -> Reply {
    let (parts, body) = request.into_parts();
    api.admit(&parts).await?;
    let mut registry = existing_registry(&api, &id).await?;
    let fields: RegistryFields = read_json(body).await?;
    apply_registry(&api, &mut registry, fields).await?;
    registry.updated = unix_now();
    api.replicator.store().put_registry(&registry).await?;
    ok()
}

async fn delete_registry(State(api): Api, Path(id): Path<String>, request: Request) -> Reply {
    let (parts, _) = request.into_parts();
    api.admit(&parts).await?;
    let registry = existing_registry(&api, &id).await?;
    let users: Vec<String> = api
        .replicator
        .store()
        .policies()
        .await?
        .into_iter()
        .filter(|p| p.remote == registry.id)
        .map(|p| p.name)
        .collect();
    if !users.is_empty() {
        return Err(RegistryError::new(
            ErrorCode::PreconditionFailed,
            format!(
                "registry {} is used by policies {}: delete or change them first",
                registry.id,
                users.join(", ")
            ),
        )
        .into());
    }
    api.replicator.store().delete_registry(registry.id).await?;
    ok()
}

async fn ping_registry(State(api): Api, request: Request) -> Reply {
    let (parts, body) = request.into_parts();
    api.admit(&parts).await?;
    let fields: RegistryFields = read_json(body).await?;
    let registry = match fields.id {
        Some(id) => {
            let mut registry = existing_registry(&api, &id.to_string()).await?;
            // Fields given next to the id are tried instead of the stored ones.
            let fields = RegistryFields { id: None, ..fields };
            apply_registry(
                &api,
                &mut registry,
                RegistryFields {
                    name: None,
                    ..fields
                },
            )
            .await?;
            registry
        }
        None => {
            let mut registry = blank_registry(0);
            if fields.url.is_none() {
                return Err(bad_request("give the id of a registry, or its url").into());
            }
            apply_registry(
                &api,
                &mut registry,
                RegistryFields {
                    name: None,
                    ..fields
                },
            )
            .await?;
            registry
        }
    };
    let ping = api.replicator.ping(&registry).await?;
    let healthy = ping.reachable && ping.authenticated;
    let body = json!({
        "status": if healthy { "healthy" } else { "unhealthy" },
        "reachable": ping.reachable,
        "authenticated": ping.authenticated,
        "message": ping.message,
    });
    if healthy {
        return json_reply(StatusCode::OK, &body);
    }
    let error = RegistryError::new(ErrorCode::BadRequest, ping.message.clone()).with_detail(body);
    Err(error.into())
}

// --- policies ------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct RegistryRef {
    #[serde(default)]
    id: u64,
}

#[derive(Debug, Deserialize)]
struct TriggerField {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    trigger_settings: Option<TriggerSettings>,
}

#[derive(Debug, Deserialize)]
struct TriggerSettings {
    #[serde(default)]
    cron: String,
}

#[derive(Debug, Deserialize)]
struct FilterField {
    #[serde(rename = "type")]
    kind: String,
    value: Value,
    #[serde(default)]
    decoration: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PolicyFields {
    name: Option<String>,
    description: Option<String>,
    src_registry: Option<RegistryRef>,
    dest_registry: Option<RegistryRef>,
    dest_namespace: Option<String>,
    dest_namespace_replace_count: Option<i8>,
    trigger: Option<TriggerField>,
    filters: Option<Vec<FilterField>>,
    replicate_deletion: Option<bool>,
    #[serde(rename = "override")]
    overwrite: Option<bool>,
    enabled: Option<bool>,
}

fn trigger_json(trigger: &Trigger) -> Value {
    match trigger {
        Trigger::Manual => json!({"type": "manual", "trigger_settings": {"cron": ""}}),
        Trigger::EventBased => json!({"type": "event_based", "trigger_settings": {"cron": ""}}),
        Trigger::Scheduled { cron } => {
            json!({"type": "scheduled", "trigger_settings": {"cron": cron}})
        }
    }
}

async fn policy_json(api: &ReplicationApi, policy: &Policy) -> Result<Value> {
    let remote = api
        .replicator
        .store()
        .registry(policy.remote)
        .await?
        .map_or(Value::Null, |r| registry_json(&r));
    let local = json!({"id": 0, "name": "Local", "type": "berth"});
    let (source, destination) = match policy.direction {
        Direction::Push => (local, remote),
        Direction::Pull => (remote, local),
    };
    let filters: Vec<Value> = policy
        .filters
        .iter()
        .map(|f| {
            json!({
                "type": match f.kind { FilterKind::Name => "name", FilterKind::Tag => "tag" },
                "value": f.pattern,
                "decoration": if f.exclude { "excludes" } else { "matches" },
            })
        })
        .collect();
    Ok(json!({
        "id": policy.id,
        "name": policy.name,
        "description": policy.description,
        "src_registry": source,
        "dest_registry": destination,
        "dest_namespace": policy.dest_namespace,
        "dest_namespace_replace_count": policy.dest_namespace_replace_count,
        "trigger": trigger_json(&policy.trigger),
        "filters": filters,
        "replicate_deletion": policy.replicate_deletion,
        "override": policy.overwrite,
        "enabled": policy.enabled,
        "creation_time": rfc3339(policy.created),
        "update_time": rfc3339(policy.updated),
    }))
}

fn parse_filter(field: FilterField) -> Result<Filter> {
    let kind = match field.kind.as_str() {
        "name" => FilterKind::Name,
        "tag" => FilterKind::Tag,
        other => {
            return Err(bad_request(format!(
                "filter type {other:?} is not supported: use \"name\" or \"tag\""
            )));
        }
    };
    let Value::String(pattern) = field.value else {
        return Err(bad_request("a filter's value must be a string pattern"));
    };
    let exclude = match field.decoration.as_deref() {
        None | Some("" | "matches") => false,
        Some("excludes") => true,
        Some(other) => {
            return Err(bad_request(format!(
                "filter decoration {other:?} is not \"matches\" or \"excludes\""
            )));
        }
    };
    berth_core::glob::compile(&pattern)?;
    Ok(Filter {
        kind,
        pattern,
        exclude,
    })
}

fn parse_trigger(field: TriggerField) -> Result<Trigger> {
    match field.kind.as_str() {
        "manual" => Ok(Trigger::Manual),
        "event_based" => Ok(Trigger::EventBased),
        "scheduled" => {
            let cron = field.trigger_settings.map(|s| s.cron).unwrap_or_default();
            schedule::parse(&cron)?;
            Ok(Trigger::Scheduled { cron })
        }
        other => Err(bad_request(format!(
            "trigger type {other:?} is not manual, event_based or scheduled"
        ))),
    }
}

async fn apply_policy(
    api: &ReplicationApi,
    policy: &mut Policy,
    fields: PolicyFields,
) -> Result<()> {
    if let Some(name) = fields.name {
        let others = api.replicator.store().policies().await?;
        policy.name = unique_name(
            "policy",
            &name,
            policy.id,
            others.iter().map(|p| (p.id, p.name.as_str())),
        )?;
    }
    if let Some(description) = fields.description {
        policy.description = description;
    }
    let source = fields.src_registry.map(|r| r.id).filter(|id| *id != 0);
    let destination = fields.dest_registry.map(|r| r.id).filter(|id| *id != 0);
    match (source, destination) {
        (Some(_), Some(_)) => {
            return Err(bad_request(
                "a policy copies between this registry and one remote: give src_registry \
                 (pull) or dest_registry (push), not both",
            ));
        }
        (Some(remote), None) => (policy.direction, policy.remote) = (Direction::Pull, remote),
        (None, Some(remote)) => (policy.direction, policy.remote) = (Direction::Push, remote),
        (None, None) => {}
    }
    if policy.remote == 0 {
        return Err(bad_request(
            "give dest_registry (push) or src_registry (pull): the id of a registry endpoint",
        ));
    }
    if api
        .replicator
        .store()
        .registry(policy.remote)
        .await?
        .is_none()
    {
        return Err(bad_request(format!(
            "registry {} does not exist",
            policy.remote
        )));
    }
    if let Some(namespace) = fields.dest_namespace {
        policy.dest_namespace = namespace.trim_matches('/').to_owned();
    }
    if let Some(count) = fields.dest_namespace_replace_count {
        policy.dest_namespace_replace_count = count;
    }
    rules::check_namespace(&policy.dest_namespace, policy.dest_namespace_replace_count)?;
    if let Some(trigger) = fields.trigger {
        policy.trigger = parse_trigger(trigger)?;
    }
    if policy.trigger == Trigger::EventBased && policy.direction == Direction::Pull {
        return Err(bad_request(
            "event_based triggers need a push policy: a remote's pushes are not seen here; \
             schedule pull policies instead",
        ));
    }
    if let Some(filters) = fields.filters {
        policy.filters = filters
            .into_iter()
            .map(parse_filter)
            .collect::<Result<_>>()?;
    }
    if let Some(deletion) = fields.replicate_deletion {
        policy.replicate_deletion = deletion;
    }
    if let Some(overwrite) = fields.overwrite {
        policy.overwrite = overwrite;
    }
    if let Some(enabled) = fields.enabled {
        policy.enabled = enabled;
    }
    Ok(())
}

async fn existing_policy(api: &ReplicationApi, id: &str) -> Result<Policy> {
    let id = number(id, "policy id")?;
    api.replicator
        .store()
        .policy(id)
        .await?
        .ok_or_else(|| not_found(&format!("replication policy {id}")))
}

async fn create_policy(State(api): Api, request: Request) -> Reply {
    let (parts, body) = request.into_parts();
    api.admit(&parts).await?;
    let fields: PolicyFields = read_json(body).await?;
    if fields.name.is_none() {
        return Err(bad_request("name is required").into());
    }
    let now = unix_now();
    let mut policy = Policy {
        id: 0,
        name: String::new(),
        description: String::new(),
        direction: Direction::Push,
        remote: 0,
        filters: Vec::new(),
        dest_namespace: String::new(),
        dest_namespace_replace_count: 1,
        trigger: Trigger::Manual,
        replicate_deletion: false,
        overwrite: true,
        enabled: true,
        created: now,
        updated: now,
    };
    apply_policy(&api, &mut policy, fields).await?;
    policy.id = api.replicator.store().next_id(IdKind::Policy).await?;
    api.replicator.store().put_policy(&policy).await?;
    tracing::info!(policy = policy.id, name = %policy.name, "replication policy created");
    created(
        &format!("/replication/policies/{}", policy.id),
        Some(&policy_json(&api, &policy).await?),
    )
}

async fn list_policies(State(api): Api, request: Request) -> Reply {
    let (parts, _) = request.into_parts();
    api.admit(&parts).await?;
    let (page, size) = page(parts.uri.query())?;
    let wanted = query_value(&parts, "name");
    let mut listed = Vec::new();
    for policy in api
        .replicator
        .store()
        .policies()
        .await?
        .iter()
        .filter(|p| {
            wanted
                .as_ref()
                .is_none_or(|name| p.name.contains(name.as_str()))
        })
        .skip((page - 1) * size)
        .take(size)
    {
        listed.push(policy_json(&api, policy).await?);
    }
    json_reply(StatusCode::OK, &Value::Array(listed))
}

async fn get_policy(State(api): Api, Path(id): Path<String>, request: Request) -> Reply {
    let (parts, _) = request.into_parts();
    api.admit(&parts).await?;
    let policy = existing_policy(&api, &id).await?;
    json_reply(StatusCode::OK, &policy_json(&api, &policy).await?)
}

async fn update_policy(State(api): Api, Path(id): Path<String>, request: Request) -> Reply {
    let (parts, body) = request.into_parts();
    api.admit(&parts).await?;
    let mut policy = existing_policy(&api, &id).await?;
    let fields: PolicyFields = read_json(body).await?;
    apply_policy(&api, &mut policy, fields).await?;
    policy.updated = unix_now();
    api.replicator.store().put_policy(&policy).await?;
    ok()
}

async fn delete_policy(State(api): Api, Path(id): Path<String>, request: Request) -> Reply {
    let (parts, _) = request.into_parts();
    api.admit(&parts).await?;
    let policy = existing_policy(&api, &id).await?;
    for execution in api
        .replicator
        .store()
        .executions(Some(policy.id), 100)
        .await?
    {
        if api.replicator.view(execution).await?.status == "InProgress" {
            return Err(RegistryError::new(
                ErrorCode::PreconditionFailed,
                format!(
                    "policy {} has a running execution: stop it first",
                    policy.id
                ),
            )
            .into());
        }
    }
    api.replicator.store().delete_policy(policy.id).await?;
    ok()
}

// --- executions and tasks ------------------------------------------------------------------

fn trigger_name(trigger: TriggerKind) -> &'static str {
    match trigger {
        TriggerKind::Manual => "manual",
        TriggerKind::EventBased => "event_based",
        TriggerKind::Scheduled => "scheduled",
    }
}

fn execution_json(view: &ExecutionView) -> Value {
    json!({
        "id": view.execution.id,
        "policy_id": view.execution.policy_id,
        "status": view.status,
        "status_text": view.status_text,
        "trigger": trigger_name(view.execution.trigger),
        "start_time": rfc3339(view.execution.start_time),
        "end_time": view.end_time.map(rfc3339),
        "total": view.total,
        "succeed": view.succeeded,
        "failed": view.failed,
        "in_progress": view.in_progress,
        "stopped": view.stopped,
    })
}

fn task_status(status: TaskStatus) -> &'static str {
    match status {
        TaskStatus::Pending => "Pending",
        TaskStatus::Running => "InProgress",
        TaskStatus::Succeeded => "Succeed",
        TaskStatus::Failed => "Failed",
        TaskStatus::Stopped => "Stopped",
    }
}

fn task_json(task: &Task) -> Value {
    json!({
        "id": task.id,
        "execution_id": task.execution_id,
        "resource_type": "artifact",
        "src_resource": format!("{}:{}", task.source_repository, task.reference),
        "dst_resource": format!("{}:{}", task.destination_repository, task.reference),
        "operation": match task.operation { Operation::Copy => "copy", Operation::Deletion => "deletion" },
        "status": task_status(task.status),
        "attempts": task.attempts,
        "error": task.error,
        "note": task.note,
        "bytes": task.bytes,
        "start_time": task.start_time.map(rfc3339),
        "end_time": task.end_time.map(rfc3339),
    })
}

#[derive(Debug, Deserialize)]
struct StartFields {
    policy_id: u64,
}

async fn start_execution(State(api): Api, request: Request) -> Reply {
    let (parts, body) = request.into_parts();
    api.admit(&parts).await?;
    let fields: StartFields = read_json(body).await?;
    let policy = existing_policy(&api, &fields.policy_id.to_string()).await?;
    if !policy.enabled {
        return Err(RegistryError::new(
            ErrorCode::PreconditionFailed,
            format!("policy {} is disabled: enable it to run it", policy.id),
        )
        .into());
    }
    let execution = api.replicator.start(&policy, TriggerKind::Manual).await?;
    created(&format!("/replication/executions/{}", execution.id), None)
}

async fn existing_execution(api: &ReplicationApi, id: &str) -> Result<Execution> {
    let id = number(id, "execution id")?;
    api.replicator
        .store()
        .execution(id)
        .await?
        .ok_or_else(|| not_found(&format!("execution {id}")))
}

async fn list_executions(State(api): Api, request: Request) -> Reply {
    let (parts, _) = request.into_parts();
    api.admit(&parts).await?;
    let (page, size) = page(parts.uri.query())?;
    let policy = query_value(&parts, "policy_id")
        .map(|id| number(&id, "policy_id"))
        .transpose()?;
    let executions = api
        .replicator
        .store()
        .executions(policy, page * size)
        .await?;
    let mut listed = Vec::new();
    for execution in executions.into_iter().skip((page - 1) * size) {
        listed.push(execution_json(&api.replicator.view(execution).await?));
    }
    json_reply(StatusCode::OK, &Value::Array(listed))
}

async fn get_execution(State(api): Api, Path(id): Path<String>, request: Request) -> Reply {
    let (parts, _) = request.into_parts();
    api.admit(&parts).await?;
    let execution = existing_execution(&api, &id).await?;
    json_reply(
        StatusCode::OK,
        &execution_json(&api.replicator.view(execution).await?),
    )
}

async fn stop_execution(State(api): Api, Path(id): Path<String>, request: Request) -> Reply {
    let (parts, _) = request.into_parts();
    api.admit(&parts).await?;
    let execution = existing_execution(&api, &id).await?;
    api.replicator.stop(execution.id).await?;
    ok()
}

async fn list_tasks(State(api): Api, Path(id): Path<String>, request: Request) -> Reply {
    let (parts, _) = request.into_parts();
    api.admit(&parts).await?;
    let execution = existing_execution(&api, &id).await?;
    let (page, size) = page(parts.uri.query())?;
    let wanted = query_value(&parts, "status");
    let tasks: Vec<Value> = api
        .replicator
        .store()
        .tasks(execution.id)
        .await?
        .iter()
        .filter(|t| wanted.as_deref().is_none_or(|s| task_status(t.status) == s))
        .skip((page - 1) * size)
        .take(size)
        .map(task_json)
        .collect();
    json_reply(StatusCode::OK, &Value::Array(tasks))
}

async fn task_log(
    State(api): Api,
    Path((id, task)): Path<(String, String)>,
    request: Request,
) -> Reply {
    let (parts, _) = request.into_parts();
    api.admit(&parts).await?;
    let execution = existing_execution(&api, &id).await?;
    let task_id = number(&task, "task id")?;
    let task = api
        .replicator
        .store()
        .task(execution.id, task_id)
        .await?
        .ok_or_else(|| not_found(&format!("task {task_id}")))?;
    let mut log = format!(
        "{} {}:{} -> {}:{}\nstatus: {}\nattempts: {}\n",
        match task.operation {
            Operation::Copy => "copy",
            Operation::Deletion => "delete",
        },
        task.source_repository,
        task.reference,
        task.destination_repository,
        task.reference,
        task_status(task.status),
        task.attempts
    );
    if task.status == TaskStatus::Succeeded {
        log.push_str(&format!("bytes sent: {}\n", task.bytes));
    }
    if let Some(note) = &task.note {
        log.push_str(&format!("note: {note}\n"));
    }
    if let Some(error) = &task.error {
        log.push_str(&format!("error: {error}\n"));
    }
    Ok(axum::response::Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(axum::body::Body::from(log))
        .map_err(|e| RegistryError::internal(format!("building an answer: {e}")))?)
}

async fn list_dead_letters(State(api): Api, request: Request) -> Reply {
    let (parts, _) = request.into_parts();
    api.admit(&parts).await?;
    let (_, size) = page(parts.uri.query())?;
    let letters = match &api.dead_letters {
        Some(letters) => letters.list(size).await?,
        None => Vec::new(),
    };
    let listed: Vec<Value> = letters
        .iter()
        .map(|letter| {
            json!({
                "id": letter.id,
                "job": serde_json::from_str::<Value>(&letter.body).unwrap_or(Value::String(letter.body.clone())),
                "attempts": letter.attempts,
                "error": letter.error,
                "first_attempt": letter.first_attempt.map(rfc3339),
            })
        })
        .collect();
    json_reply(StatusCode::OK, &Value::Array(listed))
}
