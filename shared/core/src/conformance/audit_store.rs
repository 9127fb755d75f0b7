//! The [`AuditStore`] cases. Each draws its own user and project names, and queries by them,
//! so cases may share a store.

use crate::audit::{AuditEntry, AuditQuery, AuditStore};
use crate::digest::{Algorithm, Digest};
use crate::statistics::{Count, StatisticsStore};

const DAY_MS: u64 = 86_400_000;
/// A time well inside any retention these cases give.
const NOW: u64 = 1_900_000_000_000;

/// Runs every audit store case.
pub async fn run_all(store: &dyn AuditStore) {
    super::announce("audit_store::entries_are_answered_newest_first_and_recorded_once");
    entries_are_answered_newest_first_and_recorded_once(store).await;
    super::announce("audit_store::queries_filter_and_page");
    queries_filter_and_page(store).await;
    super::announce("audit_store::expired_entries_are_never_answered");
    expired_entries_are_never_answered(store).await;
}

/// Runs the cases of entries recorded with their counts, over an audit store and the
/// statistics store it counts in (the same store, or another).
pub async fn run_all_counted(audit: &dyn AuditStore, statistics: &dyn StatisticsStore) {
    super::announce("audit_store::entries_and_their_counts_are_recorded_once");
    entries_and_their_counts_are_recorded_once(audit, statistics).await;
}

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

fn entry(id: u64, at_ms: u64, user: &str, project: &str, operation: &str) -> AuditEntry {
    AuditEntry {
        id,
        at_ms,
        username: user.to_owned(),
        resource: format!("{project}/app:v{id}"),
        resource_type: "artifact".to_owned(),
        operation: operation.to_owned(),
        project: Some(project.to_owned()),
    }
}

fn ids(entries: &[AuditEntry]) -> Vec<u64> {
    entries.iter().map(|entry| entry.id).collect()
}

/// Ids drawn for this run, so that cases sharing a store never collide.
fn base() -> u64 {
    u64::from(uuid::Uuid::new_v4().as_fields().0) << 12
}

pub async fn entries_are_answered_newest_first_and_recorded_once(store: &dyn AuditStore) {
    let (user, project, id) = (unique("u"), unique("p"), base());
    let entries: Vec<_> = (0..3)
        .map(|i| entry(id + i, NOW + i * 1000, &user, &project, "pull"))
        .collect();
    store.record(&entries, DAY_MS).await.expect("recorded");
    // A redelivery of the same entries: each kept once.
    store
        .record(&entries, DAY_MS)
        .await
        .expect("recorded again");
    let query = AuditQuery {
        username: Some(user.clone()),
        ..AuditQuery::default()
    };
    let page = store.query(&query, NOW).await.expect("answered");
    assert_eq!(page.total, 3, "each entry once: {page:?}");
    assert_eq!(ids(&page.entries), [id + 2, id + 1, id], "newest first");
    assert_eq!(page.entries[2], entries[0], "the entry as recorded");
    let oldest = AuditQuery {
        oldest_first: true,
        ..query
    };
    let page = store.query(&oldest, NOW).await.expect("answered");
    assert_eq!(ids(&page.entries), [id, id + 1, id + 2]);
}

