//! The account store's cases: users, projects, members, robot accounts and failed-login
//! counters, as [`AccountStore`] documents them.
//!
//! Every name carries a random nonce, so the cases share a store with each other and with
//! other runs. The user and project listings span the whole store: those cases list from just
//! below a prefix of their own and stop where it ends.

use futures_util::future::join_all;

use super::nonce;
use crate::accounts::{AccountStore, Member, Project, ProjectRole, Robot, RobotPermission, User};
use crate::immutable::{ImmutableRule, ImmutableRules, Selector};

const CREATED: u64 = 1_700_000_000;

// --- records ---------------------------------------------------------------------------------

/// A user no other case or run uses: `<label>-<nonce>`.
fn new_user(label: &str) -> User {
    named_user(&format!("{label}-{}", nonce()))
}

fn named_user(name: &str) -> User {
    User {
        name: name.to_owned(),
        email: Some(format!("{}@example.com", nonce())),
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1${}$hash", nonce()),
        admin: false,
        created_at: CREATED,
        password_changed_at: 0,
    }
}

/// A project no other case or run uses: `<label>-<nonce>` (`label` in lower case).
fn new_project(label: &str) -> Project {
    named_project(&format!("{label}-{}", nonce()))
}

fn named_project(name: &str) -> Project {
    Project {
        name: name.to_owned(),
        public: false,
        owner: "admin".to_owned(),
        created_at: CREATED + 1,
        immutable_tags: Default::default(),
    }
}

/// Robot `label` of `project`, named `robot$<project>+<label>`.
fn new_robot(project: &str, label: &str) -> Robot {
    Robot {
        name: format!("robot${project}+{label}"),
        project: project.to_owned(),
        description: format!("the {label} robot"),
        secret_hash: format!("$argon2id$v=19$m=19456,t=2,p=1${}$secret", nonce()),
        permissions: vec![RobotPermission::Pull, RobotPermission::Push],
        expires_at: Some(CREATED + 86_400),
        disabled: false,
        created_at: CREATED + 2,
    }
}

fn membership(project: &Project, user: &User, role: ProjectRole) -> Member {
    Member {
        project: project.name.clone(),
        user: user.name.clone(),
        role,
        created_at: CREATED + 3,
    }
}

// --- calls that must not fail ----------------------------------------------------------------

async fn user(store: &dyn AccountStore, name: &str) -> Option<User> {
    store
        .user(name)
        .await
        .unwrap_or_else(|e| panic!("user({name:?}) failed: {e}"))
}

async fn create_user(store: &dyn AccountStore, user: &User) -> bool {
    store
        .create_user(user)
        .await
        .unwrap_or_else(|e| panic!("create_user({:?}) failed: {e}", user.name))
}

async fn update_user(store: &dyn AccountStore, user: &User) -> bool {
    store
        .update_user(user)
        .await
        .unwrap_or_else(|e| panic!("update_user({:?}) failed: {e}", user.name))
}

async fn delete_user(store: &dyn AccountStore, name: &str) -> bool {
    store
        .delete_user(name)
        .await
        .unwrap_or_else(|e| panic!("delete_user({name:?}) failed: {e}"))
}

async fn project(store: &dyn AccountStore, name: &str) -> Option<Project> {
    store
        .project(name)
        .await
        .unwrap_or_else(|e| panic!("project({name:?}) failed: {e}"))
}

async fn create_project(store: &dyn AccountStore, project: &Project) -> bool {
    store
        .create_project(project)
        .await
        .unwrap_or_else(|e| panic!("create_project({:?}) failed: {e}", project.name))
}

async fn update_project(store: &dyn AccountStore, project: &Project) -> bool {
    store
        .update_project(project)
        .await
        .unwrap_or_else(|e| panic!("update_project({:?}) failed: {e}", project.name))
}

async fn delete_project(store: &dyn AccountStore, name: &str) -> bool {
    store
        .delete_project(name)
        .await
        .unwrap_or_else(|e| panic!("delete_project({name:?}) failed: {e}"))
}

async fn member(store: &dyn AccountStore, project: &str, user: &str) -> Option<Member> {
    store
        .member(project, user)
        .await
        .unwrap_or_else(|e| panic!("member({project:?}, {user:?}) failed: {e}"))
}

async fn put_member(store: &dyn AccountStore, member: &Member) -> bool {
    store.put_member(member).await.unwrap_or_else(|e| {
        panic!(
            "put_member({:?}, {:?}) failed: {e}",
            member.project, member.user
        )
    })
}

async fn delete_member(store: &dyn AccountStore, project: &str, user: &str) -> bool {
    store
        .delete_member(project, user)
        .await
        .unwrap_or_else(|e| panic!("delete_member({project:?}, {user:?}) failed: {e}"))
}

async fn members(store: &dyn AccountStore, project: &str) -> Vec<Member> {
    store
        .members(project)
        .await
        .unwrap_or_else(|e| panic!("members({project:?}) failed: {e}"))
}

async fn memberships(store: &dyn AccountStore, user: &str) -> Vec<Member> {
    store
        .memberships(user)
        .await
        .unwrap_or_else(|e| panic!("memberships({user:?}) failed: {e}"))
}

async fn robot(store: &dyn AccountStore, name: &str) -> Option<Robot> {
    store
        .robot(name)
        .await
        .unwrap_or_else(|e| panic!("robot({name:?}) failed: {e}"))
}

async fn create_robot(store: &dyn AccountStore, robot: &Robot) -> bool {
    store
        .create_robot(robot)
        .await
        .unwrap_or_else(|e| panic!("create_robot({:?}) failed: {e}", robot.name))
}

