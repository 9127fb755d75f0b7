//! Who may use the registry: users, projects, project members, robot accounts, and the
//! failed-login counters that throttle password guessing. The records and the storage port
//! they live behind; what they permit is decided in `berth-auth`.
//!
//! A repository's first path segment is its project (`library/alpine` is in `library`).
//! Names here are already validated by the caller: user names and project names follow
//! [`validate_user_name`] and [`validate_project_name`].

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{ErrorCode, RegistryError, Result};
use crate::immutable::ImmutableRules;

/// A person who logs in with a password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    #[serde(default)]
    pub email: Option<String>,
    /// An Argon2id hash in PHC string form; never the password.
    pub password_hash: String,
    /// System administrator: every right on every project, and user management.
    pub admin: bool,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds of the last password change (0: never changed). Refresh tokens issued
    /// before it, or before `created_at`, are refused.
    #[serde(default)]
    pub password_changed_at: u64,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("email", &self.email)
            .field("admin", &self.admin)
            .field("created_at", &self.created_at)
            .field("password_changed_at", &self.password_changed_at)
            .finish_non_exhaustive()
    }
}

/// A namespace of repositories with its own visibility and members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    pub name: String,
    /// Anyone, even anonymous, may pull from a public project.
    pub public: bool,
    /// The user who created it (`admin` for projects that exist from the start).
    pub owner: String,
    /// Unix seconds.
    pub created_at: u64,
    /// The rules that make some of its tags immutable.
    #[serde(default, skip_serializing_if = "ImmutableRules::is_empty")]
    pub immutable_tags: ImmutableRules,
}

/// A user's role in a project, with Harbor's meaning and Harbor's `role_id` numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProjectRole {
    ProjectAdmin,
    Maintainer,
    Developer,
    Guest,
    LimitedGuest,
}

impl ProjectRole {
    pub const ALL: [ProjectRole; 5] = [
        Self::ProjectAdmin,
        Self::Maintainer,
        Self::Developer,
        Self::Guest,
        Self::LimitedGuest,
    ];

    /// Harbor's `role_id`.
    pub fn id(self) -> u8 {
        match self {
            Self::ProjectAdmin => 1,
            Self::Developer => 2,
            Self::Guest => 3,
            Self::Maintainer => 4,
            Self::LimitedGuest => 5,
        }
    }

    pub fn from_id(id: u64) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|role| u64::from(role.id()) == id)
    }

    /// Harbor's `role_name`.
    pub fn name(self) -> &'static str {
        match self {
            Self::ProjectAdmin => "projectAdmin",
            Self::Maintainer => "maintainer",
            Self::Developer => "developer",
            Self::Guest => "guest",
            Self::LimitedGuest => "limitedGuest",
        }
    }
}

/// A user's membership of a project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub project: String,
    pub user: String,
    pub role: ProjectRole,
    /// Unix seconds.
    pub created_at: u64,
}

/// What a robot account may do in its project's repositories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RobotPermission {
    Pull,
    Push,
    Delete,
}

/// A non-human account for scripts and CI: `robot$<project>+<name>`, a secret shown once.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Robot {
    /// The full account name, `robot$<project>+<name>`.
    pub name: String,
    pub project: String,
    #[serde(default)]
    pub description: String,
    /// An Argon2id hash of the secret, in PHC string form.
    pub secret_hash: String,
    pub permissions: Vec<RobotPermission>,
    /// Unix seconds; `None` never expires.
    pub expires_at: Option<u64>,
    pub disabled: bool,
    /// Unix seconds.
    pub created_at: u64,
}

impl std::fmt::Debug for Robot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Robot")
            .field("name", &self.name)
            .field("project", &self.project)
            .field("permissions", &self.permissions)
            .field("expires_at", &self.expires_at)
            .field("disabled", &self.disabled)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// Accounts, projects and their relations.
///
/// Creating something that exists returns `false` and changes nothing; updating or deleting
/// something missing returns `false`. Listings are in name order; `after` is an exclusive
/// bound that need not exist.
#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    async fn user(&self, name: &str) -> Result<Option<User>>;
    async fn create_user(&self, user: &User) -> Result<bool>;
    async fn update_user(&self, user: &User) -> Result<bool>;
    /// Removes the user and every membership of theirs.
    async fn delete_user(&self, name: &str) -> Result<bool>;
    async fn users(&self, after: Option<&str>, limit: usize) -> Result<Vec<User>>;

    async fn project(&self, name: &str) -> Result<Option<Project>>;
    async fn create_project(&self, project: &Project) -> Result<bool>;
    async fn update_project(&self, project: &Project) -> Result<bool>;
    /// Removes the project, its members and its robot accounts (not its repositories).
    async fn delete_project(&self, name: &str) -> Result<bool>;
    async fn projects(&self, after: Option<&str>, limit: usize) -> Result<Vec<Project>>;

    /// `user`'s membership of `project`.
    async fn member(&self, project: &str, user: &str) -> Result<Option<Member>>;
    /// Adds a member, or changes the role of an existing one. Returns `false` (and changes
    /// nothing) when the user or the project does not exist.
    async fn put_member(&self, member: &Member) -> Result<bool>;
    async fn delete_member(&self, project: &str, user: &str) -> Result<bool>;
    /// The members of a project, in user name order.
    async fn members(&self, project: &str) -> Result<Vec<Member>>;
    /// A user's memberships, in project name order.
    async fn memberships(&self, user: &str) -> Result<Vec<Member>>;

    /// The robot account with this full name.
    async fn robot(&self, name: &str) -> Result<Option<Robot>>;
    /// Returns `false` when the name is taken or its project does not exist.
    async fn create_robot(&self, robot: &Robot) -> Result<bool>;
    async fn update_robot(&self, robot: &Robot) -> Result<bool>;
    async fn delete_robot(&self, name: &str) -> Result<bool>;
    /// A project's robot accounts, in name order.
    async fn robots(&self, project: &str) -> Result<Vec<Robot>>;

    /// Counts one failed login under `key` (for example user and source address) and returns
    /// the failures counted within the `window` seconds ending at `now`, this one included.
    /// Counting starts again at 1 once a window has passed since the first failure counted.
    async fn record_login_failure(&self, key: &str, now: u64, window: u64) -> Result<u32>;
    /// The failures counted under `key` within the window ending at `now`.
    async fn login_failures(&self, key: &str, now: u64, window: u64) -> Result<u32>;
    /// Forgets the failures under `key` (after a successful login).
    async fn clear_login_failures(&self, key: &str) -> Result<()>;
}