pub async fn queries_filter_and_page(store: &dyn AuditStore) {
    let (alice, bob, project, other) = (unique("a"), unique("b"), unique("p"), unique("q"));
    let id = base();
    let mut entries = Vec::new();
    for i in 0..12 {
        let (user, operation) = if i % 3 == 0 {
            (&bob, "create")
        } else {
            (&alice, "pull")
        };
        entries.push(entry(id + i, NOW + i * 1000, user, &project, operation));
    }
    entries.push(entry(id + 100, NOW, &alice, &other, "pull"));
    store.record(&entries, DAY_MS).await.expect("recorded");

    let in_project = |query: AuditQuery| AuditQuery {
        project: Some(project.clone()),
        ..query
    };
    let page = store
        .query(&in_project(AuditQuery::default()), NOW)
        .await
        .expect("answered");
    assert_eq!(page.total, 12, "the other project's entry is not there");
    assert_eq!(page.entries.len(), 10, "the default page size");
    let second = store
        .query(
            &in_project(AuditQuery {
                page: 2,
                page_size: 5,
                ..AuditQuery::default()
            }),
            NOW,
        )
        .await
        .expect("answered");
    assert_eq!(
        ids(&second.entries),
        [id + 6, id + 5, id + 4, id + 3, id + 2]
    );
    assert_eq!(second.total, 12);

    let pushes = store
        .query(
            &in_project(AuditQuery {
                operation: Some("create".into()),
                ..AuditQuery::default()
            }),
            NOW,
        )
        .await
        .expect("answered");
    assert_eq!(ids(&pushes.entries), [id + 9, id + 6, id + 3, id]);
    assert!(pushes.entries.iter().all(|entry| entry.username == bob));

    let window = store
        .query(
            &in_project(AuditQuery {
                username: Some(alice.clone()),
                from_ms: Some(NOW + 4000),
                to_ms: Some(NOW + 8000),
                ..AuditQuery::default()
            }),
            NOW,
        )
        .await
        .expect("answered");
    assert_eq!(ids(&window.entries), [id + 8, id + 7, id + 5, id + 4]);

    let by_resource = store
        .query(
            &AuditQuery {
                resource: Some(format!("{other}/app")),
                ..AuditQuery::default()
            },
            NOW,
        )
        .await
        .expect("answered");
    assert_eq!(ids(&by_resource.entries), [id + 100]);
}

pub async fn expired_entries_are_never_answered(store: &dyn AuditStore) {
    let (user, project, id) = (unique("u"), unique("p"), base());
    let old = entry(id, NOW - 2 * DAY_MS, &user, &project, "pull");
    let recent = entry(id + 1, NOW - 1000, &user, &project, "pull");
    store
        .record(&[old, recent.clone()], DAY_MS)
        .await
        .expect("recorded");
    let page = store
        .query(
            &AuditQuery {
                username: Some(user),
                ..AuditQuery::default()
            },
            NOW,
        )
        .await
        .expect("answered");
    assert_eq!(page.entries, [recent], "past its retention: gone");
    assert_eq!(page.total, 1);
}

/// A pull of `repository` by `user`: its entry and its count, as the recorder makes them.
fn pull(id: u64, at_ms: u64, user: &str, repository: &str, digest: &Digest) -> (AuditEntry, Count) {
    let project = repository.split('/').next().unwrap_or(repository);
    let entry = AuditEntry {
        resource: format!("{repository}@{digest}"),
        ..entry(id, at_ms, user, project, "pull")
    };
    let count = Count {
        id,
        repository: repository.parse().expect("a repository name"),
        digest: digest.clone(),
        at_ms,
        pull: true,
    };
    (entry, count)
}

pub async fn entries_and_their_counts_are_recorded_once(
    audit: &dyn AuditStore,
    statistics: &dyn StatisticsStore,
) {
    let (user, project, id) = (unique("u"), unique("p"), base());
    let repository = format!("{project}/app");
    let digest = Digest::of(Algorithm::Sha256, user.as_bytes());
    let (entries, counts): (Vec<_>, Vec<_>) = (0..3)
        .map(|i| pull(id + i, NOW + i * 1000, &user, &repository, &digest))
        .unzip();
    audit
        .record_counted(&entries[..2], DAY_MS, &counts[..2], statistics)
        .await
        .expect("recorded");
    // Redelivered with one new event, which the batch also holds twice: each counted once.
    let again: Vec<_> = entries.iter().chain(&entries[2..]).cloned().collect();
    let counted_again: Vec<_> = counts.iter().chain(&counts[2..]).cloned().collect();
    audit
        .record_counted(&again, DAY_MS, &counted_again, statistics)
        .await
        .expect("recorded again");

    let page = audit
        .query(
            &AuditQuery {
                username: Some(user),
                ..AuditQuery::default()
            },
            NOW,
        )
        .await
        .expect("answered");
    assert_eq!(ids(&page.entries), [id + 2, id + 1, id], "each entry once");
    assert_eq!(page.entries[0], entries[2], "the entry as recorded");
    let repository = counts[0].repository.clone();
    let usage = statistics
        .repository_usage(&repository)
        .await
        .expect("read");
    assert_eq!(usage.pull_count, 3, "each pull counted once: {usage:?}");
    assert_eq!(usage.last_pull_ms, Some(NOW + 2000));
    let artifact = statistics
        .artifact_usage(&repository, &digest)
        .await
        .expect("read");
    assert_eq!(artifact.pull_count, 3, "{artifact:?}");
}
