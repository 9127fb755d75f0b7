//! The replication store's cases: ids, endpoints, policies, executions, tasks and schedule
//! claims, as [`ReplicationStore`] documents them.
//!
//! The cases share a store with each other, with other suites and with other runs of this
//! one, so they never expect a listing of the whole store to be exactly theirs: they use ids
//! drawn from [`ReplicationStore::next_id`] (fresh in every run), check that global listings
//! contain (or no longer contain) their records, and give executions and schedule claims
//! policy ids of their own.

use futures_util::future::join_all;

use super::nonce;
use crate::replication::{
    Direction, Execution, Filter, FilterKind, IdKind, Operation, Policy, RegistryEndpoint,
    ReplicationStore, SealedCredential, Task, TaskStatus, Trigger, TriggerKind,
};

const CREATED: u64 = 1_700_000_000;
const KINDS: [IdKind; 4] = [
    IdKind::Registry,
    IdKind::Policy,
    IdKind::Execution,
    IdKind::Task,
];

// --- records ---------------------------------------------------------------------------------

/// An endpoint with every field set, the sealed secret bytes included.
fn endpoint(id: u64) -> RegistryEndpoint {
    RegistryEndpoint {
        id,
        name: format!("remote-{}", nonce()),
        description: "a remote registry, described: \"quoted\" and ünïcode".to_owned(),
        url: "https://registry.example.com:5443".to_owned(),
        kind: "harbor".to_owned(),
        insecure: true,
        credential: Some(SealedCredential {
            access_key: format!("robot$replicator+{}", nonce()),
            sealed_secret: vec![0, 1, 2, 0x7f, 0x80, 0xfe, 0xff, 0, b'"', b'\\'],
        }),
        created: CREATED,
        updated: CREATED + 1,
    }
}

/// A policy with every field set; `trigger` and `direction` vary between cases.
fn policy(id: u64, remote: u64, direction: Direction, trigger: Trigger) -> Policy {
    Policy {
        id,
        name: format!("policy-{}", nonce()),
        description: "copies library/** tagged v*, but not *-rc".to_owned(),
        direction,
        remote,
        filters: vec![
            Filter {
                kind: FilterKind::Name,
                pattern: "library/**".to_owned(),
                exclude: false,
            },
            Filter {
                kind: FilterKind::Tag,
                pattern: "{v*,latest}".to_owned(),
                exclude: false,
            },
            Filter {
                kind: FilterKind::Tag,
                pattern: "*-rc*".to_owned(),
                exclude: true,
            },
        ],
        dest_namespace: "mirror/upstream".to_owned(),
        dest_namespace_replace_count: -1,
        trigger,
        replicate_deletion: true,
        overwrite: true,
        enabled: true,
        created: CREATED,
        updated: CREATED + 2,
    }
}

fn execution(id: u64, policy_id: u64) -> Execution {
    Execution {
        id,
        policy_id,
        trigger: TriggerKind::Manual,
        start_time: CREATED + id % 1000,
        planned: false,
        error: None,
        stop_requested: false,
    }
}

fn task(id: u64, execution_id: u64, status: TaskStatus) -> Task {
    Task {
        id,
        execution_id,
        operation: Operation::Copy,
        source_repository: "library/app".to_owned(),
        destination_repository: "mirror/upstream/app".to_owned(),
        reference: format!("v{id}"),
        status,
        attempts: 0,
        start_time: None,
        end_time: None,
        error: None,
        bytes: 0,
        note: None,
        attempt_started: None,
    }
}

/// `task` claimed by a worker: running, one more attempt, started at `start`.
fn claimed(task: &Task, start: u64) -> Task {
    Task {
        status: TaskStatus::Running,
        attempts: task.attempts + 1,
        start_time: Some(start),
        ..task.clone()
    }
}

// --- calls that must not fail ----------------------------------------------------------------

async fn next_id(store: &dyn ReplicationStore, kind: IdKind) -> u64 {
    store
        .next_id(kind)
        .await
        .unwrap_or_else(|e| panic!("next_id({kind:?}) failed: {e}"))
}

