//! The [`AccountStore`] port over the metadata database: users, projects, members, robot
//! accounts and failed-login counters live in tables of their own next to the registry's.
//!
//! | table            | key                      | value                                    | DynamoDB item (PK / SK)                 |
//! |------------------|--------------------------|------------------------------------------|-----------------------------------------|
//! | `users`          | name                     | the [`User`] as JSON                     | `USER#<name>` / `META`                  |
//! | `projects`       | name                     | the [`Project`] as JSON                  | `PROJECT#<name>` / `META`               |
//! | `members`        | (project, user)          | (Harbor role id, created at)             | `PROJECT#<project>` / `MEMBER#<user>`   |
//! | `memberships`    | (user, project)          | `()`                                     | `USER#<user>` / `MEMBERSHIP#<project>`  |
//! | `robots`         | (project, full name)     | the [`Robot`] as JSON                    | `PROJECT#<project>` / `ROBOT#<name>`    |
//! | `login_failures` | key                      | (failures, first failure, window end)    | `LOGIN#<key>` / `META`                  |
//! | `login_expiry`   | (window end, key)        | `()`                                     | (DynamoDB's time to live)               |
//!
//! `memberships` mirrors `members` so that both listings are range scans in name order; the
//! two are only ever written in the same transaction. A robot's project is part of its name
//! (`robot$<project>+<name>`), so a lookup by name is one key lookup, and a project's robots
//! are one range. A counter's window end indexes `login_expiry`, so that recording a failure
//! also removes counters whose window has passed, as DynamoDB's time to live does.
//!
//! Every change that touches several rows (a membership and its mirror; a user or a project
//! with everything that hangs off it) is one write transaction, and checks what it depends on
//! (the user and the project of a new member) inside it.

use std::ops::Bound;

use async_trait::async_trait;
use berth_core::accounts::{
    AccountStore, Member, Project, ProjectRole, Robot, User, robot_project,
};
use berth_core::error::{ErrorCode, RegistryError, Result};
use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::metadata::{RedbMetadataStore, corrupt, successor};

const USERS: TableDefinition<&str, &str> = TableDefinition::new("users");
const PROJECTS: TableDefinition<&str, &str> = TableDefinition::new("projects");
/// A member row: the role's Harbor id and when the user joined.
const MEMBERS: TableDefinition<(&str, &str), (u8, u64)> = TableDefinition::new("members");
const MEMBERSHIPS: TableDefinition<(&str, &str), ()> = TableDefinition::new("memberships");
const ROBOTS: TableDefinition<(&str, &str), &str> = TableDefinition::new("robots");
/// A counter: failures, the first failure of its window, and the window's end.
const LOGIN_FAILURES: TableDefinition<&str, (u32, u64, u64)> =
    TableDefinition::new("login_failures");
const LOGIN_EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("login_expiry");

/// Counters whose window has passed that one `record_login_failure` removes at most, so a
/// failed login never pays for a long quiet spell at once.
const EXPIRED_PER_WRITE: usize = 64;

/// Creates the account tables (in a database of any earlier release too).
pub(crate) fn create_tables(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(USERS)?;
    txn.open_table(PROJECTS)?;
    txn.open_table(MEMBERS)?;
    txn.open_table(MEMBERSHIPS)?;
    txn.open_table(ROBOTS)?;
    txn.open_table(LOGIN_FAILURES)?;
    txn.open_table(LOGIN_EXPIRY)?;
    Ok(())
}

/// The project `robot` is filed under: the one its name names, which must be its `project`.
fn robot_key(robot: &Robot) -> Result<(String, String)> {
    match robot_project(&robot.name) {
        Some(project) if project == robot.project => {
            Ok((robot.project.clone(), robot.name.clone()))
        }
        _ => Err(RegistryError::new(
            ErrorCode::NameInvalid,
            format!(
                "a robot account of project {:?} must be named robot${}+<name>",
                robot.project, robot.project
            ),
        )),
    }
}

fn encode(record: &impl Serialize) -> Result<String> {
    serde_json::to_string(record).map_err(RegistryError::internal)
}

fn decode<T: DeserializeOwned>(json: &str, what: &str) -> Result<T> {
    serde_json::from_str(json).map_err(|_| corrupt(what))
}

fn member(project: &str, user: &str, (role, created_at): (u8, u64)) -> Result<Member> {
    Ok(Member {
        project: project.to_owned(),
        user: user.to_owned(),
        role: ProjectRole::from_id(role.into()).ok_or_else(|| corrupt("a member's role"))?,
        created_at,
    })
}