async fn update_robot(store: &dyn AccountStore, robot: &Robot) -> bool {
    store
        .update_robot(robot)
        .await
        .unwrap_or_else(|e| panic!("update_robot({:?}) failed: {e}", robot.name))
}

async fn delete_robot(store: &dyn AccountStore, name: &str) -> bool {
    store
        .delete_robot(name)
        .await
        .unwrap_or_else(|e| panic!("delete_robot({name:?}) failed: {e}"))
}

async fn robots(store: &dyn AccountStore, project: &str) -> Vec<Robot> {
    store
        .robots(project)
        .await
        .unwrap_or_else(|e| panic!("robots({project:?}) failed: {e}"))
}

async fn record_failure(store: &dyn AccountStore, key: &str, now: u64, window: u64) -> u32 {
    store
        .record_login_failure(key, now, window)
        .await
        .unwrap_or_else(|e| panic!("record_login_failure({key:?}, {now}, {window}) failed: {e}"))
}

async fn failures(store: &dyn AccountStore, key: &str, now: u64, window: u64) -> u32 {
    store
        .login_failures(key, now, window)
        .await
        .unwrap_or_else(|e| panic!("login_failures({key:?}, {now}, {window}) failed: {e}"))
}

async fn clear_failures(store: &dyn AccountStore, key: &str) {
    store
        .clear_login_failures(key)
        .await
        .unwrap_or_else(|e| panic!("clear_login_failures({key:?}) failed: {e}"));
}

/// Creates users and projects that must not exist yet.
async fn given_users(store: &dyn AccountStore, users: &[&User]) {
    for user in users {
        assert!(
            create_user(store, user).await,
            "creating user {:?}",
            user.name
        );
    }
}

async fn given_projects(store: &dyn AccountStore, projects: &[&Project]) {
    for project in projects {
        assert!(
            create_project(store, project).await,
            "creating project {:?}",
            project.name
        );
    }
}

async fn given_members(store: &dyn AccountStore, members: &[&Member]) {
    for member in members {
        assert!(
            put_member(store, member).await,
            "adding {:?} to {:?}",
            member.user,
            member.project
        );
    }
}

async fn given_robots(store: &dyn AccountStore, robots: &[&Robot]) {
    for robot in robots {
        assert!(
            create_robot(store, robot).await,
            "creating {:?}",
            robot.name
        );
    }
}

fn users_of(members: &[Member]) -> Vec<&str> {
    members.iter().map(|m| m.user.as_str()).collect()
}

fn projects_of(members: &[Member]) -> Vec<&str> {
    members.iter().map(|m| m.project.as_str()).collect()
}

fn names_of(robots: &[Robot]) -> Vec<&str> {
    robots.iter().map(|r| r.name.as_str()).collect()
}

// --- listings of users and projects ----------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Listing {
    Users,
    Projects,
}

async fn page(
    store: &dyn AccountStore,
    listing: Listing,
    after: Option<&str>,
    limit: usize,
) -> Vec<String> {
    let what = format!("{listing:?}({after:?}, {limit})");
    match listing {
        Listing::Users => store
            .users(after, limit)
            .await
            .unwrap_or_else(|e| panic!("{what} failed: {e}"))
            .into_iter()
            .map(|user| user.name)
            .collect(),
        Listing::Projects => store
            .projects(after, limit)
            .await
            .unwrap_or_else(|e| panic!("{what} failed: {e}"))
            .into_iter()
            .map(|project| project.name)
            .collect(),
    }
}

/// Every name that starts with `prefix`, listed `limit` at a time from just below the
/// prefix. Nothing but names of this case sorts between the prefix without its last
/// character and the prefix, since the prefix ends in a random nonce.
async fn paginate(
    store: &dyn AccountStore,
    listing: Listing,
    prefix: &str,
    limit: usize,
    most: usize,
) -> Vec<String> {
    let ours = |name: &String| name.starts_with(prefix);
    let mut listed: Vec<String> = Vec::new();
    let mut after = prefix[..prefix.len() - 1].to_owned();
    loop {
        let page = page(store, listing, Some(&after), limit).await;
        assert!(
            page.len() <= limit,
            "{listing:?}: a page of {limit} had {} names",
            page.len()
        );
        let sorted = page.windows(2).all(|w| w[0] < w[1]);
        assert!(sorted, "{listing:?}: a page is not in name order: {page:?}");
        assert!(
            page.iter().all(|name| name.as_str() > after.as_str()),
            "{listing:?}: a page after {after:?} starts too early: {page:?}"
        );
        let done = page.len() < limit || !page.iter().all(ours);
        listed.extend(page.into_iter().filter(ours));
        assert!(
            listed.len() <= most,
            "{listing:?}: pagination after {after:?} never ends at limit {limit}: {listed:?}"
        );
        match listed.last() {
            Some(last) if !done => last.clone_into(&mut after),
            _ => return listed,
        }
    }
}

