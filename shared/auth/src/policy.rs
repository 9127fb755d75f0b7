//! Who may do what: Harbor's permission matrix over Berth's accounts, projects and robot
//! accounts. Pure functions of the records; the token service looks the records up.
//!
//! A repository belongs to the project named by its first path segment (`team/app` is in
//! `team`). The actions on a repository cover its manifests, tags and blobs alike:
//!
//! | who | pull | push | delete | manage members | list the catalog |
//! |---|:-:|:-:|:-:|:-:|:-:|
//! | system administrator | every project | every project | every project | every project | yes |
//! | project admin (`projectAdmin`) | yes | yes | yes | yes | no |
//! | maintainer (`maintainer`) | yes | yes | yes | no | no |
//! | developer (`developer`) | yes | yes | no | no | no |
//! | guest (`guest`) | yes | no | no | no | no |
//! | limited guest (`limitedGuest`) | yes | no | no | no | no |
//! | robot account, own project | if granted | if granted | if granted | no | no |
//! | anyone else, anonymous included | public projects | no | no | no | no |
//!
//! * A role is a user's membership of one project and counts in that project only.
//! * A robot account (`robot$<project>+<name>`) has exactly the permissions it was created
//!   with, in its own project only, while it is neither disabled nor expired; a disabled one
//!   cannot log in at all. Like anyone, it may also pull from public projects.
//! * Rights exist only in projects that exist: a repository in a project that does not
//!   exist grants nothing to anyone, so pushing creates repositories but never projects.
//! * Pushing needs pull as well as push (the registry checks both for uploads), so a robot
//!   account that pushes must be granted both.

use berth_core::accounts::{Project, ProjectRole, RobotPermission};

use crate::scope::{Action, ActionSet};

/// Who is asking: the outcome of authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// No credentials.
    Anonymous,
    /// A user who proved their password (or a refresh token of theirs).
    User { name: String, admin: bool },
    /// A robot account that proved its secret, as it was when it did.
    Robot {
        /// The full name, `robot$<project>+<name>`.
        name: String,
        project: String,
        permissions: ActionSet,
        /// Unix seconds; `None` never expires.
        expires_at: Option<u64>,
    },
}

impl Principal {
    /// The token subject: the account name, empty for anonymous.
    pub fn subject(&self) -> &str {
        match self {
            Self::Anonymous => "",
            Self::User { name, .. } | Self::Robot { name, .. } => name,
        }
    }

    /// Whether this is a system administrator.
    pub fn is_admin(&self) -> bool {
        matches!(self, Self::User { admin: true, .. })
    }
}

/// The repository actions of a project role.
pub fn role_actions(role: ProjectRole) -> ActionSet {
    use Action::{Delete, Pull, Push};
    match role {
        ProjectRole::ProjectAdmin | ProjectRole::Maintainer => [Pull, Push, Delete].into(),
        ProjectRole::Developer => [Pull, Push].into(),
        ProjectRole::Guest | ProjectRole::LimitedGuest => [Pull].into(),
    }
}

/// The repository actions a robot account's permissions name.
pub fn robot_actions(permissions: &[RobotPermission]) -> ActionSet {
    permissions
        .iter()
        .map(|permission| match permission {
            RobotPermission::Pull => Action::Pull,
            RobotPermission::Push => Action::Push,
            RobotPermission::Delete => Action::Delete,
        })
        .collect()
}

/// What `principal` may do to the repositories of `project` at `now`, where `role` is the
/// principal's role in the project if it is a user who is a member.
pub fn repository_actions(
    principal: &Principal,
    project: &Project,
    role: Option<ProjectRole>,
    now: u64,
) -> ActionSet {
    let public = if project.public {
        ActionSet::from([Action::Pull])
    } else {
        ActionSet::EMPTY
    };
    match principal {
        Principal::Anonymous => public,
        Principal::User { admin: true, .. } => ActionSet::ALL,
        Principal::User { .. } => role.map_or(ActionSet::EMPTY, role_actions).union(public),
        Principal::Robot {
            project: own,
            permissions,
            expires_at,
            ..
        } => {
            if expires_at.is_some_and(|expiry| now >= expiry) {
                ActionSet::EMPTY
            } else if *own == project.name {
                permissions.union(public)
            } else {
                public
            }
        }
    }
}

/// Whether `principal` may list every repository (`registry:catalog:*`): system
/// administrators only, since the catalog would reveal private projects' repositories.
pub fn may_list_catalog(principal: &Principal) -> bool {
    principal.is_admin()
}

/// Whether `principal`, with `role` in a project, may add, change and remove the project's
/// members: system administrators and the project's admins.
pub fn may_manage_members(principal: &Principal, role: Option<ProjectRole>) -> bool {
    match principal {
        Principal::User { admin, .. } => *admin || role == Some(ProjectRole::ProjectAdmin),
        Principal::Anonymous | Principal::Robot { .. } => false,
    }
}

/// Whether `principal`, with `role` in a project, may see and change the project's tag
/// immutability rules: system administrators, the project's admins and its maintainers
/// (Harbor's `immutable-tag` resource).
pub fn may_manage_tag_rules(principal: &Principal, role: Option<ProjectRole>) -> bool {
    match principal {
        Principal::User { admin, .. } => {
            *admin
                || matches!(
                    role,
                    Some(ProjectRole::ProjectAdmin | ProjectRole::Maintainer)
                )
        }
        Principal::Anonymous | Principal::Robot { .. } => false,
    }
}

