//! The management use cases: users, projects, project members and robot accounts, and
//! sign-in. Each takes its [`Caller`]; the edge has already checked the endpoint's
//! [`Permission`] with [`Accounts::authorize`]. Each change is published as an event.

use std::future::Future;
use std::sync::Arc;

use berth_auth::{
    Action, ActionSet, PasswordHasher, Principal, TokenService, check_password_policy,
    generate_robot_secret, policy, unix_now,
};
use berth_core::accounts::{
    Member, Project, ProjectRole, ROBOT_PREFIX, Robot, RobotPermission, User, robot_name,
    robot_project, validate_project_name, validate_user_name,
};
use berth_core::audit::{AuditPage, AuditQuery, AuditStore};
use berth_core::events::{AccountResource, Operation};
use berth_core::ports::MetadataStore;
use berth_core::statistics::{DailyPulls, StatisticsStore};
use berth_core::webhooks::WebhookStore;
use berth_core::{
    AccountStore, Actor, ErrorCode, Event, EventKind, EventSink, RegistryError, RequestContext,
    Result,
};

use crate::permission::{Caller, Permission, bad_request, forbidden, not_found, unauthorized};

/// The most items one listing answers, and the batch listings are read in.
pub const MAX_PAGE_SIZE: usize = 100;

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

/// A robot account to create.
#[derive(Debug, Clone)]
pub struct RobotSpec {
    /// Its own name (the full name is `robot$<project>+<name>`).
    pub name: String,
    pub project: String,
    pub description: String,
    pub permissions: Vec<RobotPermission>,
    /// Days; `None` or -1 never expires.
    pub duration_days: Option<i64>,
    pub disabled: bool,
}

/// Changes to a robot account; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct RobotChange {
    pub disabled: Option<bool>,
    pub description: Option<String>,
    /// Days from now; -1 never expires.
    pub duration_days: Option<i64>,
    /// The project named with the permissions, which must be the robot's own.
    pub permissions: Option<(String, Vec<RobotPermission>)>,
}

/// Sign-in: credentials checked and the outcome published.
#[derive(Clone)]
pub struct SignIn {
    tokens: Arc<TokenService>,
    events: Option<Arc<dyn EventSink>>,
}

impl std::fmt::Debug for SignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignIn").finish_non_exhaustive()
    }
}

impl SignIn {
    pub fn new(tokens: Arc<TokenService>) -> Self {
        Self {
            tokens,
            events: None,
        }
    }

    /// Publishes sign-ins to `events`.
    pub fn with_events(mut self, events: Arc<dyn EventSink>) -> Self {
        self.events = Some(events);
        self
    }

    /// The account `credentials` prove (anonymous without). A refusal is published as a
    /// failed sign-in, naming the account but never the secret; an acceptance only when
    /// `record_success` (a token request is a sign-in; each management call is not).
    pub async fn authenticate(
        &self,
        context: &RequestContext,
        credentials: Option<(&str, &str)>,
        record_success: bool,
    ) -> Result<Caller> {
        let outcome = self
            .tokens
            .authenticate(credentials, &context.client, unix_now())
            .await;
        if let (Some(events), Some((username, _))) = (&self.events, credentials) {
            let username = username.to_owned();
            match &outcome {
                Ok(_) if record_success => {
                    let mut context = context.clone();
                    context.actor = Actor::named(&username);
                    events.publish(&Event::now(
                        &context,
                        EventKind::LoginSucceeded { username },
                    ));
                }
                Ok(_) => {}
                Err(_) => events.publish(&Event::now(context, EventKind::LoginFailed { username })),
            }
        }
        Ok(Caller::new(outcome?, context.clone()))
    }
}

