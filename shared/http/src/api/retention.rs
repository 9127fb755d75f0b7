//! Tag retention's endpoints, in the shape of Harbor's `/retentions`: the rule templates
//! (`/retentions/metadatas`), a project's policy (`POST /retentions`, `GET`, `PUT`,
//! `DELETE /retentions/{id}`), its runs (`POST`, `GET /retentions/{id}/executions`, `PATCH
//! .../executions/{eid}` to stop one) and each run's tasks, one per repository (`GET
//! .../tasks`, and `GET .../tasks/{tid}` for a task's log as text).
//!
//! Berth names projects by name: a policy's `scope.ref` is the project's name (Harbor's is
//! its numeric id). The permission is the project's ([`berth_app::Permission::TagRetention`]),
//! checked by the use cases once the project is known.

use std::collections::BTreeMap;

use axum::body::Body;
use berth_app::artifacts::PageRequest;
use berth_app::{Accounts, Caller, PolicySpec, Retention};
use berth_core::retention::{
    Decoration, RetentionExecution, RetentionPolicy, RetentionRule, RetentionTask, RuleTemplate,
    Selector,
};
use berth_core::{ErrorCode, RegistryError, Result};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    ApiEndpoint, Reply, bad_request, created, json_reply, ok, page, paged_reply, read_json,
    text_reply, time,
};

pub(super) async fn serve(
    retention: Option<&Retention>,
    accounts: &Accounts,
    endpoint: ApiEndpoint,
    caller: &Caller,
    query: Option<&str>,
    body: Body,
) -> Reply {
    let retention = retention.ok_or_else(|| {
        RegistryError::new(
            ErrorCode::Unsupported,
            "this deployment runs no tag retention",
        )
    })?;
    match endpoint {
        ApiEndpoint::RetentionMetadata => json_reply(StatusCode::OK, &metadata_json()),
        ApiEndpoint::CreateRetention => {
            let spec = policy_spec(read_json(body).await?)?;
            let id = retention.create_policy(accounts, caller, spec).await?;
            created(&format!("/retentions/{id}"), None)
        }
        ApiEndpoint::GetRetention(id) => {
            let policy = retention.policy(accounts, caller, number(&id)?).await?;
            json_reply(StatusCode::OK, &policy_json(&policy))
        }
        ApiEndpoint::UpdateRetention(id) => {
            let spec = policy_spec(read_json(body).await?)?;
            retention
                .update_policy(accounts, caller, number(&id)?, spec)
                .await?;
            ok()
        }
        ApiEndpoint::DeleteRetention(id) => {
            retention
                .delete_policy(accounts, caller, number(&id)?)
                .await?;
            ok()
        }
        ApiEndpoint::StartRetention(id) => {
            let trigger: TriggerBody = read_json(body).await?;
            let id = number(&id)?;
            let eid = retention
                .start(accounts, caller, id, trigger.dry_run)
                .await?;
            created(&format!("/retentions/{id}/executions/{eid}"), None)
        }
        ApiEndpoint::RetentionExecutions(id) => {
            let (number_of_page, size) = page(query)?;
            let (executions, total) = retention
                .executions(
                    accounts,
                    caller,
                    number(&id)?,
                    request(number_of_page, size),
                )
                .await?;
            let body = Value::Array(executions.iter().map(execution_json).collect());
            Ok(paged_reply(
                &format!("/retentions/{id}/executions"),
                query,
                (number_of_page, size),
                total,
                &body,
            )?)
        }
        ApiEndpoint::StopRetention { id, execution } => {
            let action: ActionBody = read_json(body).await?;
            if action.action != "stop" {
                return Err(bad_request(format!(
                    "action {:?}: the only action is \"stop\"",
                    action.action
                ))
                .into());
            }
            retention
                .stop(accounts, caller, number(&id)?, number(&execution)?)
                .await?;
            ok()
        }
        ApiEndpoint::RetentionTasks { id, execution } => {
            let (number_of_page, size) = page(query)?;
            let (tasks, total) = retention
                .tasks(
                    accounts,
                    caller,
                    number(&id)?,
                    number(&execution)?,
                    request(number_of_page, size),
                )
                .await?;
            let body = Value::Array(tasks.iter().map(task_json).collect());
            Ok(paged_reply(
                &format!("/retentions/{id}/executions/{execution}/tasks"),
                query,
                (number_of_page, size),
                total,
                &body,
            )?)
        }
        ApiEndpoint::RetentionTaskLog {
            id,
            execution,
            task,
        } => {
            let task = retention
                .task(
                    accounts,
                    caller,
                    number(&id)?,
                    number(&execution)?,
                    number(&task)?,
                )
                .await?;
            let mut text = task.log.join("\n");
            text.push('\n');
            text_reply(text)
        }
        other => Err(bad_request(format!("{other:?} is not a retention endpoint")).into()),
    }
}

