//! Hot paths of planning an execution: every tag of every repository in the source passes
//! through the policy's filters, and every selected repository through namespace rewriting.

use std::hint::black_box;

use berth_core::replication::{Direction, Filter, FilterKind, Policy, Trigger};
use berth_replication::rules::{Selector, destination_repository};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn filters(c: &mut Criterion) {
    let selector = Selector::new(&[
        Filter {
            kind: FilterKind::Name,
            pattern: "library/**".into(),
            exclude: false,
        },
        Filter {
            kind: FilterKind::Tag,
            pattern: "{v,release-}[0-9]*".into(),
            exclude: false,
        },
        Filter {
            kind: FilterKind::Tag,
            pattern: "*-rc*".into(),
            exclude: true,
        },
    ])
    .expect("valid filters");
    let tags: Vec<String> = (0..10_000)
        .map(|i| match i % 4 {
            0 => format!("v{}.{}.{}", i / 100, i % 10, i % 7),
            1 => format!("release-{i}-rc1"),
            2 => format!("sha-{i:040x}"),
            _ => "latest".to_owned(),
        })
        .collect();
    let mut group = c.benchmark_group("select_10k_tags");
    group.throughput(Throughput::Elements(tags.len() as u64));
    group.bench_function("tag_filters", |b| {
        b.iter(|| tags.iter().filter(|t| selector.tag(black_box(t))).count())
    });
    group.finish();

    let repositories: Vec<String> = (0..10_000)
        .map(|i| {
            format!(
                "{}/team-{}/app-{i}",
                ["library", "ops", "ml"][i % 3],
                i % 50
            )
        })
        .collect();
    c.bench_function("select_and_rename_10k_repositories", |b| {
        let policy = Policy {
            id: 1,
            name: "bench".into(),
            description: String::new(),
            direction: Direction::Push,
            remote: 1,
            filters: Vec::new(),
            dest_namespace: "mirror".into(),
            dest_namespace_replace_count: 1,
            trigger: Trigger::Manual,
            replicate_deletion: false,
            overwrite: true,
            enabled: true,
            created: 0,
            updated: 0,
        };
        b.iter(|| {
            repositories
                .iter()
                .filter(|r| selector.repository(black_box(r)))
                .map(|r| destination_repository(&policy, r).len())
                .sum::<usize>()
        })
    });
}

criterion_group!(benches, filters);
criterion_main!(benches);
