//! The [`RetentionStore`] cases: one policy per project, executions newest first per policy
//! with the running ones findable, tasks by id per execution. Projects are uniquely named,
//! so the cases may share a store with others.

use crate::retention::{
    Decoration, RetentionExecution, RetentionPolicy, RetentionRule, RetentionStatus,
    RetentionStore, RetentionTask, RuleTemplate, Selector,
};

pub async fn run_all(store: &dyn RetentionStore) {
    super::announce("retention_store::a_project_has_one_policy");
    a_project_has_one_policy(store).await;
    super::announce("retention_store::executions_are_listed_newest_first_per_policy");
    executions_are_listed_newest_first_per_policy(store).await;
    super::announce("retention_store::tasks_are_kept_per_execution_by_id");
    tasks_are_kept_per_execution_by_id(store).await;
}

fn project() -> String {
    format!("keep{}", uuid::Uuid::new_v4().simple())
}

fn policy(project: &str) -> RetentionPolicy {
    RetentionPolicy {
        id: 0,
        project: project.to_owned(),
        rules: vec![RetentionRule {
            disabled: false,
            priority: 1,
            template: RuleTemplate::LatestPushed,
            param: 10,
            tag_selectors: vec![Selector {
                decoration: Decoration::Matches,
                pattern: "**".to_owned(),
                untagged: true,
            }],
            repository_selectors: vec![Selector {
                decoration: Decoration::RepoExcludes,
                pattern: "cache/**".to_owned(),
                untagged: false,
            }],
        }],
        cron: Some("0 0 0 * * *".to_owned()),
        fired_ms: 1_700_000_000_000,
    }
}

fn execution(policy: &RetentionPolicy, start_ms: u64) -> RetentionExecution {
    RetentionExecution {
        id: 0,
        policy_id: policy.id,
        project: policy.project.clone(),
        scheduled: false,
        dry_run: true,
        status: RetentionStatus::Running,
        start_ms,
        end_ms: None,
        rules: policy.rules.clone(),
        after: None,
        tasks: 0,
        error: None,
    }
}

pub async fn a_project_has_one_policy(store: &dyn RetentionStore) {
    let (project, other) = (project(), project());
    let id = store
        .create_policy(&policy(&project))
        .await
        .expect("created")
        .expect("the project's first policy");
    assert_eq!(
        store
            .create_policy(&policy(&project))
            .await
            .expect("answered"),
        None,
        "a second policy for the same project"
    );
    let other_id = store
        .create_policy(&policy(&other))
        .await
        .expect("created")
        .expect("another project's policy");
    assert!(other_id > id, "ids grow");
    assert_eq!(
        store.project_policy(&project).await.expect("read"),
        Some(id)
    );
    let mut kept = policy(&project);
    kept.id = id;
    assert_eq!(store.policy(id).await.expect("read"), Some(kept.clone()));
    let listed = store.policies().await.expect("listed");
    let ours: Vec<u64> = listed
        .iter()
        .filter(|p| p.project == project || p.project == other)
        .map(|p| p.id)
        .collect();
    assert_eq!(ours, [id, other_id]);

    kept.rules[0].disabled = true;
    kept.cron = None;
    assert!(store.update_policy(&kept).await.expect("updated"));
    assert_eq!(store.policy(id).await.expect("read"), Some(kept.clone()));
    let mut missing = kept.clone();
    missing.id = other_id + 1_000_000;
    assert!(!store.update_policy(&missing).await.expect("answered"));

    assert!(store.delete_policy(id).await.expect("deleted"));
    assert!(!store.delete_policy(id).await.expect("answered"));
    assert_eq!(store.policy(id).await.expect("read"), None);
    assert_eq!(store.project_policy(&project).await.expect("read"), None);
    let again = store
        .create_policy(&policy(&project))
        .await
        .expect("created")
        .expect("a policy again once the old one is gone");
    assert!(again > other_id);
    assert!(store.delete_policy(again).await.expect("deleted"));
    assert!(store.delete_policy(other_id).await.expect("deleted"));
}

