//! The [`AccountStore`] port over the same table as the registry metadata: users, projects,
//! members, robot accounts and failed-login counters, laid out as the crate documentation
//! describes.
//!
//! A user or project item carries a `revision`, a random token that changes whenever
//! something may have been added under it (a member, a membership, a robot) or the item was
//! rewritten. Deletes use it to be safe without a lock: they remove the children they found
//! first and the parent last, on the condition that its revision is still the one read before
//! the children were listed; when it changed they list again. A delete cut short therefore
//! leaves the parent with fewer members or robots, never a member or robot without its parent,
//! and a new user or project of the same name inherits nothing.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, TransactWriteItem, Update};
use berth_core::accounts::{
    AccountStore, Member, Project, ProjectRole, Robot, User, robot_project,
};
use berth_core::error::{ErrorCode, RegistryError, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::corrupt;
use crate::schema::{
    CATALOG_PARTITION_KEY, CATALOG_SORT_KEY, MEMBER_PREFIX, MEMBERSHIP_PREFIX, META, PARTITION_KEY,
    PROJECTS_PARTITION, ROBOT_PREFIX, SORT_KEY, TTL_ATTRIBUTE, USERS_PARTITION, build_error,
    login_pk, member_sk, membership_sk, project_pk, robot_sk, user_pk,
};
use crate::store::DynamoMetadataStore;
use crate::toolkit::{
    Condition, FIRST_BACKOFF, Item, Outcome, Query, TRANSACTION_ITEMS, WRITE_ATTEMPTS, back_off,
    key, lost_races, n, names, number_attr, s, string_attr, token, values,
};

/// Attribute names of the account items.
mod attr {
    /// A user, project or robot account as JSON. A robot's own `expires_at` stays inside: as
    /// an attribute of the item it would be the table's time to live, and DynamoDB would
    /// delete the robot when it expires.
    pub const RECORD: &str = "record";
    pub const REVISION: &str = "revision";
    pub const PROJECT: &str = "project";
    pub const USER: &str = "user";
    /// A member's role, as Harbor's `role_id`.
    pub const ROLE: &str = "role";
    pub const CREATED_AT: &str = "created_at";
    pub const FAILURES: &str = "failures";
    /// When the counted window of failures started (Unix seconds).
    pub const FIRST: &str = "first_failure";
}

/// The project `robot` is filed under: the one its name names, which must be its `project`
/// (a lookup by name finds the robot there with one `GetItem`).
fn robot_partition(robot: &Robot) -> Result<String> {
    match robot_project(&robot.name) {
        Some(project) if project == robot.project => Ok(project_pk(project)),
        _ => Err(RegistryError::new(
            ErrorCode::NameInvalid,
            format!(
                "a robot account of project {:?} must be named robot${}+<name>",
                robot.project, robot.project
            ),
        )),
    }
}

fn encode(record: &impl Serialize) -> Result<AttributeValue> {
    serde_json::to_string(record)
        .map(s)
        .map_err(RegistryError::internal)
}

fn decode<T: DeserializeOwned>(item: &Item, what: &str) -> Result<T> {
    serde_json::from_str(string_attr(item, attr::RECORD)?).map_err(|_| corrupt(what))
}

/// A user or project item: the record, a new revision, and its place in the catalog index.
fn listed_item(pk: String, listing: &str, name: &str, record: AttributeValue) -> Item {
    let mut item = key(pk, META);
    item.insert(attr::RECORD.to_owned(), record);
    item.insert(attr::REVISION.to_owned(), s(token()));
    item.insert(CATALOG_PARTITION_KEY.to_owned(), s(listing));
    item.insert(CATALOG_SORT_KEY.to_owned(), s(name));
    item
}

fn user_item(user: &User) -> Result<Item> {
    Ok(listed_item(
        user_pk(&user.name),
        USERS_PARTITION,
        &user.name,
        encode(user)?,
    ))
}

fn project_item(project: &Project) -> Result<Item> {
    Ok(listed_item(
        project_pk(&project.name),
        PROJECTS_PARTITION,
        &project.name,
        encode(project)?,
    ))
}

fn robot_item(robot: &Robot) -> Result<Item> {
    let mut item = key(robot_partition(robot)?, robot_sk(&robot.name));
    item.insert(attr::RECORD.to_owned(), encode(robot)?);
    Ok(item)
}

/// A member item or its mirror.
fn member_of(item: &Item) -> Result<Member> {
    let role = number_attr(item, attr::ROLE)?;
    Ok(Member {
        project: string_attr(item, attr::PROJECT)?.to_owned(),
        user: string_attr(item, attr::USER)?.to_owned(),
        role: ProjectRole::from_id(role).ok_or_else(|| corrupt("a member's role"))?,
        created_at: number_attr(item, attr::CREATED_AT)?,
    })
}

/// The failures a counter item holds that still count at `now`.
fn counted(item: &Item, now: u64, window: u64) -> Result<u32> {
    let first = number_attr(item, attr::FIRST)?;
    if now.saturating_sub(first) >= window {
        return Ok(0);
    }
    let failures = number_attr(item, attr::FAILURES)?;
    Ok(u32::try_from(failures).unwrap_or(u32::MAX))
}

/// The `after` bound of a counter update: failures at or before it are out of the window.
/// Signed, since `now` may be less than a window after the epoch.
fn window_start(now: u64, window: u64) -> AttributeValue {
    AttributeValue::N((i128::from(now) - i128::from(window)).to_string())
}

fn transaction_items(items: impl IntoIterator<Item = Delete>) -> Vec<TransactWriteItem> {
    items
        .into_iter()
        .map(|delete| TransactWriteItem::builder().delete(delete).build())
        .collect()
}

/// Deletes that belong together (a member and its mirror) and go in one transaction.
type Unit = Vec<Delete>;

impl DynamoMetadataStore {
    /// An update in a transaction: `expression` on the item `key`, only if it exists.
    fn update_existing(
        &self,
        key: Item,
        expression: &str,
        names_used: &[(&str, &str)],
        values_used: Vec<(&str, AttributeValue)>,
    ) -> Result<TransactWriteItem> {
        let mut names_used = names_used.to_vec();
        names_used.push(("#sk", SORT_KEY));
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression(expression)
            .condition_expression("attribute_exists(#sk)")
            .set_expression_attribute_names(Some(names(&names_used)))
            .set_expression_attribute_values(Some(values(values_used)))
            .build()
            .map_err(build_error)?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// A new revision for the user or project item at `pk`, on the condition that it exists:
    /// whoever read the old one (a delete) will not remove the item without seeing what is
    /// added under it in the same transaction.
    fn touch(&self, pk: String) -> Result<TransactWriteItem> {
        self.update_existing(
            key(pk, META),
            "SET #revision = :revision",
            &[("#revision", attr::REVISION)],
            vec![(":revision", s(token()))],
        )
    }

    /// The member item or its mirror: the role is set, the date the user joined kept.
    fn member_update(&self, key: Item, member: &Member) -> Result<TransactWriteItem> {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression(
                "SET #project = :project, #user = :user, #role = :role, \
                 #created_at = if_not_exists(#created_at, :created_at)",
            )
            .set_expression_attribute_names(Some(names(&[
                ("#project", attr::PROJECT),
                ("#user", attr::USER),
                ("#role", attr::ROLE),
                ("#created_at", attr::CREATED_AT),
            ])))
            .set_expression_attribute_values(Some(values(vec![
                (":project", s(&member.project)),
                (":user", s(&member.user)),
                (":role", n(member.role.id().into())),
                (":created_at", n(member.created_at)),
            ])))
            .build()
            .map_err(build_error)?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    /// The record item at `pk`/`sk`, decoded.
    async fn record<T: DeserializeOwned>(
        &self,
        pk: String,
        sk: &str,
        what: &str,
    ) -> Result<Option<T>> {
        let projection = ("#record", &[("#record", attr::RECORD)][..]);
        self.get(key(pk, sk), Some(projection))
            .await?
            .map(|item| decode(&item, what))
            .transpose()
    }

    async fn records<T: DeserializeOwned>(&self, query: &Query, what: &str) -> Result<Vec<T>> {
        self.query_all(query)
            .await?
            .iter()
            .map(|item| decode(item, what))
            .collect()
    }

    /// Up to `limit` user or project items (`listing` in the catalog index, partition keys by
    /// `pk_of`) in name order after `after`. The index holds keys only, so each page of names
    /// is followed by a `BatchGetItem` of their items; a name the index still lists after its
    /// item was deleted is skipped, and the listing goes on to fill the page.
    async fn listed_items(
        &self,
        listing: &str,
        pk_of: fn(&str) -> String,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Item>> {
        let mut found = Vec::new();
        let mut cursor = after.map(str::to_owned);
        while found.len() < limit {
            let want = limit - found.len();
            let query = Query::catalog(listing, cursor.as_deref());
            let mut listed = self
                .list(&query, cursor.as_deref(), want, |item| {
                    string_attr(item, CATALOG_SORT_KEY).map(str::to_owned)
                })
                .await?;
            if listed.is_empty() {
                break;
            }
            let keys = listed.iter().map(|name| key(pk_of(name), META)).collect();
            let mut items: HashMap<String, Item> = self
                .batch_get_items(keys)
                .await?
                .into_iter()
                .map(|item| Ok((string_attr(&item, PARTITION_KEY)?.to_owned(), item)))
                .collect::<Result<_>>()?;
            found.extend(listed.iter().filter_map(|name| items.remove(&pk_of(name))));
            if listed.len() < want {
                break;
            }
            cursor = listed.pop();
        }
        Ok(found)
    }

    /// Deletes `children` and then `parent`, children first in transactions of whole units,
    /// the parent with the last of them. Returns whether the parent was deleted (`false`: its
    /// condition failed). Only the last transaction is conditional; a delete that needs more
    /// than one transaction is atomic only in its last step.
    async fn delete_family(&self, children: Vec<Unit>, parent: Delete) -> Result<bool> {
        let mut batches: Vec<Vec<Delete>> = vec![Vec::new()];
        for unit in children {
            let full = batches
                .last()
                .is_some_and(|batch| batch.len() + unit.len() > TRANSACTION_ITEMS);
            if full {
                batches.push(Vec::new());
            }
            if let Some(batch) = batches.last_mut() {
                batch.extend(unit);
            }
        }
        let mut last = batches.pop().unwrap_or_default();
        if last.len() == TRANSACTION_ITEMS {
            batches.push(last);
            last = Vec::new();
        }
        for batch in batches {
            if let Outcome::ConditionFailed = self.transact(transaction_items(batch)).await? {
                return Err(RegistryError::internal(
                    "DynamoDB refused an unconditional delete on a condition",
                ));
            }
        }
        last.push(parent);
        match self.transact(transaction_items(last)).await? {
            Outcome::Committed => Ok(true),
            Outcome::ConditionFailed => Ok(false),
        }
    }

    /// The items of partition `pk` that a delete needs: the parent's revision, if the
    /// parent exists, and the sort keys of everything else.
    async fn family(&self, pk: &str) -> Result<Option<(String, Vec<String>)>> {
        let mut query = Query::partition(pk);
        query.projection = Some("#sk, #revision".to_owned());
        query.names.insert("#sk".to_owned(), SORT_KEY.to_owned());
        query
            .names
            .insert("#revision".to_owned(), attr::REVISION.to_owned());
        let mut revision = None;
        let mut children = Vec::new();
        for item in self.query_all(&query).await? {
            let sk = string_attr(&item, SORT_KEY)?;
            if sk == META {
                revision = Some(string_attr(&item, attr::REVISION)?.to_owned());
            } else {
                children.push(sk.to_owned());
            }
        }
        Ok(revision.map(|revision| (revision, children)))
    }

    /// Deletes the user or project item at `pk` and what hangs off it (`units` says which
    /// deletes each child item needs), parent last; see the module documentation.
    async fn delete_parent(
        &self,
        pk: &str,
        operation: &str,
        units: impl Fn(&str) -> Result<Option<Unit>>,
    ) -> Result<bool> {
        let mut delay = FIRST_BACKOFF;
        for _ in 0..WRITE_ATTEMPTS {
            let Some((revision, children)) = self.family(pk).await? else {
                return Ok(false);
            };
            let mut deletes = Vec::new();
            for sk in &children {
                if let Some(unit) = units(sk)? {
                    deletes.push(unit);
                }
            }
            let parent = self.delete(
                key(pk, META),
                Some(Condition::new(
                    "#revision = :revision",
                    &[("#revision", attr::REVISION)],
                    vec![(":revision", s(revision))],
                )),
            )?;
            if self.delete_family(deletes, parent).await? {
                return Ok(true);
            }
            back_off(&mut delay).await;
        }
        Err(lost_races(operation))
    }

    /// One `UpdateItem` of a failed-login counter; `None` when its condition failed.
    async fn update_counter(
        &self,
        key: Item,
        expression: &str,
        condition: &str,
        names_used: &[(&str, &str)],
        values_used: Vec<(&str, AttributeValue)>,
    ) -> Result<Option<Item>> {
        let update = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key))
            .update_expression(expression)
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names(names_used)))
            .set_expression_attribute_values(Some(values(values_used)))
            .build()
            .map_err(build_error)?;
        self.update_item(update).await
    }
}

