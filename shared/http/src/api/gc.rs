//! Garbage collection's endpoints, in Harbor's shape: `/system/gc` lists runs (Harbor's
//! `GCHistory`, the counts in `job_parameters`), `/system/gc/{id}` is one run,
//! `/system/gc/{id}/log` its log as text, and `/system/gc/schedule` the schedule, where a
//! `POST` of type `Manual` starts a run now.

use axum::body::Body;
use berth_app::{Caller, GarbageCollection, ScheduleRequest};
use berth_core::gc::{GcRun, GcSchedule};
use berth_core::{ErrorCode, RegistryError, Result};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    ApiEndpoint, Reply, bad_request, created, json_reply, ok, page, paged_reply, read_json,
    text_reply, time,
};

pub(super) async fn serve(
    gc: Option<&GarbageCollection>,
    endpoint: ApiEndpoint,
    caller: &Caller,
    query: Option<&str>,
    body: Body,
) -> Reply {
    let gc = gc.ok_or_else(|| {
        RegistryError::new(
            ErrorCode::Unsupported,
            "this deployment runs no garbage collection",
        )
    })?;
    match endpoint {
        ApiEndpoint::GcRuns => {
            let (number, size) = page(query)?;
            let (runs, total) = gc.runs(number, size).await?;
            let body = Value::Array(runs.iter().map(run_json).collect());
            Ok(paged_reply(
                "/system/gc",
                query,
                (number, size),
                total,
                &body,
            )?)
        }
        ApiEndpoint::GcRun(id) => {
            let run = gc.run(run_id(&id)?).await?;
            json_reply(StatusCode::OK, &run_json(&run))
        }
        ApiEndpoint::GcLog(id) => {
            let run = gc.run(run_id(&id)?).await?;
            let mut text = run.progress.log.join("\n");
            text.push('\n');
            text_reply(text)
        }
        ApiEndpoint::GcSchedule => {
            json_reply(StatusCode::OK, &schedule_json(&gc.schedule().await?))
        }
        ApiEndpoint::SetGcSchedule => {
            let request: ScheduleBody = read_json(body).await?;
            let parameters = request.parameters.unwrap_or_default();
            let started = gc
                .set_schedule(
                    caller,
                    ScheduleRequest {
                        kind: request.schedule.kind,
                        cron: request.schedule.cron.filter(|cron| !cron.is_empty()),
                        dry_run: parameters.dry_run,
                        delete_untagged: parameters.delete_untagged,
                    },
                )
                .await?;
            match started {
                Some(id) => created(&format!("/system/gc/{id}"), None),
                None => ok(),
            }
        }
        other => Err(bad_request(format!("{other:?} is not a garbage collection endpoint")).into()),
    }
}

#[derive(Deserialize)]
struct ScheduleBody {
    schedule: ScheduleKind,
    parameters: Option<Parameters>,
}

#[derive(Deserialize)]
struct ScheduleKind {
    #[serde(rename = "type")]
    kind: String,
    cron: Option<String>,
}

#[derive(Deserialize, Default)]
struct Parameters {
    #[serde(default)]
    delete_untagged: bool,
    #[serde(default)]
    dry_run: bool,
}

fn run_id(id: &str) -> Result<u64> {
    id.parse().map_err(|_| {
        RegistryError::new(
            ErrorCode::NotFound,
            format!("garbage collection run {id} not found"),
        )
    })
}

fn run_json(run: &GcRun) -> Value {
    let progress = &run.progress;
    let parameters = json!({
        "dry_run": progress.options.dry_run,
        "delete_untagged": progress.options.delete_untagged,
        "grace_seconds": progress.options.grace_ms / 1000,
        "purged_blobs": progress.blobs_deleted,
        "freed_space": progress.bytes_freed,
        "purged_manifests": progress.manifests_deleted,
    });
    json!({
        "id": run.id,
        "job_name": "GARBAGE_COLLECTION",
        "job_kind": if run.scheduled { "SCHEDULE" } else { "MANUAL" },
        "job_parameters": parameters.to_string(),
        "job_status": run.status.as_str(),
        "deleted": false,
        "creation_time": time(progress.started_ms),
        "update_time": time(run.updated_ms),
        "error": run.error,
    })
}

fn schedule_json(schedule: &GcSchedule) -> Value {
    json!({
        "schedule": { "type": schedule.kind, "cron": schedule.cron },
        "parameters": {
            "dry_run": schedule.options.dry_run,
            "delete_untagged": schedule.options.delete_untagged,
        },
    })
}