/// Names listed in byte-wise order, page by page, with `after` exclusive and free to name
/// nothing stored.
async fn names_paginate(
    store: &dyn AccountStore,
    listing: Listing,
    prefix: &str,
    names: &[String],
) {
    let mut expected = names.to_vec();
    expected.sort();
    for limit in [1, 2, 3, 100] {
        assert_eq!(
            paginate(store, listing, prefix, limit, expected.len()).await,
            expected,
            "{listing:?} listed {limit} at a time"
        );
    }
    for (i, name) in expected.iter().enumerate() {
        let rest: Vec<&String> = expected[i + 1..].iter().take(2).collect();
        // The name itself, and just above it and below the next: a bound that names nothing.
        for after in [name.clone(), format!("{name}\u{1}")] {
            let listed = page(store, listing, Some(&after), 2).await;
            let ours: Vec<&String> = listed.iter().filter(|n| n.starts_with(prefix)).collect();
            assert_eq!(ours, rest, "{listing:?} after {after:?}");
        }
    }
    assert!(
        page(store, listing, None, 0).await.is_empty(),
        "{listing:?}: limit 0"
    );
    assert!(
        page(store, listing, Some(&expected[0]), 0).await.is_empty(),
        "{listing:?}: limit 0 after a name"
    );
    assert_eq!(
        page(store, listing, None, 1).await.len(),
        1,
        "{listing:?}: the first page of a non-empty listing"
    );
}

// --- users -----------------------------------------------------------------------------------

/// Users read back whole; creating one that exists, or updating or deleting one that does not,
/// returns false and changes nothing.
pub async fn users_round_trip(store: &dyn AccountStore) {
    let alice = User {
        admin: true,
        ..new_user("alice")
    };
    let bob = User {
        email: None,
        ..new_user("bob")
    };
    assert_eq!(user(store, &alice.name).await, None, "before create_user");
    for created in [&alice, &bob] {
        assert!(
            create_user(store, created).await,
            "creating {}",
            created.name
        );
        assert_eq!(
            user(store, &created.name).await.as_ref(),
            Some(created),
            "a user reads back whole"
        );
    }

    let impostor = User {
        email: Some("impostor@example.com".to_owned()),
        password_hash: "$argon2id$impostor".to_owned(),
        admin: !alice.admin,
        created_at: 1,
        ..alice.clone()
    };
    assert!(
        !create_user(store, &impostor).await,
        "creating an existing user"
    );
    assert_eq!(
        user(store, &alice.name).await.as_ref(),
        Some(&alice),
        "a refused create changes nothing"
    );

    let demoted = User {
        email: None,
        password_hash: "$argon2id$changed".to_owned(),
        admin: false,
        ..alice.clone()
    };
    assert!(update_user(store, &demoted).await, "updating a user");
    assert_eq!(
        user(store, &alice.name).await.as_ref(),
        Some(&demoted),
        "after update_user"
    );
    let promoted = User {
        email: Some("alice@example.org".to_owned()),
        admin: true,
        ..demoted.clone()
    };
    assert!(update_user(store, &promoted).await, "updating a user again");
    assert_eq!(
        user(store, &alice.name).await.as_ref(),
        Some(&promoted),
        "after the second update_user"
    );

    let ghost = new_user("ghost");
    assert!(!update_user(store, &ghost).await, "updating a missing user");
    assert_eq!(
        user(store, &ghost.name).await,
        None,
        "a refused update creates nothing"
    );
    assert!(
        !delete_user(store, &ghost.name).await,
        "deleting a missing user"
    );

    assert!(delete_user(store, &alice.name).await, "deleting a user");
    assert_eq!(user(store, &alice.name).await, None, "after delete_user");
    assert!(
        !delete_user(store, &alice.name).await,
        "deleting a deleted user"
    );
    assert_eq!(
        user(store, &bob.name).await.as_ref(),
        Some(&bob),
        "another user"
    );
    assert!(
        create_user(store, &alice).await,
        "a deleted user's name is free again"
    );
    assert_eq!(user(store, &alice.name).await.as_ref(), Some(&alice));
}

/// Users list in byte-wise name order, page by page, as whole records.
pub async fn users_paginate_in_name_order(store: &dyn AccountStore) {
    let prefix = format!("users{}", nonce());
    let suffixes = [
        "", " x", "-b", ".z", "A", "_", "a", "a b", "ab", "~", "\u{e9}", "a-",
    ];
    let created: Vec<User> = suffixes
        .iter()
        .enumerate()
        .map(|(i, suffix)| User {
            email: (i % 2 == 0).then(|| format!("{i}@example.com")),
            admin: i % 3 == 0,
            ..named_user(&format!("{prefix}{suffix}"))
        })
        .collect();
    given_users(store, &created.iter().collect::<Vec<_>>()).await;
    let names: Vec<String> = created.iter().map(|u| u.name.clone()).collect();
    names_paginate(store, Listing::Users, &prefix, &names).await;

    let mut expected = created.clone();
    expected.sort_by(|a, b| a.name.cmp(&b.name));
    let before = &prefix[..prefix.len() - 1];
    let listed = store
        .users(Some(before), expected.len())
        .await
        .unwrap_or_else(|e| panic!("users({before:?}) failed: {e}"));
    assert_eq!(listed, expected, "users list as whole records");
}

// --- projects --------------------------------------------------------------------------------