/// The start of a listing by name: just after `after`, or the first name.
fn after_bound(after: Option<&str>) -> Bound<&str> {
    after.map_or(Bound::Unbounded, Bound::Excluded)
}

#[async_trait]
impl AccountStore for RedbMetadataStore {
    async fn user(&self, name: &str) -> Result<Option<User>> {
        let json = self.read(|txn| {
            Ok(txn
                .open_table(USERS)?
                .get(name)?
                .map(|row| row.value().to_owned()))
        })?;
        json.map(|json| decode(&json, "a user")).transpose()
    }

    async fn create_user(&self, user: &User) -> Result<bool> {
        let (name, json) = (user.name.clone(), encode(user)?);
        self.write(move |txn| {
            let mut users = txn.open_table(USERS)?;
            if users.get(name.as_str())?.is_some() {
                return Ok(false);
            }
            users.insert(name.as_str(), json.as_str())?;
            Ok(true)
        })
        .await
    }

    async fn update_user(&self, user: &User) -> Result<bool> {
        let (name, json) = (user.name.clone(), encode(user)?);
        self.write(move |txn| {
            let mut users = txn.open_table(USERS)?;
            if users.get(name.as_str())?.is_none() {
                return Ok(false);
            }
            users.insert(name.as_str(), json.as_str())?;
            Ok(true)
        })
        .await
    }

    async fn delete_user(&self, name: &str) -> Result<bool> {
        let name = name.to_owned();
        self.write(move |txn| {
            if txn.open_table(USERS)?.remove(name.as_str())?.is_none() {
                return Ok(false);
            }
            let end = successor(&name);
            let mut projects = Vec::new();
            txn.open_table(MEMBERSHIPS)?.retain_in(
                (
                    Bound::Included((name.as_str(), "")),
                    Bound::Excluded((end.as_str(), "")),
                ),
                |(_, project), ()| {
                    projects.push(project.to_owned());
                    false
                },
            )?;
            let mut members = txn.open_table(MEMBERS)?;
            for project in &projects {
                members.remove((project.as_str(), name.as_str()))?;
            }
            Ok(true)
        })
        .await
    }

    async fn users(&self, after: Option<&str>, limit: usize) -> Result<Vec<User>> {
        let rows: Vec<String> = self.read(|txn| {
            let users = txn.open_table(USERS)?;
            let range = users.range::<&str>((after_bound(after), Bound::Unbounded))?;
            range
                .take(limit)
                .map(|row| Ok(row?.1.value().to_owned()))
                .collect()
        })?;
        rows.iter().map(|json| decode(json, "a user")).collect()
    }

    async fn project(&self, name: &str) -> Result<Option<Project>> {
        let json = self.read(|txn| {
            Ok(txn
                .open_table(PROJECTS)?
                .get(name)?
                .map(|row| row.value().to_owned()))
        })?;
        json.map(|json| decode(&json, "a project")).transpose()
    }

    async fn create_project(&self, project: &Project) -> Result<bool> {
        let (name, json) = (project.name.clone(), encode(project)?);
        self.write(move |txn| {
            let mut projects = txn.open_table(PROJECTS)?;
            if projects.get(name.as_str())?.is_some() {
                return Ok(false);
            }
            projects.insert(name.as_str(), json.as_str())?;
            Ok(true)
        })
        .await
    }

    async fn update_project(&self, project: &Project) -> Result<bool> {
        let (name, json) = (project.name.clone(), encode(project)?);
        self.write(move |txn| {
            let mut projects = txn.open_table(PROJECTS)?;
            if projects.get(name.as_str())?.is_none() {
                return Ok(false);
            }
            projects.insert(name.as_str(), json.as_str())?;
            Ok(true)
        })
        .await
    }

    async fn delete_project(&self, name: &str) -> Result<bool> {
        let name = name.to_owned();
        self.write(move |txn| {
            if txn.open_table(PROJECTS)?.remove(name.as_str())?.is_none() {
                return Ok(false);
            }
            let end = successor(&name);
            let range = || {
                (
                    Bound::Included((name.as_str(), "")),
                    Bound::Excluded((end.as_str(), "")),
                )
            };
            let mut users = Vec::new();
            txn.open_table(MEMBERS)?
                .retain_in(range(), |(_, user), _| {
                    users.push(user.to_owned());
                    false
                })?;
            let mut memberships = txn.open_table(MEMBERSHIPS)?;
            for user in &users {
                memberships.remove((user.as_str(), name.as_str()))?;
            }
            txn.open_table(ROBOTS)?.retain_in(range(), |_, _| false)?;
            Ok(true)
        })
        .await
    }