async fn put_registry(store: &dyn ReplicationStore, registry: &RegistryEndpoint) {
    store
        .put_registry(registry)
        .await
        .unwrap_or_else(|e| panic!("put_registry({}) failed: {e}", registry.id));
}

async fn registry(store: &dyn ReplicationStore, id: u64) -> Option<RegistryEndpoint> {
    store
        .registry(id)
        .await
        .unwrap_or_else(|e| panic!("registry({id}) failed: {e}"))
}

async fn registries(store: &dyn ReplicationStore) -> Vec<RegistryEndpoint> {
    let listed = store
        .registries()
        .await
        .unwrap_or_else(|e| panic!("registries() failed: {e}"));
    assert_ascending(listed.iter().map(|r| r.id), "registries()");
    listed
}

async fn delete_registry(store: &dyn ReplicationStore, id: u64) -> bool {
    store
        .delete_registry(id)
        .await
        .unwrap_or_else(|e| panic!("delete_registry({id}) failed: {e}"))
}

async fn put_policy(store: &dyn ReplicationStore, policy: &Policy) {
    store
        .put_policy(policy)
        .await
        .unwrap_or_else(|e| panic!("put_policy({}) failed: {e}", policy.id));
}

async fn policy_of(store: &dyn ReplicationStore, id: u64) -> Option<Policy> {
    store
        .policy(id)
        .await
        .unwrap_or_else(|e| panic!("policy({id}) failed: {e}"))
}

async fn policies(store: &dyn ReplicationStore) -> Vec<Policy> {
    let listed = store
        .policies()
        .await
        .unwrap_or_else(|e| panic!("policies() failed: {e}"));
    assert_ascending(listed.iter().map(|p| p.id), "policies()");
    listed
}

async fn delete_policy(store: &dyn ReplicationStore, id: u64) -> bool {
    store
        .delete_policy(id)
        .await
        .unwrap_or_else(|e| panic!("delete_policy({id}) failed: {e}"))
}

async fn put_execution(store: &dyn ReplicationStore, execution: &Execution) {
    store
        .put_execution(execution)
        .await
        .unwrap_or_else(|e| panic!("put_execution({}) failed: {e}", execution.id));
}

async fn execution_of(store: &dyn ReplicationStore, id: u64) -> Option<Execution> {
    store
        .execution(id)
        .await
        .unwrap_or_else(|e| panic!("execution({id}) failed: {e}"))
}

async fn executions(
    store: &dyn ReplicationStore,
    policy: Option<u64>,
    limit: usize,
) -> Vec<Execution> {
    let what = format!("executions({policy:?}, {limit})");
    let listed = store
        .executions(policy, limit)
        .await
        .unwrap_or_else(|e| panic!("{what} failed: {e}"));
    assert!(
        listed.len() <= limit,
        "{what} returned {} executions",
        listed.len()
    );
    let ids: Vec<u64> = listed.iter().map(|e| e.id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "{what} is not newest first (in decreasing order of distinct ids): {ids:?}"
    );
    if let Some(policy) = policy {
        assert!(
            listed.iter().all(|e| e.policy_id == policy),
            "{what} returned executions of other policies: {listed:?}"
        );
    }
    listed
}

async fn put_task(store: &dyn ReplicationStore, task: &Task) {
    store
        .put_task(task)
        .await
        .unwrap_or_else(|e| panic!("put_task({}, {}) failed: {e}", task.execution_id, task.id));
}

async fn task_of(store: &dyn ReplicationStore, execution: u64, id: u64) -> Option<Task> {
    store
        .task(execution, id)
        .await
        .unwrap_or_else(|e| panic!("task({execution}, {id}) failed: {e}"))
}

async fn tasks(store: &dyn ReplicationStore, execution: u64) -> Vec<Task> {
    let what = format!("tasks({execution})");
    let listed = store
        .tasks(execution)
        .await
        .unwrap_or_else(|e| panic!("{what} failed: {e}"));
    assert_ascending(listed.iter().map(|t| t.id), &what);
    listed
}