#[async_trait]
impl AccountStore for DynamoMetadataStore {
    async fn user(&self, name: &str) -> Result<Option<User>> {
        self.record(user_pk(name), META, "a user").await
    }

    async fn create_user(&self, user: &User) -> Result<bool> {
        let put = self.put(user_item(user)?, Some(Condition::absent()))?;
        self.put_item(put).await
    }

    async fn update_user(&self, user: &User) -> Result<bool> {
        let put = self.put(user_item(user)?, Some(Condition::exists()))?;
        self.put_item(put).await
    }

    async fn delete_user(&self, name: &str) -> Result<bool> {
        let pk = user_pk(name);
        self.delete_parent(&pk, "delete_user", |sk| {
            let Some(project) = sk.strip_prefix(MEMBERSHIP_PREFIX) else {
                return Ok(None);
            };
            Ok(Some(vec![
                self.delete(key(project_pk(project), member_sk(name)), None)?,
                self.delete(key(&pk, sk), None)?,
            ]))
        })
        .await
    }

    async fn users(&self, after: Option<&str>, limit: usize) -> Result<Vec<User>> {
        self.listed_items(USERS_PARTITION, user_pk, after, limit)
            .await?
            .iter()
            .map(|item| decode(item, "a user"))
            .collect()
    }