#[cfg(test)]
mod tests {
    use Action::{Delete, Pull, Push};

    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn project(name: &str, public: bool) -> Project {
        Project {
            name: name.into(),
            public,
            owner: "admin".into(),
            created_at: 0,
            immutable_tags: Default::default(),
        }
    }

    fn user(admin: bool) -> Principal {
        Principal::User {
            name: "alice".into(),
            admin,
        }
    }

    fn robot(project: &str, permissions: &[RobotPermission], expires_at: Option<u64>) -> Principal {
        Principal::Robot {
            name: format!("robot${project}+ci"),
            project: project.into(),
            permissions: robot_actions(permissions),
            expires_at,
        }
    }

    #[test]
    fn the_role_matrix_is_harbors() {
        let expected = [
            (ProjectRole::ProjectAdmin, ActionSet::ALL),
            (ProjectRole::Maintainer, ActionSet::ALL),
            (ProjectRole::Developer, [Pull, Push].into()),
            (ProjectRole::Guest, [Pull].into()),
            (ProjectRole::LimitedGuest, [Pull].into()),
        ];
        for (role, actions) in expected {
            assert_eq!(role_actions(role), actions, "{role:?}");
            for public in [false, true] {
                let got = repository_actions(&user(false), &project("p", public), Some(role), NOW);
                assert_eq!(got, actions, "{role:?} public={public}");
            }
        }
    }

    #[test]
    fn outsiders_pull_public_projects_only() {
        for principal in [Principal::Anonymous, user(false)] {
            assert_eq!(
                repository_actions(&principal, &project("p", true), None, NOW),
                [Pull].into()
            );
            assert_eq!(
                repository_actions(&principal, &project("p", false), None, NOW),
                ActionSet::EMPTY
            );
        }
    }

    #[test]
    fn administrators_may_do_everything_everywhere() {
        for public in [false, true] {
            assert_eq!(
                repository_actions(&user(true), &project("p", public), None, NOW),
                ActionSet::ALL
            );
        }
        assert!(may_list_catalog(&user(true)));
        assert!(may_manage_members(&user(true), None));
    }

    #[test]
    fn robots_have_their_permissions_in_their_project_only() {
        use RobotPermission as P;
        let pusher = robot("p", &[P::Pull, P::Push], None);
        assert_eq!(
            repository_actions(&pusher, &project("p", false), None, NOW),
            [Pull, Push].into()
        );
        assert_eq!(
            repository_actions(&pusher, &project("q", false), None, NOW),
            ActionSet::EMPTY
        );
        assert_eq!(
            repository_actions(&pusher, &project("q", true), None, NOW),
            [Pull].into()
        );
        // A role the robot cannot have changes nothing.
        assert_eq!(
            repository_actions(
                &pusher,
                &project("q", false),
                Some(ProjectRole::ProjectAdmin),
                NOW
            ),
            ActionSet::EMPTY
        );
        let deleter = robot("p", &[P::Delete], None);
        assert_eq!(
            repository_actions(&deleter, &project("p", false), None, NOW),
            [Delete].into()
        );
    }

    #[test]
    fn expired_robots_have_nothing() {
        use RobotPermission as P;
        let robot = robot("p", &[P::Pull], Some(NOW));
        for public in [false, true] {
            assert_eq!(
                repository_actions(&robot, &project("p", public), None, NOW),
                ActionSet::EMPTY
            );
        }
        assert_eq!(
            repository_actions(&robot, &project("p", false), None, NOW - 1),
            [Pull].into()
        );
    }

    #[test]
    fn only_administrators_list_the_catalog() {
        use RobotPermission as P;
        for principal in [
            Principal::Anonymous,
            user(false),
            robot("p", &[P::Pull, P::Push, P::Delete], None),
        ] {
            assert!(!may_list_catalog(&principal), "{principal:?}");
        }
    }

    #[test]
    fn project_admins_manage_members() {
        for role in ProjectRole::ALL {
            assert_eq!(
                may_manage_members(&user(false), Some(role)),
                role == ProjectRole::ProjectAdmin,
                "{role:?}"
            );
        }
        assert!(!may_manage_members(&user(false), None));
        assert!(!may_manage_members(&Principal::Anonymous, None));
        let robot = robot("p", &[RobotPermission::Pull], None);
        assert!(!may_manage_members(&robot, Some(ProjectRole::ProjectAdmin)));
    }

    #[test]
    fn project_admins_and_maintainers_manage_tag_rules() {
        for role in ProjectRole::ALL {
            assert_eq!(
                may_manage_tag_rules(&user(false), Some(role)),
                matches!(role, ProjectRole::ProjectAdmin | ProjectRole::Maintainer),
                "{role:?}"
            );
        }
        assert!(may_manage_tag_rules(&user(true), None));
        assert!(!may_manage_tag_rules(&user(false), None));
        assert!(!may_manage_tag_rules(&Principal::Anonymous, None));
        let robot = robot("p", &[RobotPermission::Push], None);
        assert!(!may_manage_tag_rules(&robot, Some(ProjectRole::Maintainer)));
    }

    #[test]
    fn subjects() {
        assert_eq!(Principal::Anonymous.subject(), "");
        assert_eq!(user(false).subject(), "alice");
        assert_eq!(robot("p", &[], None).subject(), "robot$p+ci");
    }
}