async fn update_task(store: &dyn ReplicationStore, task: &Task, expected: TaskStatus) -> bool {
    store.update_task(task, expected).await.unwrap_or_else(|e| {
        panic!(
            "update_task({}, {}, {expected:?}) failed: {e}",
            task.execution_id, task.id
        )
    })
}

async fn claim_schedule(store: &dyn ReplicationStore, policy: u64, fire_time: u64) -> bool {
    store
        .claim_schedule(policy, fire_time)
        .await
        .unwrap_or_else(|e| panic!("claim_schedule({policy}, {fire_time}) failed: {e}"))
}

#[track_caller]
fn assert_ascending(ids: impl Iterator<Item = u64>, what: &str) {
    let ids: Vec<u64> = ids.collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "{what} is not in increasing order of distinct ids: {ids:?}"
    );
}

// --- cases -----------------------------------------------------------------------------------

/// Each kind draws increasing ids, at least 1; twenty concurrent draws get twenty distinct
/// ids, all above every id drawn before them.
pub async fn ids_increase_and_are_unique_per_kind(store: &dyn ReplicationStore) {
    for kind in KINDS {
        let first = next_id(store, kind).await;
        assert!(
            first >= 1,
            "next_id({kind:?}) returned {first}: ids start at 1"
        );
        let second = next_id(store, kind).await;
        let third = next_id(store, kind).await;
        assert!(
            first < second && second < third,
            "next_id({kind:?}) returned {first}, {second}, {third}: ids must increase"
        );

        let drawn: Vec<u64> = join_all((0..20).map(|_| store.next_id(kind)))
            .await
            .into_iter()
            .map(|id| id.unwrap_or_else(|e| panic!("concurrent next_id({kind:?}) failed: {e}")))
            .collect();
        let mut distinct = drawn.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(
            distinct.len(),
            20,
            "20 concurrent next_id({kind:?}) calls returned the same id twice: {drawn:?}"
        );
        assert!(
            distinct[0] > third,
            "concurrent next_id({kind:?}) returned {} after {third} was drawn",
            distinct[0]
        );
        let after = next_id(store, kind).await;
        assert!(
            after > distinct[19],
            "next_id({kind:?}) returned {after} after {} was drawn",
            distinct[19]
        );
    }
}

/// Endpoints are stored whole (the sealed secret's bytes included), replaced in place,
/// listed by id and deleted.
pub async fn registries_round_trip(store: &dyn ReplicationStore) {
    let first = endpoint(next_id(store, IdKind::Registry).await);
    let second = RegistryEndpoint {
        credential: None,
        insecure: false,
        description: String::new(),
        kind: "docker-registry".to_owned(),
        url: "http://localhost:5000".to_owned(),
        ..endpoint(next_id(store, IdKind::Registry).await)
    };
    assert_eq!(
        registry(store, first.id).await,
        None,
        "an endpoint before put_registry"
    );
    // Stored out of order: the listing is by id all the same.
    put_registry(store, &second).await;
    put_registry(store, &first).await;
    assert_eq!(
        registry(store, first.id).await.as_ref(),
        Some(&first),
        "an endpoint with credentials must read back field for field"
    );
    assert_eq!(
        registry(store, second.id).await.as_ref(),
        Some(&second),
        "an endpoint without credentials must read back field for field"
    );
    let listed = registries(store).await;
    let ours: Vec<&RegistryEndpoint> = listed
        .iter()
        .filter(|r| r.id == first.id || r.id == second.id)
        .collect();
    assert_eq!(
        ours,
        [&first, &second],
        "registries() must list both endpoints, by id"
    );

    let replaced = RegistryEndpoint {
        name: format!("renamed-{}", nonce()),
        credential: Some(SealedCredential {
            access_key: "admin".to_owned(),
            sealed_secret: vec![0xff; 48],
        }),
        updated: CREATED + 100,
        ..first.clone()
    };
    put_registry(store, &replaced).await;
    assert_eq!(
        registry(store, first.id).await.as_ref(),
        Some(&replaced),
        "put_registry of an existing id must replace it"
    );
    let listed = registries(store).await;
    let copies: Vec<&RegistryEndpoint> = listed.iter().filter(|r| r.id == first.id).collect();
    assert_eq!(
        copies,
        [&replaced],
        "a replaced endpoint must be listed once, as replaced"
    );

    assert!(
        delete_registry(store, first.id).await,
        "delete_registry of a stored endpoint must return true"
    );
    assert_eq!(
        registry(store, first.id).await,
        None,
        "an endpoint after delete_registry"
    );
    let listed = registries(store).await;
    assert!(
        !listed.iter().any(|r| r.id == first.id),
        "registries() still lists a deleted endpoint"
    );
    assert!(
        listed.contains(&second),
        "deleting one endpoint must keep the others"
    );
    assert!(
        !delete_registry(store, first.id).await,
        "delete_registry of a deleted endpoint must return false"
    );
    let never = next_id(store, IdKind::Registry).await;
    assert!(
        !delete_registry(store, never).await,
        "delete_registry of an endpoint never stored must return false"
    );
    assert_eq!(
        registry(store, never).await,
        None,
        "a delete of a missing endpoint must create nothing"
    );
}

