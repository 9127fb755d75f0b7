//! Tag immutability rules in Harbor's `ImmutableRule` shape: `tag_selectors` and
//! `scope_selectors.repository`, each a `doublestar` pattern that `matches` or `excludes`
//! (`repoMatches` or `repoExcludes` for repositories), with the `action` `immutable` and the
//! `template` `immutable_template`.

use std::collections::BTreeMap;

use axum::body::Body;
use berth_app::{Accounts, Caller, PageRequest};
use berth_core::Result;
use berth_core::immutable::{ImmutableRule, Selector};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{ApiEndpoint, Reply, bad_request, created, ok, page, paged_reply, read_json};

const ACTION: &str = "immutable";
const TEMPLATE: &str = "immutable_template";
const KIND: &str = "doublestar";
/// The one scope Harbor's rules select in.
const REPOSITORY_SCOPE: &str = "repository";

pub(super) async fn serve(
    accounts: &Accounts,
    endpoint: ApiEndpoint,
    caller: &Caller,
    query: Option<&str>,
    body: Body,
) -> Reply {
    match endpoint {
        ApiEndpoint::ListImmutableRules(project) => {
            let (page, page_size) = page(query)?;
            let listing = accounts
                .immutable_rules(&project, PageRequest { page, page_size })
                .await?;
            let body = Value::Array(listing.items.iter().map(rule_json).collect());
            let path = format!("/projects/{project}/immutabletagrules");
            Ok(paged_reply(
                &path,
                query,
                (page, page_size),
                listing.total,
                &body,
            )?)
        }
        ApiEndpoint::CreateImmutableRule(project) => {
            let (_, rule) = read_rule(body).await?;
            let rule = accounts
                .create_immutable_rule(caller, &project, rule)
                .await?;
            created(
                &format!("/projects/{project}/immutabletagrules/{}", rule.id),
                Some(&rule_json(&rule)),
            )
        }
        ApiEndpoint::UpdateImmutableRule { project, id } => {
            let id = rule_id(&id)?;
            let (given, rule) = read_rule(body).await?;
            if let Some(given) = given.filter(|given| *given != id) {
                return Err(
                    bad_request(format!("the body's id {given} is not the path's {id}")).into(),
                );
            }
            accounts
                .update_immutable_rule(caller, &project, id, rule)
                .await?;
            ok()
        }
        ApiEndpoint::DeleteImmutableRule { project, id } => {
            accounts
                .delete_immutable_rule(caller, &project, rule_id(&id)?)
                .await?;
            ok()
        }
        other => Err(bad_request(format!("{other:?} is not an immutability rule endpoint")).into()),
    }
}

fn rule_id(text: &str) -> Result<u64> {
    text.parse()
        .map_err(|_| bad_request(format!("an immutability rule id is a number, not {text:?}")))
}

/// Harbor's `ImmutableSelector`.
#[derive(Deserialize)]
struct WireSelector {
    kind: String,
    decoration: String,
    pattern: String,
}

/// Harbor's `ImmutableRule`; absent and `null` fields alike take their defaults.
#[derive(Deserialize)]
struct WireRule {
    #[serde(default)]
    id: Option<u64>,
    #[serde(default)]
    priority: Option<i64>,
    #[serde(default)]
    disabled: Option<bool>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    template: Option<String>,
    #[serde(default)]
    params: Option<Map<String, Value>>,
    #[serde(default)]
    tag_selectors: Option<Vec<WireSelector>>,
    #[serde(default)]
    scope_selectors: Option<BTreeMap<String, Vec<WireSelector>>>,
}

/// The rule a body describes, with the id it names, if any. The selectors' validity (at
/// least one of each kind, patterns that compile) is the use case's to check.
async fn read_rule(body: Body) -> Result<(Option<u64>, ImmutableRule)> {
    let wire: WireRule = read_json(body).await?;
    for (field, given, expected) in [
        ("action", &wire.action, ACTION),
        ("template", &wire.template, TEMPLATE),
    ] {
        if let Some(given) = given.as_deref().filter(|given| *given != expected) {
            return Err(bad_request(format!(
                "{field} is {expected:?}, not {given:?}"
            )));
        }
    }
    let mut repositories = Vec::new();
    for (scope, selectors) in wire.scope_selectors.unwrap_or_default() {
        if scope != REPOSITORY_SCOPE {
            return Err(bad_request(format!(
                "scope selectors select in {REPOSITORY_SCOPE:?} only, not {scope:?}"
            )));
        }
        for selector in selectors {
            repositories.push(selector_of(selector, "repoMatches", "repoExcludes")?);
        }
    }
    let tags = wire
        .tag_selectors
        .unwrap_or_default()
        .into_iter()
        .map(|selector| selector_of(selector, "matches", "excludes"))
        .collect::<Result<_>>()?;
    let rule = ImmutableRule {
        id: wire.id.unwrap_or_default(),
        priority: wire.priority.unwrap_or_default(),
        disabled: wire.disabled.unwrap_or_default(),
        repositories,
        tags,
        params: wire.params.unwrap_or_default(),
    };
    Ok((wire.id, rule))
}

fn selector_of(wire: WireSelector, matches: &str, excludes: &str) -> Result<Selector> {
    if wire.kind != KIND {
        return Err(bad_request(format!(
            "selector kind {:?} is not supported: use {KIND:?}",
            wire.kind
        )));
    }
    let exclude = if wire.decoration == matches {
        false
    } else if wire.decoration == excludes {
        true
    } else {
        return Err(bad_request(format!(
            "selector decoration {:?} is not one of {matches:?}, {excludes:?}",
            wire.decoration
        )));
    };
    Ok(Selector {
        pattern: wire.pattern,
        exclude,
    })
}

fn selectors_json(selectors: &[Selector], matches: &str, excludes: &str) -> Value {
    Value::Array(
        selectors
            .iter()
            .map(|selector| {
                json!({
                    "kind": KIND,
                    "decoration": if selector.exclude { excludes } else { matches },
                    "pattern": selector.pattern,
                })
            })
            .collect(),
    )
}

fn rule_json(rule: &ImmutableRule) -> Value {
    json!({
        "id": rule.id,
        "priority": rule.priority,
        "disabled": rule.disabled,
        "action": ACTION,
        "template": TEMPLATE,
        "params": rule.params,
        "tag_selectors": selectors_json(&rule.tags, "matches", "excludes"),
        "scope_selectors": {
            REPOSITORY_SCOPE: selectors_json(&rule.repositories, "repoMatches", "repoExcludes"),
        },
    })
}
