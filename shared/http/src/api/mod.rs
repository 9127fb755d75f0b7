//! The management API, in the shape of Harbor's `/api/v2.0`: users, projects, project
//! members and robot accounts. Callers authenticate with Basic credentials (users only:
//! robot accounts push and pull, they do not manage); some reads are open to anyone.
//!
//! Where Harbor names things by number, Berth names them by name: `/users/{username}`,
//! `/projects/{project_name}`, `/projects/{project_name}/members/{username}`,
//! `/robots/{robot$project+name}` (with `$` written `%24`).
//!
//! | endpoint | who |
//! |---|---|
//! | `POST /users` | system admins; anyone when self-registration is on |
//! | `GET /users`, `PUT /users/{u}/sysadmin`, `DELETE /users/{u}` | system admins |
//! | `GET /users/current` | any user |
//! | `GET /users/{u}`, `PUT /users/{u}/password` | the user (with the old password) and system admins |
//! | `POST /projects` | any user, or system admins only (a setting) |
//! | `GET /projects`, `GET /projects/{p}`, `HEAD /projects?project_name=` | anyone: public projects, and the caller's own |
//! | `PUT /projects/{p}`, `DELETE /projects/{p}` | the project's admins and system admins |
//! | `GET /projects/{p}/members` | the project's members and system admins |
//! | `POST`, `PUT`, `DELETE /projects/{p}/members[/{u}]` | the project's admins and system admins |
//! | `POST /robots`, `GET /projects/{p}/robots`, `GET`, `PUT`, `PATCH`, `DELETE /robots/{r}` | the robot's project's admins and system admins |
//! | `GET /projects/{p}/repositories[/{r}[/artifacts[/{ref}[/tags]]]]` | whoever may pull from the project |
//! | `POST .../artifacts/{ref}/tags` | whoever may push to the project |
//! | `DELETE .../repositories/{r}`, `.../artifacts/{ref}`, `.../tags/{tag}` | whoever may delete in the project (maintainers, project admins, system admins) |
//! | `GET`, `POST /projects/{p}/immutabletagrules`, `PUT`, `DELETE .../immutabletagrules/{id}` | the project's admins and maintainers, and system admins |
//! | `GET /retentions/metadatas` | any user |
//! | `/retentions[/{id}[/executions[/{eid}[/tasks[/{tid}]]]]]` | the policy's project's developers, maintainers and admins, and system admins (the project is `scope.ref`, its name) |
//!
//! [`ApiEndpoint`] parses each request and names its permission; the use cases are
//! [`berth_app::Accounts`]'s; this module translates between them and Harbor's JSON.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use berth_app::{
    Accounts, Caller, GarbageCollection, ProjectSummary, Retention, RobotChange, RobotSpec,
};
use berth_auth::rfc3339;
use berth_core::accounts::{Member, Project, ProjectRole, Robot, RobotPermission, User};
use berth_core::quota::{Quota, limit_from_harbor};
use berth_core::{Actor, EntryPoint, ErrorCode, RegistryError, Result};
use http::StatusCode;
use http::header::{CONTENT_TYPE, LOCATION};
use http::request::Parts;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

pub use self::endpoint::ApiEndpoint;
use crate::Router;
use crate::response::{ApiError, header_value};
use crate::token::basic_credentials;
pub use berth_app::{AccountSettings, ProjectCreation};

mod audit;
mod endpoint;
mod gc;
mod immutable;
mod repositories;
mod retention;
mod webhooks;

/// Where the management API is mounted.
pub const API_PREFIX: &str = "/api/v2.0";

/// The largest request body of the management API.
const MAX_JSON_BYTES: usize = 64 * 1024;
/// The most items one listing answers.
pub(crate) const MAX_PAGE_SIZE: usize = berth_app::accounts::MAX_PAGE_SIZE;

/// What the management API works on: the use cases, over one registry's stores.
#[derive(Debug)]
pub struct ManagementApi {
    accounts: Accounts,
    gc: Option<Arc<GarbageCollection>>,
    retention: Option<Arc<Retention>>,
}

impl ManagementApi {
    pub fn new(accounts: Accounts) -> Self {
        Self {
            accounts,
            gc: None,
            retention: None,
        }
    }