/// Policies are stored whole (filters, triggers and the cron schedule included), replaced
/// in place, listed by id and deleted.
pub async fn policies_round_trip(store: &dyn ReplicationStore) {
    let remote = next_id(store, IdKind::Registry).await;
    let scheduled = policy(
        next_id(store, IdKind::Policy).await,
        remote,
        Direction::Pull,
        Trigger::Scheduled {
            cron: "0 30 2 * * 1-5".to_owned(),
        },
    );
    let event_based = policy(
        next_id(store, IdKind::Policy).await,
        remote,
        Direction::Push,
        Trigger::EventBased,
    );
    let manual = Policy {
        filters: Vec::new(),
        dest_namespace: String::new(),
        dest_namespace_replace_count: 2,
        replicate_deletion: false,
        overwrite: false,
        enabled: false,
        ..policy(
            next_id(store, IdKind::Policy).await,
            remote,
            Direction::Push,
            Trigger::Manual,
        )
    };
    let ours = [&scheduled, &event_based, &manual];
    assert_eq!(
        policy_of(store, scheduled.id).await,
        None,
        "a policy before put_policy"
    );
    for policy in ours.iter().rev() {
        put_policy(store, policy).await;
    }
    for policy in ours {
        assert_eq!(
            policy_of(store, policy.id).await.as_ref(),
            Some(policy),
            "a policy with trigger {:?} must read back field for field",
            policy.trigger
        );
    }
    let listed = policies(store).await;
    let found: Vec<&Policy> = listed
        .iter()
        .filter(|p| ours.iter().any(|o| o.id == p.id))
        .collect();
    assert_eq!(
        found, ours,
        "policies() must list the three policies, by id"
    );

    let replaced = Policy {
        trigger: Trigger::Scheduled {
            cron: "0 0 */6 * * *".to_owned(),
        },
        filters: vec![Filter {
            kind: FilterKind::Name,
            pattern: "other/*".to_owned(),
            exclude: false,
        }],
        enabled: false,
        updated: CREATED + 200,
        ..scheduled.clone()
    };
    put_policy(store, &replaced).await;
    assert_eq!(
        policy_of(store, scheduled.id).await.as_ref(),
        Some(&replaced),
        "put_policy of an existing id must replace it"
    );
    let listed = policies(store).await;
    let copies: Vec<&Policy> = listed.iter().filter(|p| p.id == scheduled.id).collect();
    assert_eq!(
        copies,
        [&replaced],
        "a replaced policy must be listed once, as replaced"
    );

    assert!(
        delete_policy(store, event_based.id).await,
        "delete_policy of a stored policy must return true"
    );
    assert_eq!(
        policy_of(store, event_based.id).await,
        None,
        "a policy after delete_policy"
    );
    let listed = policies(store).await;
    assert!(
        !listed.iter().any(|p| p.id == event_based.id),
        "policies() still lists a deleted policy"
    );
    assert!(
        listed.contains(&replaced) && listed.contains(&manual),
        "deleting one policy must keep the others"
    );
    assert!(
        !delete_policy(store, event_based.id).await,
        "delete_policy of a deleted policy must return false"
    );
    let never = next_id(store, IdKind::Policy).await;
    assert!(
        !delete_policy(store, never).await,
        "delete_policy of a policy never stored must return false"
    );
    for policy in [&replaced, &manual] {
        assert!(delete_policy(store, policy.id).await, "cleaning up");
    }
}

