//! The management API's endpoint parser: method + path under `/api/v2.0` -> [`ApiEndpoint`],
//! each with the [`Permission`] its caller needs.

use berth_app::Permission;
use berth_auth::Action::{self, Delete, Pull, Push};
use berth_core::{ErrorCode, RegistryError, Result};
use http::Method;
use percent_encoding::percent_decode_str;

/// A management API endpoint with its parameters (decoded path segments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiEndpoint {
    ListUsers,
    CreateUser,
    CurrentUser,
    GetUser(String),
    DeleteUser(String),
    ChangePassword(String),
    SetSysadmin(String),
    ListProjects,
    CreateProject,
    /// `HEAD /projects?project_name=`.
    ProjectExists,
    GetProject(String),
    UpdateProject(String),
    DeleteProject(String),
    /// Repository and member counts and the storage quota.
    ProjectSummary(String),
    /// Every project's storage limit and usage.
    ListQuotas,
    ListMembers(String),
    AddMember(String),
    GetMember {
        project: String,
        user: String,
    },
    ChangeMember {
        project: String,
        user: String,
    },
    RemoveMember {
        project: String,
        user: String,
    },
    ListRobots(String),
    CreateRobot,
    GetRobot(String),
    UpdateRobot(String),
    RefreshRobotSecret(String),
    DeleteRobot(String),
    /// `GET /audit-logs`: every entry.
    AuditLogs,
    /// `GET /projects/{p}/logs`: the project's entries.
    ProjectLogs(String),
    ListWebhooks(String),
    CreateWebhook(String),
    GetWebhook {
        project: String,
        id: String,
    },
    UpdateWebhook {
        project: String,
        id: String,
    },
    DeleteWebhook {
        project: String,
        id: String,
    },
    /// `GET /projects/{p}/webhook/policies/{id}/executions`: the policy's deliveries.
    WebhookDeliveries {
        project: String,
        id: String,
    },
    /// `GET /statistics`: project and repository counts.
    Statistics,
    /// `GET /statistics/pulls`: the most pulled repositories and pulls per day.
    PullStatistics,
    /// `GET /projects/{p}/repositories`.
    ListRepositories(String),
    /// `GET /projects/{p}/repositories/{r}` (`r` without the project, slashes written `%2F`,
    /// or `%252F` as Harbor's clients do).
    GetRepository(RepositoryPath),
    DeleteRepository(RepositoryPath),
    /// `GET /projects/{p}/repositories/{r}/artifacts`.
    ListArtifacts(RepositoryPath),
    /// `GET /projects/{p}/repositories/{r}/artifacts/{reference}`.
    GetArtifact(ArtifactPath),
    DeleteArtifact(ArtifactPath),
    /// `GET .../artifacts/{reference}/tags`.
    ListTags(ArtifactPath),
    /// `POST .../artifacts/{reference}/tags`.
    AddTag(ArtifactPath),
    /// `DELETE .../artifacts/{reference}/tags/{tag}`.
    DeleteTag {
        artifact: ArtifactPath,
        tag: String,
    },
    /// `GET /retentions/metadatas`: the rule templates and selectors.
    RetentionMetadata,
    /// `POST /retentions`: a project's policy (the project is in the body).
    CreateRetention,
    GetRetention(String),
    UpdateRetention(String),
    DeleteRetention(String),
    /// `POST /retentions/{id}/executions`: a run by hand.
    StartRetention(String),
    /// `GET /retentions/{id}/executions`.
    RetentionExecutions(String),
    /// `PATCH /retentions/{id}/executions/{eid}` with `{"action": "stop"}`.
    StopRetention {
        id: String,
        execution: String,
    },
    /// `GET /retentions/{id}/executions/{eid}/tasks`.
    RetentionTasks {
        id: String,
        execution: String,
    },
    /// `GET /retentions/{id}/executions/{eid}/tasks/{tid}`: a task's log, as text.
    RetentionTaskLog {
        id: String,
        execution: String,
        task: String,
    },
    /// `GET /system/gc`: garbage collection runs, newest first.
    GcRuns,
    /// `GET /system/gc/{id}`.
    GcRun(String),
    /// `GET /system/gc/{id}/log`: a run's log, as text.
    GcLog(String),
    /// `GET /system/gc/schedule`.
    GcSchedule,
    /// `POST /system/gc/schedule` (type `Manual`: run now) and `PUT`.
    SetGcSchedule,
    /// `GET /projects/{p}/immutabletagrules`.
    ListImmutableRules(String),
    /// `POST /projects/{p}/immutabletagrules`.
    CreateImmutableRule(String),
    /// `PUT /projects/{p}/immutabletagrules/{id}`.
    UpdateImmutableRule {
        project: String,
        id: String,
    },
    /// `DELETE /projects/{p}/immutabletagrules/{id}`.
    DeleteImmutableRule {
        project: String,
        id: String,
    },
}