    /// Serves `/retentions` with `retention` (without, those endpoints answer that this
    /// deployment runs no tag retention), and shows each project's policy in its metadata.
    pub fn with_retention(mut self, retention: Arc<Retention>) -> Self {
        self.retention = Some(retention);
        self
    }

    /// A project's answer with Harbor's `metadata.retention_id` when it has a policy.
    async fn with_retention_id(&self, mut project: Value, name: &str) -> Result<Value> {
        if let Some(retention) = &self.retention
            && let Some(id) = retention.project_policy(name).await?
        {
            project["metadata"]["retention_id"] = json!(id.to_string());
        }
        Ok(project)
    }

    /// Serves `/system/gc` with `gc` (without, those endpoints answer that this deployment
    /// runs no garbage collection).
    pub fn with_gc(mut self, gc: Arc<GarbageCollection>) -> Self {
        self.gc = Some(gc);
        self
    }

    /// The caller of a request, from its Basic credentials (anonymous without). A refusal is
    /// published as a failed sign-in.
    pub(crate) async fn caller(&self, parts: &Parts) -> Result<Caller> {
        let context =
            crate::request_context(&parts.extensions, Actor::Anonymous, EntryPoint::Management);
        let credentials = basic_credentials(&parts.headers)?;
        let credentials = credentials
            .as_ref()
            .map(|(name, secret)| (name.as_str(), secret.as_str()));
        self.accounts.authenticate(&context, credentials).await
    }

    /// The caller, who must be a system administrator.
    #[cfg(feature = "replication")]
    pub(crate) async fn admin_caller(&self, parts: &Parts) -> Result<Caller> {
        let caller = self.caller(parts).await?;
        self.accounts
            .authorize(&caller, &berth_app::Permission::SystemAdmin)
            .await?;
        Ok(caller)
    }
}

pub(crate) type Reply = std::result::Result<Response, ApiError>;

/// The management API's routes, under [`API_PREFIX`].
pub fn api_router(api: Arc<ManagementApi>) -> Router {
    api_router_with(api, Router::new())
}

/// The management API and `extra` routes (relative to [`API_PREFIX`], such as the
/// replication API's), under [`API_PREFIX`].
pub fn api_router_with(api: Arc<ManagementApi>, extra: Router) -> Router {
    let routes = extra.fallback(move |request: Request| dispatch(api.clone(), request));
    Router::new()
        .nest(API_PREFIX, routes)
        .layer(axum::middleware::from_fn(crate::access_log))
}

#[cfg(feature = "replication")]
pub(crate) async fn unknown_endpoint(method: http::Method, uri: http::Uri) -> ApiError {
    let path = uri.path().strip_prefix(API_PREFIX).unwrap_or(uri.path());
    ApiError(endpoint::unknown_endpoint(&method, path))
}

/// Parses the endpoint, authenticates the caller, checks the endpoint's permission, and
/// serves it; the caller's name goes to the access log.
async fn dispatch(api: Arc<ManagementApi>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let mut actor = None;
    let result = async {
        // Nested under the prefix: the path is relative to it.
        let endpoint = ApiEndpoint::parse(&parts.method, parts.uri.path())?;
        let caller = api.caller(&parts).await?;
        actor = Some(caller.context.actor.clone());
        api.accounts
            .authorize(&caller, &endpoint.permission())
            .await?;
        serve(&api, endpoint, &caller, &parts, body).await
    }
    .await;
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    if let Some(actor) = actor {
        response.extensions_mut().insert(actor);
    }
    response
}