/// Executions are stored whole and replaced in place; listings are newest first, of one
/// policy or of all, and never longer than asked.
pub async fn executions_newest_first(store: &dyn ReplicationStore) {
    let (mine, theirs) = (
        next_id(store, IdKind::Policy).await,
        next_id(store, IdKind::Policy).await,
    );
    let mut stored = Vec::new();
    for i in 0..7 {
        let policy = if i % 3 == 2 { theirs } else { mine };
        stored.push(execution(next_id(store, IdKind::Execution).await, policy));
    }
    stored[1].trigger = TriggerKind::Scheduled;
    stored[1].planned = true;
    stored[2].trigger = TriggerKind::EventBased;
    stored[2].error = Some("listing the source failed: 503 \"unavailable\"".to_owned());
    stored[3].stop_requested = true;
    assert_eq!(
        execution_of(store, stored[0].id).await,
        None,
        "an execution before put_execution"
    );
    // Stored out of order: listings are by id all the same.
    for index in [3, 0, 6, 1, 5, 2, 4] {
        put_execution(store, &stored[index]).await;
    }
    for execution in &stored {
        assert_eq!(
            execution_of(store, execution.id).await.as_ref(),
            Some(execution),
            "an execution must read back field for field"
        );
    }

    let newest_first = |policy: u64| -> Vec<Execution> {
        let mut of: Vec<Execution> = stored
            .iter()
            .filter(|e| e.policy_id == policy)
            .cloned()
            .collect();
        of.reverse();
        of
    };
    let expected = newest_first(mine);
    assert_eq!(
        executions(store, Some(mine), 100).await,
        expected,
        "executions of one policy, newest first"
    );
    assert_eq!(
        executions(store, Some(mine), 2).await,
        expected[..2],
        "executions of one policy, limited to 2"
    );
    assert_eq!(
        executions(store, Some(theirs), 100).await,
        newest_first(theirs),
        "executions of the other policy, newest first"
    );
    assert!(
        executions(store, Some(mine), 0).await.is_empty(),
        "executions limited to 0"
    );
    let idle = next_id(store, IdKind::Policy).await;
    assert!(
        executions(store, Some(idle), 10).await.is_empty(),
        "executions of a policy that never ran"
    );

    let all = executions(store, None, 3).await;
    assert_eq!(all.len(), 3, "executions of all policies, limited to 3");
    let all = executions(store, None, 100_000).await;
    for execution in &stored {
        assert!(
            all.contains(execution),
            "executions of all policies must list execution {}",
            execution.id
        );
    }

    let replaced = Execution {
        planned: true,
        stop_requested: true,
        error: Some("stopped".to_owned()),
        ..stored[0].clone()
    };
    put_execution(store, &replaced).await;
    assert_eq!(
        execution_of(store, replaced.id).await.as_ref(),
        Some(&replaced),
        "put_execution of an existing id must replace it"
    );
    let listed = executions(store, Some(mine), 100).await;
    let copies: Vec<&Execution> = listed.iter().filter(|e| e.id == replaced.id).collect();
    assert_eq!(
        copies,
        [&replaced],
        "a replaced execution must be listed once, as replaced"
    );
    assert_eq!(listed.len(), expected.len(), "replacing adds no execution");
}

