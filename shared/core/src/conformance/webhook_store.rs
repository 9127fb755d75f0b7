//! The [`WebhookStore`] cases. Each works in a project of its own.

use crate::webhooks::{
    Delivery, DeliveryStatus, PayloadFormat, WebhookEventType, WebhookPolicy, WebhookStore,
    WebhookTarget,
};

/// Runs every webhook store case.
pub async fn run_all(store: &dyn WebhookStore) {
    super::announce("webhook_store::policies_are_kept_per_project_by_unique_name");
    policies_are_kept_per_project_by_unique_name(store).await;
    super::announce("webhook_store::deliveries_are_recorded_newest_first_and_replaced_by_id");
    deliveries_are_recorded_newest_first_and_replaced_by_id(store).await;
}

fn project() -> String {
    format!("hooks{}", uuid::Uuid::new_v4().simple())
}

fn policy(project: &str, name: &str) -> WebhookPolicy {
    WebhookPolicy {
        id: 0,
        project: project.to_owned(),
        name: name.to_owned(),
        description: "to the build farm".to_owned(),
        targets: vec![WebhookTarget {
            address: "https://hooks.example/berth".to_owned(),
            auth_header: Some("Bearer secret".to_owned()),
            skip_cert_verify: true,
            payload_format: PayloadFormat::CloudEvents,
        }],
        event_types: vec![
            WebhookEventType::PushArtifact,
            WebhookEventType::DeleteArtifact,
        ],
        enabled: true,
        created_at: 1_700_000_000,
        updated_at: 1_700_000_000,
    }
}

pub async fn policies_are_kept_per_project_by_unique_name(store: &dyn WebhookStore) {
    let (project, other) = (project(), project());
    let first = store
        .create_webhook(&policy(&project, "ci"))
        .await
        .expect("created")
        .expect("a new name");
    let second = store
        .create_webhook(&policy(&project, "chat"))
        .await
        .expect("created")
        .expect("a new name");
    assert_ne!(first, second);
    assert_eq!(
        store
            .create_webhook(&policy(&project, "ci"))
            .await
            .expect("answered"),
        None,
        "a name is taken once per project"
    );
    store
        .create_webhook(&policy(&other, "ci"))
        .await
        .expect("created")
        .expect("another project's name");

    let listed = store.webhooks(&project).await.expect("listed");
    assert_eq!(
        listed
            .iter()
            .map(|p| (p.id, p.name.as_str()))
            .collect::<Vec<_>>(),
        [(first, "ci"), (second, "chat")]
    );
    assert_eq!(
        listed[0].targets,
        policy(&project, "ci").targets,
        "{listed:?}"
    );
    // Ids are unique within a project: another project never answers this one's policy.
    let elsewhere = store.webhook(&other, first).await.expect("read");
    assert!(elsewhere.is_none_or(|policy| policy.project == other));
    assert_eq!(
        store.webhook(&project, u64::MAX / 2).await.expect("read"),
        None
    );

    let mut changed = listed[1].clone();
    changed.enabled = false;
    changed.event_types = vec![WebhookEventType::PullArtifact];
    assert!(store.update_webhook(&changed).await.expect("updated"));
    assert_eq!(
        store.webhook(&project, second).await.expect("read"),
        Some(changed.clone())
    );
    let mut clash = changed.clone();
    clash.name = "ci".to_owned();
    assert!(
        !store.update_webhook(&clash).await.expect("answered"),
        "the name is taken"
    );
    let mut missing = changed;
    missing.id = second + 1_000_000;
    assert!(!store.update_webhook(&missing).await.expect("answered"));

    assert!(
        store
            .delete_webhook(&project, first)
            .await
            .expect("deleted")
    );
    assert!(
        !store
            .delete_webhook(&project, first)
            .await
            .expect("answered")
    );
    assert_eq!(store.webhooks(&project).await.expect("listed").len(), 1);
}

pub async fn deliveries_are_recorded_newest_first_and_replaced_by_id(store: &dyn WebhookStore) {
    let project = project();
    let id = store
        .create_webhook(&policy(&project, "ci"))
        .await
        .expect("created")
        .expect("a new name");
    let delivery = |n: u64, created_ms: u64| Delivery {
        id: (u64::from(uuid::Uuid::new_v4().as_fields().0) << 8) + n,
        project: project.clone(),
        policy_id: id,
        event_type: WebhookEventType::PushArtifact,
        address: "https://hooks.example/berth".to_owned(),
        status: DeliveryStatus::Running,
        attempts: 1,
        http_code: Some(500),
        error: Some("answered 500".to_owned()),
        created_ms,
        updated_ms: created_ms,
    };
    let (old, new) = (delivery(1, 1_000), delivery(2, 2_000));
    store.record_delivery(&old).await.expect("recorded");
    store.record_delivery(&new).await.expect("recorded");
    let mut retried = old.clone();
    retried.status = DeliveryStatus::Success;
    retried.attempts = 2;
    retried.http_code = Some(200);
    retried.error = None;
    retried.updated_ms = 3_000;
    store
        .record_delivery(&retried)
        .await
        .expect("recorded again");

    let listed = store.deliveries(&project, id, 10).await.expect("listed");
    assert_eq!(
        listed,
        [new.clone(), retried],
        "newest first, the retry in place"
    );
    assert_eq!(
        store.deliveries(&project, id, 1).await.expect("listed"),
        [new]
    );
    assert!(store.delete_webhook(&project, id).await.expect("deleted"));
    assert!(
        store
            .deliveries(&project, id, 10)
            .await
            .expect("listed")
            .is_empty()
    );
}
