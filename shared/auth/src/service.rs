//! The token service: who is asking (passwords, robot secrets and refresh tokens, with
//! failed logins throttled), what they may have (the permission matrix of
//! [`crate::policy`] applied to the scopes they asked for), and the signed answer.
//!
//! The token endpoint runs, for each request:
//!
//! 1. [`TokenService::authenticate`] with the Basic credentials (or none: anonymous), or
//!    [`TokenService::authenticate_refresh`] with a refresh token;
//! 2. [`TokenService::grant`] with the scopes [`crate::scope::parse_scopes`] read;
//! 3. [`TokenService::issue`], whose [`TokenResponse`] is the JSON body.
//!
//! Throttling: after [`Throttle::max_failures`] failed logins (5 unless configured) for one
//! account name from one source within [`Throttle::window`] (5 minutes), further attempts
//! for that name from that source are refused with [`AuthError::Throttled`] until the
//! window that began with the first failure has passed, even with the right password, and
//! without checking the password at all. A successful login forgets the failures. Keying
//! on name and source means a guesser elsewhere cannot lock an account out of every
//! network, and rotating source addresses only buys a guesser five tries per address.
//!
//! Password and secret checks are Argon2id, run on Tokio's blocking pool and at most as
//! many at a time as there are CPUs (each holds 19 MiB), so a burst of logins neither
//! stalls the async workers nor exhausts memory. The service must therefore be used from
//! inside a Tokio runtime.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use berth_core::accounts::{ProjectRole, Robot, User};
use berth_core::{AccountStore, ErrorCode, RegistryError};
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::password::PasswordHasher;
use crate::policy::{self, Principal};
use crate::rfc3339;
use crate::scope::{ActionSet, Scope};
use crate::token::{ResourceAccess, TokenIssuer, TokenVerifier, VerifyError};

/// Robot account names start with this: `robot$<project>+<name>`.
pub use berth_core::accounts::ROBOT_PREFIX;

/// The longest account name looked up: no user (255 bytes) or robot name is longer.
const MAX_NAME_BYTES: usize = 512;

/// How failed logins are throttled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    /// Failures after which further attempts are refused.
    pub max_failures: u32,
    /// How long failures are remembered, counted from the first one.
    pub window: Duration,
}

impl Default for Throttle {
    /// Five failures within five minutes.
    fn default() -> Self {
        Self {
            max_failures: 5,
            window: Duration::from_secs(5 * 60),
        }
    }
}

/// Why a token request failed. The messages are safe to show clients: they never hold a
/// secret, a hash or a token.
#[derive(Debug)]
pub enum AuthError {
    /// Unknown account, wrong password or secret (never told apart), or a refresh token of
    /// a user who no longer exists.
    BadCredentials,
    /// Too many failed logins for this account from this source: answer `429`, and retry
    /// after at most `retry_after` seconds.
    Throttled { retry_after: u64 },
    /// A robot account that proved its secret but is disabled.
    Disabled,
    /// A robot account that proved its secret but has expired.
    Expired,
    /// A refresh token that does not verify.
    InvalidToken(VerifyError),
    /// The account store failed.
    Store(RegistryError),
}

impl AuthError {
    /// The error code it answers with: `UNAUTHORIZED` (401), `TOOMANYREQUESTS` (429), or
    /// the store failure's own.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::BadCredentials | Self::Disabled | Self::Expired | Self::InvalidToken(_) => {
                ErrorCode::Unauthorized
            }
            Self::Throttled { .. } => ErrorCode::TooManyRequests,
            Self::Store(error) => error.code(),
        }
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadCredentials => f.write_str("invalid username or password"),
            Self::Throttled { .. } => {
                f.write_str("too many failed logins: wait a few minutes before trying again")
            }
            Self::Disabled => f.write_str("the robot account is disabled"),
            Self::Expired => f.write_str("the robot account has expired"),
            Self::InvalidToken(error) => write!(f, "invalid refresh token: {error}"),
            Self::Store(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for AuthError {}

impl From<RegistryError> for AuthError {
    fn from(error: RegistryError) -> Self {
        Self::Store(error)
    }
}

/// The error in the registry's table, for the edge to render like any other.
impl From<AuthError> for RegistryError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::Store(error) => error,
            other => RegistryError::new(other.code(), other.to_string()),
        }
    }
}

/// The token endpoint's answer, serialized as Docker's token specification describes it.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct TokenResponse {
    pub token: String,
    /// The same token, under its OAuth 2 name.
    pub access_token: String,
    /// Seconds from `issued_at` until the token expires.
    pub expires_in: u64,
    /// RFC 3339, UTC.
    pub issued_at: String,
    /// Only for users who asked for one (`offline_token=true`, `access_type=offline`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("expires_in", &self.expires_in)
            .field("issued_at", &self.issued_at)
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| ".."))
            .finish_non_exhaustive()
    }
}

/// The token service over an account store.
pub struct TokenService {
    store: Arc<dyn AccountStore>,
    /// Replaced whole when the keys rotate ([`TokenService::replace_keys`]).
    keys: RwLock<Arc<ServiceKeys>>,
    passwords: Arc<PasswordHasher>,
    hashing: Arc<Semaphore>,
    throttle: Throttle,
}