/// The management use cases over one registry's stores.
pub struct Accounts {
    pub(crate) accounts: Arc<dyn AccountStore>,
    pub(crate) metadata: Arc<dyn MetadataStore>,
    tokens: Arc<TokenService>,
    settings: AccountSettings,
    events: Option<Arc<dyn EventSink>>,
    audit: Option<Arc<dyn AuditStore>>,
    statistics: Option<Arc<dyn StatisticsStore>>,
    webhooks: Option<Arc<dyn WebhookStore>>,
    pub(crate) quotas: Option<Arc<dyn berth_core::quota::QuotaStore>>,
}

/// How many projects and repositories a caller sees.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub private_projects: u64,
    pub public_projects: u64,
    pub private_repositories: u64,
    pub public_repositories: u64,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounts")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Accounts {
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
            events: None,
            audit: None,
            statistics: None,
            webhooks: None,
            quotas: None,
        }
    }

    /// Keeps webhook policies in `webhooks`.
    pub fn with_webhooks(mut self, webhooks: Arc<dyn WebhookStore>) -> Self {
        self.webhooks = Some(webhooks);
        self
    }

    pub(crate) fn webhook_store(&self) -> Option<&dyn WebhookStore> {
        self.webhooks.as_deref()
    }

    /// Answers usage queries from `statistics`.
    pub fn with_statistics(mut self, statistics: Arc<dyn StatisticsStore>) -> Self {
        self.statistics = Some(statistics);
        self
    }

    pub(crate) fn statistics_store(&self) -> Option<&dyn StatisticsStore> {
        self.statistics.as_deref()
    }

    fn counters(&self) -> Result<&dyn StatisticsStore> {
        self.statistics.as_deref().ok_or_else(|| {
            RegistryError::new(ErrorCode::Unsupported, "this deployment counts no pulls")
        })
    }

    /// The projects and repositories the caller sees, public and private.
    pub async fn summary(&self, caller: &Caller) -> Result<Summary> {
        // Every visible project in one pass (one page as large as there are projects): the
        // memberships are read once and the project listing scanned once.
        let visible: std::collections::HashMap<String, bool> = self
            .projects(caller, 1, usize::MAX)
            .await?
            .into_iter()
            .map(|(project, _)| (project.name, project.public))
            .collect();
        let mut summary = Summary::default();
        for public in visible.values() {
            *if *public {
                &mut summary.public_projects
            } else {
                &mut summary.private_projects
            } += 1;
        }
        let mut after: Option<String> = None;
        loop {
            let names = self
                .metadata
                .repositories(after.as_deref(), MAX_PAGE_SIZE)
                .await?;
            for name in &names {
                match visible.get(berth_core::audit::project_of(name).as_str()) {
                    Some(true) => summary.public_repositories += 1,
                    Some(false) => summary.private_repositories += 1,
                    None => {}
                }
            }
            if names.len() < MAX_PAGE_SIZE {
                return Ok(summary);
            }
            after = names.last().cloned();
        }
    }

    /// The most pulled repositories (at most `limit`) and the pulls per day of the last
    /// [`berth_core::statistics::DAILY_PULL_DAYS`] days.
    pub async fn pull_statistics(
        &self,
        limit: usize,
    ) -> Result<(Vec<(String, u64)>, Vec<DailyPulls>)> {
        let counters = self.counters()?;
        let today = unix_now() / 86_400;
        Ok((
            counters.most_pulled(limit).await?,
            counters.daily_pulls(today).await?,
        ))
    }

    /// Answers audit queries from `audit`.
    pub fn with_audit(mut self, audit: Arc<dyn AuditStore>) -> Self {
        self.audit = Some(audit);
        self
    }

    /// The audit entries `query` asks for (the edge has checked who may ask for which).
    pub async fn audit_logs(&self, query: &AuditQuery) -> Result<AuditPage> {
        let Some(audit) = &self.audit else {
            return Err(RegistryError::new(
                ErrorCode::Unsupported,
                "this deployment keeps no audit log",
            ));
        };
        let now_ms = unix_now().saturating_mul(1000);
        audit.query(query, now_ms).await
    }

    /// Publishes sign-ins and account changes to `events`.
    pub fn with_events(mut self, events: Arc<dyn EventSink>) -> Self {
        self.events = Some(events);
        self
    }

    pub(crate) fn publish(&self, context: &RequestContext, kind: EventKind) {
        if let Some(events) = &self.events {
            events.publish(&Event::now(context, kind));
        }
    }

    pub(crate) fn changed(
        &self,
        caller: &Caller,
        resource: AccountResource,
        operation: Operation,
        name: String,
    ) {
        self.publish(
            &caller.context,
            EventKind::AccountChanged {
                resource,
                operation,
                name,
            },
        );
    }

    fn passwords(&self) -> &PasswordHasher {
        self.tokens.password_hasher()
    }

    // --- sign-in and permissions -------------------------------------------------------

    /// The account `credentials` prove (anonymous without), a refusal published as a failed
    /// sign-in.
    pub async fn authenticate(
        &self,
        context: &RequestContext,
        credentials: Option<(&str, &str)>,
    ) -> Result<Caller> {
        self.sign_in()
            .authenticate(context, credentials, false)
            .await
    }

    fn sign_in(&self) -> SignIn {
        SignIn {
            tokens: self.tokens.clone(),
            events: self.events.clone(),
        }
    }

    /// Whether `caller` has `permission`: the one check of every management endpoint.
    pub async fn authorize(&self, caller: &Caller, permission: &Permission) -> Result<()> {
        let user = match &caller.principal {
            Principal::Robot { .. } => {
                return Err(forbidden("robot accounts cannot use the management API"));
            }
            Principal::User { name, admin } => Some((name.as_str(), *admin)),
            Principal::Anonymous => None,
        };
        let signed_in = || user.ok_or_else(unauthorized);
        match permission {
            Permission::Anyone => Ok(()),
            Permission::User => signed_in().map(drop),
            Permission::SystemAdmin => match signed_in()? {
                (_, true) => Ok(()),
                _ => Err(forbidden("only system administrators may do this")),
            },
            Permission::CreateUser => match user {
                Some((_, true)) => Ok(()),
                None if self.settings.self_registration => Ok(()),
                None => Err(unauthorized()),
                Some(_) => Err(forbidden("only system administrators may create users")),
            },
            Permission::CreateProject => {
                let (_, admin) = signed_in()?;
                if self.settings.project_creation == ProjectCreation::AdminsOnly && !admin {
                    return Err(forbidden("only system administrators may create projects"));
                }
                Ok(())
            }
            Permission::SelfOrAdmin(name) => {
                let (caller, admin) = signed_in()?;
                if !admin && caller != name {
                    return Err(forbidden("users may only see and change their own account"));
                }
                Ok(())
            }
            Permission::ProjectMember(project) => {
                let (caller, admin) = signed_in()?;
                if self.accounts.project(project).await?.is_none()
                    || (!admin && self.role_in(project, caller).await?.is_none())
                {
                    return Err(project_not_found(project));
                }
                Ok(())
            }
            Permission::ProjectReader(project) => {
                if self.project_visible(caller, project).await? {
                    Ok(())
                } else {
                    Err(project_not_found(project))
                }
            }
            Permission::Repositories(project, action) => {
                let project = project.as_str();
                let found = self.accounts.project(project).await?;
                let role = match (&found, caller.user()) {
                    (Some(_), Some((user, false))) => self.role_in(project, user).await?,
                    _ => None,
                };
                let actions = found.as_ref().map_or(ActionSet::EMPTY, |found| {
                    policy::repository_actions(&caller.principal, found, role, unix_now())
                });
                if actions.contains(*action) {
                    Ok(())
                } else if !actions.contains(Action::Pull) {
                    Err(project_not_found(project))
                } else if user.is_none() {
                    Err(unauthorized())
                } else {
                    Err(forbidden(format!(
                        "your role in project {project:?} does not allow {action}"
                    )))
                }
            }
            Permission::ProjectAdmin(project) => {
                signed_in()?;
                self.administered_project(caller, project).await.map(drop)
            }
            Permission::ProjectMaintainer(project) => {
                signed_in()?;
                self.project_in_role(
                    caller,
                    project,
                    policy::may_manage_tag_rules,
                    "admins and maintainers",
                )
                .await
                .map(drop)
            }
            Permission::TagRetention(project) => {
                let (user, admin) = signed_in()?;
                let found = self
                    .accounts
                    .project(project)
                    .await?
                    .ok_or_else(|| project_not_found(project))?;
                if admin {
                    return Ok(());
                }
                match self.role_in(project, user).await? {
                    Some(
                        ProjectRole::ProjectAdmin
                        | ProjectRole::Maintainer
                        | ProjectRole::Developer,
                    ) => Ok(()),
                    None if !found.public => Err(project_not_found(project)),
                    _ => Err(forbidden(format!(
                        "only the developers, maintainers and admins of project {project:?} may \
                         manage its tag retention"
                    ))),
                }
            }
            Permission::RobotAdmin(name) => {
                signed_in()?;
                let missing = || not_found(&format!("robot account {name:?}"));
                let project = robot_project(name).ok_or_else(missing)?;
                self.administered_project(caller, project)
                    .await
                    .map_err(|error| match error.code() {
                        ErrorCode::NotFound => missing(),
                        _ => error,
                    })?;
                Ok(())
            }
        }
    }

    /// The caller's role in `project`, if a member.
    async fn role_in(&self, project: &str, user: &str) -> Result<Option<ProjectRole>> {
        Ok(self
            .accounts
            .member(project, user)
            .await?
            .map(|member| member.role))
    }

    /// The project, which the caller must administer (project admin or system admin). A
    /// project the caller may not even see is "not found".
    async fn administered_project(&self, caller: &Caller, name: &str) -> Result<Project> {
        self.project_in_role(caller, name, policy::may_manage_members, "admins")
            .await
    }

    /// The project, in which `allowed` must allow the caller's role; refused as only its
    /// `who` may do it. A project the caller may not even see is "not found".
    async fn project_in_role(
        &self,
        caller: &Caller,
        name: &str,
        allowed: fn(&Principal, Option<ProjectRole>) -> bool,
        who: &str,
    ) -> Result<Project> {
        let (user, _) = caller.user().ok_or_else(unauthorized)?;
        let project = self
            .accounts
            .project(name)
            .await?
            .ok_or_else(|| project_not_found(name))?;
        let role = self.role_in(name, user).await?;
        if allowed(&caller.principal, role) {
            return Ok(project);
        }
        if role.is_none() && !project.public {
            return Err(project_not_found(name));
        }
        Err(forbidden(format!(
            "only the {who} of project {name:?} may do this"
        )))
    }

    // --- users -------------------------------------------------------------------------

    pub async fn create_user(
        &self,
        caller: &Caller,
        username: String,
        email: Option<String>,
        password: String,
    ) -> Result<User> {
        validate_user_name(&username)?;
        if username.starts_with(ROBOT_PREFIX) {
            return Err(bad_request("user names must not start with robot$"));
        }
        check_policy(&password)?;
        let user = User {
            password_hash: self.hash_secret(password).await?,
            name: username,
            email: email.filter(|email| !email.is_empty()),
            admin: false,
            created_at: unix_now(),
            password_changed_at: 0,
        };
        if !self.accounts.create_user(&user).await? {
            return Err(conflict(format!("user {:?} already exists", user.name)));
        }
        self.changed(
            caller,
            AccountResource::User,
            Operation::Create,
            user.name.clone(),
        );
        Ok(user)
    }

    /// Page `page` (from 1) of `size` users, by name.
    pub async fn users(&self, page: usize, size: usize) -> Result<Vec<User>> {
        paged(page, size, |after, limit| async move {
            self.accounts.users(after.as_deref(), limit).await
        })
        .await
    }

    pub async fn user(&self, name: &str) -> Result<User> {
        self.accounts
            .user(name)
            .await?
            .ok_or_else(|| not_found(&format!("user {name:?}")))
    }

    /// The caller's own account.
    pub async fn current_user(&self, caller: &Caller) -> Result<User> {
        let (name, _) = caller.user().ok_or_else(unauthorized)?;
        self.user(name).await
    }

    pub async fn delete_user(&self, caller: &Caller, name: &str) -> Result<()> {
        if caller.user().is_some_and(|(own, _)| own == name) {
            return Err(forbidden("administrators cannot delete their own account"));
        }
        if !self.accounts.delete_user(name).await? {
            return Err(not_found(&format!("user {name:?}")));
        }
        self.changed(
            caller,
            AccountResource::User,
            Operation::Delete,
            name.to_owned(),
        );
        Ok(())
    }

    /// Sets `name`'s password. Users prove the old one even when signed in: a borrowed
    /// session must not be enough to lock the owner out. Administrators reset others'
    /// passwords without it.
    pub async fn change_password(
        &self,
        caller: &Caller,
        name: &str,
        old_password: Option<String>,
        new_password: String,
    ) -> Result<()> {
        let user = self.user(name).await?;
        let own = caller.user().is_some_and(|(own, _)| own == name);
        if !caller.is_admin() || own {
            let old = old_password.unwrap_or_default();
            let passwords = self.passwords().clone();
            let hash = user.password_hash.clone();
            let matches = tokio::task::spawn_blocking(move || passwords.verify(&old, &hash))
                .await
                .map_err(|e| RegistryError::internal(format!("password check failed: {e}")))?;
            if !matches {
                return Err(forbidden("the old password is not correct"));
            }
        }
        check_policy(&new_password)?;
        let password_hash = self.hash_secret(new_password).await?;
        // Read again after the slow hashing, so that a change made meanwhile (a demotion)
        // is not written back over.
        let mut user = self.user(name).await?;
        user.password_hash = password_hash;
        user.password_changed_at = unix_now();
        if !self.accounts.update_user(&user).await? {
            return Err(not_found(&format!("user {name:?}")));
        }
        self.changed(
            caller,
            AccountResource::User,
            Operation::Update,
            name.to_owned(),
        );
        Ok(())
    }

    pub async fn set_sysadmin(&self, caller: &Caller, name: &str, admin: bool) -> Result<()> {
        if caller.user().is_some_and(|(own, _)| own == name) && !admin {
            return Err(forbidden("administrators cannot revoke their own rights"));
        }
        let mut user = self.user(name).await?;
        user.admin = admin;
        if !self.accounts.update_user(&user).await? {
            return Err(not_found(&format!("user {name:?}")));
        }
        self.changed(
            caller,
            AccountResource::User,
            Operation::Update,
            name.to_owned(),
        );
        Ok(())
    }

    // --- projects ----------------------------------------------------------------------

    /// Creates a project the caller administers, as in Harbor, with its storage limit
    /// (`None`: no limit; only system administrators set one).
    pub async fn create_project(
        &self,
        caller: &Caller,
        name: String,
        public: bool,
        storage_limit: Option<u64>,
    ) -> Result<Project> {
        let (owner, _) = caller.user().ok_or_else(unauthorized)?;
        let owner = owner.to_owned();
        validate_project_name(&name)?;
        self.check_limit_change(caller, storage_limit)?;
        let now = unix_now();
        let project = Project {
            public,
            name,
            owner: owner.clone(),
            created_at: now,
            immutable_tags: Default::default(),
        };
        if !self.accounts.create_project(&project).await? {
            return Err(conflict(format!(
                "project {:?} already exists",
                project.name
            )));
        }
        let admin = Member {
            project: project.name.clone(),
            user: owner.clone(),
            role: ProjectRole::ProjectAdmin,
            created_at: now,
        };
        // A project without its admin could only be repaired by a system administrator:
        // undo.
        match self.accounts.put_member(&admin).await {
            Ok(true) => {}
            Ok(false) => {
                self.accounts.delete_project(&project.name).await?;
                return Err(not_found(&format!("user {owner:?}")));
            }
            Err(error) => {
                if let Err(undo) = self.accounts.delete_project(&project.name).await {
                    tracing::error!(project = project.name, error = %undo, "could not undo a project whose admin could not be added");
                }
                return Err(error);
            }
        }
        // A project of the same name deleted earlier may have left its limit: replaced.
        if let Some(quotas) = &self.quotas {
            quotas.set_limit(&project.name, storage_limit).await?;
        }
        self.changed(
            caller,
            AccountResource::Project,
            Operation::Create,
            project.name.clone(),
        );
        Ok(project)
    }

    /// Whether the caller may see project `name`: public ones, and their own.
    pub async fn project_visible(&self, caller: &Caller, name: &str) -> Result<bool> {
        Ok(match self.accounts.project(name).await? {
            None => false,
            Some(project) if project.public => true,
            Some(_) => match caller.user() {
                Some((_, true)) => true,
                Some((user, false)) => self.role_in(name, user).await?.is_some(),
                None => false,
            },
        })
    }

    /// Page `page` of `size` of the projects the caller sees (every project for system
    /// administrators, public ones and their own for others), with the caller's role.
    pub async fn projects(
        &self,
        caller: &Caller,
        page: usize,
        size: usize,
    ) -> Result<Vec<(Project, Option<ProjectRole>)>> {
        let roles: Vec<Member> = match caller.user() {
            Some((name, false)) => self.accounts.memberships(name).await?,
            _ => Vec::new(),
        };
        let admin = caller.is_admin();
        let role_of = |project: &str| {
            roles
                .iter()
                .find(|member| member.project == project)
                .map(|member| member.role)
        };
        let mut visible = Vec::new();
        let mut skip = (page - 1).saturating_mul(size);
        let mut after: Option<String> = None;
        'scan: loop {
            let batch = self
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
                visible.push((project, role));
                if visible.len() == size {
                    break 'scan;
                }
            }
            if !full {
                break;
            }
        }
        Ok(visible)
    }

    /// Project `name`, if the caller may see it, with the caller's role in it.
    pub async fn project(
        &self,
        caller: &Caller,
        name: &str,
    ) -> Result<(Project, Option<ProjectRole>)> {
        let project = self.accounts.project(name).await?;
        let role = match (caller.user(), &project) {
            (Some((user, _)), Some(_)) => self.role_in(name, user).await?,
            _ => None,
        };
        match project {
            Some(project) if caller.is_admin() || project.public || role.is_some() => {
                Ok((project, role))
            }
            _ => Err(project_not_found(name)),
        }
    }

    /// Changes a project's visibility and, for system administrators, its storage limit
    /// (`Some(None)` removes it).
    pub async fn update_project(
        &self,
        caller: &Caller,
        name: &str,
        public: Option<bool>,
        storage_limit: Option<Option<u64>>,
    ) -> Result<()> {
        let mut project = self
            .accounts
            .project(name)
            .await?
            .ok_or_else(|| project_not_found(name))?;
        if let Some(limit) = storage_limit {
            self.set_storage_limit(caller, name, limit).await?;
        }
        if let Some(public) = public {
            project.public = public;
        }
        if !self.accounts.update_project(&project).await? {
            return Err(project_not_found(name));
        }
        self.changed(
            caller,
            AccountResource::Project,
            Operation::Update,
            name.to_owned(),
        );
        Ok(())
    }

    /// Deletes an empty project. Harbor refuses to delete a project that still holds
    /// repositories; so does Berth, so that no repository outlives the rules that protect
    /// it.
    pub async fn delete_project(&self, caller: &Caller, name: &str) -> Result<()> {
        let prefix = format!("{name}/");
        let holds_repositories = self
            .metadata
            .repositories(Some(&prefix), 1)
            .await?
            .first()
            .is_some_and(|repository| repository.starts_with(&prefix))
            || match name.parse() {
                Ok(repository) => self.metadata.repository_exists(&repository).await?,
                Err(_) => false,
            };
        if holds_repositories {
            return Err(RegistryError::new(
                ErrorCode::PreconditionFailed,
                format!("project {name:?} still holds repositories: delete them first"),
            ));
        }
        if !self.accounts.delete_project(name).await? {
            return Err(project_not_found(name));
        }
        self.changed(
            caller,
            AccountResource::Project,
            Operation::Delete,
            name.to_owned(),
        );
        Ok(())
    }

    // --- members -----------------------------------------------------------------------

    pub async fn members(&self, project: &str) -> Result<Vec<Member>> {
        self.accounts.members(project).await
    }

    pub async fn member(&self, project: &str, user: &str) -> Result<Member> {
        self.accounts
            .member(project, user)
            .await?
            .ok_or_else(|| member_not_found(project, user))
    }

    pub async fn add_member(
        &self,
        caller: &Caller,
        project: &str,
        user: &str,
        role: ProjectRole,
    ) -> Result<Member> {
        if self.accounts.member(project, user).await?.is_some() {
            return Err(conflict(format!(
                "{user:?} is already a member of project {project:?}"
            )));
        }
        let member = Member {
            project: project.to_owned(),
            user: user.to_owned(),
            role,
            created_at: unix_now(),
        };
        if !self.accounts.put_member(&member).await? {
            return Err(not_found(&format!("user {user:?}")));
        }
        self.changed(
            caller,
            AccountResource::Member,
            Operation::Create,
            format!("{project}/{user}"),
        );
        Ok(member)
    }

    pub async fn change_member(
        &self,
        caller: &Caller,
        project: &str,
        user: &str,
        role: ProjectRole,
    ) -> Result<()> {
        let mut member = self.member(project, user).await?;
        member.role = role;
        if !self.accounts.put_member(&member).await? {
            return Err(member_not_found(project, user));
        }
        self.changed(
            caller,
            AccountResource::Member,
            Operation::Update,
            format!("{project}/{user}"),
        );
        Ok(())
    }

    pub async fn remove_member(&self, caller: &Caller, project: &str, user: &str) -> Result<()> {
        if !self.accounts.delete_member(project, user).await? {
            return Err(member_not_found(project, user));
        }
        self.changed(
            caller,
            AccountResource::Member,
            Operation::Delete,
            format!("{project}/{user}"),
        );
        Ok(())
    }

    // --- robot accounts ----------------------------------------------------------------

    /// Creates a robot account in a project the caller administers; returns it with its
    /// secret, which is shown this once.
    pub async fn create_robot(&self, caller: &Caller, spec: RobotSpec) -> Result<(Robot, String)> {
        validate_robot_name(&spec.name)?;
        if spec.permissions.is_empty() {
            return Err(bad_request("a robot account needs at least one permission"));
        }
        // The same answers as every other project-admin action: a private project the
        // caller is not in is "not found".
        self.authorize(caller, &Permission::ProjectAdmin(spec.project.clone()))
            .await?;
        let now = unix_now();
        let secret = generate_robot_secret()?;
        let robot = Robot {
            name: robot_name(&spec.project, &spec.name),
            project: spec.project,
            description: spec.description,
            secret_hash: self.hash_secret(secret.clone()).await?,
            permissions: spec.permissions,
            expires_at: expiry(spec.duration_days, now)?,
            disabled: spec.disabled,
            created_at: now,
        };
        if !self.accounts.create_robot(&robot).await? {
            return Err(conflict(format!(
                "robot account {:?} already exists",
                robot.name
            )));
        }
        self.changed(
            caller,
            AccountResource::Robot,
            Operation::Create,
            robot.name.clone(),
        );
        Ok((robot, secret))
    }

    pub async fn robots(&self, project: &str) -> Result<Vec<Robot>> {
        self.accounts.robots(project).await
    }

    pub async fn robot(&self, name: &str) -> Result<Robot> {
        self.accounts
            .robot(name)
            .await?
            .ok_or_else(|| robot_not_found(name))
    }

    pub async fn update_robot(
        &self,
        caller: &Caller,
        name: &str,
        change: RobotChange,
    ) -> Result<()> {
        let mut robot = self.robot(name).await?;
        if let Some(disabled) = change.disabled {
            robot.disabled = disabled;
        }
        if let Some(description) = change.description {
            robot.description = description;
        }
        if change.duration_days.is_some() {
            robot.expires_at = expiry(change.duration_days, unix_now())?;
        }
        if let Some((project, permissions)) = change.permissions {
            if project != robot.project {
                return Err(bad_request(
                    "a robot account cannot move to another project",
                ));
            }
            if permissions.is_empty() {
                return Err(bad_request("a robot account needs at least one permission"));
            }
            robot.permissions = permissions;
        }
        if !self.accounts.update_robot(&robot).await? {
            return Err(robot_not_found(name));
        }
        self.changed(
            caller,
            AccountResource::Robot,
            Operation::Update,
            name.to_owned(),
        );
        Ok(())
    }

    /// Gives the robot account a new secret, generated unless one is given (which must
    /// follow the password policy), and returns it. The old secret stops working at once.
    pub async fn refresh_robot_secret(
        &self,
        caller: &Caller,
        name: &str,
        secret: Option<String>,
    ) -> Result<String> {
        self.robot(name).await?;
        let secret = match secret {
            Some(secret) => {
                check_policy(&secret)?;
                secret
            }
            None => generate_robot_secret()?,
        };
        let secret_hash = self.hash_secret(secret.clone()).await?;
        // Read again after the slow hashing, so that a change made meanwhile (a disable) is
        // not written back over.
        let mut robot = self.robot(name).await?;
        robot.secret_hash = secret_hash;
        if !self.accounts.update_robot(&robot).await? {
            return Err(robot_not_found(name));
        }
        self.changed(
            caller,
            AccountResource::Robot,
            Operation::Update,
            name.to_owned(),
        );
        Ok(secret)
    }

    pub async fn delete_robot(&self, caller: &Caller, name: &str) -> Result<()> {
        if !self.accounts.delete_robot(name).await? {
            return Err(robot_not_found(name));
        }
        self.changed(
            caller,
            AccountResource::Robot,
            Operation::Delete,
            name.to_owned(),
        );
        Ok(())
    }

    /// Hashes a secret away from the async workers (Argon2id takes tens of milliseconds).
    async fn hash_secret(&self, secret: String) -> Result<String> {
        let passwords = self.passwords().clone();
        tokio::task::spawn_blocking(move || passwords.hash(&secret))
            .await
            .map_err(|e| RegistryError::internal(format!("hashing failed: {e}")))?
    }
}

fn conflict(message: String) -> RegistryError {
    RegistryError::new(ErrorCode::Conflict, message)
}

fn project_not_found(name: &str) -> RegistryError {
    not_found(&format!("project {name:?}"))
}

fn member_not_found(project: &str, user: &str) -> RegistryError {
    not_found(&format!("member {user:?} of project {project:?}"))
}

fn robot_not_found(name: &str) -> RegistryError {
    not_found(&format!("robot account {name:?}"))
}

fn check_policy(password: &str) -> Result<()> {
    check_password_policy(password).map_err(|weak| bad_request(weak.to_string()))
}

/// When a robot account made now for `duration_days` expires.
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

/// Items `(page - 1) * size ..` of a name-ordered listing, read in batches.
async fn paged<T, F, Fut>(page: usize, size: usize, mut list: F) -> Result<Vec<T>>
where
    T: Named,
    F: FnMut(Option<String>, usize) -> Fut,
    Fut: Future<Output = Result<Vec<T>>>,
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