async fn serve(
    api: &ManagementApi,
    endpoint: ApiEndpoint,
    caller: &Caller,
    parts: &Parts,
    body: Body,
) -> Reply {
    let accounts = &api.accounts;
    let query = parts.uri.query();
    match endpoint {
        ApiEndpoint::GcRuns
        | ApiEndpoint::GcRun(_)
        | ApiEndpoint::GcLog(_)
        | ApiEndpoint::GcSchedule
        | ApiEndpoint::SetGcSchedule => {
            gc::serve(api.gc.as_deref(), endpoint, caller, query, body).await
        }
        ApiEndpoint::RetentionMetadata
        | ApiEndpoint::CreateRetention
        | ApiEndpoint::GetRetention(_)
        | ApiEndpoint::UpdateRetention(_)
        | ApiEndpoint::DeleteRetention(_)
        | ApiEndpoint::StartRetention(_)
        | ApiEndpoint::RetentionExecutions(_)
        | ApiEndpoint::StopRetention { .. }
        | ApiEndpoint::RetentionTasks { .. }
        | ApiEndpoint::RetentionTaskLog { .. } => {
            retention::serve(
                api.retention.as_deref(),
                accounts,
                endpoint,
                caller,
                query,
                body,
            )
            .await
        }
        ApiEndpoint::CreateUser => {
            let new: NewUser = read_json(body).await?;
            let user = accounts
                .create_user(caller, new.username, new.email, new.password)
                .await?;
            created(&format!("/users/{}", user.name), Some(&user_json(&user)))
        }
        ApiEndpoint::ListUsers => {
            let (page, size) = page(query)?;
            let users = accounts.users(page, size).await?;
            json_reply(
                StatusCode::OK,
                &Value::Array(users.iter().map(user_json).collect()),
            )
        }
        ApiEndpoint::CurrentUser => json_reply(
            StatusCode::OK,
            &user_json(&accounts.current_user(caller).await?),
        ),
        ApiEndpoint::GetUser(name) => {
            json_reply(StatusCode::OK, &user_json(&accounts.user(&name).await?))
        }
        ApiEndpoint::DeleteUser(name) => {
            accounts.delete_user(caller, &name).await?;
            ok()
        }
        ApiEndpoint::ChangePassword(name) => {
            let change: PasswordChange = read_json(body).await?;
            accounts
                .change_password(caller, &name, change.old_password, change.new_password)
                .await?;
            ok()
        }
        ApiEndpoint::SetSysadmin(name) => {
            let change: SysadminChange = read_json(body).await?;
            accounts
                .set_sysadmin(caller, &name, change.sysadmin_flag)
                .await?;
            ok()
        }
        ApiEndpoint::CreateProject => {
            let new: NewProject = read_json(body).await?;
            let public = new.fields.public()?.unwrap_or(false);
            let limit = new.fields.storage_limit()?.flatten();
            let project = accounts
                .create_project(caller, new.project_name, public, limit)
                .await?;
            created(
                &format!("/projects/{}", project.name),
                Some(&project_json(&project, Some(ProjectRole::ProjectAdmin))),
            )
        }
        ApiEndpoint::ProjectExists => {
            let name = query_value(parts, "project_name")
                .ok_or_else(|| bad_request("HEAD /projects needs ?project_name="))?;
            if accounts.project_visible(caller, &name).await? {
                ok()
            } else {
                Ok(StatusCode::NOT_FOUND.into_response())
            }
        }
        ApiEndpoint::ListProjects => {
            let (page, size) = page(query)?;
            let projects = accounts.projects(caller, page, size).await?;
            let mut answers = Vec::new();
            for (project, role) in &projects {
                let answer = project_json(project, *role);
                answers.push(api.with_retention_id(answer, &project.name).await?);
            }
            json_reply(StatusCode::OK, &Value::Array(answers))
        }
        ApiEndpoint::GetProject(name) => {
            let (project, role) = accounts.project(caller, &name).await?;
            let answer = api
                .with_retention_id(project_json(&project, role), &name)
                .await?;
            json_reply(StatusCode::OK, &answer)
        }
        ApiEndpoint::UpdateProject(name) => {
            let fields: ProjectFields = read_json(body).await?;
            accounts
                .update_project(caller, &name, fields.public()?, fields.storage_limit()?)
                .await?;
            ok()
        }
        ApiEndpoint::ProjectSummary(name) => {
            let summary = accounts.project_summary(&name).await?;
            json_reply(StatusCode::OK, &project_summary_json(&summary))
        }
        ApiEndpoint::ListQuotas => {
            let (page, size) = page(query)?;
            let wanted = query_value(parts, "reference_id");
            let (quotas, total) = match wanted {
                Some(project) => {
                    let found = accounts.project(caller, &project).await?.0;
                    let quota = accounts.project_quota(&project).await?;
                    (vec![(found, quota)], 1)
                }
                None => accounts.quotas(page, size).await?,
            };
            let body = Value::Array(quotas.iter().map(|(p, q)| quota_json(p, q)).collect());
            Ok(paged_reply("/quotas", query, (page, size), total, &body)?)
        }
        ApiEndpoint::DeleteProject(name) => {
            accounts.delete_project(caller, &name).await?;
            if let Some(retention) = &api.retention {
                retention.forget_project(&name).await?;
            }
            ok()
        }
        ApiEndpoint::ListMembers(project) => {
            let members = accounts.members(&project).await?;
            json_reply(
                StatusCode::OK,
                &Value::Array(members.iter().map(member_json).collect()),
            )
        }
        ApiEndpoint::GetMember { project, user } => {
            let member = accounts.member(&project, &user).await?;
            json_reply(StatusCode::OK, &member_json(&member))
        }
        ApiEndpoint::AddMember(project) => {
            let new: NewMember = read_json(body).await?;
            let role = role(new.role_id)?;
            let user = new.member_user.username;
            let member = accounts.add_member(caller, &project, &user, role).await?;
            created(
                &format!("/projects/{project}/members/{user}"),
                Some(&member_json(&member)),
            )
        }
        ApiEndpoint::ChangeMember { project, user } => {
            let change: RoleChange = read_json(body).await?;
            accounts
                .change_member(caller, &project, &user, role(change.role_id)?)
                .await?;
            ok()
        }
        ApiEndpoint::RemoveMember { project, user } => {
            accounts.remove_member(caller, &project, &user).await?;
            ok()
        }
        ApiEndpoint::ListRobots(project) => {
            let robots = accounts.robots(&project).await?;
            json_reply(
                StatusCode::OK,
                &Value::Array(robots.iter().map(robot_json).collect()),
            )
        }
        ApiEndpoint::CreateRobot => {
            let new: NewRobot = read_json(body).await?;
            if new.level.as_deref().is_some_and(|level| level != "project") {
                return Err(bad_request(
                    "only project-level robot accounts exist: level \"project\"",
                )
                .into());
            }
            let (project, permissions) = robot_permissions(&new.permissions)?;
            let spec = RobotSpec {
                name: new.name,
                project,
                description: new.description,
                permissions,
                duration_days: new.duration,
                disabled: new.disable,
            };
            let (robot, secret) = accounts.create_robot(caller, spec).await?;
            let mut answer = robot_json(&robot);
            // The only time the secret is shown.
            answer["secret"] = json!(secret);
            created(&format!("/robots/{}", robot.name), Some(&answer))
        }
        ApiEndpoint::GetRobot(name) => {
            json_reply(StatusCode::OK, &robot_json(&accounts.robot(&name).await?))
        }
        ApiEndpoint::UpdateRobot(name) => {
            let update: RobotUpdate = read_json(body).await?;
            let change = RobotChange {
                disabled: update.disable,
                description: update.description,
                duration_days: update.duration,
                permissions: update
                    .permissions
                    .as_deref()
                    .map(robot_permissions)
                    .transpose()?,
            };
            accounts.update_robot(caller, &name, change).await?;
            ok()
        }
        ApiEndpoint::RefreshRobotSecret(name) => {
            let bytes = read_body(body).await?;
            let change: SecretChange = if bytes.iter().all(u8::is_ascii_whitespace) {
                SecretChange::default()
            } else {
                parse_json(&bytes)?
            };
            let secret = accounts
                .refresh_robot_secret(caller, &name, change.secret)
                .await?;
            json_reply(StatusCode::OK, &json!({ "secret": secret }))
        }
        ApiEndpoint::DeleteRobot(name) => {
            accounts.delete_robot(caller, &name).await?;
            ok()
        }
        ApiEndpoint::ListWebhooks(project) => {
            let policies = accounts.webhooks(&project).await?;
            json_reply(
                StatusCode::OK,
                &Value::Array(policies.iter().map(webhooks::policy_json).collect()),
            )
        }
        ApiEndpoint::CreateWebhook(project) => {
            let spec = webhooks::read_spec(body).await?;
            let policy = accounts.create_webhook(caller, &project, spec).await?;
            created(
                &format!("/projects/{project}/webhook/policies/{}", policy.id),
                Some(&webhooks::policy_json(&policy)),
            )
        }
        ApiEndpoint::GetWebhook { project, id } => {
            let policy = accounts.webhook(&project, webhooks::id(&id)?).await?;
            json_reply(StatusCode::OK, &webhooks::policy_json(&policy))
        }
        ApiEndpoint::UpdateWebhook { project, id } => {
            let id = webhooks::id(&id)?;
            let spec = webhooks::read_spec(body).await?;
            accounts.update_webhook(caller, &project, id, spec).await?;
            ok()
        }
        ApiEndpoint::DeleteWebhook { project, id } => {
            accounts
                .delete_webhook(caller, &project, webhooks::id(&id)?)
                .await?;
            ok()
        }
        ApiEndpoint::WebhookDeliveries { project, id } => {
            let (_, size) = page(query)?;
            let deliveries = accounts
                .deliveries(&project, webhooks::id(&id)?, size)
                .await?;
            json_reply(
                StatusCode::OK,
                &Value::Array(deliveries.iter().map(webhooks::delivery_json).collect()),
            )
        }
        ApiEndpoint::Statistics => {
            let summary = accounts.summary(caller).await?;
            let mut answer = json!({
                "private_project_count": summary.private_projects,
                "public_project_count": summary.public_projects,
                "total_project_count": summary.private_projects + summary.public_projects,
                "private_repo_count": summary.private_repositories,
                "public_repo_count": summary.public_repositories,
                "total_repo_count": summary.private_repositories + summary.public_repositories,
            });
            // The whole registry's size, for system administrators, as Harbor shows it.
            if let (true, Some(gc)) = (caller.is_admin(), &api.gc) {
                answer["total_storage_consumption"] = json!(gc.stored_bytes().await?);
            }
            json_reply(StatusCode::OK, &answer)
        }
        ApiEndpoint::PullStatistics => {
            let top = match query_value(parts, "top") {
                Some(top) => positive("top", &top)?.min(MAX_PAGE_SIZE),
                None => 10,
            };
            let (most_pulled, daily) = accounts.pull_statistics(top).await?;
            let most_pulled: Vec<Value> = most_pulled
                .iter()
                .map(|(name, pulls)| json!({ "repository_name": name, "pull_count": pulls }))
                .collect();
            let daily: Vec<Value> = daily
                .iter()
                .map(|day| json!({ "date": day_date(day.day), "pull_count": day.pulls }))
                .collect();
            json_reply(
                StatusCode::OK,
                &json!({ "most_pulled": most_pulled, "daily_pulls": daily }),
            )
        }
        ApiEndpoint::ListRepositories(_)
        | ApiEndpoint::GetRepository(_)
        | ApiEndpoint::DeleteRepository(_)
        | ApiEndpoint::ListArtifacts(_)
        | ApiEndpoint::GetArtifact(_)
        | ApiEndpoint::DeleteArtifact(_)
        | ApiEndpoint::ListTags(_)
        | ApiEndpoint::AddTag(_)
        | ApiEndpoint::DeleteTag { .. } => {
            repositories::serve(accounts, endpoint, caller, query, body).await
        }
        ApiEndpoint::ListImmutableRules(_)
        | ApiEndpoint::CreateImmutableRule(_)
        | ApiEndpoint::UpdateImmutableRule { .. }
        | ApiEndpoint::DeleteImmutableRule { .. } => {
            immutable::serve(accounts, endpoint, caller, query, body).await
        }
        ApiEndpoint::AuditLogs => {
            let parsed = audit::parse_query(query, None)?;
            let page = accounts.audit_logs(&parsed).await?;
            Ok(audit::page_response("/audit-logs", query, &parsed, &page)?)
        }
        ApiEndpoint::ProjectLogs(project) => {
            let path = format!("/projects/{project}/logs");
            let parsed = audit::parse_query(query, Some(project))?;
            let page = accounts.audit_logs(&parsed).await?;
            Ok(audit::page_response(&path, query, &parsed, &page)?)
        }
    }
}