/// What signs and what reads refresh tokens, from one key ring.
#[derive(Debug)]
struct ServiceKeys {
    issuer: TokenIssuer,
    verifier: TokenVerifier,
}

impl fmt::Debug for TokenService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenService")
            .field("keys", &self.keys())
            .field("throttle", &self.throttle)
            .finish_non_exhaustive()
    }
}

impl TokenService {
    /// A service issuing with `issuer` and reading refresh tokens with `verifier`, with
    /// OWASP-minimum Argon2id and the default throttle.
    pub fn new(store: Arc<dyn AccountStore>, issuer: TokenIssuer, verifier: TokenVerifier) -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, usize::from);
        Self {
            store,
            keys: RwLock::new(Arc::new(ServiceKeys { issuer, verifier })),
            passwords: Arc::new(PasswordHasher::new()),
            hashing: Arc::new(Semaphore::new(cpus)),
            throttle: Throttle::default(),
        }
    }

    /// Signs with `issuer` and reads refresh tokens with `verifier` from now on (keys
    /// reloaded after a rotation); requests under way finish with the keys they started with.
    pub fn replace_keys(&self, issuer: TokenIssuer, verifier: TokenVerifier) {
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) =
            Arc::new(ServiceKeys { issuer, verifier });
    }

    fn keys(&self) -> Arc<ServiceKeys> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    #[must_use]
    pub fn with_password_hasher(mut self, passwords: PasswordHasher) -> Self {
        self.passwords = Arc::new(passwords);
        self
    }

    #[must_use]
    pub fn with_throttle(mut self, throttle: Throttle) -> Self {
        self.throttle = throttle;
        self
    }

    /// The hasher, for making the hashes of new passwords and robot secrets.
    pub fn password_hasher(&self) -> &PasswordHasher {
        &self.passwords
    }

    /// Who is asking, from the Basic credentials of a token request (`None`: anonymous).
    /// `source` is where the request came from (the client's address); failed logins are
    /// throttled per account name and source.
    pub async fn authenticate(
        &self,
        credentials: Option<(&str, &str)>,
        source: &str,
        now: u64,
    ) -> Result<Principal, AuthError> {
        let Some((name, secret)) = credentials else {
            return Ok(Principal::Anonymous);
        };
        if name.len() > MAX_NAME_BYTES {
            // No account has such a name; answer as for any unknown one, at the same cost,
            // without letting the name into a store key.
            self.check_secret(secret, None).await?;
            return Err(AuthError::BadCredentials);
        }
        let key = throttle_key(name, source);
        let window = self.throttle.window.as_secs();
        // The attempt is counted before the secret is checked, so attempts racing in parallel
        // count each other: at most `max_failures` of them ever reach a check per window.
        let attempts = self.store.record_login_failure(&key, now, window).await?;
        if attempts > self.throttle.max_failures {
            return Err(AuthError::Throttled {
                retry_after: window,
            });
        }
        let outcome = if name.starts_with(ROBOT_PREFIX) {
            self.authenticate_robot(name, secret, now).await
        } else {
            self.authenticate_user(name, secret).await
        };
        if outcome.is_ok() {
            self.store.clear_login_failures(&key).await?;
        }
        outcome
    }

    async fn authenticate_user(&self, name: &str, password: &str) -> Result<Principal, AuthError> {
        let user: Option<User> = self.store.user(name).await?;
        let hash = user.as_ref().map(|user| user.password_hash.clone());
        match user {
            Some(user) if self.check_secret(password, hash).await? => Ok(Principal::User {
                name: user.name,
                admin: user.admin,
            }),
            _ => Err(AuthError::BadCredentials),
        }
    }

    async fn authenticate_robot(
        &self,
        name: &str,
        secret: &str,
        now: u64,
    ) -> Result<Principal, AuthError> {
        let robot: Option<Robot> = self.store.robot(name).await?;
        let hash = robot.as_ref().map(|robot| robot.secret_hash.clone());
        // The secret first: only someone who knows it learns that the account is disabled.
        let robot = match robot {
            Some(robot) if self.check_secret(secret, hash).await? => robot,
            _ => return Err(AuthError::BadCredentials),
        };
        if robot.disabled {
            return Err(AuthError::Disabled);
        }
        if robot.expires_at.is_some_and(|expiry| now >= expiry) {
            return Err(AuthError::Expired);
        }
        Ok(Principal::Robot {
            permissions: policy::robot_actions(&robot.permissions),
            name: robot.name,
            project: robot.project,
            expires_at: robot.expires_at,
        })
    }

    /// Checks `secret` against `hash`, or against nothing at the same cost when there is no
    /// account, on the blocking pool.
    async fn check_secret(&self, secret: &str, hash: Option<String>) -> Result<bool, AuthError> {
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|e| RegistryError::internal(format!("password check pool closed: {e}")))?;
        let passwords = Arc::clone(&self.passwords);
        let secret = secret.to_owned();
        let matches = tokio::task::spawn_blocking(move || match hash {
            Some(hash) => passwords.verify(&secret, &hash),
            None => {
                passwords.verify_against_dummy(&secret);
                false
            }
        })
        .await
        .map_err(|e| RegistryError::internal(format!("password check failed: {e}")))?;
        Ok(matches)
    }

    /// The user a refresh token was issued to, as the account is now. Refresh tokens are
    /// issued to users only; a deleted user's tokens are refused.
    pub async fn authenticate_refresh(
        &self,
        refresh_token: &str,
        now: u64,
    ) -> Result<Principal, AuthError> {
        let claims = self
            .keys()
            .verifier
            .verify_refresh(refresh_token, now)
            .map_err(AuthError::InvalidToken)?;
        let user = self
            .store
            .user(&claims.sub)
            .await?
            .ok_or(AuthError::BadCredentials)?;
        // Issued to an earlier account of the same name, or before the password changed.
        if claims.iat < user.created_at || claims.iat < user.password_changed_at {
            return Err(AuthError::InvalidToken(VerifyError::Expired));
        }
        Ok(Principal::User {
            name: user.name,
            admin: user.admin,
        })
    }

    /// What of `scopes` `principal` may have: per resource, the actions both asked for and
    /// allowed. Resources granted nothing are left out; asking for what one may not have is
    /// not an error (Docker asks for push before it knows whether it will push).
    pub async fn grant(
        &self,
        principal: &Principal,
        scopes: &[Scope],
        now: u64,
    ) -> Result<Vec<ResourceAccess>, AuthError> {
        let mut granted = Vec::new();
        let mut allowed_by_project: Vec<(&str, ActionSet)> = Vec::new();
        for scope in scopes {
            match scope {
                Scope::Catalog => {
                    if policy::may_list_catalog(principal) {
                        granted.push(ResourceAccess::catalog());
                    }
                }
                Scope::Repository { name, actions } => {
                    if actions.is_empty() {
                        continue;
                    }
                    let project = name.project();
                    let allowed = match allowed_by_project.iter().find(|(p, _)| *p == project) {
                        Some((_, allowed)) => *allowed,
                        None => {
                            let allowed = self.project_actions(principal, project, now).await?;
                            allowed_by_project.push((project, allowed));
                            allowed
                        }
                    };
                    let actions = actions.intersection(allowed);
                    if !actions.is_empty() {
                        granted.push(ResourceAccess::repository(name, actions.iter()));
                    }
                }
            }
        }
        Ok(granted)
    }

    async fn project_actions(
        &self,
        principal: &Principal,
        project: &str,
        now: u64,
    ) -> Result<ActionSet, AuthError> {
        let Some(project) = self.store.project(project).await? else {
            return Ok(ActionSet::EMPTY);
        };
        let role: Option<ProjectRole> = match principal {
            Principal::User { name, admin: false } => self
                .store
                .member(&project.name, name)
                .await?
                .map(|member| member.role),
            _ => None,
        };
        Ok(policy::repository_actions(principal, &project, role, now))
    }

    /// The token for `principal` granting `access`, and a refresh token when `offline` was
    /// asked for and the principal is a user. A robot account's token expires no later
    /// than the account.
    pub fn issue(
        &self,
        principal: &Principal,
        access: Vec<ResourceAccess>,
        offline: bool,
        now: u64,
    ) -> Result<TokenResponse, AuthError> {
        let not_after = match principal {
            Principal::Robot { expires_at, .. } => *expires_at,
            Principal::Anonymous | Principal::User { .. } => None,
        };
        let keys = self.keys();
        let issued = keys
            .issuer
            .issue(principal.subject(), access, now, not_after)?;
        let refresh_token = match principal {
            Principal::User { name, .. } if offline => {
                Some(keys.issuer.issue_refresh(name, now)?.token)
            }
            _ => None,
        };
        Ok(TokenResponse {
            expires_in: issued.claims.exp.saturating_sub(now),
            issued_at: rfc3339(now),
            access_token: issued.token.clone(),
            token: issued.token,
            refresh_token,
        })
    }
}