/// A repository in a path: its project and its name within the project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryPath {
    pub project: String,
    pub repository: String,
}

/// An artifact in a path: its repository and a tag or digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactPath {
    pub repository: RepositoryPath,
    pub reference: String,
}

impl ApiEndpoint {
    /// The endpoint `method` on `path` (relative to `/api/v2.0`) names.
    pub fn parse(method: &Method, path: &str) -> Result<Self> {
        let segments: Vec<String> = path
            .trim_start_matches('/')
            .split('/')
            .map(|segment| percent_decode_str(segment).decode_utf8_lossy().into_owned())
            .collect();
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        let unknown = || unknown_endpoint(method, path);
        let not_allowed = || method_not_allowed(method, path);
        let one = |name: &str| name.to_owned();
        // HEAD reads what GET reads, as every other route answers it.
        let get = method == Method::GET || method == Method::HEAD;
        let endpoint = match segments.as_slice() {
            ["users"] if get => Self::ListUsers,
            ["users"] if method == Method::POST => Self::CreateUser,
            ["users", "current"] if get => Self::CurrentUser,
            ["users", "current"] => return Err(not_allowed()),
            ["users", user] if get => Self::GetUser(one(user)),
            ["users", user] if method == Method::DELETE => Self::DeleteUser(one(user)),
            ["users", user, "password"] if method == Method::PUT => Self::ChangePassword(one(user)),
            ["users", user, "sysadmin"] if method == Method::PUT => Self::SetSysadmin(one(user)),
            ["projects"] if method == Method::HEAD => Self::ProjectExists,
            ["projects"] if get => Self::ListProjects,
            ["projects"] if method == Method::POST => Self::CreateProject,
            ["projects", project] if get => Self::GetProject(one(project)),
            ["projects", project] if method == Method::PUT => Self::UpdateProject(one(project)),
            ["projects", project] if method == Method::DELETE => Self::DeleteProject(one(project)),
            ["projects", project, "summary"] if get => Self::ProjectSummary(one(project)),
            ["quotas"] if get => Self::ListQuotas,
            ["projects", project, "members"] if get => Self::ListMembers(one(project)),
            ["projects", project, "members"] if method == Method::POST => {
                Self::AddMember(one(project))
            }
            ["projects", project, "members", user] => {
                let (project, user) = (one(project), one(user));
                match *method {
                    Method::GET | Method::HEAD => Self::GetMember { project, user },
                    Method::PUT => Self::ChangeMember { project, user },
                    Method::DELETE => Self::RemoveMember { project, user },
                    _ => return Err(not_allowed()),
                }
            }
            ["projects", project, "robots"] if get => Self::ListRobots(one(project)),
            ["projects", project, "logs"] if get => Self::ProjectLogs(one(project)),
            ["audit-logs"] if get => Self::AuditLogs,
            ["projects", project, "webhook", "policies"] if get => Self::ListWebhooks(one(project)),
            ["projects", project, "webhook", "policies"] if method == Method::POST => {
                Self::CreateWebhook(one(project))
            }
            ["projects", project, "webhook", "policies", id] => {
                let (project, id) = (one(project), one(id));
                match *method {
                    Method::GET | Method::HEAD => Self::GetWebhook { project, id },
                    Method::PUT => Self::UpdateWebhook { project, id },
                    Method::DELETE => Self::DeleteWebhook { project, id },
                    _ => return Err(not_allowed()),
                }
            }
            ["projects", project, "webhook", "policies", id, "executions"] if get => {
                Self::WebhookDeliveries {
                    project: one(project),
                    id: one(id),
                }
            }
            ["statistics"] if get => Self::Statistics,
            ["statistics", "pulls"] if get => Self::PullStatistics,
            ["projects", project, "repositories"] if get => Self::ListRepositories(one(project)),
            ["projects", project, "repositories", repository] => {
                let path = repository_path(project, repository);
                match *method {
                    Method::GET | Method::HEAD => Self::GetRepository(path),
                    Method::DELETE => Self::DeleteRepository(path),
                    _ => return Err(not_allowed()),
                }
            }
            ["projects", project, "repositories", repository, "artifacts"] if get => {
                Self::ListArtifacts(repository_path(project, repository))
            }
            [
                "projects",
                project,
                "repositories",
                repository,
                "artifacts",
                reference,
            ] => {
                let path = artifact_path(project, repository, reference);
                match *method {
                    Method::GET | Method::HEAD => Self::GetArtifact(path),
                    Method::DELETE => Self::DeleteArtifact(path),
                    _ => return Err(not_allowed()),
                }
            }
            [
                "projects",
                project,
                "repositories",
                repository,
                "artifacts",
                reference,
                "tags",
            ] => {
                let path = artifact_path(project, repository, reference);
                match *method {
                    Method::GET | Method::HEAD => Self::ListTags(path),
                    Method::POST => Self::AddTag(path),
                    _ => return Err(not_allowed()),
                }
            }
            [
                "projects",
                project,
                "repositories",
                repository,
                "artifacts",
                reference,
                "tags",
                tag,
            ] if method == Method::DELETE => Self::DeleteTag {
                artifact: artifact_path(project, repository, reference),
                tag: one(tag),
            },
            ["projects", project, "immutabletagrules"] if get => {
                Self::ListImmutableRules(one(project))
            }
            ["projects", project, "immutabletagrules"] if method == Method::POST => {
                Self::CreateImmutableRule(one(project))
            }
            ["projects", project, "immutabletagrules", id] => {
                let (project, id) = (one(project), one(id));
                match *method {
                    Method::PUT => Self::UpdateImmutableRule { project, id },
                    Method::DELETE => Self::DeleteImmutableRule { project, id },
                    _ => return Err(not_allowed()),
                }
            }
            ["retentions", "metadatas"] if get => Self::RetentionMetadata,
            ["retentions", "metadatas"] => return Err(not_allowed()),
            ["retentions"] if method == Method::POST => Self::CreateRetention,
            ["retentions", id] => match *method {
                Method::GET | Method::HEAD => Self::GetRetention(one(id)),
                Method::PUT => Self::UpdateRetention(one(id)),
                Method::DELETE => Self::DeleteRetention(one(id)),
                _ => return Err(not_allowed()),
            },
            ["retentions", id, "executions"] => match *method {
                Method::GET | Method::HEAD => Self::RetentionExecutions(one(id)),
                Method::POST => Self::StartRetention(one(id)),
                _ => return Err(not_allowed()),
            },
            ["retentions", id, "executions", execution] if method == Method::PATCH => {
                Self::StopRetention {
                    id: one(id),
                    execution: one(execution),
                }
            }
            ["retentions", id, "executions", execution, "tasks"] if get => Self::RetentionTasks {
                id: one(id),
                execution: one(execution),
            },
            ["retentions", id, "executions", execution, "tasks", task] if get => {
                Self::RetentionTaskLog {
                    id: one(id),
                    execution: one(execution),
                    task: one(task),
                }
            }
            ["system", "gc"] if get => Self::GcRuns,
            ["system", "gc", "schedule"] if get => Self::GcSchedule,
            ["system", "gc", "schedule"] if method == Method::POST || method == Method::PUT => {
                Self::SetGcSchedule
            }
            ["system", "gc", id] if get && *id != "schedule" => Self::GcRun(one(id)),
            ["system", "gc", id, "log"] if get => Self::GcLog(one(id)),
            ["robots"] if method == Method::POST => Self::CreateRobot,
            ["robots", robot] => match *method {
                Method::GET | Method::HEAD => Self::GetRobot(one(robot)),
                Method::PUT => Self::UpdateRobot(one(robot)),
                Method::PATCH => Self::RefreshRobotSecret(one(robot)),
                Method::DELETE => Self::DeleteRobot(one(robot)),
                _ => return Err(not_allowed()),
            },
            ["users" | "projects" | "robots" | "audit-logs" | "statistics"]
            | ["statistics", "pulls"]
            | ["projects", _, "webhook", "policies"]
            | ["projects", _, "webhook", "policies", _, "executions"]
            | ["projects", _, "repositories"]
            | ["system", "gc"]
            | ["retentions"]
            | ["retentions", _, "executions", _]
            | ["retentions", _, "executions", _, "tasks"]
            | ["retentions", _, "executions", _, "tasks", _]
            | ["system", "gc", _]
            | ["system", "gc", _, "log"]
            | ["projects", _, "repositories", _, "artifacts"]
            | ["projects", _, "repositories", _, "artifacts", _, "tags", _]
            | ["users", _]
            | ["users", _, "password" | "sysadmin"]
            | ["projects", _]
            | [
                "projects",
                _,
                "members" | "robots" | "logs" | "immutabletagrules",
            ] => {
                return Err(not_allowed());
            }
            _ => return Err(unknown()),
        };
        if segments.iter().any(|segment| segment.is_empty()) {
            return Err(unknown());
        }
        Ok(endpoint)
    }