/// Tasks are stored whole, per execution, listed by id, and never seen from another
/// execution.
pub async fn tasks_of_an_execution(store: &dyn ReplicationStore) {
    let policy = next_id(store, IdKind::Policy).await;
    let (first, second) = (
        execution(next_id(store, IdKind::Execution).await, policy),
        execution(next_id(store, IdKind::Execution).await, policy),
    );
    put_execution(store, &first).await;
    put_execution(store, &second).await;
    let mut mine = Vec::new();
    let mut theirs = Vec::new();
    for i in 0..6 {
        let id = next_id(store, IdKind::Task).await;
        if i % 2 == 0 {
            mine.push(task(id, first.id, TaskStatus::Pending));
        } else {
            theirs.push(task(id, second.id, TaskStatus::Pending));
        }
    }
    mine[1] = Task {
        operation: Operation::Deletion,
        status: TaskStatus::Failed,
        attempts: 3,
        start_time: Some(CREATED + 10),
        end_time: Some(CREATED + 20),
        error: Some("the destination answered 401 \"unauthorized\"".to_owned()),
        bytes: 123_456_789_012,
        reference: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
            .to_owned(),
        ..mine[1].clone()
    };
    mine[2].status = TaskStatus::Succeeded;
    assert_eq!(
        task_of(store, first.id, mine[0].id).await,
        None,
        "a task before put_task"
    );
    // Stored out of order and interleaved with the other execution's.
    for task in [
        &mine[2], &theirs[1], &mine[0], &theirs[0], &mine[1], &theirs[2],
    ] {
        put_task(store, task).await;
    }
    for task in mine.iter().chain(&theirs) {
        assert_eq!(
            task_of(store, task.execution_id, task.id).await.as_ref(),
            Some(task),
            "a task must read back field for field"
        );
    }
    assert_eq!(
        tasks(store, first.id).await,
        mine,
        "the tasks of an execution, by id, and only its own"
    );
    assert_eq!(
        tasks(store, second.id).await,
        theirs,
        "the tasks of the other execution, by id, and only its own"
    );
    assert_eq!(
        task_of(store, second.id, mine[0].id).await,
        None,
        "a task must not be found under another execution"
    );
    let empty = next_id(store, IdKind::Execution).await;
    assert!(
        tasks(store, empty).await.is_empty(),
        "the tasks of an execution without any"
    );

    let replaced = Task {
        status: TaskStatus::Stopped,
        end_time: Some(CREATED + 30),
        ..mine[0].clone()
    };
    put_task(store, &replaced).await;
    assert_eq!(
        task_of(store, first.id, replaced.id).await.as_ref(),
        Some(&replaced),
        "put_task of an existing id must replace it"
    );
    let listed = tasks(store, first.id).await;
    assert_eq!(listed.len(), mine.len(), "replacing adds no task");
    assert_eq!(listed[0], replaced, "a replaced task is listed as replaced");
}

/// `update_task` replaces a task only while its stored status is the expected one.
pub async fn update_task_is_conditional(store: &dyn ReplicationStore) {
    let execution = next_id(store, IdKind::Execution).await;
    let pending = task(
        next_id(store, IdKind::Task).await,
        execution,
        TaskStatus::Pending,
    );
    put_task(store, &pending).await;

    let running = claimed(&pending, CREATED + 1);
    for wrong in [
        TaskStatus::Running,
        TaskStatus::Succeeded,
        TaskStatus::Failed,
        TaskStatus::Stopped,
    ] {
        assert!(
            !update_task(store, &running, wrong).await,
            "update_task expecting {wrong:?} of a pending task must return false"
        );
        assert_eq!(
            task_of(store, execution, pending.id).await.as_ref(),
            Some(&pending),
            "a refused update_task (expecting {wrong:?}) must change nothing"
        );
    }
    assert!(
        update_task(store, &running, TaskStatus::Pending).await,
        "update_task expecting the stored status must return true"
    );
    assert_eq!(
        task_of(store, execution, pending.id).await.as_ref(),
        Some(&running),
        "a successful update_task stores the new task"
    );

    let succeeded = Task {
        status: TaskStatus::Succeeded,
        end_time: Some(CREATED + 9),
        bytes: 4096,
        ..running.clone()
    };
    assert!(
        !update_task(store, &succeeded, TaskStatus::Pending).await,
        "update_task expecting the status the task had before must return false"
    );
    assert!(
        update_task(store, &succeeded, TaskStatus::Running).await,
        "update_task expecting the new stored status must return true"
    );
    assert_eq!(
        task_of(store, execution, pending.id).await.as_ref(),
        Some(&succeeded),
        "after the second update_task"
    );

    let missing = task(
        next_id(store, IdKind::Task).await,
        execution,
        TaskStatus::Running,
    );
    assert!(
        !update_task(store, &missing, TaskStatus::Pending).await,
        "update_task of a task never stored must return false"
    );
    assert_eq!(
        task_of(store, execution, missing.id).await,
        None,
        "a refused update_task must not create the task"
    );
    assert_eq!(
        tasks(store, execution).await,
        [succeeded],
        "the execution holds the one task it was given"
    );
}