/// The throttle counter's key: the name as given, then the source. Names of accounts never
/// contain a line break and addresses never do, so no two pairs share a key.
fn throttle_key(name: &str, source: &str) -> String {
    format!("{name}\n{source}")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use berth_core::accounts::{Member, Project, RobotPermission};
    use berth_core::{RepositoryName, Result};

    use super::*;
    use crate::keys::{KeyRing, generate_es256_pem};
    use crate::scope::{Action, parse_scopes};
    use crate::token::Claims;

    const NOW: u64 = 1_700_000_000;
    const SOURCE: &str = "192.0.2.7";
    const PASSWORD: &str = "Harbor12345";
    const SECRET: &str = "robot-secret";

    /// An account store in memory, counting the account lookups that precede a password
    /// check.
    #[derive(Default)]
    struct FakeStore {
        users: Mutex<BTreeMap<String, User>>,
        projects: Mutex<BTreeMap<String, Project>>,
        members: Mutex<BTreeMap<(String, String), Member>>,
        robots: Mutex<BTreeMap<String, Robot>>,
        failures: Mutex<BTreeMap<String, (u64, u32)>>,
        account_lookups: AtomicUsize,
    }

    fn page<T: Clone>(map: &BTreeMap<String, T>, after: Option<&str>, limit: usize) -> Vec<T> {
        map.iter()
            .filter(|(name, _)| after.is_none_or(|after| name.as_str() > after))
            .take(limit)
            .map(|(_, value)| value.clone())
            .collect()
    }

    #[async_trait]
    impl AccountStore for FakeStore {
        async fn user(&self, name: &str) -> Result<Option<User>> {
            self.account_lookups.fetch_add(1, Ordering::SeqCst);
            Ok(self.users.lock().unwrap().get(name).cloned())
        }
        async fn create_user(&self, user: &User) -> Result<bool> {
            let mut users = self.users.lock().unwrap();
            if users.contains_key(&user.name) {
                return Ok(false);
            }
            users.insert(user.name.clone(), user.clone());
            Ok(true)
        }
        async fn update_user(&self, user: &User) -> Result<bool> {
            let mut users = self.users.lock().unwrap();
            Ok(users.insert(user.name.clone(), user.clone()).is_some())
        }
        async fn delete_user(&self, name: &str) -> Result<bool> {
            self.members
                .lock()
                .unwrap()
                .retain(|(_, user), _| user != name);
            Ok(self.users.lock().unwrap().remove(name).is_some())
        }
        async fn users(&self, after: Option<&str>, limit: usize) -> Result<Vec<User>> {
            Ok(page(&self.users.lock().unwrap(), after, limit))
        }
        async fn project(&self, name: &str) -> Result<Option<Project>> {
            Ok(self.projects.lock().unwrap().get(name).cloned())
        }
        async fn create_project(&self, project: &Project) -> Result<bool> {
            let mut projects = self.projects.lock().unwrap();
            if projects.contains_key(&project.name) {
                return Ok(false);
            }
            projects.insert(project.name.clone(), project.clone());
            Ok(true)
        }
        async fn update_project(&self, project: &Project) -> Result<bool> {
            let mut projects = self.projects.lock().unwrap();
            Ok(projects
                .insert(project.name.clone(), project.clone())
                .is_some())
        }
        async fn delete_project(&self, name: &str) -> Result<bool> {
            self.members
                .lock()
                .unwrap()
                .retain(|(project, _), _| project != name);
            self.robots
                .lock()
                .unwrap()
                .retain(|_, robot| robot.project != name);
            Ok(self.projects.lock().unwrap().remove(name).is_some())
        }
        async fn projects(&self, after: Option<&str>, limit: usize) -> Result<Vec<Project>> {
            Ok(page(&self.projects.lock().unwrap(), after, limit))
        }
        async fn member(&self, project: &str, user: &str) -> Result<Option<Member>> {
            let key = (project.to_owned(), user.to_owned());
            Ok(self.members.lock().unwrap().get(&key).cloned())
        }
        async fn put_member(&self, member: &Member) -> Result<bool> {
            let exists = self.users.lock().unwrap().contains_key(&member.user)
                && self.projects.lock().unwrap().contains_key(&member.project);
            if exists {
                let key = (member.project.clone(), member.user.clone());
                self.members.lock().unwrap().insert(key, member.clone());
            }
            Ok(exists)
        }
        async fn delete_member(&self, project: &str, user: &str) -> Result<bool> {
            let key = (project.to_owned(), user.to_owned());
            Ok(self.members.lock().unwrap().remove(&key).is_some())
        }
        async fn members(&self, project: &str) -> Result<Vec<Member>> {
            let members = self.members.lock().unwrap();
            Ok(members
                .values()
                .filter(|m| m.project == project)
                .cloned()
                .collect())
        }
        async fn memberships(&self, user: &str) -> Result<Vec<Member>> {
            let members = self.members.lock().unwrap();
            Ok(members
                .values()
                .filter(|m| m.user == user)
                .cloned()
                .collect())
        }
        async fn robot(&self, name: &str) -> Result<Option<Robot>> {
            self.account_lookups.fetch_add(1, Ordering::SeqCst);
            Ok(self.robots.lock().unwrap().get(name).cloned())
        }
        async fn create_robot(&self, robot: &Robot) -> Result<bool> {
            if !self.projects.lock().unwrap().contains_key(&robot.project) {
                return Ok(false);
            }
            let mut robots = self.robots.lock().unwrap();
            if robots.contains_key(&robot.name) {
                return Ok(false);
            }
            robots.insert(robot.name.clone(), robot.clone());
            Ok(true)
        }
        async fn update_robot(&self, robot: &Robot) -> Result<bool> {
            let mut robots = self.robots.lock().unwrap();
            Ok(robots.insert(robot.name.clone(), robot.clone()).is_some())
        }
        async fn delete_robot(&self, name: &str) -> Result<bool> {
            Ok(self.robots.lock().unwrap().remove(name).is_some())
        }
        async fn robots(&self, project: &str) -> Result<Vec<Robot>> {
            let robots = self.robots.lock().unwrap();
            Ok(robots
                .values()
                .filter(|r| r.project == project)
                .cloned()
                .collect())
        }
        async fn record_login_failure(&self, key: &str, now: u64, window: u64) -> Result<u32> {
            let mut failures = self.failures.lock().unwrap();
            let entry = failures.entry(key.to_owned()).or_insert((now, 0));
            if now >= entry.0 + window {
                *entry = (now, 0);
            }
            entry.1 += 1;
            Ok(entry.1)
        }
        async fn login_failures(&self, key: &str, now: u64, window: u64) -> Result<u32> {
            let failures = self.failures.lock().unwrap();
            Ok(failures
                .get(key)
                .filter(|(first, _)| now < first + window)
                .map_or(0, |(_, count)| *count))
        }
        async fn clear_login_failures(&self, key: &str) -> Result<()> {
            self.failures.lock().unwrap().remove(key);
            Ok(())
        }
    }

    struct Fixture {
        store: Arc<FakeStore>,
        service: TokenService,
        verifier: TokenVerifier,
        hasher: PasswordHasher,
    }

    impl Fixture {
        async fn new() -> Self {
            Self::with_throttle(Throttle::default()).await
        }

        async fn with_throttle(throttle: Throttle) -> Self {
            let hasher = PasswordHasher::with_cost(8, 1, 1).unwrap();
            let ring = KeyRing::from_pems(&[generate_es256_pem().unwrap()]).unwrap();
            let issuer = TokenIssuer::new("berth", "registry.test", &ring).unwrap();
            let service_verifier = TokenVerifier::new("berth", "registry.test", &ring);
            let store = Arc::new(FakeStore::default());
            let service = TokenService::new(store.clone(), issuer, service_verifier)
                .with_password_hasher(hasher.clone())
                .with_throttle(throttle);
            let fixture = Self {
                store,
                service,
                verifier: TokenVerifier::new("berth", "registry.test", &ring),
                hasher,
            };
            fixture.project("public", true).await;
            fixture.project("private", false).await;
            fixture.user("root", true).await;
            fixture.user("outsider", false).await;
            for (user, role) in [
                ("padmin", ProjectRole::ProjectAdmin),
                ("maintainer", ProjectRole::Maintainer),
                ("developer", ProjectRole::Developer),
                ("guest", ProjectRole::Guest),
                ("limited", ProjectRole::LimitedGuest),
            ] {
                fixture.user(user, false).await;
                for project in ["public", "private"] {
                    let member = Member {
                        project: project.into(),
                        user: user.into(),
                        role,
                        created_at: 0,
                    };
                    assert!(fixture.store.put_member(&member).await.unwrap());
                }
            }
            fixture
        }

        async fn project(&self, name: &str, public: bool) {
            let project = Project {
                name: name.into(),
                public,
                owner: "root".into(),
                created_at: 0,
                immutable_tags: Default::default(),
            };
            assert!(self.store.create_project(&project).await.unwrap());
        }

        async fn user(&self, name: &str, admin: bool) {
            let user = User {
                name: name.into(),
                email: None,
                password_hash: self.hasher.hash(PASSWORD).unwrap(),
                admin,
                created_at: 0,
                password_changed_at: 0,
            };
            assert!(self.store.create_user(&user).await.unwrap());
        }

        async fn robot(
            &self,
            short: &str,
            permissions: &[RobotPermission],
            disabled: bool,
            expires_at: Option<u64>,
        ) -> String {
            let name = format!("robot$private+{short}");
            let robot = Robot {
                name: name.clone(),
                project: "private".into(),
                description: String::new(),
                secret_hash: self.hasher.hash(SECRET).unwrap(),
                permissions: permissions.to_vec(),
                expires_at,
                disabled,
                created_at: 0,
            };
            assert!(self.store.create_robot(&robot).await.unwrap());
            name
        }

        async fn login(&self, name: &str, secret: &str) -> Result<Principal, AuthError> {
            self.service
                .authenticate(Some((name, secret)), SOURCE, NOW)
                .await
        }

        /// What `principal` is granted of `scopes`, as `name -> actions` text.
        async fn granted(&self, principal: &Principal, scopes: &str) -> Vec<String> {
            let scopes = parse_scopes([scopes]).unwrap();
            let access = self.service.grant(principal, &scopes, NOW).await.unwrap();
            access
                .iter()
                .map(|a| format!("{}:{}:{}", a.resource_type, a.name, a.actions.join(",")))
                .collect()
        }

        async fn user_granted(&self, user: &str, scopes: &str) -> Vec<String> {
            let principal = self.login(user, PASSWORD).await.unwrap();
            self.granted(&principal, scopes).await
        }
    }

    const EVERYTHING: &str = "repository:public/app:pull,push,delete \
                              repository:private/app:pull,push,delete";

    #[tokio::test]
    async fn anonymous_pulls_public_projects_only() {
        let f = Fixture::new().await;
        let anonymous = f.service.authenticate(None, SOURCE, NOW).await.unwrap();
        assert_eq!(anonymous, Principal::Anonymous);
        assert_eq!(
            f.granted(&anonymous, EVERYTHING).await,
            ["repository:public/app:pull"]
        );
        assert_eq!(f.store.account_lookups.load(Ordering::SeqCst), 0);

        let scopes = parse_scopes(["repository:public/app:pull"]).unwrap();
        let access = f.service.grant(&anonymous, &scopes, NOW).await.unwrap();
        let response = f.service.issue(&anonymous, access, false, NOW).unwrap();
        let claims = f.verifier.verify(&response.token, NOW).unwrap();
        assert_eq!(claims.sub, "");
        let app: RepositoryName = "public/app".parse().unwrap();
        assert!(claims.allows_repository(&app, Action::Pull));
    }

    #[tokio::test]
    async fn roles_grant_harbors_matrix() {
        let f = Fixture::new().await;
        let both = |actions: &str| {
            vec![
                format!("repository:public/app:{actions}"),
                format!("repository:private/app:{actions}"),
            ]
        };
        assert_eq!(
            f.user_granted("padmin", EVERYTHING).await,
            both("pull,push,delete")
        );
        assert_eq!(
            f.user_granted("maintainer", EVERYTHING).await,
            both("pull,push,delete")
        );
        assert_eq!(
            f.user_granted("developer", EVERYTHING).await,
            both("pull,push")
        );
        assert_eq!(f.user_granted("guest", EVERYTHING).await, both("pull"));
        assert_eq!(f.user_granted("limited", EVERYTHING).await, both("pull"));
        assert_eq!(
            f.user_granted("root", EVERYTHING).await,
            both("pull,push,delete")
        );
    }

    #[tokio::test]
    async fn non_members_get_nothing_in_private_projects() {
        let f = Fixture::new().await;
        assert_eq!(
            f.user_granted("outsider", EVERYTHING).await,
            ["repository:public/app:pull"]
        );
    }

    #[tokio::test]
    async fn only_what_was_asked_is_granted() {
        let f = Fixture::new().await;
        assert_eq!(
            f.user_granted("padmin", "repository:private/a:pull repository:private/b:")
                .await,
            ["repository:private/a:pull"]
        );
        assert_eq!(f.user_granted("padmin", "").await, Vec::<String>::new());
    }

    #[tokio::test]
    async fn nothing_in_projects_that_do_not_exist() {
        let f = Fixture::new().await;
        for user in ["root", "padmin", "developer"] {
            assert_eq!(
                f.user_granted(
                    user,
                    "repository:nowhere/app:pull,push,delete repository:nowhere:push"
                )
                .await,
                Vec::<String>::new(),
                "{user}"
            );
        }
    }

    #[tokio::test]
    async fn only_administrators_get_the_catalog() {
        let f = Fixture::new().await;
        assert_eq!(
            f.user_granted("root", "registry:catalog:*").await,
            ["registry:catalog:*"]
        );
        for user in ["padmin", "outsider"] {
            assert!(f.user_granted(user, "registry:catalog:*").await.is_empty());
        }
        assert!(
            f.granted(&Principal::Anonymous, "registry:catalog:*")
                .await
                .is_empty()
        );
    }

    #[tokio::test]
    async fn robots_have_exactly_their_permissions() {
        use RobotPermission as P;
        let f = Fixture::new().await;
        f.project("other", false).await;
        let name = f.robot("ci", &[P::Pull, P::Push], false, None).await;
        let robot = f.login(&name, SECRET).await.unwrap();
        assert_eq!(
            robot,
            Principal::Robot {
                name: name.clone(),
                project: "private".into(),
                permissions: [Action::Pull, Action::Push].into(),
                expires_at: None,
            }
        );
        assert_eq!(
            f.granted(&robot, "repository:private/app:pull,push,delete repository:other/app:pull repository:public/app:push,pull").await,
            ["repository:private/app:pull,push", "repository:public/app:pull"]
        );
        assert!(f.granted(&robot, "registry:catalog:*").await.is_empty());
        assert!(matches!(
            f.login(&name, "wrong").await,
            Err(AuthError::BadCredentials)
        ));
        assert!(matches!(
            f.login("robot$private+nobody", SECRET).await,
            Err(AuthError::BadCredentials)
        ));
    }

    #[tokio::test]
    async fn disabled_and_expired_robots_are_refused() {
        use RobotPermission as P;
        let f = Fixture::new().await;
        let disabled = f.robot("off", &[P::Pull], true, None).await;
        assert!(matches!(
            f.login(&disabled, SECRET).await,
            Err(AuthError::Disabled)
        ));
        // Without the secret, nothing is revealed.
        assert!(matches!(
            f.login(&disabled, "x").await,
            Err(AuthError::BadCredentials)
        ));
        let expired = f.robot("old", &[P::Pull], false, Some(NOW)).await;
        assert!(matches!(
            f.login(&expired, SECRET).await,
            Err(AuthError::Expired)
        ));
        assert_eq!(AuthError::Expired.code(), ErrorCode::Unauthorized);
    }

    #[tokio::test]
    async fn a_robot_token_ends_with_the_robot() {
        use RobotPermission as P;
        let f = Fixture::new().await;
        let name = f.robot("soon", &[P::Pull], false, Some(NOW + 60)).await;
        let robot = f.login(&name, SECRET).await.unwrap();
        let response = f.service.issue(&robot, vec![], true, NOW).unwrap();
        assert_eq!(response.expires_in, 60);
        assert_eq!(response.refresh_token, None);
    }

    #[tokio::test]
    async fn bad_passwords_and_unknown_users_are_refused_alike() {
        let f = Fixture::new().await;
        let wrong = f.login("developer", "wrong").await.unwrap_err();
        let unknown = f.login("nobody", PASSWORD).await.unwrap_err();
        assert!(matches!(wrong, AuthError::BadCredentials));
        assert!(matches!(unknown, AuthError::BadCredentials));
        assert_eq!(wrong.to_string(), unknown.to_string());
        assert_eq!(wrong.code(), ErrorCode::Unauthorized);
    }

    #[tokio::test]
    async fn repeated_failures_throttle_without_checking_passwords() {
        let f = Fixture::new().await;
        for _ in 0..5 {
            assert!(matches!(
                f.login("developer", "guess").await,
                Err(AuthError::BadCredentials)
            ));
        }
        let lookups = f.store.account_lookups.load(Ordering::SeqCst);
        let throttled = f.login("developer", PASSWORD).await.unwrap_err();
        assert!(matches!(
            throttled,
            AuthError::Throttled { retry_after: 300 }
        ));
        assert_eq!(throttled.code(), ErrorCode::TooManyRequests);
        let wire = RegistryError::from(throttled);
        assert_eq!(wire.code().status(), 429);
        // No account was read, so no password was checked.
        assert_eq!(f.store.account_lookups.load(Ordering::SeqCst), lookups);

        // Other sources and other names are not affected.
        let elsewhere = f
            .service
            .authenticate(Some(("developer", PASSWORD)), "198.51.100.1", NOW)
            .await;
        assert!(elsewhere.is_ok());
        assert!(f.login("guest", PASSWORD).await.is_ok());

        // Once the window has passed, the right password works and the slate is clean.
        let later = NOW + 300;
        let principal = f
            .service
            .authenticate(Some(("developer", PASSWORD)), SOURCE, later)
            .await;
        assert!(principal.is_ok());
        let key = throttle_key("developer", SOURCE);
        assert_eq!(f.store.login_failures(&key, later, 300).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn success_clears_earlier_failures() {
        let f = Fixture::new().await;
        for _ in 0..4 {
            assert!(f.login("developer", "guess").await.is_err());
        }
        assert!(f.login("developer", PASSWORD).await.is_ok());
        let key = throttle_key("developer", SOURCE);
        assert_eq!(f.store.login_failures(&key, NOW, 300).await.unwrap(), 0);
        // A fresh allowance of failures.
        for _ in 0..4 {
            assert!(f.login("developer", "guess").await.is_err());
        }
        assert!(f.login("developer", PASSWORD).await.is_ok());
    }

    #[tokio::test]
    async fn unknown_names_are_throttled_too() {
        let f = Fixture::with_throttle(Throttle {
            max_failures: 2,
            window: Duration::from_secs(60),
        })
        .await;
        for _ in 0..2 {
            assert!(matches!(
                f.login("ghost", "x").await,
                Err(AuthError::BadCredentials)
            ));
        }
        let result = f.login("ghost", "x").await;
        assert!(matches!(
            result,
            Err(AuthError::Throttled { retry_after: 60 })
        ));
        // Robot names as well.
        for _ in 0..2 {
            assert!(f.login("robot$private+ghost", "x").await.is_err());
        }
        let result = f.login("robot$private+ghost", SECRET).await;
        assert!(matches!(result, Err(AuthError::Throttled { .. })));
    }

    #[tokio::test]
    async fn issued_tokens_verify_at_the_registry() {
        let f = Fixture::new().await;
        let developer = f.login("developer", PASSWORD).await.unwrap();
        let scopes = parse_scopes(["repository:private/app:pull,push"]).unwrap();
        let access = f.service.grant(&developer, &scopes, NOW).await.unwrap();
        let response = f.service.issue(&developer, access, false, NOW).unwrap();
        assert_eq!(response.token, response.access_token);
        assert_eq!(response.expires_in, 1800);
        assert_eq!(response.issued_at, "2023-11-14T22:13:20Z");
        assert_eq!(response.refresh_token, None);

        let claims: Claims = f.verifier.verify(&response.token, NOW).unwrap();
        assert_eq!(claims.sub, "developer");
        let app: RepositoryName = "private/app".parse().unwrap();
        assert!(claims.allows_repository(&app, Action::Push));
        assert!(!claims.allows_repository(&app, Action::Delete));

        let json = serde_json::to_value(&response).unwrap();
        assert_eq!(json["token"], json["access_token"]);
        assert!(json.get("refresh_token").is_none());
        let debug = format!("{response:?}");
        assert!(!debug.contains(&response.token), "{debug}");
    }

    #[tokio::test]
    async fn refresh_tokens_for_users_who_ask() {
        let f = Fixture::new().await;
        let developer = f.login("developer", PASSWORD).await.unwrap();
        let response = f.service.issue(&developer, vec![], true, NOW).unwrap();
        let refresh = response.refresh_token.expect("a refresh token");
        assert!(
            !format!(
                "{:?}",
                f.service.issue(&developer, vec![], true, NOW).unwrap()
            )
            .contains(&refresh)
        );

        let again = f
            .service
            .authenticate_refresh(&refresh, NOW + 3600)
            .await
            .unwrap();
        assert_eq!(again, developer);
        // A refresh token is no access token and vice versa.
        assert_eq!(
            f.verifier.verify(&refresh, NOW),
            Err(VerifyError::WrongAudience)
        );
        let refused = f
            .service
            .authenticate_refresh(&response.token, NOW)
            .await
            .unwrap_err();
        assert!(matches!(
            refused,
            AuthError::InvalidToken(VerifyError::WrongAudience)
        ));
        assert_eq!(refused.code(), ErrorCode::Unauthorized);

        // Anonymous callers never get one.
        let anonymous = f
            .service
            .issue(&Principal::Anonymous, vec![], true, NOW)
            .unwrap();
        assert_eq!(anonymous.refresh_token, None);

        // The user's current rights count, and a deleted user's tokens are refused.
        f.store.delete_user("developer").await.unwrap();
        assert!(matches!(
            f.service.authenticate_refresh(&refresh, NOW).await,
            Err(AuthError::BadCredentials)
        ));
    }

    #[tokio::test]
    async fn store_failures_pass_through() {
        struct Broken;
        #[async_trait]
        impl AccountStore for Broken {
            async fn user(&self, _: &str) -> Result<Option<User>> {
                Err(RegistryError::unavailable("down"))
            }
            async fn create_user(&self, _: &User) -> Result<bool> {
                unimplemented!()
            }
            async fn update_user(&self, _: &User) -> Result<bool> {
                unimplemented!()
            }
            async fn delete_user(&self, _: &str) -> Result<bool> {
                unimplemented!()
            }
            async fn users(&self, _: Option<&str>, _: usize) -> Result<Vec<User>> {
                unimplemented!()
            }
            async fn project(&self, _: &str) -> Result<Option<Project>> {
                Err(RegistryError::unavailable("down"))
            }
            async fn create_project(&self, _: &Project) -> Result<bool> {
                unimplemented!()
            }
            async fn update_project(&self, _: &Project) -> Result<bool> {
                unimplemented!()
            }
            async fn delete_project(&self, _: &str) -> Result<bool> {
                unimplemented!()
            }
            async fn projects(&self, _: Option<&str>, _: usize) -> Result<Vec<Project>> {
                unimplemented!()
            }
            async fn member(&self, _: &str, _: &str) -> Result<Option<Member>> {
                unimplemented!()
            }
            async fn put_member(&self, _: &Member) -> Result<bool> {
                unimplemented!()
            }
            async fn delete_member(&self, _: &str, _: &str) -> Result<bool> {
                unimplemented!()
            }
            async fn members(&self, _: &str) -> Result<Vec<Member>> {
                unimplemented!()
            }
            async fn memberships(&self, _: &str) -> Result<Vec<Member>> {
                unimplemented!()
            }
            async fn robot(&self, _: &str) -> Result<Option<Robot>> {
                unimplemented!()
            }
            async fn create_robot(&self, _: &Robot) -> Result<bool> {
                unimplemented!()
            }
            async fn update_robot(&self, _: &Robot) -> Result<bool> {
                unimplemented!()
            }
            async fn delete_robot(&self, _: &str) -> Result<bool> {
                unimplemented!()
            }
            async fn robots(&self, _: &str) -> Result<Vec<Robot>> {
                unimplemented!()
            }
            async fn record_login_failure(&self, _: &str, _: u64, _: u64) -> Result<u32> {
                Ok(1)
            }
            async fn login_failures(&self, _: &str, _: u64, _: u64) -> Result<u32> {
                Ok(0)
            }
            async fn clear_login_failures(&self, _: &str) -> Result<()> {
                Ok(())
            }
        }
        let ring = KeyRing::from_pems(&[generate_es256_pem().unwrap()]).unwrap();
        let service = TokenService::new(
            Arc::new(Broken),
            TokenIssuer::new("berth", "registry.test", &ring).unwrap(),
            TokenVerifier::new("berth", "registry.test", &ring),
        );
        let error = service
            .authenticate(Some(("a", "b")), SOURCE, NOW)
            .await
            .unwrap_err();
        assert_eq!(error.code(), ErrorCode::Unavailable);
        let scopes = parse_scopes(["repository:a/b:pull"]).unwrap();
        let error = service
            .grant(&Principal::Anonymous, &scopes, NOW)
            .await
            .unwrap_err();
        assert_eq!(RegistryError::from(error).code(), ErrorCode::Unavailable);
    }
}
