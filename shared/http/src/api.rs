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

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use berth_auth::{
    PasswordHasher, Principal, TokenService, check_password_policy, generate_robot_secret, policy,
    rfc3339, unix_now,
};
use berth_core::accounts::{
    Member, Project, ProjectRole, ROBOT_PREFIX, Robot, RobotPermission, User, robot_name,
    robot_project, validate_project_name, validate_user_name,
};
use berth_core::ports::MetadataStore;
use berth_core::{AccountStore, ErrorCode, RegistryError, Result};
use http::header::{CONTENT_TYPE, LOCATION};
use http::request::Parts;
use http::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::Router;
use crate::response::{ApiError, header_value};
use crate::token::{ClientAddress, basic_credentials};

/// Where the management API is mounted.
pub const API_PREFIX: &str = "/api/v2.0";

/// The largest request body of the management API.
const MAX_JSON_BYTES: usize = 64 * 1024;
/// The most items one listing answers.
pub(crate) const MAX_PAGE_SIZE: usize = 100;

/// Who may create projects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProjectCreation {
    /// Any user (Harbor's default).
    #[default]
    Everyone,
    /// System administrators only.
    AdminsOnly,
}

/// The account rules of one registry.
#[derive(Debug, Clone, Copy, Default)]
pub struct AccountSettings {
    /// Whether anyone may create a user account for themselves.
    pub self_registration: bool,
    pub project_creation: ProjectCreation,
}

/// What the management API works on.
pub struct ManagementApi {
    accounts: Arc<dyn AccountStore>,
    metadata: Arc<dyn MetadataStore>,
    tokens: Arc<TokenService>,
    settings: AccountSettings,
}

impl std::fmt::Debug for ManagementApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagementApi")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl ManagementApi {
    pub fn new(
        accounts: Arc<dyn AccountStore>,
        metadata: Arc<dyn MetadataStore>,
        tokens: Arc<TokenService>,
        settings: AccountSettings,
    ) -> Self {
        Self {
            accounts,
            metadata,
            tokens,
            settings,
        }
    }

    fn passwords(&self) -> &PasswordHasher {
        self.tokens.password_hasher()
    }
}

type Api = State<Arc<ManagementApi>>;
pub(crate) type Reply = std::result::Result<Response, ApiError>;

/// The management API's routes, under [`API_PREFIX`].
pub fn api_router(api: Arc<ManagementApi>) -> Router {
    api_router_with(api, Router::new())
}

/// The management API's routes and `extra` routes (relative to [`API_PREFIX`], such as the
/// replication API's), under [`API_PREFIX`].
pub fn api_router_with(api: Arc<ManagementApi>, extra: Router) -> Router {
    let routes = Router::new()
        .route("/users", get(list_users).post(create_user))
        .route("/users/current", get(current_user))
        .route("/users/{user}", get(get_user).delete(delete_user))
        .route("/users/{user}/password", put(change_password))
        .route("/users/{user}/sysadmin", put(set_sysadmin))
        .route(
            "/projects",
            get(list_projects).post(create_project).head(project_exists),
        )
        .route(
            "/projects/{project}",
            get(get_project).put(update_project).delete(delete_project),
        )
        .route(
            "/projects/{project}/members",
            get(list_members).post(add_member),
        )
        .route(
            "/projects/{project}/members/{user}",
            get(get_member).put(change_member).delete(remove_member),
        )
        .route("/projects/{project}/robots", get(list_robots))
        .route("/robots", axum::routing::post(create_robot))
        .route(
            "/robots/{robot}",
            get(get_robot)
                .put(update_robot)
                .patch(refresh_robot_secret)
                .delete(delete_robot),
        )
        .with_state(api)
        .merge(extra)
        .fallback(unknown_endpoint)
        .method_not_allowed_fallback(crate::token::method_not_allowed);
    Router::new()
        .nest(API_PREFIX, routes)
        .layer(axum::middleware::from_fn(crate::access_log))
}