fn request(page: usize, page_size: usize) -> PageRequest {
    PageRequest { page, page_size }
}

/// An id in the path; one that is not a number names nothing.
fn number(id: &str) -> Result<u64> {
    id.parse().map_err(|_| {
        RegistryError::new(
            ErrorCode::NotFound,
            format!("retention record {id} not found"),
        )
    })
}

#[derive(Deserialize)]
struct TriggerBody {
    #[serde(default)]
    dry_run: bool,
}

#[derive(Deserialize)]
struct ActionBody {
    action: String,
}

/// Harbor's `RetentionPolicy`, as clients send it.
#[derive(Deserialize)]
struct PolicyBody {
    algorithm: Option<String>,
    #[serde(default)]
    rules: Vec<RuleBody>,
    trigger: Option<TriggerSpec>,
    scope: Option<ScopeBody>,
}

#[derive(Deserialize)]
struct RuleBody {
    #[serde(default)]
    disabled: bool,
    #[serde(default)]
    priority: i64,
    action: Option<String>,
    template: Option<String>,
    #[serde(default)]
    params: BTreeMap<String, Value>,
    #[serde(default)]
    tag_selectors: Vec<SelectorBody>,
    #[serde(default)]
    scope_selectors: BTreeMap<String, Vec<SelectorBody>>,
}

#[derive(Deserialize)]
struct SelectorBody {
    kind: Option<String>,
    decoration: Option<String>,
    #[serde(default)]
    pattern: String,
    /// A JSON object, written as a string (Harbor's form) or as an object.
    extras: Option<Value>,
}

#[derive(Deserialize)]
struct TriggerSpec {
    kind: Option<String>,
    #[serde(default)]
    settings: Option<TriggerSettings>,
}

#[derive(Deserialize)]
struct TriggerSettings {
    cron: Option<String>,
}

#[derive(Deserialize)]
struct ScopeBody {
    level: Option<String>,
    #[serde(rename = "ref")]
    reference: Option<Value>,
}

#[derive(Deserialize, Default)]
struct Extras {
    untagged: Option<bool>,
}

fn policy_spec(body: PolicyBody) -> Result<PolicySpec> {
    if let Some(algorithm) = body.algorithm.as_deref().filter(|a| !a.is_empty())
        && algorithm != "or"
    {
        return Err(bad_request(format!(
            "algorithm {algorithm:?}: the only algorithm is \"or\""
        )));
    }
    let scope = body.scope.ok_or_else(|| {
        bad_request("a policy needs its scope: {\"level\": \"project\", \"ref\": <project name>}")
    })?;
    if let Some(level) = scope.level.as_deref()
        && level != "project"
    {
        return Err(bad_request(format!(
            "scope level {level:?}: Berth's policies are per project (level \"project\")"
        )));
    }
    let project = match scope.reference {
        Some(Value::String(name)) if !name.is_empty() => name,
        Some(Value::Number(id)) => {
            return Err(bad_request(format!(
                "scope.ref {id}: Berth names projects by name; write the project's name"
            )));
        }
        _ => return Err(bad_request("scope.ref must be the project's name")),
    };
    let cron = match body.trigger {
        None => None,
        Some(trigger) => {
            if let Some(kind) = trigger.kind.as_deref().filter(|k| !k.is_empty())
                && kind != "Schedule"
            {
                return Err(bad_request(format!(
                    "trigger kind {kind:?}: the only kind is \"Schedule\""
                )));
            }
            trigger.settings.and_then(|settings| settings.cron)
        }
    };
    let rules = body
        .rules
        .into_iter()
        .enumerate()
        .map(|(number, rule)| rule_of(number, rule))
        .collect::<Result<_>>()?;
    Ok(PolicySpec {
        project,
        rules,
        cron,
    })
}