    async fn projects(&self, after: Option<&str>, limit: usize) -> Result<Vec<Project>> {
        let rows: Vec<String> = self.read(|txn| {
            let projects = txn.open_table(PROJECTS)?;
            let range = projects.range::<&str>((after_bound(after), Bound::Unbounded))?;
            range
                .take(limit)
                .map(|row| Ok(row?.1.value().to_owned()))
                .collect()
        })?;
        rows.iter().map(|json| decode(json, "a project")).collect()
    }

    async fn member(&self, project: &str, user: &str) -> Result<Option<Member>> {
        let row = self.read(|txn| {
            Ok(txn
                .open_table(MEMBERS)?
                .get((project, user))?
                .map(|row| row.value()))
        })?;
        row.map(|row| member(project, user, row)).transpose()
    }

    async fn put_member(&self, member: &Member) -> Result<bool> {
        let (project, user) = (member.project.clone(), member.user.clone());
        let (role, created_at) = (member.role.id(), member.created_at);
        self.write(move |txn| {
            let (project, user) = (project.as_str(), user.as_str());
            if txn.open_table(USERS)?.get(user)?.is_none()
                || txn.open_table(PROJECTS)?.get(project)?.is_none()
            {
                return Ok(false);
            }
            let mut members = txn.open_table(MEMBERS)?;
            // A new role keeps the date the user joined.
            let joined = members
                .get((project, user))?
                .map_or(created_at, |row| row.value().1);
            members.insert((project, user), (role, joined))?;
            txn.open_table(MEMBERSHIPS)?.insert((user, project), ())?;
            Ok(true)
        })
        .await
    }

    async fn delete_member(&self, project: &str, user: &str) -> Result<bool> {
        let (project, user) = (project.to_owned(), user.to_owned());
        self.write(move |txn| {
            let (project, user) = (project.as_str(), user.as_str());
            txn.open_table(MEMBERSHIPS)?.remove((user, project))?;
            Ok(txn.open_table(MEMBERS)?.remove((project, user))?.is_some())
        })
        .await
    }

    async fn members(&self, project: &str) -> Result<Vec<Member>> {
        let end = successor(project);
        let rows: Vec<(String, (u8, u64))> = self.read(|txn| {
            let members = txn.open_table(MEMBERS)?;
            let range = members.range::<(&str, &str)>((
                Bound::Included((project, "")),
                Bound::Excluded((end.as_str(), "")),
            ))?;
            range
                .map(|row| {
                    let (key, value) = row?;
                    Ok((key.value().1.to_owned(), value.value()))
                })
                .collect()
        })?;
        rows.into_iter()
            .map(|(user, row)| member(project, &user, row))
            .collect()
    }

    async fn memberships(&self, user: &str) -> Result<Vec<Member>> {
        let end = successor(user);
        let rows: Vec<(String, Option<(u8, u64)>)> = self.read(|txn| {
            let memberships = txn.open_table(MEMBERSHIPS)?;
            let members = txn.open_table(MEMBERS)?;
            let range = memberships.range::<(&str, &str)>((
                Bound::Included((user, "")),
                Bound::Excluded((end.as_str(), "")),
            ))?;
            range
                .map(|row| {
                    let (key, _) = row?;
                    let project = key.value().1.to_owned();
                    let member = members.get((project.as_str(), user))?.map(|m| m.value());
                    Ok((project, member))
                })
                .collect()
        })?;
        rows.into_iter()
            .map(|(project, row)| {
                let row = row.ok_or_else(|| corrupt("a membership without its member row"))?;
                member(&project, user, row)
            })
            .collect()
    }

    async fn robot(&self, name: &str) -> Result<Option<Robot>> {
        let Some(project) = robot_project(name) else {
            return Ok(None);
        };
        let json = self.read(|txn| {
            Ok(txn
                .open_table(ROBOTS)?
                .get((project, name))?
                .map(|row| row.value().to_owned()))
        })?;
        json.map(|json| decode(&json, "a robot account"))
            .transpose()
    }