/// Projects read back whole; creating one that exists, or updating or deleting one that does
/// not, returns false and changes nothing.
pub async fn projects_round_trip(store: &dyn AccountStore) {
    let private = new_project("private");
    let public = Project {
        public: true,
        owner: "someone".to_owned(),
        ..new_project("public")
    };
    assert_eq!(project(store, &private.name).await, None, "before create");
    for created in [&private, &public] {
        assert!(
            create_project(store, created).await,
            "creating {}",
            created.name
        );
        assert_eq!(
            project(store, &created.name).await.as_ref(),
            Some(created),
            "a project reads back whole"
        );
    }

    let impostor = Project {
        public: true,
        owner: "impostor".to_owned(),
        created_at: 1,
        ..private.clone()
    };
    assert!(
        !create_project(store, &impostor).await,
        "creating an existing project"
    );
    assert_eq!(
        project(store, &private.name).await.as_ref(),
        Some(&private),
        "a refused create changes nothing"
    );

    let mut immutable_tags = ImmutableRules::default();
    immutable_tags
        .add(ImmutableRule {
            id: 0,
            priority: 1,
            disabled: true,
            repositories: vec![Selector::excludes("scratch/**")],
            tags: vec![Selector::matches("v*"), Selector::excludes("*-dev")],
            params: serde_json::Map::new(),
        })
        .expect("a valid rule");
    let opened = Project {
        public: true,
        owner: "new-owner".to_owned(),
        immutable_tags,
        ..private.clone()
    };
    assert!(update_project(store, &opened).await, "updating a project");
    assert_eq!(
        project(store, &private.name).await.as_ref(),
        Some(&opened),
        "after update_project, immutability rules included"
    );

    let ghost = new_project("ghost");
    assert!(
        !update_project(store, &ghost).await,
        "updating a missing project"
    );
    assert_eq!(
        project(store, &ghost.name).await,
        None,
        "a refused update creates nothing"
    );
    assert!(
        !delete_project(store, &ghost.name).await,
        "deleting a missing project"
    );

    assert!(
        delete_project(store, &private.name).await,
        "deleting a project"
    );
    assert_eq!(
        project(store, &private.name).await,
        None,
        "after delete_project"
    );
    assert!(
        !delete_project(store, &private.name).await,
        "deleting a deleted project"
    );
    assert_eq!(
        project(store, &public.name).await.as_ref(),
        Some(&public),
        "another project"
    );
    assert!(
        create_project(store, &private).await,
        "a deleted project's name is free again"
    );
}

/// Projects list in byte-wise name order, page by page, as whole records.
pub async fn projects_paginate_in_name_order(store: &dyn AccountStore) {
    let prefix = format!("projects{}", nonce());
    let suffixes = ["", "--y", "-b", ".z", "0", "__x", "_a", "a", "a.b", "a-0"];
    let created: Vec<Project> = suffixes
        .iter()
        .enumerate()
        .map(|(i, suffix)| Project {
            public: i % 2 == 1,
            owner: format!("owner{i}"),
            ..named_project(&format!("{prefix}{suffix}"))
        })
        .collect();
    given_projects(store, &created.iter().collect::<Vec<_>>()).await;
    let names: Vec<String> = created.iter().map(|p| p.name.clone()).collect();
    names_paginate(store, Listing::Projects, &prefix, &names).await;

    let mut expected = created.clone();
    expected.sort_by(|a, b| a.name.cmp(&b.name));
    let before = &prefix[..prefix.len() - 1];
    let listed = store
        .projects(Some(before), expected.len())
        .await
        .unwrap_or_else(|e| panic!("projects({before:?}) failed: {e}"));
    assert_eq!(listed, expected, "projects list as whole records");
}

// --- members ---------------------------------------------------------------------------------

/// `put_member` adds a member and changes its role, keeping when it joined; every role reads
/// back; `delete_member` reports whether there was a membership.
pub async fn members_and_roles(store: &dyn AccountStore) {
    let team = new_project("roles");
    let carol = new_user("carol");
    given_projects(store, &[&team]).await;
    given_users(store, &[&carol]).await;
    assert_eq!(
        member(store, &team.name, &carol.name).await,
        None,
        "before put_member"
    );

    let joined = membership(&team, &carol, ProjectRole::Guest);
    assert!(put_member(store, &joined).await, "adding a member");
    assert_eq!(
        member(store, &team.name, &carol.name).await.as_ref(),
        Some(&joined),
        "a member reads back whole"
    );
    for role in ProjectRole::ALL {
        let changed = Member {
            role,
            created_at: joined.created_at + 100,
            ..joined.clone()
        };
        assert!(
            put_member(store, &changed).await,
            "changing the role to {role:?}"
        );
        let expected = Member {
            role,
            ..joined.clone()
        };
        assert_eq!(
            member(store, &team.name, &carol.name).await.as_ref(),
            Some(&expected),
            "the role changes to {role:?}, the member keeps when it joined"
        );
        assert_eq!(
            members(store, &team.name).await,
            std::slice::from_ref(&expected),
            "members after a role change"
        );
        assert_eq!(
            memberships(store, &carol.name).await,
            std::slice::from_ref(&expected),
            "memberships after a role change"
        );
    }

    assert!(
        delete_member(store, &team.name, &carol.name).await,
        "removing a member"
    );
    assert_eq!(member(store, &team.name, &carol.name).await, None);
    assert!(members(store, &team.name).await.is_empty(), "members after");
    assert!(
        memberships(store, &carol.name).await.is_empty(),
        "memberships after"
    );
    assert!(
        !delete_member(store, &team.name, &carol.name).await,
        "removing a removed member"
    );
    assert!(
        !delete_member(store, &new_project("nowhere").name, &carol.name).await,
        "removing a member of a missing project"
    );
    assert!(
        !delete_member(store, &team.name, &new_user("nobody").name).await,
        "removing a missing user"
    );
    assert_eq!(
        user(store, &carol.name).await.as_ref(),
        Some(&carol),
        "the user stays"
    );
    assert_eq!(
        project(store, &team.name).await.as_ref(),
        Some(&team),
        "the project stays"
    );

    let rejoined = Member {
        role: ProjectRole::Developer,
        created_at: joined.created_at + 1000,
        ..joined
    };
    assert!(
        put_member(store, &rejoined).await,
        "adding the member again"
    );
    assert_eq!(
        member(store, &team.name, &carol.name).await.as_ref(),
        Some(&rejoined),
        "a new membership starts anew"
    );
}

