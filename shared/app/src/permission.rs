//! Who may do what in the management API: each endpoint names a [`Permission`], and
//! [`Accounts::authorize`](crate::Accounts::authorize) decides it, here and nowhere else.

use berth_auth::Principal;
use berth_core::{Actor, ErrorCode, RegistryError, RequestContext};

/// The caller of a use case: the account its credentials proved, and its request context.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub context: RequestContext,
}

impl Caller {
    pub fn new(principal: Principal, mut context: RequestContext) -> Self {
        context.actor = Actor::named(principal.subject());
        Self { principal, context }
    }

    /// The caller's user name and whether they are a system administrator; `None` for
    /// anyone else.
    pub fn user(&self) -> Option<(&str, bool)> {
        match &self.principal {
            Principal::User { name, admin } => Some((name, *admin)),
            _ => None,
        }
    }

    pub fn is_admin(&self) -> bool {
        matches!(self.principal, Principal::User { admin: true, .. })
    }
}

/// What a management endpoint requires of its caller. Robot accounts push and pull; they
/// never manage, so every permission refuses them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Permission {
    /// Anyone, signed in or not (what they see is filtered by visibility).
    Anyone,
    /// Any signed-in user.
    User,
    /// System administrators.
    SystemAdmin,
    /// System administrators; anyone when self-registration is on.
    CreateUser,
    /// Any user, or system administrators only (a setting).
    CreateProject,
    /// The user themself, or a system administrator.
    SelfOrAdmin(String),
    /// The project's members and system administrators; to anyone else the project does
    /// not exist.
    ProjectMember(String),
    /// Anyone who sees the project: anyone for a public one, its members and system
    /// administrators for a private one; to anyone else it does not exist.
    ProjectReader(String),
    /// Whoever may do `action` to the project's repositories, as the registry's token
    /// policy decides it (pull: anyone who sees the project; push: developers and up;
    /// delete: maintainers and project admins; system administrators all). To a caller who
    /// may not pull, a private project does not exist; an anonymous caller who may pull but
    /// not more is asked to sign in.
    Repositories(String, berth_auth::Action),
    /// The project's admins and system administrators. A private project the caller is not
    /// in does not exist for them.
    ProjectAdmin(String),
    /// The admins of the robot account's project and system administrators; to anyone else
    /// the robot account does not exist.
    RobotAdmin(String),
    /// The project's admins and maintainers and system administrators (Harbor's
    /// `immutable-tag` resource). A private project the caller is not in does not exist for
    /// them.
    ProjectMaintainer(String),
    /// Tag retention of the project (its policy, runs and their records): as in Harbor's
    /// RBAC, its project admins, maintainers and developers, and system administrators;
    /// guests are refused, and a private project the caller is not in does not exist.
    TagRetention(String),
}

pub(crate) fn unauthorized() -> RegistryError {
    RegistryError::new(
        ErrorCode::Unauthorized,
        "authentication required: send Basic credentials of a user",
    )
}

pub(crate) fn forbidden(message: impl Into<String>) -> RegistryError {
    RegistryError::new(ErrorCode::Denied, message.into())
}

pub(crate) fn not_found(what: &str) -> RegistryError {
    RegistryError::new(ErrorCode::NotFound, format!("{what} not found"))
}

pub(crate) fn bad_request(message: impl Into<String>) -> RegistryError {
    RegistryError::new(ErrorCode::BadRequest, message.into())
}