/// Workers racing to claim the same pending task: exactly one claim wins, and the stored
/// task is the winner's.
pub async fn racing_claims_have_one_winner(store: &dyn ReplicationStore) {
    let execution = next_id(store, IdKind::Execution).await;
    for (round, racers) in [2, 2, 2, 8].into_iter().enumerate() {
        let pending = task(
            next_id(store, IdKind::Task).await,
            execution,
            TaskStatus::Pending,
        );
        put_task(store, &pending).await;
        let claims: Vec<Task> = (0..racers)
            .map(|i| claimed(&pending, CREATED + 1000 + i))
            .collect();
        let outcomes = join_all(
            claims
                .iter()
                .map(|claim| store.update_task(claim, TaskStatus::Pending)),
        )
        .await;
        let winners: Vec<&Task> = outcomes
            .into_iter()
            .zip(&claims)
            .filter_map(|(outcome, claim)| {
                let won = outcome.unwrap_or_else(|e| panic!("a racing update_task failed: {e}"));
                won.then_some(claim)
            })
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: {} of {racers} concurrent claims of one pending task won",
            winners.len()
        );
        assert_eq!(
            task_of(store, execution, pending.id).await.as_ref(),
            Some(winners[0]),
            "round {round}: the stored task must be the winning claim"
        );
    }
}

/// A schedule's tick is claimed once: the same time or an earlier one again is refused, a
/// later one is claimed; policies claim independently, and racing claims have one winner.
pub async fn claim_schedule_once_per_tick(store: &dyn ReplicationStore) {
    let policy = next_id(store, IdKind::Policy).await;
    let tick = CREATED + 3600;
    assert!(
        claim_schedule(store, policy, tick).await,
        "the first claim of a tick must return true"
    );
    assert!(
        !claim_schedule(store, policy, tick).await,
        "a second claim of the same tick must return false"
    );
    assert!(
        !claim_schedule(store, policy, tick - 60).await,
        "a claim of a tick before the last claimed one must return false"
    );
    assert!(
        claim_schedule(store, policy, tick + 60).await,
        "a claim of a later tick must return true"
    );
    assert!(
        !claim_schedule(store, policy, tick).await,
        "after a later tick, the earlier one must stay refused"
    );
    assert!(
        !claim_schedule(store, policy, tick + 60).await,
        "the later tick, claimed twice, must return false"
    );

    let other = next_id(store, IdKind::Policy).await;
    assert!(
        claim_schedule(store, other, tick).await,
        "another policy's schedule claims its ticks on its own"
    );
    assert!(
        claim_schedule(store, other, tick + 120).await,
        "another policy's later tick must return true"
    );
    assert!(
        !claim_schedule(store, policy, tick + 60).await,
        "claims of another policy must not change this one's"
    );
    assert!(
        claim_schedule(store, policy, tick + 90).await,
        "a tick between this policy's last and another policy's last must return true"
    );

    let raced = next_id(store, IdKind::Policy).await;
    for (round, time) in [tick, tick + 60, tick + 120].into_iter().enumerate() {
        let outcomes = join_all((0..4).map(|_| store.claim_schedule(raced, time))).await;
        let won = outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|e| panic!("a racing claim_schedule failed: {e}")))
            .filter(|won| *won)
            .count();
        assert_eq!(
            won, 1,
            "round {round}: {won} of 4 concurrent claims of one tick returned true"
        );
    }
}