/// `put_member` refuses (false, nothing stored) a user or a project that does not exist.
pub async fn members_need_a_user_and_a_project(store: &dyn AccountStore) {
    let team = new_project("refusing");
    let dave = new_user("dave");
    given_projects(store, &[&team]).await;
    given_users(store, &[&dave]).await;

    let nobody = new_user("nobody");
    let nowhere = new_project("nowhere");
    for (who, project_name, user_name) in [
        ("a missing user", &team, &nobody),
        ("a missing project", &nowhere, &dave),
        ("a missing user and project", &nowhere, &nobody),
    ] {
        let refused = membership(project_name, user_name, ProjectRole::Developer);
        assert!(!put_member(store, &refused).await, "put_member of {who}");
        assert_eq!(
            member(store, &refused.project, &refused.user).await,
            None,
            "{who}: nothing is stored"
        );
    }
    assert!(members(store, &team.name).await.is_empty(), "members");
    assert!(members(store, &nowhere.name).await.is_empty(), "members");
    assert!(
        memberships(store, &dave.name).await.is_empty(),
        "memberships"
    );
    assert!(
        memberships(store, &nobody.name).await.is_empty(),
        "memberships"
    );
    assert_eq!(user(store, &nobody.name).await, None, "no user is created");
    assert_eq!(
        project(store, &nowhere.name).await,
        None,
        "no project is created"
    );

    assert!(delete_user(store, &dave.name).await);
    let after_delete = membership(&team, &dave, ProjectRole::Guest);
    assert!(
        !put_member(store, &after_delete).await,
        "put_member of a deleted user"
    );
    assert!(delete_project(store, &team.name).await);
    let eve = new_user("eve");
    given_users(store, &[&eve]).await;
    assert!(
        !put_member(store, &membership(&team, &eve, ProjectRole::Guest)).await,
        "put_member into a deleted project"
    );
    assert!(memberships(store, &eve.name).await.is_empty());
}

/// A project's members list in user name order, a user's memberships in project name order,
/// each only its own, whatever names share a prefix.
pub async fn members_and_memberships_list_in_name_order(store: &dyn AccountStore) {
    let team = new_project("listed");
    let neighbours = [
        named_project(&format!("{}-x", team.name)),
        named_project(&format!("{}x", team.name)),
        named_project(&format!("{}.x", team.name)),
    ];
    given_projects(store, &[&team]).await;
    given_projects(store, &neighbours.iter().collect::<Vec<_>>()).await;

    let base = format!("listed{}", nonce());
    let suffixes = ["b", "A", "a-b", "a", "ab", " z", "\u{e9}", "a b", "_"];
    let users: Vec<User> = suffixes
        .iter()
        .map(|suffix| named_user(&format!("{base}{suffix}")))
        .collect();
    given_users(store, &users.iter().collect::<Vec<_>>()).await;
    let mut expected: Vec<Member> = users
        .iter()
        .zip(ProjectRole::ALL.iter().cycle())
        .map(|(user, role)| membership(&team, user, *role))
        .collect();
    given_members(store, &expected.iter().collect::<Vec<_>>()).await;
    // Some of them are members of the neighbours too, with another role.
    for (user, neighbour) in users.iter().step_by(2).zip(neighbours.iter().cycle()) {
        given_members(
            store,
            &[&membership(neighbour, user, ProjectRole::Maintainer)],
        )
        .await;
    }
    expected.sort_by(|a, b| a.user.cmp(&b.user));
    assert_eq!(
        members(store, &team.name).await,
        expected,
        "members, in user name order, only this project's"
    );

    // One user in several projects, and users whose names extend theirs elsewhere.
    let frank = new_user("frank");
    let franks_neighbours = [
        named_user(&format!("{}x", frank.name)),
        named_user(&format!("{} x", frank.name)),
        named_user(&format!("{}-x", frank.name)),
    ];
    given_users(store, &[&frank]).await;
    given_users(store, &franks_neighbours.iter().collect::<Vec<_>>()).await;
    let mut projects = vec![team.clone()];
    projects.extend(neighbours.iter().cloned());
    let mut franks: Vec<Member> = projects
        .iter()
        .rev()
        .zip(ProjectRole::ALL.iter().rev())
        .map(|(project, role)| membership(project, &frank, *role))
        .collect();
    given_members(store, &franks.iter().collect::<Vec<_>>()).await;
    for (neighbour, project) in franks_neighbours.iter().zip(&projects) {
        given_members(
            store,
            &[&membership(project, neighbour, ProjectRole::Guest)],
        )
        .await;
    }
    franks.sort_by(|a, b| a.project.cmp(&b.project));
    assert_eq!(
        memberships(store, &frank.name).await,
        franks,
        "memberships, in project name order, only this user's"
    );
    assert_eq!(
        members(store, &team.name).await.len(),
        expected.len() + 2,
        "frank and one neighbour joined the team"
    );

    assert!(
        members(store, &new_project("unknown").name)
            .await
            .is_empty(),
        "members of a missing project"
    );
    assert!(
        memberships(store, &new_user("unknown").name)
            .await
            .is_empty(),
        "memberships of a missing user"
    );
}