    async fn project(&self, name: &str) -> Result<Option<Project>> {
        self.record(project_pk(name), META, "a project").await
    }

    async fn create_project(&self, project: &Project) -> Result<bool> {
        let put = self.put(project_item(project)?, Some(Condition::absent()))?;
        self.put_item(put).await
    }

    async fn update_project(&self, project: &Project) -> Result<bool> {
        let put = self.put(project_item(project)?, Some(Condition::exists()))?;
        self.put_item(put).await
    }

    async fn delete_project(&self, name: &str) -> Result<bool> {
        let pk = project_pk(name);
        self.delete_parent(&pk, "delete_project", |sk| {
            if let Some(user) = sk.strip_prefix(MEMBER_PREFIX) {
                return Ok(Some(vec![
                    self.delete(key(&pk, sk), None)?,
                    self.delete(key(user_pk(user), membership_sk(name)), None)?,
                ]));
            }
            if sk.starts_with(ROBOT_PREFIX) {
                return Ok(Some(vec![self.delete(key(&pk, sk), None)?]));
            }
            Ok(None)
        })
        .await
    }

    async fn projects(&self, after: Option<&str>, limit: usize) -> Result<Vec<Project>> {
        self.listed_items(PROJECTS_PARTITION, project_pk, after, limit)
            .await?
            .iter()
            .map(|item| decode(item, "a project"))
            .collect()
    }