    /// What the caller must be allowed: decided here for every endpoint, checked in one
    /// place ([`berth_app::Accounts::authorize`]).
    pub fn permission(&self) -> Permission {
        match self {
            Self::CreateUser => Permission::CreateUser,
            Self::ListUsers
            | Self::DeleteUser(_)
            | Self::SetSysadmin(_)
            | Self::AuditLogs
            | Self::GcRuns
            | Self::GcRun(_)
            | Self::GcLog(_)
            | Self::GcSchedule
            | Self::SetGcSchedule => Permission::SystemAdmin,
            Self::CurrentUser => Permission::User,
            Self::GetUser(user) | Self::ChangePassword(user) => {
                Permission::SelfOrAdmin(user.clone())
            }
            Self::ListProjects | Self::ProjectExists | Self::GetProject(_) | Self::Statistics => {
                Permission::Anyone
            }
            Self::PullStatistics | Self::ListQuotas => Permission::SystemAdmin,
            Self::ProjectSummary(project) => Permission::ProjectReader(project.clone()),
            Self::ListRepositories(project) => Permission::Repositories(project.clone(), Pull),
            Self::GetRepository(path) | Self::ListArtifacts(path) => path.may(Pull),
            Self::GetArtifact(path) | Self::ListTags(path) => path.repository.may(Pull),
            Self::AddTag(path) => path.repository.may(Push),
            Self::DeleteRepository(path) => path.may(Delete),
            Self::DeleteArtifact(path) | Self::DeleteTag { artifact: path, .. } => {
                path.repository.may(Delete)
            }
            Self::CreateProject => Permission::CreateProject,
            Self::UpdateProject(project)
            | Self::DeleteProject(project)
            | Self::AddMember(project)
            | Self::ChangeMember { project, .. }
            | Self::RemoveMember { project, .. }
            | Self::ListRobots(project)
            | Self::ProjectLogs(project)
            | Self::ListWebhooks(project)
            | Self::CreateWebhook(project)
            | Self::GetWebhook { project, .. }
            | Self::UpdateWebhook { project, .. }
            | Self::DeleteWebhook { project, .. }
            | Self::WebhookDeliveries { project, .. } => Permission::ProjectAdmin(project.clone()),
            Self::ListImmutableRules(project)
            | Self::CreateImmutableRule(project)
            | Self::UpdateImmutableRule { project, .. }
            | Self::DeleteImmutableRule { project, .. } => {
                Permission::ProjectMaintainer(project.clone())
            }
            Self::ListMembers(project) | Self::GetMember { project, .. } => {
                Permission::ProjectMember(project.clone())
            }
            // The project is in the body: the use case checks it once the body is read.
            Self::CreateRobot => Permission::User,
            // The project is the policy's (or in the body): the use case checks
            // Permission::TagRetention once it knows it.
            Self::RetentionMetadata
            | Self::CreateRetention
            | Self::GetRetention(_)
            | Self::UpdateRetention(_)
            | Self::DeleteRetention(_)
            | Self::StartRetention(_)
            | Self::RetentionExecutions(_)
            | Self::StopRetention { .. }
            | Self::RetentionTasks { .. }
            | Self::RetentionTaskLog { .. } => Permission::User,
            Self::GetRobot(robot)
            | Self::UpdateRobot(robot)
            | Self::RefreshRobotSecret(robot)
            | Self::DeleteRobot(robot) => Permission::RobotAdmin(robot.clone()),
        }
    }
}