/// Members added to one project at the same time are all added.
pub async fn concurrent_members_of_one_project(store: &dyn AccountStore) {
    const USERS: usize = 6;
    let team = new_project("crowd");
    given_projects(store, &[&team]).await;
    let users: Vec<User> = (0..USERS).map(|i| new_user(&format!("crowd{i}"))).collect();
    given_users(store, &users.iter().collect::<Vec<_>>()).await;
    let mut joining: Vec<Member> = users
        .iter()
        .map(|user| membership(&team, user, ProjectRole::Developer))
        .collect();
    let added = join_all(joining.iter().map(|member| store.put_member(member))).await;
    for (outcome, member) in added.into_iter().zip(&joining) {
        let added = outcome
            .unwrap_or_else(|e| panic!("concurrent put_member({}) failed: {e}", member.user));
        assert!(added, "concurrent put_member({})", member.user);
    }
    joining.sort_by(|a, b| a.user.cmp(&b.user));
    assert_eq!(members(store, &team.name).await, joining, "every member");
}

/// Deleting a user removes their memberships everywhere, and nothing else.
pub async fn delete_user_removes_their_memberships(store: &dyn AccountStore) {
    let doomed = new_user("doomed");
    let kept = new_user("kept");
    given_users(store, &[&doomed, &kept]).await;
    let owned = Project {
        owner: doomed.name.clone(),
        ..new_project("owned")
    };
    let (first, second) = (new_project("first"), new_project("second"));
    given_projects(store, &[&owned, &first, &second]).await;
    for project in [&owned, &first, &second] {
        given_members(
            store,
            &[&membership(project, &doomed, ProjectRole::Maintainer)],
        )
        .await;
    }
    let kept_first = membership(&first, &kept, ProjectRole::Guest);
    let kept_second = membership(&second, &kept, ProjectRole::ProjectAdmin);
    given_members(store, &[&kept_first, &kept_second]).await;

    assert!(delete_user(store, &doomed.name).await, "deleting the user");
    assert_eq!(user(store, &doomed.name).await, None, "the user is gone");
    assert!(
        memberships(store, &doomed.name).await.is_empty(),
        "their memberships are gone"
    );
    for project in [&owned, &first, &second] {
        assert_eq!(
            member(store, &project.name, &doomed.name).await,
            None,
            "their membership of {}",
            project.name
        );
        assert!(
            !users_of(&members(store, &project.name).await).contains(&doomed.name.as_str()),
            "{} still lists them",
            project.name
        );
    }
    assert_eq!(
        members(store, &first.name).await,
        std::slice::from_ref(&kept_first),
        "the other member stays"
    );
    let mut kept_memberships = vec![kept_first, kept_second];
    kept_memberships.sort_by(|a, b| a.project.cmp(&b.project));
    assert_eq!(
        memberships(store, &kept.name).await,
        kept_memberships,
        "the other user's memberships stay"
    );
    assert_eq!(
        project(store, &owned.name).await.as_ref(),
        Some(&owned),
        "a project they own stays"
    );
    assert!(
        !delete_user(store, &doomed.name).await,
        "deleting them again"
    );

    assert!(
        create_user(store, &doomed).await,
        "a user of the same name again"
    );
    assert!(
        memberships(store, &doomed.name).await.is_empty(),
        "a new user of the same name inherits no membership"
    );
    assert_eq!(member(store, &first.name, &doomed.name).await, None);
}

// --- robots ----------------------------------------------------------------------------------

/// Robots read back whole, every field; creating a taken name, or updating or deleting a
/// missing robot, returns false and changes nothing.
pub async fn robots_round_trip(store: &dyn AccountStore) {
    let team = new_project("robots");
    given_projects(store, &[&team]).await;
    let full = Robot {
        permissions: vec![
            RobotPermission::Pull,
            RobotPermission::Push,
            RobotPermission::Delete,
        ],
        ..new_robot(&team.name, "full")
    };
    let bare = Robot {
        description: String::new(),
        permissions: Vec::new(),
        expires_at: None,
        disabled: true,
        ..new_robot(&team.name, "bare")
    };
    let puller = Robot {
        permissions: vec![RobotPermission::Pull],
        ..new_robot(&team.name, "puller")
    };
    assert_eq!(robot(store, &full.name).await, None, "before create_robot");
    for created in [&full, &bare, &puller] {
        assert!(
            create_robot(store, created).await,
            "creating {}",
            created.name
        );
        assert_eq!(
            robot(store, &created.name).await.as_ref(),
            Some(created),
            "a robot reads back whole"
        );
    }

    let impostor = Robot {
        secret_hash: "$argon2id$impostor".to_owned(),
        permissions: vec![RobotPermission::Delete],
        disabled: true,
        ..full.clone()
    };
    assert!(
        !create_robot(store, &impostor).await,
        "creating a taken name"
    );
    assert_eq!(
        robot(store, &full.name).await.as_ref(),
        Some(&full),
        "a refused create changes nothing"
    );

    let changed = Robot {
        description: "rotated".to_owned(),
        secret_hash: "$argon2id$rotated".to_owned(),
        permissions: vec![RobotPermission::Pull],
        expires_at: None,
        disabled: true,
        ..full.clone()
    };
    assert!(update_robot(store, &changed).await, "updating a robot");
    assert_eq!(
        robot(store, &full.name).await.as_ref(),
        Some(&changed),
        "after update_robot"
    );
    let revived = Robot {
        expires_at: Some(CREATED + 7 * 86_400),
        disabled: false,
        permissions: vec![RobotPermission::Push, RobotPermission::Pull],
        ..bare.clone()
    };
    assert!(
        update_robot(store, &revived).await,
        "updating another robot"
    );
    assert_eq!(robot(store, &bare.name).await.as_ref(), Some(&revived));

    let ghost = new_robot(&team.name, &format!("ghost{}", nonce()));
    assert!(
        !update_robot(store, &ghost).await,
        "updating a missing robot"
    );
    assert_eq!(
        robot(store, &ghost.name).await,
        None,
        "a refused update creates nothing"
    );
    assert!(
        !delete_robot(store, &ghost.name).await,
        "deleting a missing robot"
    );

    assert!(delete_robot(store, &full.name).await, "deleting a robot");
    assert_eq!(robot(store, &full.name).await, None, "after delete_robot");
    assert!(
        !delete_robot(store, &full.name).await,
        "deleting a deleted robot"
    );
    assert_eq!(
        robots(store, &team.name).await,
        [revived, puller],
        "the other robots stay"
    );
    assert!(
        create_robot(store, &full).await,
        "a deleted robot's name is free again"
    );

    for name in [
        "not-a-robot".to_owned(),
        format!("robot${}", team.name),
        format!("robot${}+", team.name),
        format!("robot$+{}", nonce()),
        format!("{}+puller", team.name),
    ] {
        assert_eq!(robot(store, &name).await, None, "robot({name:?})");
    }
}