/// A user name: 1 to 255 bytes of UTF-8, none of them a control character, `:`, `/`, `$` or
/// `+` (`:` ends the user in Basic credentials; `$` and `+` belong to robot names).
pub fn validate_user_name(name: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(RegistryError::new(
            ErrorCode::NameInvalid,
            format!("invalid user name: {why}"),
        ))
    };
    if name.is_empty() || name.len() > 255 {
        return bad("it must be 1 to 255 bytes long");
    }
    if name.trim() != name {
        return bad("it must not start or end with white space");
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_control() || invisible(*c) || matches!(c, ':' | '/' | '$' | '+' | '#'))
    {
        return bad(&format!("it must not contain {c:?}"));
    }
    // Words of the management API's paths (`/users/current`), and path segments clients
    // normalise away.
    if matches!(name, "current" | "." | "..") {
        return bad(&format!("{name:?} is reserved"));
    }
    Ok(())
}

/// Characters that print as nothing, which would let one name pass for another.
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
            | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}'
            | '\u{FFA0}' | '\u{FFF0}'..='\u{FFF8}'
    )
}

/// A project name: the first segment of a repository name, so lower-case letters, digits and
/// single separators (`.`, `_`, `__`, `-`s) between them, 1 to 255 characters.
pub fn validate_project_name(name: &str) -> Result<()> {
    let invalid = || {
        RegistryError::new(
            ErrorCode::NameInvalid,
            format!(
                "invalid project name {name:?}: use lower-case letters and digits, separated \
                 by '.', '_', '__' or dashes, at most 255 characters"
            ),
        )
    };
    if name.is_empty() || name.len() > 255 || name.contains('/') {
        return Err(invalid());
    }
    // A project name is a valid one-segment repository name.
    name.parse::<crate::names::RepositoryName>()
        .map(|_| ())
        .map_err(|_| invalid())
}

/// What every robot account's name starts with.
pub const ROBOT_PREFIX: &str = "robot$";

/// The full name of the robot account `name` of `project`: `robot$<project>+<name>`.
pub fn robot_name(project: &str, name: &str) -> String {
    format!("{ROBOT_PREFIX}{project}+{name}")
}

/// The project a robot account's full name names, or `None` if it is not a robot name.
pub fn robot_project(name: &str) -> Option<&str> {
    let (project, robot) = name.strip_prefix(ROBOT_PREFIX)?.split_once('+')?;
    (!project.is_empty() && !robot.is_empty()).then_some(project)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_ids_are_harbors() {
        for role in ProjectRole::ALL {
            assert_eq!(ProjectRole::from_id(role.id().into()), Some(role));
        }
        assert_eq!(ProjectRole::ProjectAdmin.id(), 1);
        assert_eq!(ProjectRole::Maintainer.id(), 4);
        assert_eq!(ProjectRole::from_id(0), None);
        assert_eq!(ProjectRole::from_id(6), None);
    }

    #[test]
    fn robot_names_name_their_project() {
        assert_eq!(robot_name("library", "ci"), "robot$library+ci");
        assert_eq!(robot_project("robot$library+ci"), Some("library"));
        assert_eq!(robot_project("robot$a.b-c+x+y"), Some("a.b-c"));
        for not_a_robot in [
            "alice",
            "robot$",
            "robot$+ci",
            "robot$library",
            "robot$library+",
        ] {
            assert_eq!(robot_project(not_a_robot), None, "{not_a_robot:?}");
        }
    }

    #[test]
    fn names() {
        assert!(validate_user_name("alice").is_ok());
        assert!(validate_user_name("Alice Smith").is_ok());
        for bad in [
            "",
            " alice",
            "a:b",
            "a/b",
            "robot$x",
            "a+b",
            "a\nb",
            "adm\u{200B}in",
            "current",
            "..",
        ] {
            assert!(validate_user_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_project_name("library").is_ok());
        assert!(validate_project_name("my-team.x_y").is_ok());
        for bad in ["", "Library", "a/b", "-a", "a-", "a..b", &"a".repeat(256)] {
            assert!(validate_project_name(bad).is_err(), "{bad:?}");
        }
    }
}