    async fn member(&self, project: &str, user: &str) -> Result<Option<Member>> {
        self.get(key(project_pk(project), member_sk(user)), None)
            .await?
            .map(|item| member_of(&item))
            .transpose()
    }

    async fn put_member(&self, member: &Member) -> Result<bool> {
        let (project, user) = (&member.project, &member.user);
        let items = vec![
            self.touch(user_pk(user))?,
            self.touch(project_pk(project))?,
            self.member_update(key(project_pk(project), member_sk(user)), member)?,
            self.member_update(key(user_pk(user), membership_sk(project)), member)?,
        ];
        match self.transact(items).await? {
            Outcome::Committed => Ok(true),
            // The user or the project does not exist.
            Outcome::ConditionFailed => Ok(false),
        }
    }

    async fn delete_member(&self, project: &str, user: &str) -> Result<bool> {
        let deletes = [
            self.delete(
                key(project_pk(project), member_sk(user)),
                Some(Condition::exists()),
            )?,
            self.delete(key(user_pk(user), membership_sk(project)), None)?,
        ];
        match self.transact(transaction_items(deletes)).await? {
            Outcome::Committed => Ok(true),
            Outcome::ConditionFailed => Ok(false),
        }
    }

    async fn members(&self, project: &str) -> Result<Vec<Member>> {
        let query = Query::prefixed(&project_pk(project), MEMBER_PREFIX);
        self.query_all(&query)
            .await?
            .iter()
            .map(member_of)
            .collect()
    }

    async fn memberships(&self, user: &str) -> Result<Vec<Member>> {
        let query = Query::prefixed(&user_pk(user), MEMBERSHIP_PREFIX);
        self.query_all(&query)
            .await?
            .iter()
            .map(member_of)
            .collect()
    }

    async fn robot(&self, name: &str) -> Result<Option<Robot>> {
        let Some(project) = robot_project(name) else {
            return Ok(None);
        };
        self.record(project_pk(project), &robot_sk(name), "a robot account")
            .await
    }