/// `project/repository` as a repository name.
pub(crate) fn repository_name(
    project: &str,
    repository: &str,
) -> Result<berth_core::RepositoryName> {
    format!("{project}/{repository}").parse()
}

/// A day since the Unix epoch as `yyyy-mm-dd`.
fn day_date(day: u64) -> String {
    i64::try_from(day * 86_400)
        .ok()
        .and_then(|seconds| chrono::DateTime::from_timestamp(seconds, 0))
        .map(|time| time.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// Harbor's usage fields: `pull_count`, `pull_time` and the push time under `push_name`.
pub(crate) fn usage_fields(
    answer: &mut Value,
    usage: &berth_core::statistics::Usage,
    push_name: &str,
) {
    let time = |ms: Option<u64>| {
        ms.and_then(|ms| i64::try_from(ms).ok())
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|time| time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    };
    answer["pull_count"] = json!(usage.pull_count);
    answer["pull_time"] = json!(time(usage.last_pull_ms));
    answer[push_name] = json!(time(usage.push_ms));
}

#[cfg(feature = "replication")]
pub(crate) fn not_found(what: &str) -> RegistryError {
    RegistryError::new(ErrorCode::NotFound, format!("{what} not found"))
}

pub(crate) fn bad_request(message: impl Into<String>) -> RegistryError {
    RegistryError::new(ErrorCode::BadRequest, message.into())
}

// --- bodies and answers --------------------------------------------------------------------

async fn read_body(body: Body) -> Result<Bytes> {
    axum::body::to_bytes(body, MAX_JSON_BYTES)
        .await
        .map_err(|_| {
            RegistryError::new(
                ErrorCode::PayloadTooLarge,
                format!("the body could not be read or is over {MAX_JSON_BYTES} bytes"),
            )
        })
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| bad_request(format!("invalid JSON body: {e}")))
}

pub(crate) async fn read_json<T: DeserializeOwned>(body: Body) -> Result<T> {
    parse_json(&read_body(body).await?)
}

pub(crate) fn json_reply(status: StatusCode, value: &Value) -> Reply {
    let body = value.to_string();
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .map_err(|e| ApiError(RegistryError::internal(format!("building an answer: {e}"))))
}

pub(crate) fn created(location: &str, value: Option<&Value>) -> Reply {
    let body = value.map(Value::to_string).unwrap_or_default();
    Response::builder()
        .status(StatusCode::CREATED)
        .header(LOCATION, header_value(&format!("{API_PREFIX}{location}")))
        .header(CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .map_err(|e| ApiError(RegistryError::internal(format!("building an answer: {e}"))))
}

/// A text answer (a run's log).
pub(crate) fn text_reply(text: String) -> Reply {
    Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from(text))
        .map_err(|e| ApiError(RegistryError::internal(format!("building an answer: {e}"))))
}

/// Unix milliseconds as the RFC 3339 time Harbor answers (`None` out of range).
pub(crate) fn time(ms: u64) -> Option<String> {
    i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(|time| time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

pub(crate) fn ok() -> Reply {
    Ok(StatusCode::OK.into_response())
}

/// A page of a listing with Harbor's paging headers: `X-Total-Count`, and a `Link` to the
/// previous and next pages that keeps the request's `q` and `sort`.
pub(crate) fn paged_reply(
    path: &str,
    request_query: Option<&str>,
    (page, page_size): (usize, usize),
    total: usize,
    body: &Value,
) -> Result<Response> {
    let kept: Vec<(String, String)> =
        form_urlencoded::parse(request_query.unwrap_or("").as_bytes())
            .filter(|(key, _)| key != "page" && key != "page_size")
            .map(|(key, value)| (key.into_owned(), value.into_owned()))
            .collect();
    let link = |page_number: usize, rel: &str| {
        let mut url = form_urlencoded::Serializer::new(String::new());
        url.append_pair("page", &page_number.to_string());
        url.append_pair("page_size", &page_size.to_string());
        for (key, value) in &kept {
            url.append_pair(key, value);
        }
        format!("<{API_PREFIX}{path}?{}>; rel=\"{rel}\"", url.finish())
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(link(page - 1, "prev"));
    }
    if page.saturating_mul(page_size) < total {
        links.push(link(page + 1, "next"));
    }
    let mut response = Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, "application/json")
        .header("x-total-count", total);
    if !links.is_empty() {
        response = response.header(http::header::LINK, header_value(&links.join(" , ")));
    }
    response
        .body(Body::from(body.to_string()))
        .map_err(|e| RegistryError::internal(format!("building an answer: {e}")))
}

/// `page` (from 1) and `page_size` (at most [`MAX_PAGE_SIZE`], default 10), as Harbor pages.
pub(crate) fn page(headers_query: Option<&str>) -> Result<(usize, usize)> {
    let (mut page, mut size) = (1usize, 10usize);
    for (key, value) in form_urlencoded::parse(headers_query.unwrap_or("").as_bytes()) {
        match &*key {
            "page" => page = positive(&key, &value)?,
            "page_size" => size = positive(&key, &value)?.min(MAX_PAGE_SIZE),
            _ => {}
        }
    }
    Ok((page, size))
}

/// The query parameter `key`'s value, which must be a number from 1.
pub(crate) fn positive(key: &str, value: &str) -> Result<usize> {
    value
        .parse::<usize>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| bad_request(format!("{key} must be a positive number")))
}

pub(crate) fn query_value(parts: &Parts, name: &str) -> Option<String> {
    form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

// --- users ---------------------------------------------------------------------------------

fn user_json(user: &User) -> Value {
    json!({
        "username": user.name,
        "email": user.email,
        "sysadmin_flag": user.admin,
        "creation_time": rfc3339(user.created_at),
    })
}

#[derive(Deserialize)]
struct NewUser {
    username: String,
    #[serde(default)]
    email: Option<String>,
    password: String,
}

#[derive(Deserialize)]
struct PasswordChange {
    #[serde(default)]
    old_password: Option<String>,
    new_password: String,
}

#[derive(Deserialize)]
struct SysadminChange {
    sysadmin_flag: bool,
}

// --- projects ------------------------------------------------------------------------------

fn project_json(project: &Project, role: Option<ProjectRole>) -> Value {
    let mut value = json!({
        "name": project.name,
        "public": project.public,
        "metadata": { "public": project.public.to_string() },
        "owner_name": project.owner,
        "creation_time": rfc3339(project.created_at),
    });
    if let Some(role) = role {
        value["current_user_role_id"] = json!(role.id());
        value["current_user_role_name"] = json!(role.name());
    }
    value
}

/// A project's visibility as Harbor's clients send it: `"public": true` or
/// `"metadata": {"public": "true"}`.
#[derive(Deserialize, Default)]
struct ProjectFields {
    #[serde(default)]
    public: Option<bool>,
    /// Bytes, or -1 for no limit.
    #[serde(default)]
    storage_limit: Option<i64>,
    #[serde(default)]
    metadata: Option<ProjectMetadata>,
}

#[derive(Deserialize, Default)]
struct ProjectMetadata {
    #[serde(default)]
    public: Option<String>,
}

impl ProjectFields {
    fn public(&self) -> Result<Option<bool>> {
        let from_metadata = match self.metadata.as_ref().and_then(|m| m.public.as_deref()) {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(other) => {
                return Err(bad_request(format!(
                    "metadata.public must be \"true\" or \"false\", not {other:?}"
                )));
            }
        };
        Ok(self.public.or(from_metadata))
    }

    /// The limit asked for: `Some(None)` is -1, no limit.
    fn storage_limit(&self) -> Result<Option<Option<u64>>> {
        self.storage_limit.map(limit_from_harbor).transpose()
    }
}

/// Harbor's `ResourceList` of a quota's storage.
fn storage_json(bytes: Option<u64>) -> Value {
    json!({ "storage": bytes.map_or(-1, |b| i64::try_from(b).unwrap_or(i64::MAX)) })
}

fn project_summary_json(summary: &ProjectSummary) -> Value {
    let mut value = json!({
        "repo_count": summary.repositories,
        "project_admin_count": summary.members_with(ProjectRole::ProjectAdmin),
        "maintainer_count": summary.members_with(ProjectRole::Maintainer),
        "developer_count": summary.members_with(ProjectRole::Developer),
        "guest_count": summary.members_with(ProjectRole::Guest),
        "limited_guest_count": summary.members_with(ProjectRole::LimitedGuest),
    });
    if let Some(quota) = &summary.quota {
        value["quota"] = json!({
            "hard": storage_json(quota.limit),
            "used": storage_json(Some(quota.used)),
        });
    }
    value
}

/// Harbor's `Quota` of a project.
fn quota_json(project: &Project, quota: &Quota) -> Value {
    json!({
        "ref": { "name": project.name, "owner_name": project.owner },
        "creation_time": rfc3339(project.created_at),
        "hard": storage_json(quota.limit),
        "used": storage_json(Some(quota.used)),
    })
}

#[derive(Deserialize)]
struct NewProject {
    project_name: String,
    #[serde(flatten)]
    fields: ProjectFields,
}

// --- members -------------------------------------------------------------------------------

fn member_json(member: &Member) -> Value {
    json!({
        "entity_name": member.user,
        "entity_type": "u",
        "project_name": member.project,
        "role_id": member.role.id(),
        "role_name": member.role.name(),
        "creation_time": rfc3339(member.created_at),
    })
}

#[derive(Deserialize)]
struct RoleChange {
    role_id: u64,
}

#[derive(Deserialize)]
struct NewMember {
    role_id: u64,
    member_user: MemberUser,
}

#[derive(Deserialize)]
struct MemberUser {
    username: String,
}

fn role(id: u64) -> Result<ProjectRole> {
    ProjectRole::from_id(id).ok_or_else(|| {
        bad_request(format!(
            "role_id {id} is not a role: 1 projectAdmin, 2 developer, 3 guest, 4 maintainer, \
             5 limitedGuest"
        ))
    })
}

// --- robot accounts ------------------------------------------------------------------------

fn robot_json(robot: &Robot) -> Value {
    let access: Vec<Value> = robot
        .permissions
        .iter()
        .map(|permission| {
            let action = match permission {
                RobotPermission::Pull => "pull",
                RobotPermission::Push => "push",
                RobotPermission::Delete => "delete",
            };
            json!({ "resource": "repository", "action": action })
        })
        .collect();
    json!({
        "name": robot.name,
        "description": robot.description,
        "level": "project",
        "disable": robot.disabled,
        "expires_at": robot.expires_at.map_or(-1, |at| i64::try_from(at).unwrap_or(i64::MAX)),
        "creation_time": rfc3339(robot.created_at),
        "permissions": [{ "kind": "project", "namespace": robot.project, "access": access }],
    })
}

#[derive(Deserialize)]
struct RobotPermissionsField {
    kind: String,
    namespace: String,
    access: Vec<RobotAccessField>,
}

#[derive(Deserialize)]
struct RobotAccessField {
    resource: String,
    action: String,
}

#[derive(Deserialize)]
struct NewRobot {
    name: String,
    #[serde(default)]
    description: String,
    /// Days; -1 (or absent) never expires.
    #[serde(default)]
    duration: Option<i64>,
    #[serde(default)]
    level: Option<String>,
    #[serde(default)]
    disable: bool,
    permissions: Vec<RobotPermissionsField>,
}

/// The project and permissions of a robot's `permissions` field: one project-level entry.
fn robot_permissions(fields: &[RobotPermissionsField]) -> Result<(String, Vec<RobotPermission>)> {
    let [entry] = fields else {
        return Err(bad_request(
            "a robot account has exactly one permissions entry: its project",
        ));
    };
    if entry.kind != "project" {
        return Err(bad_request(format!(
            "robot permissions of kind {:?} are not supported: use \"project\"",
            entry.kind
        )));
    }
    let mut permissions = Vec::new();
    for access in &entry.access {
        let permission = match (access.resource.as_str(), access.action.as_str()) {
            ("repository", "pull") => RobotPermission::Pull,
            ("repository", "push") => RobotPermission::Push,
            ("repository" | "artifact" | "tag", "delete") => RobotPermission::Delete,
            (resource, action) => {
                return Err(bad_request(format!(
                    "robot permission {action} on {resource} is not supported: use pull, push \
                     or delete on repository"
                )));
            }
        };
        if !permissions.contains(&permission) {
            permissions.push(permission);
        }
    }
    if permissions.is_empty() {
        return Err(bad_request("a robot account needs at least one permission"));
    }
    permissions.sort();
    Ok((entry.namespace.clone(), permissions))
}

#[derive(Deserialize)]
struct RobotUpdate {
    #[serde(default)]
    disable: Option<bool>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    duration: Option<i64>,
    #[serde(default)]
    permissions: Option<Vec<RobotPermissionsField>>,
}

#[derive(Deserialize, Default)]
struct SecretChange {
    #[serde(default)]
    secret: Option<String>,
}