pub(crate) async fn unknown_endpoint(method: Method, uri: http::Uri) -> ApiError {
    ApiError(RegistryError::new(
        ErrorCode::NotFound,
        format!("no management endpoint {method} {}", uri.path()),
    ))
}

// --- callers -------------------------------------------------------------------------------

/// The caller, from Basic credentials (anonymous without).
async fn caller(api: &ManagementApi, parts: &Parts) -> Result<Principal> {
    let credentials = basic_credentials(&parts.headers)?;
    let source = parts
        .extensions
        .get::<ClientAddress>()
        .map_or("unknown", |address| address.0.as_str());
    let credentials = credentials
        .as_ref()
        .map(|(name, secret)| (name.as_str(), secret.as_str()));
    Ok(api
        .tokens
        .authenticate(credentials, source, unix_now())
        .await?)
}

/// The caller, who must be a user.
async fn user_caller(api: &ManagementApi, parts: &Parts) -> Result<(String, bool)> {
    match caller(api, parts).await? {
        Principal::User { name, admin } => Ok((name, admin)),
        Principal::Anonymous => Err(unauthorized()),
        Principal::Robot { .. } => Err(forbidden("robot accounts cannot use the management API")),
    }
}

pub(crate) async fn admin_caller(api: &ManagementApi, parts: &Parts) -> Result<String> {
    match user_caller(api, parts).await? {
        (name, true) => Ok(name),
        _ => Err(forbidden("only system administrators may do this")),
    }
}

fn unauthorized() -> RegistryError {
    RegistryError::new(
        ErrorCode::Unauthorized,
        "authentication required: send Basic credentials of a user",
    )
}

fn forbidden(message: &str) -> RegistryError {
    RegistryError::new(ErrorCode::Denied, message.to_owned())
}

pub(crate) fn not_found(what: &str) -> RegistryError {
    RegistryError::new(ErrorCode::NotFound, format!("{what} not found"))
}

pub(crate) fn bad_request(message: impl Into<String>) -> RegistryError {
    RegistryError::new(ErrorCode::BadRequest, message.into())
}

/// The caller's role in `project`, if a member.
async fn role_in(api: &ManagementApi, project: &str, user: &str) -> Result<Option<ProjectRole>> {
    Ok(api
        .accounts
        .member(project, user)
        .await?
        .map(|member| member.role))
}

/// The project, which the caller must administer (project admin or system admin). A
/// project the caller may not even see is "not found".
async fn administered_project(
    api: &ManagementApi,
    parts: &Parts,
    name: &str,
) -> Result<(String, Project)> {
    let (caller, admin) = user_caller(api, parts).await?;
    let project = api
        .accounts
        .project(name)
        .await?
        .ok_or_else(|| not_found(&format!("project {name:?}")))?;
    let role = role_in(api, name, &caller).await?;
    let principal = Principal::User {
        name: caller.clone(),
        admin,
    };
    if policy::may_manage_members(&principal, role) {
        return Ok((caller, project));
    }
    if role.is_none() && !project.public {
        return Err(not_found(&format!("project {name:?}")));
    }
    Err(forbidden(&format!(
        "only the admins of project {name:?} may do this"
    )))
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

pub(crate) fn ok() -> Reply {
    Ok(StatusCode::OK.into_response())
}

/// `page` (from 1) and `page_size` (at most [`MAX_PAGE_SIZE`], default 10), as Harbor pages.
pub(crate) fn page(headers_query: Option<&str>) -> Result<(usize, usize)> {
    let (mut page, mut size) = (1usize, 10usize);
    for (key, value) in form_urlencoded::parse(headers_query.unwrap_or("").as_bytes()) {
        let number = || {
            value
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| bad_request(format!("{key} must be a positive number")))
        };
        match &*key {
            "page" => page = number()?,
            "page_size" => size = number()?.min(MAX_PAGE_SIZE),
            _ => {}
        }
    }
    Ok((page, size))
}