    async fn create_robot(&self, robot: &Robot) -> Result<bool> {
        let ((project, name), json) = (robot_key(robot)?, encode(robot)?);
        self.write(move |txn| {
            let key = (project.as_str(), name.as_str());
            if txn.open_table(PROJECTS)?.get(key.0)?.is_none() {
                return Ok(false);
            }
            let mut robots = txn.open_table(ROBOTS)?;
            if robots.get(key)?.is_some() {
                return Ok(false);
            }
            robots.insert(key, json.as_str())?;
            Ok(true)
        })
        .await
    }

    async fn update_robot(&self, robot: &Robot) -> Result<bool> {
        let ((project, name), json) = (robot_key(robot)?, encode(robot)?);
        self.write(move |txn| {
            let key = (project.as_str(), name.as_str());
            let mut robots = txn.open_table(ROBOTS)?;
            if robots.get(key)?.is_none() {
                return Ok(false);
            }
            robots.insert(key, json.as_str())?;
            Ok(true)
        })
        .await
    }

    async fn delete_robot(&self, name: &str) -> Result<bool> {
        let Some(project) = robot_project(name) else {
            return Ok(false);
        };
        let (project, name) = (project.to_owned(), name.to_owned());
        self.write(move |txn| {
            Ok(txn
                .open_table(ROBOTS)?
                .remove((project.as_str(), name.as_str()))?
                .is_some())
        })
        .await
    }

    async fn robots(&self, project: &str) -> Result<Vec<Robot>> {
        let end = successor(project);
        let rows: Vec<String> = self.read(|txn| {
            let robots = txn.open_table(ROBOTS)?;
            let range = robots.range::<(&str, &str)>((
                Bound::Included((project, "")),
                Bound::Excluded((end.as_str(), "")),
            ))?;
            range.map(|row| Ok(row?.1.value().to_owned())).collect()
        })?;
        rows.iter()
            .map(|json| decode(json, "a robot account"))
            .collect()
    }

    async fn record_login_failure(&self, key: &str, now: u64, window: u64) -> Result<u32> {
        let key = key.to_owned();
        self.write(move |txn| {
            let mut counters = txn.open_table(LOGIN_FAILURES)?;
            let mut expiry = txn.open_table(LOGIN_EXPIRY)?;
            let stored = counters.get(key.as_str())?.map(|row| row.value());
            if let Some((_, _, end)) = stored {
                expiry.remove((end, key.as_str()))?;
            }
            let (failures, first) = match stored {
                Some((failures, first, _)) if now.saturating_sub(first) < window => {
                    (failures.saturating_add(1), first)
                }
                _ => (1, now),
            };
            let end = first.saturating_add(window);
            counters.insert(key.as_str(), (failures, first, end))?;
            expiry.insert((end, key.as_str()), ())?;

            // Counters whose window ended by now count nothing any more.
            let expired: Vec<(u64, String)> = expiry
                .range::<(u64, &str)>((
                    Bound::Unbounded,
                    Bound::Excluded((now.saturating_add(1), "")),
                ))?
                .take(EXPIRED_PER_WRITE)
                .map(|row| {
                    let (entry, _) = row?;
                    let (end, key) = entry.value();
                    Ok((end, key.to_owned()))
                })
                .collect::<Result<_, redb::Error>>()?;
            for (end, key) in &expired {
                expiry.remove((*end, key.as_str()))?;
                counters.remove(key.as_str())?;
            }
            Ok(failures)
        })
        .await
    }

    async fn login_failures(&self, key: &str, now: u64, window: u64) -> Result<u32> {
        let stored = self.read(|txn| {
            Ok(txn
                .open_table(LOGIN_FAILURES)?
                .get(key)?
                .map(|row| row.value()))
        })?;
        Ok(match stored {
            Some((failures, first, _)) if now.saturating_sub(first) < window => failures,
            _ => 0,
        })
    }