    async fn create_robot(&self, robot: &Robot) -> Result<bool> {
        let put = self.put(robot_item(robot)?, Some(Condition::absent()))?;
        let items = vec![
            self.touch(project_pk(&robot.project))?,
            TransactWriteItem::builder().put(put).build(),
        ];
        match self.transact(items).await? {
            Outcome::Committed => Ok(true),
            // The name is taken or the project does not exist.
            Outcome::ConditionFailed => Ok(false),
        }
    }

    async fn update_robot(&self, robot: &Robot) -> Result<bool> {
        let put = self.put(robot_item(robot)?, Some(Condition::exists()))?;
        self.put_item(put).await
    }

    async fn delete_robot(&self, name: &str) -> Result<bool> {
        let Some(project) = robot_project(name) else {
            return Ok(false);
        };
        let delete = self.delete(
            key(project_pk(project), robot_sk(name)),
            Some(Condition::exists()),
        )?;
        self.delete_item(delete).await
    }

    async fn robots(&self, project: &str) -> Result<Vec<Robot>> {
        let query = Query::prefixed(&project_pk(project), ROBOT_PREFIX);
        self.records(&query, "a robot account").await
    }

    async fn record_login_failure(&self, login: &str, now: u64, window: u64) -> Result<u32> {
        let counter = key(login_pk(login), META);
        for _ in 0..WRITE_ATTEMPTS {
            // Within the window: one more, atomically.
            let added = self
                .update_counter(
                    counter.clone(),
                    "ADD #failures :one",
                    "#first > :window_start",
                    &[("#failures", attr::FAILURES), ("#first", attr::FIRST)],
                    vec![(":one", n(1)), (":window_start", window_start(now, window))],
                )
                .await?;
            if let Some(item) = added {
                return counted(&item, now, window);
            }
            // No counter, or its window has passed: start one, unless a concurrent failure
            // just did (then count in the window it started).
            let started = self
                .update_counter(
                    counter.clone(),
                    "SET #failures = :one, #first = :now, #expires = :expires",
                    "attribute_not_exists(#first) OR #first <= :window_start",
                    &[
                        ("#failures", attr::FAILURES),
                        ("#first", attr::FIRST),
                        ("#expires", TTL_ATTRIBUTE),
                    ],
                    vec![
                        (":one", n(1)),
                        (":now", n(now)),
                        (":expires", n(now.saturating_add(window))),
                        (":window_start", window_start(now, window)),
                    ],
                )
                .await?;
            if started.is_some() {
                return Ok(1);
            }
        }
        Err(lost_races("record_login_failure"))
    }

    async fn login_failures(&self, login: &str, now: u64, window: u64) -> Result<u32> {
        match self.get(key(login_pk(login), META), None).await? {
            Some(item) => counted(&item, now, window),
            None => Ok(0),
        }
    }

    async fn clear_login_failures(&self, login: &str) -> Result<()> {
        let delete = self.delete(key(login_pk(login), META), None)?;
        self.delete_item(delete).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_robot_filed_under_another_project_is_refused() {
        let robot = |name: &str, project: &str| Robot {
            name: name.to_owned(),
            project: project.to_owned(),
            description: String::new(),
            secret_hash: String::new(),
            permissions: Vec::new(),
            expires_at: Some(1),
            disabled: false,
            created_at: 0,
        };
        let item = robot_item(&robot("robot$a+ci", "a")).expect("a robot of its project");
        assert_eq!(
            string_attr(&item, SORT_KEY).expect("a key"),
            "ROBOT#robot$a+ci"
        );
        assert!(
            !item.contains_key(TTL_ATTRIBUTE),
            "a robot's expiry is no time to live"
        );
        for (name, project) in [("robot$a+ci", "b"), ("ci", "a")] {
            let err = robot_item(&robot(name, project)).expect_err("another project");
            assert_eq!(err.code(), ErrorCode::NameInvalid);
        }
    }

    #[test]
    fn a_counter_counts_within_its_window_only() {
        let item = HashMap::from([
            (attr::FAILURES.to_owned(), n(3)),
            (attr::FIRST.to_owned(), n(1000)),
        ]);
        assert_eq!(counted(&item, 1000, 60).expect("count"), 3);
        assert_eq!(counted(&item, 1059, 60).expect("count"), 3);
        assert_eq!(counted(&item, 1060, 60).expect("count"), 0);
        assert_eq!(counted(&item, 999, 60).expect("count"), 3, "a clock behind");
        assert_eq!(
            window_start(10, 60),
            AttributeValue::N("-50".to_owned()),
            "near the epoch"
        );
    }
}