impl RepositoryPath {
    fn may(&self, action: Action) -> Permission {
        Permission::Repositories(self.project.clone(), action)
    }
}

fn repository_path(project: &str, repository: &str) -> RepositoryPath {
    RepositoryPath {
        project: project.to_owned(),
        repository: decode_again(repository),
    }
}

fn artifact_path(project: &str, repository: &str, reference: &str) -> ArtifactPath {
    ArtifactPath {
        repository: repository_path(project, repository),
        reference: reference.to_owned(),
    }
}

/// A repository segment decoded once more: Harbor's clients write its slashes `%252F`.
fn decode_again(segment: &str) -> String {
    percent_decode_str(segment).decode_utf8_lossy().into_owned()
}

pub(crate) fn unknown_endpoint(method: &Method, path: &str) -> RegistryError {
    RegistryError::new(
        ErrorCode::NotFound,
        format!(
            "no management endpoint {method} {}{path}",
            super::API_PREFIX
        ),
    )
}

fn method_not_allowed(method: &Method, path: &str) -> RegistryError {
    RegistryError::new(
        ErrorCode::Unsupported,
        format!("{method} is not allowed on {}{path}", super::API_PREFIX),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(method: Method, path: &str) -> Result<ApiEndpoint> {
        ApiEndpoint::parse(&method, path)
    }

    #[test]
    fn every_endpoint_parses_with_its_permission() {
        let cases = [
            (
                Method::GET,
                "/users",
                ApiEndpoint::ListUsers,
                Permission::SystemAdmin,
            ),
            (
                Method::POST,
                "/users",
                ApiEndpoint::CreateUser,
                Permission::CreateUser,
            ),
            (
                Method::GET,
                "/users/current",
                ApiEndpoint::CurrentUser,
                Permission::User,
            ),
            (
                Method::PUT,
                "/users/alice/password",
                ApiEndpoint::ChangePassword("alice".into()),
                Permission::SelfOrAdmin("alice".into()),
            ),
            (
                Method::HEAD,
                "/projects",
                ApiEndpoint::ProjectExists,
                Permission::Anyone,
            ),
            (
                Method::DELETE,
                "/projects/team",
                ApiEndpoint::DeleteProject("team".into()),
                Permission::ProjectAdmin("team".into()),
            ),
            (
                Method::GET,
                "/projects/team/summary",
                ApiEndpoint::ProjectSummary("team".into()),
                Permission::ProjectReader("team".into()),
            ),
            (
                Method::GET,
                "/quotas",
                ApiEndpoint::ListQuotas,
                Permission::SystemAdmin,
            ),
            (
                Method::GET,
                "/projects/team/members/bob",
                ApiEndpoint::GetMember {
                    project: "team".into(),
                    user: "bob".into(),
                },
                Permission::ProjectMember("team".into()),
            ),
            (
                Method::GET,
                "/projects/team/robots",
                ApiEndpoint::ListRobots("team".into()),
                Permission::ProjectAdmin("team".into()),
            ),
            (
                Method::POST,
                "/robots",
                ApiEndpoint::CreateRobot,
                Permission::User,
            ),
            (
                Method::PATCH,
                "/robots/robot%24team+ci",
                ApiEndpoint::RefreshRobotSecret("robot$team+ci".into()),
                Permission::RobotAdmin("robot$team+ci".into()),
            ),
            (
                Method::GET,
                "/projects/team/repositories",
                ApiEndpoint::ListRepositories("team".into()),
                Permission::Repositories("team".into(), Pull),
            ),
            (
                Method::DELETE,
                "/projects/team/repositories/a%252Fb",
                ApiEndpoint::DeleteRepository(repository_path("team", "a%2Fb")),
                Permission::Repositories("team".into(), Delete),
            ),
            (
                Method::GET,
                "/projects/team/repositories/app/artifacts",
                ApiEndpoint::ListArtifacts(repository_path("team", "app")),
                Permission::Repositories("team".into(), Pull),
            ),
            (
                Method::DELETE,
                "/projects/team/repositories/app/artifacts/sha256%3Aabc",
                ApiEndpoint::DeleteArtifact(artifact_path("team", "app", "sha256:abc")),
                Permission::Repositories("team".into(), Delete),
            ),
            (
                Method::POST,
                "/projects/team/repositories/app/artifacts/v1/tags",
                ApiEndpoint::AddTag(artifact_path("team", "app", "v1")),
                Permission::Repositories("team".into(), Push),
            ),
            (
                Method::DELETE,
                "/projects/team/repositories/app/artifacts/v1/tags/old",
                ApiEndpoint::DeleteTag {
                    artifact: artifact_path("team", "app", "v1"),
                    tag: "old".into(),
                },
                Permission::Repositories("team".into(), Delete),
            ),
            (
                Method::POST,
                "/system/gc/schedule",
                ApiEndpoint::SetGcSchedule,
                Permission::SystemAdmin,
            ),
            (
                Method::GET,
                "/retentions/metadatas",
                ApiEndpoint::RetentionMetadata,
                Permission::User,
            ),
            (
                Method::POST,
                "/retentions",
                ApiEndpoint::CreateRetention,
                Permission::User,
            ),
            (
                Method::PUT,
                "/retentions/3",
                ApiEndpoint::UpdateRetention("3".into()),
                Permission::User,
            ),
            (
                Method::POST,
                "/retentions/3/executions",
                ApiEndpoint::StartRetention("3".into()),
                Permission::User,
            ),
            (
                Method::PATCH,
                "/retentions/3/executions/9",
                ApiEndpoint::StopRetention {
                    id: "3".into(),
                    execution: "9".into(),
                },
                Permission::User,
            ),
            (
                Method::GET,
                "/retentions/3/executions/9/tasks/2",
                ApiEndpoint::RetentionTaskLog {
                    id: "3".into(),
                    execution: "9".into(),
                    task: "2".into(),
                },
                Permission::User,
            ),
            (
                Method::GET,
                "/system/gc/7/log",
                ApiEndpoint::GcLog("7".into()),
                Permission::SystemAdmin,
            ),
            (
                Method::GET,
                "/projects/team/immutabletagrules",
                ApiEndpoint::ListImmutableRules("team".into()),
                Permission::ProjectMaintainer("team".into()),
            ),
            (
                Method::POST,
                "/projects/team/immutabletagrules",
                ApiEndpoint::CreateImmutableRule("team".into()),
                Permission::ProjectMaintainer("team".into()),
            ),
            (
                Method::PUT,
                "/projects/team/immutabletagrules/3",
                ApiEndpoint::UpdateImmutableRule {
                    project: "team".into(),
                    id: "3".into(),
                },
                Permission::ProjectMaintainer("team".into()),
            ),
            (
                Method::DELETE,
                "/projects/team/immutabletagrules/3",
                ApiEndpoint::DeleteImmutableRule {
                    project: "team".into(),
                    id: "3".into(),
                },
                Permission::ProjectMaintainer("team".into()),
            ),
        ];
        for (method, path, endpoint, permission) in cases {
            let parsed = parse(method.clone(), path).expect(path);
            assert_eq!(parsed, endpoint, "{method} {path}");
            assert_eq!(parsed.permission(), permission, "{method} {path}");
        }
    }

    #[test]
    fn unknown_paths_and_methods_are_told_apart() {
        for path in [
            "/nothing",
            "/users/alice/keys",
            "/projects//members",
            "/",
            "/projects/team/immutabletagrules/3/x",
        ] {
            let error = parse(Method::GET, path).expect_err(path);
            assert_eq!(error.code(), ErrorCode::NotFound, "{path}");
        }
        for (method, path) in [
            (Method::DELETE, "/users"),
            (Method::DELETE, "/users/current"),
            (Method::POST, "/projects/team"),
            (Method::GET, "/users/alice/password"),
            (Method::POST, "/robots/robot%24team+ci"),
            (Method::DELETE, "/audit-logs"),
            (Method::PUT, "/projects/team/repositories/app"),
            (Method::POST, "/projects/team/repositories"),
            (Method::PUT, "/projects/team/repositories/app/artifacts/v1"),
            (
                Method::PUT,
                "/projects/team/repositories/app/artifacts/v1/tags",
            ),
            (
                Method::GET,
                "/projects/team/repositories/app/artifacts/v1/tags/old",
            ),
            (Method::PATCH, "/projects/team/webhook/policies/1"),
            (Method::POST, "/projects/team/webhook/policies/1/executions"),
            (Method::POST, "/projects/team/logs"),
            (Method::DELETE, "/projects/team/immutabletagrules"),
            (Method::GET, "/projects/team/immutabletagrules/3"),
            (Method::POST, "/projects/team/immutabletagrules/3"),
        ] {
            let error = parse(method.clone(), path).expect_err(path);
            assert_eq!(error.code(), ErrorCode::Unsupported, "{method} {path}");
        }
    }
}
