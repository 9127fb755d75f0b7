//! The [`StatisticsStore`] cases. Each counts in repositories of its own; the most-pulled and
//! daily listings are checked by what the case itself adds, so cases may share a store.

use crate::digest::{Algorithm, Digest};
use crate::names::RepositoryName;
use crate::statistics::{Count, StatisticsStore, Usage};

const DAY_MS: u64 = 86_400_000;
/// Day 20_000 (2024-10-04), noon.
const NOON: u64 = 20_000 * DAY_MS + DAY_MS / 2;

/// Runs every statistics store case.
pub async fn run_all(store: &dyn StatisticsStore) {
    super::announce("statistics_store::pulls_and_pushes_are_counted_once");
    pulls_and_pushes_are_counted_once(store).await;
    super::announce("statistics_store::times_are_the_latest_whatever_the_order");
    times_are_the_latest_whatever_the_order(store).await;
    super::announce("statistics_store::most_pulled_and_daily_pulls");
    most_pulled_and_daily_pulls(store).await;
}

fn repository() -> RepositoryName {
    format!("stats{}/app", uuid::Uuid::new_v4().simple())
        .parse()
        .expect("a repository name")
}

fn digest(text: &str) -> Digest {
    Digest::of(Algorithm::Sha256, text.as_bytes())
}

fn id() -> u64 {
    u64::from(uuid::Uuid::new_v4().as_fields().0) << 16 | 1
}

fn count(repository: &RepositoryName, digest: &Digest, at_ms: u64, pull: bool) -> Count {
    Count {
        id: id(),
        repository: repository.clone(),
        digest: digest.clone(),
        at_ms,
        pull,
    }
}

pub async fn pulls_and_pushes_are_counted_once(store: &dyn StatisticsStore) {
    let repo = repository();
    let (first, second) = (digest("first"), digest("second"));
    assert_eq!(
        store.repository_usage(&repo).await.expect("read"),
        Usage::default(),
        "nothing counted yet"
    );
    let pushed = count(&repo, &first, NOON, false);
    let pulls = [
        count(&repo, &first, NOON + 1000, true),
        count(&repo, &first, NOON + 2000, true),
        count(&repo, &second, NOON + 3000, true),
    ];
    store
        .record(std::slice::from_ref(&pushed))
        .await
        .expect("counted");
    store.record(&pulls).await.expect("counted");
    // Delivered again: counted once.
    store.record(&pulls[..2]).await.expect("counted again");
    store.record(&[pushed]).await.expect("counted again");

    let usage = store.repository_usage(&repo).await.expect("read");
    assert_eq!(usage.pull_count, 3, "{usage:?}");
    assert_eq!(usage.last_pull_ms, Some(NOON + 3000));
    assert_eq!(usage.push_ms, Some(NOON));
    let artifact = store.artifact_usage(&repo, &first).await.expect("read");
    assert_eq!(
        artifact,
        Usage {
            pull_count: 2,
            last_pull_ms: Some(NOON + 2000),
            push_ms: Some(NOON),
        }
    );
    let other = store.artifact_usage(&repo, &second).await.expect("read");
    assert_eq!((other.pull_count, other.push_ms), (1, None));
}

/// Events arrive out of order (log batches from several functions): an older pull or push
/// recorded later keeps the later time.
pub async fn times_are_the_latest_whatever_the_order(store: &dyn StatisticsStore) {
    let repo = repository();
    let image = digest("late");
    for batch in [
        [
            count(&repo, &image, NOON + 5000, true),
            count(&repo, &image, NOON + 9000, false),
        ],
        [
            count(&repo, &image, NOON + 1000, true),
            count(&repo, &image, NOON, false),
        ],
    ] {
        store.record(&batch).await.expect("counted");
    }
    let expected = Usage {
        pull_count: 2,
        last_pull_ms: Some(NOON + 5000),
        push_ms: Some(NOON + 9000),
    };
    assert_eq!(store.repository_usage(&repo).await.expect("read"), expected);
    assert_eq!(
        store.artifact_usage(&repo, &image).await.expect("read"),
        expected
    );
}

pub async fn most_pulled_and_daily_pulls(store: &dyn StatisticsStore) {
    let (busy, quiet) = (repository(), repository());
    let artifact = digest("daily");
    // A day of its own far in the future, so that other cases' pulls do not mix in and no
    // store forgets it as old.
    let today = 100_000 + u64::from(uuid::Uuid::new_v4().as_fields().1) % 10_000 * 40;
    let mut counts = Vec::new();
    for back in [0u64, 0, 0, 2, 29, 30] {
        counts.push(count(&busy, &artifact, (today - back) * DAY_MS + 5, true));
    }
    counts.push(count(&quiet, &artifact, today * DAY_MS + 7, true));
    store.record(&counts).await.expect("counted");

    let top = store.most_pulled(10_000).await.expect("listed");
    let rank = |name: &RepositoryName| top.iter().position(|(repo, _)| repo == name.as_str());
    let (busy_at, quiet_at) = (rank(&busy).expect("listed"), rank(&quiet).expect("listed"));
    assert!(busy_at < quiet_at, "{top:?}");
    assert_eq!(top[busy_at].1, 6);
    assert_eq!(top[quiet_at].1, 1);
    assert!(
        top.windows(2).all(|pair| pair[0].1 >= pair[1].1),
        "most pulled first"
    );

    let daily = store.daily_pulls(today).await.expect("listed");
    assert_eq!(daily.len(), 30, "thirty days");
    assert_eq!(daily[0].day, today - 29);
    assert_eq!(daily[29].day, today);
    let on = |day: u64| daily.iter().find(|d| d.day == day).map(|d| d.pulls);
    assert_eq!(on(today), Some(4));
    assert_eq!(on(today - 2), Some(1));
    assert_eq!(on(today - 1), Some(0));
    assert_eq!(
        on(today - 29),
        Some(1),
        "the 30th day back is out of the window"
    );
}