pub(crate) fn query_value(parts: &Parts, name: &str) -> Option<String> {
    form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// Hashes a secret away from the async workers (Argon2id takes tens of milliseconds).
async fn hash_secret(api: &ManagementApi, secret: String) -> Result<String> {
    let passwords = api.passwords().clone();
    tokio::task::spawn_blocking(move || passwords.hash(&secret))
        .await
        .map_err(|e| RegistryError::internal(format!("hashing failed: {e}")))?
}

fn check_policy(password: &str) -> Result<()> {
    check_password_policy(password).map_err(|weak| bad_request(weak.to_string()))
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

async fn create_user(State(api): Api, request: Request) -> Reply {
    let (parts, body) = request.into_parts();
    match caller(&api, &parts).await? {
        Principal::User { admin: true, .. } => {}
        Principal::Anonymous if api.settings.self_registration => {}
        Principal::Anonymous => return Err(unauthorized().into()),
        _ => return Err(forbidden("only system administrators may create users").into()),
    }
    let new: NewUser = read_json(body).await?;
    validate_user_name(&new.username)?;
    if new.username.starts_with(ROBOT_PREFIX) {
        return Err(bad_request("user names must not start with robot$").into());
    }
    check_policy(&new.password)?;
    let user = User {
        password_hash: hash_secret(&api, new.password).await?,
        name: new.username,
        email: new.email.filter(|email| !email.is_empty()),
        admin: false,
        created_at: unix_now(),
        password_changed_at: 0,
    };
    if !api.accounts.create_user(&user).await? {
        return Err(RegistryError::new(
            ErrorCode::Conflict,
            format!("user {:?} already exists", user.name),
        )
        .into());
    }
    tracing::info!(target: "berth::audit", user = user.name, "user created");
    created(&format!("/users/{}", user.name), Some(&user_json(&user)))
}

async fn list_users(State(api): Api, request: Request) -> Reply {
    let (parts, _) = request.into_parts();
    admin_caller(&api, &parts).await?;
    let (page, size) = page(parts.uri.query())?;
    let users = paged(page, size, |after, limit| {
        let api = api.clone();
        async move { api.accounts.users(after.as_deref(), limit).await }
    })
    .await?;
    json_reply(
        StatusCode::OK,
        &Value::Array(users.iter().map(user_json).collect()),
    )
}

/// Items `(page - 1) * size ..` of a name-ordered listing, read in batches.
async fn paged<T, F, Fut>(page: usize, size: usize, mut list: F) -> Result<Vec<T>>
where
    T: Named,
    F: FnMut(Option<String>, usize) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<T>>>,
{
    let mut skip = (page - 1).saturating_mul(size);
    let mut after: Option<String> = None;
    loop {
        let batch = list(after.clone(), MAX_PAGE_SIZE).await?;
        let full = batch.len() == MAX_PAGE_SIZE;
        after = batch.last().map(|item| item.name().to_owned());
        if skip >= batch.len() {
            skip -= batch.len();
            if !full {
                return Ok(Vec::new());
            }
            continue;
        }
        let mut items: Vec<T> = batch.into_iter().skip(skip).take(size).collect();
        while items.len() < size && full {
            let more = list(after.clone(), size - items.len()).await?;
            if more.is_empty() {
                break;
            }
            after = more.last().map(|item| item.name().to_owned());
            items.extend(more);
        }
        return Ok(items);
    }
}

trait Named {
    fn name(&self) -> &str;
}

impl Named for User {
    fn name(&self) -> &str {
        &self.name
    }
}

impl Named for Project {
    fn name(&self) -> &str {
        &self.name
    }
}

async fn existing_user(api: &ManagementApi, name: &str) -> Result<User> {
    api.accounts
        .user(name)
        .await?
        .ok_or_else(|| not_found(&format!("user {name:?}")))
}

async fn current_user(State(api): Api, request: Request) -> Reply {
    let (parts, _) = request.into_parts();
    let (name, _) = user_caller(&api, &parts).await?;
    let user = existing_user(&api, &name).await?;
    json_reply(StatusCode::OK, &user_json(&user))
}

/// The user `name`, whom the caller must be or administer.
async fn own_or_admin(api: &ManagementApi, parts: &Parts, name: &str) -> Result<(String, bool)> {
    let (caller, admin) = user_caller(api, parts).await?;
    if !admin && caller != name {
        return Err(forbidden("users may only see and change their own account"));
    }
    Ok((caller, admin))
}

async fn get_user(State(api): Api, Path(name): Path<String>, request: Request) -> Reply {
    let (parts, _) = request.into_parts();
    own_or_admin(&api, &parts, &name).await?;
    let user = existing_user(&api, &name).await?;
    json_reply(StatusCode::OK, &user_json(&user))
}

async fn delete_user(State(api): Api, Path(name): Path<String>, request: Request) -> Reply {
    let (parts, _) = request.into_parts();
    let caller = admin_caller(&api, &parts).await?;
    if caller == name {
        return Err(forbidden("administrators cannot delete their own account").into());
    }
    if !api.accounts.delete_user(&name).await? {
        return Err(not_found(&format!("user {name:?}")).into());
    }
    tracing::info!(target: "berth::audit", by = caller, user = name, "user deleted");
    ok()
}

#[derive(Deserialize)]
struct PasswordChange {
    #[serde(default)]
    old_password: Option<String>,
    new_password: String,
}

async fn change_password(State(api): Api, Path(name): Path<String>, request: Request) -> Reply {
    let (parts, body) = request.into_parts();
    let (caller, admin) = own_or_admin(&api, &parts, &name).await?;
    let change: PasswordChange = read_json(body).await?;
    let user = existing_user(&api, &name).await?;
    // Users prove the old password even with a valid login: a borrowed session must not be
    // enough to lock the owner out. Administrators reset others' passwords without it.
    if !admin || caller == name {
        let old = change.old_password.unwrap_or_default();
        let passwords = api.passwords().clone();
        let hash = user.password_hash.clone();
        let matches = tokio::task::spawn_blocking(move || passwords.verify(&old, &hash))
            .await
            .map_err(|e| RegistryError::internal(format!("password check failed: {e}")))?;
        if !matches {
            return Err(forbidden("the old password is not correct").into());
        }
    }
    check_policy(&change.new_password)?;
    let password_hash = hash_secret(&api, change.new_password).await?;
    // Read again after the slow hashing, so that a change made meanwhile (a demotion) is
    // not written back over.
    let mut user = existing_user(&api, &name).await?;
    user.password_hash = password_hash;
    user.password_changed_at = unix_now();
    if !api.accounts.update_user(&user).await? {
        return Err(not_found(&format!("user {name:?}")).into());
    }
    tracing::info!(target: "berth::audit", by = caller, user = name, "password changed");
    ok()
}

#[derive(Deserialize)]
struct SysadminChange {
    sysadmin_flag: bool,
}

async fn set_sysadmin(State(api): Api, Path(name): Path<String>, request: Request) -> Reply {
    let (parts, body) = request.into_parts();
    let caller = admin_caller(&api, &parts).await?;
    let change: SysadminChange = read_json(body).await?;
    if caller == name && !change.sysadmin_flag {
        return Err(forbidden("administrators cannot revoke their own rights").into());
    }
    let mut user = existing_user(&api, &name).await?;
    user.admin = change.sysadmin_flag;
    if !api.accounts.update_user(&user).await? {
        return Err(not_found(&format!("user {name:?}")).into());
    }
    tracing::info!(target: "berth::audit", by = caller, user = name, admin = user.admin, "system administrator flag set");
    ok()
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
}

#[derive(Deserialize)]
struct NewProject {
    project_name: String,
    #[serde(flatten)]
    fields: ProjectFields,
}

async fn create_project(State(api): Api, request: Request) -> Reply {
    let (parts, body) = request.into_parts();
    let (caller, admin) = user_caller(&api, &parts).await?;
    if api.settings.project_creation == ProjectCreation::AdminsOnly && !admin {
        return Err(forbidden("only system administrators may create projects").into());
    }
    let new: NewProject = read_json(body).await?;
    validate_project_name(&new.project_name)?;
    let now = unix_now();
    let project = Project {
        public: new.fields.public()?.unwrap_or(false),
        name: new.project_name,
        owner: caller.clone(),
        created_at: now,
    };
    if !api.accounts.create_project(&project).await? {
        return Err(RegistryError::new(
            ErrorCode::Conflict,
            format!("project {:?} already exists", project.name),
        )
        .into());
    }
    // The creator administers it, as in Harbor.
    let owner = Member {
        project: project.name.clone(),
        user: caller.clone(),
        role: ProjectRole::ProjectAdmin,
        created_at: now,
    };
    // A project without its admin could only be repaired by a system administrator: undo.
    match api.accounts.put_member(&owner).await {
        Ok(true) => {}
        Ok(false) => {
            api.accounts.delete_project(&project.name).await?;
            return Err(not_found(&format!("user {caller:?}")).into());
        }
        Err(error) => {
            if let Err(undo) = api.accounts.delete_project(&project.name).await {
                tracing::error!(project = project.name, error = %undo, "could not undo a project whose admin could not be added");
            }
            return Err(error.into());
        }
    }
    tracing::info!(target: "berth::audit", by = caller, project = project.name, public = project.public, "project created");
    created(
        &format!("/projects/{}", project.name),
        Some(&project_json(&project, Some(ProjectRole::ProjectAdmin))),
    )
}

async fn project_exists(State(api): Api, request: Request) -> Reply {
    let (parts, _) = request.into_parts();
    let name = query_value(&parts, "project_name")
        .ok_or_else(|| bad_request("HEAD /projects needs ?project_name="))?;
    let caller = optional_user(&api, &parts).await?;
    let visible = match api.accounts.project(&name).await? {
        None => false,
        Some(project) if project.public => true,
        Some(_) => match &caller {
            Some((_, true)) => true,
            Some((user, false)) => role_in(&api, &name, user).await?.is_some(),
            None => false,
        },
    };
    if visible {
        ok()
    } else {
        Ok(StatusCode::NOT_FOUND.into_response())
    }
}

/// The caller for reads open to anyone: `None` for anonymous.
async fn optional_user(api: &ManagementApi, parts: &Parts) -> Result<Option<(String, bool)>> {
    match caller(api, parts).await? {
        Principal::User { name, admin } => Ok(Some((name, admin))),
        Principal::Anonymous => Ok(None),
        Principal::Robot { .. } => Err(forbidden("robot accounts cannot use the management API")),
    }
}

async fn list_projects(State(api): Api, request: Request) -> Reply {
    let (parts, _) = request.into_parts();
    let caller = optional_user(&api, &parts).await?;
    let (page, size) = page(parts.uri.query())?;
    let roles: Vec<Member> = match &caller {
        Some((name, false)) => api.accounts.memberships(name).await?,
        _ => Vec::new(),
    };
    let admin = matches!(caller, Some((_, true)));
    let role_of = |project: &str| {
        roles
            .iter()
            .find(|member| member.project == project)
            .map(|member| member.role)
    };
    // Visible: every project to admins; public ones and one's own to others.
    let mut visible = Vec::new();
    let mut skip = (page - 1).saturating_mul(size);
    let mut after: Option<String> = None;
    'scan: loop {
        let batch = api
            .accounts
            .projects(after.as_deref(), MAX_PAGE_SIZE)
            .await?;
        let full = batch.len() == MAX_PAGE_SIZE;
        after = batch.last().map(|project| project.name.clone());
        for project in batch {
            let role = role_of(&project.name);
            if !(admin || project.public || role.is_some()) {
                continue;
            }
            if skip > 0 {
                skip -= 1;
                continue;
            }
            visible.push(project_json(&project, role));
            if visible.len() == size {
                break 'scan;
            }
        }
        if !full {
            break;
        }
    }
    json_reply(StatusCode::OK, &Value::Array(visible))
}

async fn get_project(State(api): Api, Path(name): Path<String>, request: Request) -> Reply {
    let (parts, _) = request.into_parts();
    let caller = optional_user(&api, &parts).await?;
    let project = api.accounts.project(&name).await?;
    let role = match (&caller, &project) {
        (Some((user, _)), Some(_)) => role_in(&api, &name, user).await?,
        _ => None,
    };
    let admin = matches!(caller, Some((_, true)));
    match project {
        Some(project) if admin || project.public || role.is_some() => {
            json_reply(StatusCode::OK, &project_json(&project, role))
        }
        _ => Err(not_found(&format!("project {name:?}")).into()),
    }
}

async fn update_project(State(api): Api, Path(name): Path<String>, request: Request) -> Reply {
    let (parts, body) = request.into_parts();
    let (caller, mut project) = administered_project(&api, &parts, &name).await?;
    let fields: ProjectFields = read_json(body).await?;
    if let Some(public) = fields.public()? {
        project.public = public;
    }
    if !api.accounts.update_project(&project).await? {
        return Err(not_found(&format!("project {name:?}")).into());
    }
    tracing::info!(target: "berth::audit", by = caller, project = name, public = project.public, "project updated");
    ok()
}

async fn delete_project(State(api): Api, Path(name): Path<String>, request: Request) -> Reply {
    let (parts, _) = request.into_parts();
    let (caller, _) = administered_project(&api, &parts, &name).await?;
    // Harbor refuses to delete a project that still holds repositories; so does Berth, so
    // that no repository outlives the rules that protect it.
    let prefix = format!("{name}/");
    let holds_repositories = api
        .metadata
        .repositories(Some(&prefix), 1)
        .await?
        .first()
        .is_some_and(|repository| repository.starts_with(&prefix))
        || match name.parse() {
            Ok(repository) => api.metadata.repository_exists(&repository).await?,
            Err(_) => false,
        };
    if holds_repositories {
        return Err(RegistryError::new(
            ErrorCode::PreconditionFailed,
            format!("project {name:?} still holds repositories: delete them first"),
        )
        .into());
    }
    if !api.accounts.delete_project(&name).await? {
        return Err(not_found(&format!("project {name:?}")).into());
    }
    tracing::info!(target: "berth::audit", by = caller, project = name, "project deleted");
    ok()
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

async fn list_members(State(api): Api, Path(project): Path<String>, request: Request) -> Reply {
    let (parts, _) = request.into_parts();
    let (caller, admin) = user_caller(&api, &parts).await?;
    if api.accounts.project(&project).await?.is_none()
        || (!admin && role_in(&api, &project, &caller).await?.is_none())
    {
        return Err(not_found(&format!("project {project:?}")).into());
    }
    let members = api.accounts.members(&project).await?;
    json_reply(
        StatusCode::OK,
        &Value::Array(members.iter().map(member_json).collect()),
    )
}

async fn get_member(
    State(api): Api,
    Path((project, user)): Path<(String, String)>,
    request: Request,
) -> Reply {
    let (parts, _) = request.into_parts();
    let (caller, admin) = user_caller(&api, &parts).await?;
    if !admin && role_in(&api, &project, &caller).await?.is_none() {
        return Err(not_found(&format!("project {project:?}")).into());
    }
    let member = api
        .accounts
        .member(&project, &user)
        .await?
        .ok_or_else(|| not_found(&format!("member {user:?} of project {project:?}")))?;
    json_reply(StatusCode::OK, &member_json(&member))
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

async fn add_member(State(api): Api, Path(project): Path<String>, request: Request) -> Reply {
    let (parts, body) = request.into_parts();
    let (caller, _) = administered_project(&api, &parts, &project).await?;
    let new: NewMember = read_json(body).await?;
    let role = role(new.role_id)?;
    let user = new.member_user.username;
    if api.accounts.member(&project, &user).await?.is_some() {
        return Err(RegistryError::new(
            ErrorCode::Conflict,
            format!("{user:?} is already a member of project {project:?}"),
        )
        .into());
    }
    let member = Member {
        project: project.clone(),
        user: user.clone(),
        role,
        created_at: unix_now(),
    };
    if !api.accounts.put_member(&member).await? {
        return Err(not_found(&format!("user {user:?}")).into());
    }
    tracing::info!(target: "berth::audit", by = caller, project, user, role = role.name(), "member added");
    created(
        &format!("/projects/{project}/members/{user}"),
        Some(&member_json(&member)),
    )
}

async fn change_member(
    State(api): Api,
    Path((project, user)): Path<(String, String)>,
    request: Request,
) -> Reply {
    let (parts, body) = request.into_parts();
    let (caller, _) = administered_project(&api, &parts, &project).await?;
    let change: RoleChange = read_json(body).await?;
    let mut member = api
        .accounts
        .member(&project, &user)
        .await?
        .ok_or_else(|| not_found(&format!("member {user:?} of project {project:?}")))?;
    member.role = role(change.role_id)?;
    if !api.accounts.put_member(&member).await? {
        return Err(not_found(&format!("member {user:?} of project {project:?}")).into());
    }
    tracing::info!(target: "berth::audit", by = caller, project, user, role = member.role.name(), "member role changed");
    ok()
}

async fn remove_member(
    State(api): Api,
    Path((project, user)): Path<(String, String)>,
    request: Request,
) -> Reply {
    let (parts, _) = request.into_parts();
    let (caller, _) = administered_project(&api, &parts, &project).await?;
    if !api.accounts.delete_member(&project, &user).await? {
        return Err(not_found(&format!("member {user:?} of project {project:?}")).into());
    }
    tracing::info!(target: "berth::audit", by = caller, project, user, "member removed");
    ok()
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

fn expiry(duration_days: Option<i64>, now: u64) -> Result<Option<u64>> {
    match duration_days {
        None | Some(-1) => Ok(None),
        Some(days) if days >= 1 => {
            let days = u64::try_from(days).unwrap_or(u64::MAX);
            Ok(Some(now.saturating_add(days.saturating_mul(86_400))))
        }
        Some(other) => Err(bad_request(format!(
            "duration is a number of days, or -1 for never; not {other}"
        ))),
    }
}

/// A robot's own name: lower-case letters, digits, `.`, `_` and `-`, 1 to 64 characters.
fn validate_robot_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(RegistryError::new(
            ErrorCode::NameInvalid,
            format!(
                "invalid robot name {name:?}: use 1 to 64 lower-case letters, digits, '.', '_' \
                 or '-'"
            ),
        ))
    }
}

async fn create_robot(State(api): Api, request: Request) -> Reply {
    let (parts, body) = request.into_parts();
    // Authenticate before reading the body, so that strangers learn nothing from it.
    let (caller, _) = user_caller(&api, &parts).await?;
    let new: NewRobot = read_json(body).await?;
    if new.level.as_deref().is_some_and(|level| level != "project") {
        return Err(
            bad_request("only project-level robot accounts exist: level \"project\"").into(),
        );
    }
    validate_robot_name(&new.name)?;
    let (project, permissions) = robot_permissions(&new.permissions)?;
    // The same answers as every other project-admin action: a private project the caller
    // is not in is "not found".
    administered_project(&api, &parts, &project).await?;
    let now = unix_now();
    let secret = generate_robot_secret()?;
    let robot = Robot {
        name: robot_name(&project, &new.name),
        project,
        description: new.description,
        secret_hash: hash_secret(&api, secret.clone()).await?,
        permissions,
        expires_at: expiry(new.duration, now)?,
        disabled: new.disable,
        created_at: now,
    };
    if !api.accounts.create_robot(&robot).await? {
        return Err(RegistryError::new(
            ErrorCode::Conflict,
            format!("robot account {:?} already exists", robot.name),
        )
        .into());
    }
    tracing::info!(target: "berth::audit", by = caller, robot = robot.name, "robot account created");
    let mut answer = robot_json(&robot);
    // The only time the secret is shown.
    answer["secret"] = json!(secret);
    created(&format!("/robots/{}", robot.name), Some(&answer))
}

/// The robot `name`, whose project the caller must administer.
async fn administered_robot(
    api: &ManagementApi,
    parts: &Parts,
    name: &str,
) -> Result<(String, Robot)> {
    let missing = || not_found(&format!("robot account {name:?}"));
    let project = robot_project(name).ok_or_else(missing)?;
    let (caller, _) =
        administered_project(api, parts, project)
            .await
            .map_err(|error| match error.code() {
                ErrorCode::NotFound => missing(),
                _ => error,
            })?;
    let robot = api.accounts.robot(name).await?.ok_or_else(missing)?;
    Ok((caller, robot))
}

async fn list_robots(State(api): Api, Path(project): Path<String>, request: Request) -> Reply {
    let (parts, _) = request.into_parts();
    administered_project(&api, &parts, &project).await?;
    let robots = api.accounts.robots(&project).await?;
    json_reply(
        StatusCode::OK,
        &Value::Array(robots.iter().map(robot_json).collect()),
    )
}

async fn get_robot(State(api): Api, Path(name): Path<String>, request: Request) -> Reply {
    let (parts, _) = request.into_parts();
    let (_, robot) = administered_robot(&api, &parts, &name).await?;
    json_reply(StatusCode::OK, &robot_json(&robot))
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

async fn update_robot(State(api): Api, Path(name): Path<String>, request: Request) -> Reply {
    let (parts, body) = request.into_parts();
    let (caller, mut robot) = administered_robot(&api, &parts, &name).await?;
    let update: RobotUpdate = read_json(body).await?;
    if let Some(disable) = update.disable {
        robot.disabled = disable;
    }
    if let Some(description) = update.description {
        robot.description = description;
    }
    if update.duration.is_some() {
        robot.expires_at = expiry(update.duration, unix_now())?;
    }
    if let Some(fields) = &update.permissions {
        let (project, permissions) = robot_permissions(fields)?;
        if project != robot.project {
            return Err(bad_request("a robot account cannot move to another project").into());
        }
        robot.permissions = permissions;
    }
    if !api.accounts.update_robot(&robot).await? {
        return Err(not_found(&format!("robot account {name:?}")).into());
    }
    tracing::info!(target: "berth::audit", by = caller, robot = name, disabled = robot.disabled, "robot account updated");
    ok()
}

#[derive(Deserialize, Default)]
struct SecretChange {
    #[serde(default)]
    secret: Option<String>,
}

/// `PATCH /robots/{r}`: a new secret, generated unless one is given (which must follow the
/// password policy). The old secret stops working at once.
async fn refresh_robot_secret(
    State(api): Api,
    Path(name): Path<String>,
    request: Request,
) -> Reply {
    let (parts, body) = request.into_parts();
    let (caller, _) = administered_robot(&api, &parts, &name).await?;
    let bytes = read_body(body).await?;
    let change: SecretChange = if bytes.iter().all(u8::is_ascii_whitespace) {
        SecretChange::default()
    } else {
        parse_json(&bytes)?
    };
    let secret = match change.secret {
        Some(secret) => {
            check_policy(&secret)?;
            secret
        }
        None => generate_robot_secret()?,
    };
    let secret_hash = hash_secret(&api, secret.clone()).await?;
    // Read again after the slow hashing, so that a change made meanwhile (a disable) is not
    // written back over.
    let mut robot = api
        .accounts
        .robot(&name)
        .await?
        .ok_or_else(|| not_found(&format!("robot account {name:?}")))?;
    robot.secret_hash = secret_hash;
    if !api.accounts.update_robot(&robot).await? {
        return Err(not_found(&format!("robot account {name:?}")).into());
    }
    tracing::info!(target: "berth::audit", by = caller, robot = name, "robot account secret refreshed");
    json_reply(StatusCode::OK, &json!({ "secret": secret }))
}

async fn delete_robot(State(api): Api, Path(name): Path<String>, request: Request) -> Reply {
    let (parts, _) = request.into_parts();
    let (caller, _) = administered_robot(&api, &parts, &name).await?;
    if !api.accounts.delete_robot(&name).await? {
        return Err(not_found(&format!("robot account {name:?}")).into());
    }
    tracing::info!(target: "berth::audit", by = caller, robot = name, "robot account deleted");
    ok()
}