    async fn clear_login_failures(&self, key: &str) -> Result<()> {
        let key = key.to_owned();
        self.write(move |txn| {
            if let Some(row) = txn.open_table(LOGIN_FAILURES)?.remove(key.as_str())? {
                let (_, _, end) = row.value();
                txn.open_table(LOGIN_EXPIRY)?.remove((end, key.as_str()))?;
            }
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use redb::{Database, ReadableTableMetadata};

    use super::*;

    fn open(dir: &tempfile::TempDir) -> RedbMetadataStore {
        RedbMetadataStore::open(dir.path().join("metadata.redb")).expect("opening")
    }

    fn robot(name: &str, project: &str) -> Robot {
        Robot {
            name: name.to_owned(),
            project: project.to_owned(),
            description: String::new(),
            secret_hash: "$argon2id$secret".to_owned(),
            permissions: Vec::new(),
            expires_at: None,
            disabled: false,
            created_at: 0,
        }
    }

    #[tokio::test]
    async fn a_robot_filed_under_another_project_is_refused() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = open(&dir);
        for (name, project) in [("robot$a+ci", "b"), ("ci", "a"), ("robot$b+ci", "a")] {
            let err = store
                .create_robot(&robot(name, project))
                .await
                .expect_err("a name of another project");
            assert_eq!(err.code(), ErrorCode::NameInvalid, "{name}");
            let err = store
                .update_robot(&robot(name, project))
                .await
                .expect_err("a name of another project");
            assert_eq!(err.code(), ErrorCode::NameInvalid, "{name}");
        }
    }

    /// A database written before the account tables existed opens at the same layout
    /// version and gains them.
    #[tokio::test]
    async fn a_database_without_account_tables_gains_them() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("metadata.redb");
        {
            let db = Database::create(&path).expect("a raw database");
            let txn = db.begin_write().expect("write");
            txn.open_table(TableDefinition::<&str, u64>::new("schema"))
                .expect("schema")
                .insert("version", 1)
                .expect("insert");
            txn.open_table(TableDefinition::<&str, ()>::new("repositories"))
                .expect("repositories")
                .insert("library/alpine", ())
                .expect("insert");
            txn.commit().expect("commit");
        }
        let store = RedbMetadataStore::open(&path).expect("an earlier database opens");
        let project = Project {
            name: "library".to_owned(),
            public: true,
            owner: "admin".to_owned(),
            created_at: 1,
            immutable_tags: Default::default(),
        };
        assert!(store.create_project(&project).await.expect("create"));
        assert_eq!(store.project("library").await.expect("read"), Some(project));
    }

    #[tokio::test]
    async fn accounts_survive_reopening() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let user = User {
            name: "alice".to_owned(),
            email: None,
            password_hash: "$argon2id$hash".to_owned(),
            admin: true,
            created_at: 1,
            password_changed_at: 0,
        };
        {
            let store = open(&dir);
            assert!(store.create_user(&user).await.expect("create"));
            assert_eq!(
                store
                    .record_login_failure("k", 100, 60)
                    .await
                    .expect("count"),
                1
            );
        }
        let store = open(&dir);
        assert_eq!(store.user("alice").await.expect("read"), Some(user));
        assert_eq!(store.login_failures("k", 101, 60).await.expect("read"), 1);
    }

    /// Counters whose window has passed are removed by later failures, as DynamoDB's time to
    /// live removes them, so the table holds only counters that still count.
    #[tokio::test]
    async fn counters_whose_window_passed_are_removed() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = open(&dir);
        let rows = |store: &RedbMetadataStore| {
            store
                .read(|txn| {
                    let counters = txn.open_table(LOGIN_FAILURES)?.len()?;
                    let expiry = txn.open_table(LOGIN_EXPIRY)?.len()?;
                    Ok((counters, expiry))
                })
                .expect("counting rows")
        };
        for i in 0..100 {
            store
                .record_login_failure(&format!("old {i}"), 1000, 60)
                .await
                .expect("count");
        }
        store
            .record_login_failure("old 0", 1010, 60)
            .await
            .expect("count");
        assert_eq!(rows(&store), (100, 100), "each counter has one expiry row");
        assert_eq!(
            store
                .record_login_failure("new", 1060, 60)
                .await
                .expect("count"),
            1
        );
        assert_eq!(
            rows(&store),
            (
                101 - EXPIRED_PER_WRITE as u64,
                101 - EXPIRED_PER_WRITE as u64
            ),
            "at most {EXPIRED_PER_WRITE} expired counters go at once"
        );
        store
            .record_login_failure("new", 1061, 60)
            .await
            .expect("count");
        assert_eq!(
            rows(&store),
            (1, 1),
            "only the counter that still counts stays"
        );
        assert_eq!(
            store.login_failures("new", 1061, 60).await.expect("read"),
            2
        );
        store.clear_login_failures("new").await.expect("clear");
        assert_eq!(rows(&store), (0, 0), "clearing removes both rows");
    }
}