fn rule_of(number: usize, rule: RuleBody) -> Result<RetentionRule> {
    let place = format!("rule {number}");
    if let Some(action) = rule.action.as_deref().filter(|a| !a.is_empty())
        && action != "retain"
    {
        return Err(bad_request(format!(
            "{place}: action {action:?}; the only action is \"retain\""
        )));
    }
    let name = rule.template.unwrap_or_default();
    let template = RuleTemplate::parse(&name).ok_or_else(|| {
        let known: Vec<&str> = RuleTemplate::ALL.iter().map(|t| t.name()).collect();
        bad_request(format!(
            "{place}: template {name:?} is not one of {}",
            known.join(", ")
        ))
    })?;
    let param = match template.unit() {
        None => 0,
        Some(_) => {
            let key = template.name();
            let value = rule.params.get(key).ok_or_else(|| {
                bad_request(format!("{place}: params.{key} is required (a number)"))
            })?;
            let parsed = match value {
                Value::Number(n) => n.as_u64(),
                Value::String(text) => text.trim().parse().ok(),
                _ => None,
            };
            parsed.ok_or_else(|| {
                bad_request(format!(
                    "{place}: params.{key} must be a whole number from 0, not {value}"
                ))
            })?
        }
    };
    let tag_selectors = rule
        .tag_selectors
        .into_iter()
        .map(|selector| selector_of(&place, selector))
        .collect::<Result<_>>()?;
    let mut repository_selectors = Vec::new();
    for (scope, selectors) in rule.scope_selectors {
        if scope != "repository" {
            return Err(bad_request(format!(
                "{place}: scope selector {scope:?}: a project's policy selects repositories only"
            )));
        }
        for selector in selectors {
            repository_selectors.push(selector_of(&place, selector)?);
        }
    }
    Ok(RetentionRule {
        disabled: rule.disabled,
        priority: rule.priority,
        template,
        param,
        tag_selectors,
        repository_selectors,
    })
}

fn selector_of(place: &str, selector: SelectorBody) -> Result<Selector> {
    if let Some(kind) = selector.kind.as_deref().filter(|k| !k.is_empty())
        && kind != "doublestar"
    {
        return Err(bad_request(format!(
            "{place}: selector kind {kind:?}; the only kind is \"doublestar\""
        )));
    }
    let name = selector.decoration.unwrap_or_default();
    let decoration = Decoration::parse(&name).ok_or_else(|| {
        bad_request(format!(
            "{place}: decoration {name:?} is not matches, excludes, repoMatches or repoExcludes"
        ))
    })?;
    let extras: Option<Extras> = match selector.extras {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) if text.trim().is_empty() => None,
        Some(Value::String(text)) => Some(serde_json::from_str(&text).map_err(|e| {
            bad_request(format!(
                "{place}: extras {text:?} is not a JSON object: {e}"
            ))
        })?),
        Some(object) => Some(serde_json::from_value(object).map_err(|e| {
            bad_request(format!(
                "{place}: extras is not {{\"untagged\": <bool>}}: {e}"
            ))
        })?),
    };
    // Harbor's default without extras: a matching selector picks untagged artifacts, an
    // excluding one does not.
    let untagged = match extras {
        None => !decoration.excludes(),
        Some(extras) => extras.untagged.unwrap_or(false),
    };
    Ok(Selector {
        decoration,
        pattern: selector.pattern,
        untagged,
    })
}

fn selector_json(selector: &Selector) -> Value {
    let mut value = json!({
        "kind": "doublestar",
        "decoration": selector.decoration.as_str(),
        "pattern": selector.pattern,
    });
    if !selector.decoration.for_repositories() {
        value["extras"] = json!(json!({ "untagged": selector.untagged }).to_string());
    }
    value
}

fn policy_json(policy: &RetentionPolicy) -> Value {
    let rules: Vec<Value> = policy
        .rules
        .iter()
        .enumerate()
        .map(|(index, rule)| {
            let params = match rule.template.unit() {
                Some(_) => json!({ rule.template.name(): rule.param }),
                None => json!({}),
            };
            json!({
                "id": index + 1,
                "priority": rule.priority,
                "disabled": rule.disabled,
                "action": "retain",
                "template": rule.template.name(),
                "params": params,
                "tag_selectors": rule.tag_selectors.iter().map(selector_json).collect::<Vec<_>>(),
                "scope_selectors": {
                    "repository": rule.repository_selectors.iter().map(selector_json).collect::<Vec<_>>(),
                },
            })
        })
        .collect();
    json!({
        "id": policy.id,
        "algorithm": "or",
        "rules": rules,
        "trigger": {
            "kind": "Schedule",
            "settings": { "cron": policy.cron.clone().unwrap_or_default() },
            "references": {},
        },
        "scope": { "level": "project", "ref": policy.project },
    })
}