/// `create_robot` refuses a project that does not exist.
pub async fn robots_need_their_project(store: &dyn AccountStore) {
    let nowhere = new_project("nowhere");
    let orphan = new_robot(&nowhere.name, "orphan");
    assert!(
        !create_robot(store, &orphan).await,
        "create_robot in a missing project"
    );
    assert_eq!(robot(store, &orphan.name).await, None, "nothing is stored");
    assert!(robots(store, &nowhere.name).await.is_empty());
    assert_eq!(
        project(store, &nowhere.name).await,
        None,
        "no project is created"
    );
    given_projects(store, &[&nowhere]).await;
    assert!(
        create_robot(store, &orphan).await,
        "create_robot once the project exists"
    );
    assert_eq!(robot(store, &orphan.name).await.as_ref(), Some(&orphan));
}

/// A project's robots list in name order, only that project's.
pub async fn robots_list_in_name_order_per_project(store: &dyn AccountStore) {
    let team = new_project("fleet");
    let neighbours = [
        named_project(&format!("{}-x", team.name)),
        named_project(&format!("{}x", team.name)),
    ];
    given_projects(store, &[&team]).await;
    given_projects(store, &neighbours.iter().collect::<Vec<_>>()).await;
    let labels = ["b", "a", "a-b", "a.b", "a_b", "ab", "z", "0", "ci"];
    let mut fleet: Vec<Robot> = labels
        .iter()
        .map(|label| new_robot(&team.name, label))
        .collect();
    given_robots(store, &fleet.iter().collect::<Vec<_>>()).await;
    for neighbour in &neighbours {
        given_robots(
            store,
            &[
                &new_robot(&neighbour.name, "a"),
                &new_robot(&neighbour.name, "ci"),
            ],
        )
        .await;
    }
    fleet.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(
        robots(store, &team.name).await,
        fleet,
        "robots, in name order, only this project's"
    );
    assert_eq!(
        names_of(&robots(store, &neighbours[0].name).await),
        [
            format!("robot${}+a", neighbours[0].name),
            format!("robot${}+ci", neighbours[0].name)
        ],
        "a neighbour's robots"
    );
    assert!(
        robots(store, &new_project("unknown").name).await.is_empty(),
        "robots of a missing project"
    );
}

// --- deleting a project ----------------------------------------------------------------------

/// Deleting a project removes its members (from both sides) and its robots, and nothing of
/// other projects.
pub async fn delete_project_removes_members_and_robots(store: &dyn AccountStore) {
    let doomed = new_project("doomed");
    let kept = named_project(&format!("{}-kept", doomed.name));
    given_projects(store, &[&doomed, &kept]).await;
    let (grace, heidi) = (new_user("grace"), new_user("heidi"));
    given_users(store, &[&grace, &heidi]).await;
    let graces_kept = membership(&kept, &grace, ProjectRole::Developer);
    given_members(
        store,
        &[
            &membership(&doomed, &grace, ProjectRole::ProjectAdmin),
            &membership(&doomed, &heidi, ProjectRole::Guest),
            &graces_kept,
        ],
    )
    .await;
    let doomed_robots = [new_robot(&doomed.name, "ci"), new_robot(&doomed.name, "cd")];
    let kept_robot = new_robot(&kept.name, "ci");
    given_robots(store, &doomed_robots.iter().collect::<Vec<_>>()).await;
    given_robots(store, &[&kept_robot]).await;

    assert!(
        delete_project(store, &doomed.name).await,
        "deleting the project"
    );
    assert_eq!(
        project(store, &doomed.name).await,
        None,
        "the project is gone"
    );
    assert!(
        members(store, &doomed.name).await.is_empty(),
        "its members are gone"
    );
    assert!(
        robots(store, &doomed.name).await.is_empty(),
        "its robots are gone"
    );
    for gone in &doomed_robots {
        assert_eq!(robot(store, &gone.name).await, None, "robot {}", gone.name);
    }
    for user in [&grace, &heidi] {
        assert_eq!(member(store, &doomed.name, &user.name).await, None);
        assert!(
            !projects_of(&memberships(store, &user.name).await).contains(&doomed.name.as_str()),
            "{} is still a member",
            user.name
        );
    }
    assert_eq!(
        memberships(store, &grace.name).await,
        std::slice::from_ref(&graces_kept),
        "a membership of another project stays"
    );
    assert_eq!(
        user(store, &heidi.name).await.as_ref(),
        Some(&heidi),
        "members stay users"
    );
    assert_eq!(
        members(store, &kept.name).await,
        std::slice::from_ref(&graces_kept),
        "another project's members stay"
    );
    assert_eq!(
        robots(store, &kept.name).await,
        std::slice::from_ref(&kept_robot),
        "another project's robots stay"
    );
    assert!(
        !delete_project(store, &doomed.name).await,
        "deleting it again"
    );

    given_projects(store, &[&doomed]).await;
    assert!(
        members(store, &doomed.name).await.is_empty(),
        "a new project of the same name inherits no member"
    );
    assert!(
        robots(store, &doomed.name).await.is_empty(),
        "a new project of the same name inherits no robot"
    );
    assert_eq!(robot(store, &doomed_robots[0].name).await, None);
}