pub async fn executions_are_listed_newest_first_per_policy(store: &dyn RetentionStore) {
    let mut first = policy(&project());
    first.id = store
        .create_policy(&first)
        .await
        .expect("created")
        .expect("new");
    let mut second = policy(&project());
    second.id = store
        .create_policy(&second)
        .await
        .expect("created")
        .expect("new");
    let mut ids = Vec::new();
    for n in 0..4 {
        ids.push(
            store
                .create_execution(&execution(&first, 1_000 + n))
                .await
                .expect("created"),
        );
    }
    let elsewhere = store
        .create_execution(&execution(&second, 5_000))
        .await
        .expect("created");
    assert!(ids.windows(2).all(|pair| pair[0] < pair[1]), "ids grow");
    assert!(elsewhere > ids[3]);

    let (page, total) = store.executions(first.id, 1, 2).await.expect("listed");
    assert_eq!(total, 4);
    assert_eq!(
        page.iter().map(|e| e.id).collect::<Vec<_>>(),
        [ids[2], ids[1]],
        "newest first, skipping one"
    );
    assert_eq!(page[0].start_ms, 1_002);
    assert_eq!(page[0].rules, first.rules);
    let (all, total) = store.executions(second.id, 0, 10).await.expect("listed");
    assert_eq!((all.len(), total), (1, 1));

    let mut done = store
        .execution(ids[0])
        .await
        .expect("read")
        .expect("stored");
    done.status = RetentionStatus::Success;
    done.end_ms = Some(2_000);
    done.after = Some("team/app".to_owned());
    done.tasks = 3;
    store.update_execution(&done).await.expect("updated");
    assert_eq!(store.execution(ids[0]).await.expect("read"), Some(done));
    let mut stopped = store
        .execution(ids[1])
        .await
        .expect("read")
        .expect("stored");
    stopped.status = RetentionStatus::Stopped;
    store.update_execution(&stopped).await.expect("updated");

    let running: Vec<u64> = store
        .running_executions()
        .await
        .expect("listed")
        .iter()
        .filter(|e| e.policy_id == first.id || e.policy_id == second.id)
        .map(|e| e.id)
        .collect();
    assert_eq!(running, [ids[2], ids[3], elsewhere], "oldest first");
    assert_eq!(store.execution(u64::MAX / 2).await.expect("read"), None);
}

pub async fn tasks_are_kept_per_execution_by_id(store: &dyn RetentionStore) {
    let mut owner = policy(&project());
    owner.id = store
        .create_policy(&owner)
        .await
        .expect("created")
        .expect("new");
    let one = store
        .create_execution(&execution(&owner, 1))
        .await
        .expect("created");
    let two = store
        .create_execution(&execution(&owner, 2))
        .await
        .expect("created");
    let task = |execution_id: u64, id: u64| RetentionTask {
        id,
        execution_id,
        repository: format!("{}/app{id}", owner.project),
        status: RetentionStatus::Success,
        start_ms: 10,
        end_ms: 20,
        total: 7,
        retained: 3,
        log: vec![format!("line of {id}")],
    };
    for id in 1..=12 {
        store.put_task(&task(one, id)).await.expect("stored");
    }
    store.put_task(&task(two, 1)).await.expect("stored");
    let mut replaced = task(one, 5);
    replaced.retained = 7;
    store.put_task(&replaced).await.expect("replaced");

    let (page, total) = store.tasks(one, 3, 4).await.expect("listed");
    assert_eq!(total, 12);
    assert_eq!(page.iter().map(|t| t.id).collect::<Vec<_>>(), [4, 5, 6, 7]);
    assert_eq!(page[1], replaced);
    assert_eq!(store.task(two, 1).await.expect("read"), Some(task(two, 1)));
    assert_eq!(store.task(two, 2).await.expect("read"), None);
    let (others, total) = store.tasks(two, 0, 10).await.expect("listed");
    assert_eq!((others.len(), total), (1, 1));
}