fn execution_json(execution: &RetentionExecution) -> Value {
    json!({
        "id": execution.id,
        "policy_id": execution.policy_id,
        "start_time": time(execution.start_ms),
        "end_time": execution.end_ms.and_then(time),
        "status": execution.status.as_str(),
        "trigger": if execution.scheduled { "SCHEDULE" } else { "MANUAL" },
        "dry_run": execution.dry_run,
    })
}

fn task_json(task: &RetentionTask) -> Value {
    json!({
        "id": task.id,
        "execution_id": task.execution_id,
        "repository": task.repository,
        "status": task.status.as_str(),
        "start_time": time(task.start_ms),
        "end_time": time(task.end_ms),
        "total": task.total,
        "retained": task.retained,
    })
}

/// Harbor's `RetentionMetadata`: the rule templates and the selectors.
fn metadata_json() -> Value {
    let templates: Vec<Value> = RuleTemplate::ALL
        .iter()
        .map(|template| {
            let params: Vec<Value> = template
                .unit()
                .map(|unit| json!({ "type": "int", "unit": unit, "required": true }))
                .into_iter()
                .collect();
            json!({
                "rule_template": template.name(),
                "display_text": template.display_text(),
                "action": "retain",
                "params": params,
            })
        })
        .collect();
    json!({
        "templates": templates,
        "scope_selectors": [{
            "display_text": "Repositories",
            "kind": "doublestar",
            "decorations": ["repoMatches", "repoExcludes"],
        }],
        "tag_selectors": [{
            "display_text": "Tags",
            "kind": "doublestar",
            "decorations": ["matches", "excludes"],
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(body: Value) -> Result<PolicySpec> {
        policy_spec(serde_json::from_value(body).expect("a policy body"))
    }

    fn harbor_policy() -> Value {
        json!({
            "algorithm": "or",
            "rules": [{
                "disabled": false,
                "action": "retain",
                "template": "latestPushedK",
                "params": {"latestPushedK": 3},
                "tag_selectors": [{"kind": "doublestar", "decoration": "matches", "pattern": "v*", "extras": "{\"untagged\":false}"}],
                "scope_selectors": {"repository": [{"kind": "doublestar", "decoration": "repoMatches", "pattern": "**"}]},
            }, {
                "template": "always",
                "tag_selectors": [{"decoration": "excludes", "pattern": "tmp-*"}],
            }],
            "trigger": {"kind": "Schedule", "settings": {"cron": "0 0 0 * * *"}},
            "scope": {"level": "project", "ref": "team"},
        })
    }

    #[test]
    fn a_harbor_policy_reads_and_writes_back() {
        let read = spec(harbor_policy()).expect("valid");
        assert_eq!(read.project, "team");
        assert_eq!(read.cron.as_deref(), Some("0 0 0 * * *"));
        assert_eq!(read.rules[0].param, 3);
        assert!(!read.rules[0].tag_selectors[0].untagged);
        assert_eq!(read.rules[0].repository_selectors.len(), 1);
        // Without extras: an excluding selector leaves untagged artifacts out.
        assert!(!read.rules[1].tag_selectors[0].untagged);
        let policy = RetentionPolicy {
            id: 4,
            project: read.project.clone(),
            rules: read.rules.clone(),
            cron: read.cron.clone(),
            fired_ms: 0,
        };
        let again = spec(policy_json(&policy)).expect("its own answer reads back");
        assert_eq!(again, read);
    }

    #[test]
    fn bad_policies_are_refused_with_a_reason() {
        let cases: [(&str, Value); 7] = [
            ("/scope/ref", json!(7)),
            ("/scope/level", json!("system")),
            ("/algorithm", json!("and")),
            ("/rules/0/template", json!("latestK")),
            ("/rules/0/params/latestPushedK", json!("many")),
            ("/rules/0/tag_selectors/0/kind", json!("regexp")),
            ("/rules/0/scope_selectors", json!({"project": []})),
        ];
        for (pointer, value) in cases {
            let mut body = harbor_policy();
            *body.pointer_mut(pointer).expect(pointer) = value;
            let error = spec(body).expect_err(pointer);
            assert_eq!(error.code(), ErrorCode::BadRequest, "{pointer}: {error}");
        }
        let mut no_param = harbor_policy();
        no_param["rules"][0]["params"] = json!({});
        assert!(spec(no_param).is_err());
    }
}