// --- failed logins ---------------------------------------------------------------------------

/// Failures count within the window that starts at the first failure counted; once it has
/// passed, counting starts again at 1. Reading does not count; clearing forgets.
pub async fn login_failures_count_within_a_window(store: &dyn AccountStore) {
    const WINDOW: u64 = 60;
    let key = format!("ivan@192.0.2.1 {}", nonce());
    let t0 = CREATED;
    assert_eq!(failures(store, &key, t0, WINDOW).await, 0, "never failed");
    assert_eq!(record_failure(store, &key, t0, WINDOW).await, 1);
    assert_eq!(record_failure(store, &key, t0 + 10, WINDOW).await, 2);
    assert_eq!(record_failure(store, &key, t0 + 10, WINDOW).await, 3);
    assert_eq!(
        record_failure(store, &key, t0 + WINDOW - 1, WINDOW).await,
        4,
        "the last second of the window"
    );
    for _ in 0..2 {
        assert_eq!(
            failures(store, &key, t0 + WINDOW - 1, WINDOW).await,
            4,
            "login_failures reads without counting"
        );
    }
    assert_eq!(
        failures(store, &key, t0 + WINDOW, WINDOW).await,
        0,
        "a window has passed since the first failure"
    );
    assert_eq!(
        record_failure(store, &key, t0 + WINDOW, WINDOW).await,
        1,
        "counting starts again"
    );
    assert_eq!(
        record_failure(store, &key, t0 + WINDOW + 1, WINDOW).await,
        2
    );
    assert_eq!(failures(store, &key, t0 + WINDOW + 1, WINDOW).await, 2);
    assert_eq!(
        failures(store, &key, t0 + 2 * WINDOW - 1, WINDOW).await,
        2,
        "the new window started at its first failure"
    );
    assert_eq!(failures(store, &key, t0 + 2 * WINDOW, WINDOW).await, 0);

    clear_failures(store, &key).await;
    assert_eq!(
        failures(store, &key, t0 + WINDOW + 1, WINDOW).await,
        0,
        "after clear_login_failures"
    );
    assert_eq!(
        record_failure(store, &key, t0 + WINDOW + 2, WINDOW).await,
        1,
        "counting after a clear starts at 1"
    );
    clear_failures(store, &key).await;
    clear_failures(store, &key).await;
    clear_failures(store, &format!("never failed {}", nonce())).await;

    assert_eq!(
        record_failure(store, &key, t0 + 100 * WINDOW, WINDOW).await,
        1,
        "much later"
    );
    assert_eq!(
        record_failure(store, &key, t0 + 100 * WINDOW + 1, 3600).await,
        2,
        "a longer window"
    );
    assert_eq!(failures(store, &key, t0 + 100 * WINDOW + 1, 3600).await, 2);
}

/// Each key counts on its own, whatever its neighbours are called.
pub async fn login_failure_keys_are_independent(store: &dyn AccountStore) {
    const WINDOW: u64 = 900;
    let key = format!("judy {}", nonce());
    let others = [
        format!("{key}x"),
        format!("{key} "),
        key[..key.len() - 1].to_owned(),
    ];
    for i in 1..=3 {
        assert_eq!(
            record_failure(store, &key, CREATED + u64::from(i), WINDOW).await,
            i
        );
    }
    for other in &others {
        assert_eq!(
            failures(store, other, CREATED + 5, WINDOW).await,
            0,
            "{other:?}"
        );
        assert_eq!(
            record_failure(store, other, CREATED + 5, WINDOW).await,
            1,
            "{other:?}"
        );
    }
    clear_failures(store, &key).await;
    assert_eq!(failures(store, &key, CREATED + 6, WINDOW).await, 0);
    for other in &others {
        assert_eq!(
            failures(store, other, CREATED + 6, WINDOW).await,
            1,
            "clearing {key:?} leaves {other:?}"
        );
    }
}

/// Failures recorded at the same moment all count, each call seeing its own count.
pub async fn concurrent_login_failures_all_count(store: &dyn AccountStore) {
    const RACERS: u32 = 10;
    const WINDOW: u64 = 300;
    let key = format!("mallory@198.51.100.7 {}", nonce());
    for round in 0..2 {
        let now = CREATED + u64::from(round);
        let outcomes =
            join_all((0..RACERS).map(|_| store.record_login_failure(&key, now, WINDOW))).await;
        let mut counts: Vec<u32> = outcomes
            .into_iter()
            .map(|outcome| {
                outcome.unwrap_or_else(|e| panic!("concurrent record_login_failure failed: {e}"))
            })
            .collect();
        counts.sort_unstable();
        let first = round * RACERS + 1;
        let expected: Vec<u32> = (first..first + RACERS).collect();
        assert_eq!(counts, expected, "round {round}: each call counts once");
        assert_eq!(
            failures(store, &key, now, WINDOW).await,
            first + RACERS - 1,
            "round {round}: every failure counted"
        );
    }
}
