//! The repository and artifact endpoints' wire format, in Harbor's shape: listings with
//! `q`, `sort` and pages, repositories with their artifact and pull counts, artifacts with
//! their tags, size and references, tags added and removed.

use axum::body::Body;
use berth_app::{
    Accounts, ArtifactQuery, ArtifactView, Caller, NameMatch, PageRequest, RepositoryOrder,
    RepositoryQuery, RepositorySummary,
};
use berth_core::{Reference, RepositoryName, Result};
use http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::endpoint::{ArtifactPath, RepositoryPath};
use super::{
    ApiEndpoint, Reply, bad_request, created, json_reply, ok, page, paged_reply, read_json,
    repository_name, usage_fields,
};

pub(super) async fn serve(
    accounts: &Accounts,
    endpoint: ApiEndpoint,
    caller: &Caller,
    query: Option<&str>,
    body: Body,
) -> Reply {
    match endpoint {
        ApiEndpoint::ListRepositories(project) => {
            let parsed = repository_query(query)?;
            let listing = accounts.repositories(&project, &parsed).await?;
            let body = Value::Array(listing.items.iter().map(repository_json).collect());
            let path = format!("/projects/{project}/repositories");
            let paging = (parsed.page.page, parsed.page.page_size);
            Ok(paged_reply(&path, query, paging, listing.total, &body)?)
        }
        ApiEndpoint::GetRepository(path) => {
            let summary = accounts.repository(&name(&path)?).await?;
            json_reply(StatusCode::OK, &repository_json(&summary))
        }
        ApiEndpoint::DeleteRepository(path) => {
            accounts.delete_repository(caller, &name(&path)?).await?;
            ok()
        }
        ApiEndpoint::ListArtifacts(path) => {
            let (parsed, with_tag) = artifact_query(query)?;
            let repository = name(&path)?;
            let listing = accounts.artifacts(&repository, &parsed).await?;
            let body = Value::Array(
                listing
                    .items
                    .iter()
                    .map(|artifact| artifact_json(artifact, with_tag))
                    .collect(),
            );
            let link_path = format!(
                "/projects/{}/repositories/{}/artifacts",
                path.project,
                encoded(&path.repository)
            );
            let paging = (parsed.page.page, parsed.page.page_size);
            Ok(paged_reply(
                &link_path,
                query,
                paging,
                listing.total,
                &body,
            )?)
        }
        ApiEndpoint::GetArtifact(path) => {
            let (repository, reference) = artifact(&path)?;
            let view = accounts.artifact(&repository, &reference).await?;
            json_reply(StatusCode::OK, &artifact_json(&view, true))
        }
        ApiEndpoint::DeleteArtifact(path) => {
            let (repository, reference) = artifact(&path)?;
            accounts
                .delete_artifact(caller, &repository, &reference)
                .await?;
            ok()
        }
        ApiEndpoint::ListTags(path) => {
            let (repository, reference) = artifact(&path)?;
            let (number, size) = page(query)?;
            let request = PageRequest {
                page: number,
                page_size: size,
            };
            let (tags, total, usage) = accounts
                .artifact_tags(&repository, &reference, request)
                .await?;
            let body = Value::Array(tags.iter().map(|tag| tag_json(tag, &usage)).collect());
            let link_path = format!(
                "/projects/{}/repositories/{}/artifacts/{}/tags",
                path.repository.project,
                encoded(&path.repository.repository),
                path.reference
            );
            Ok(paged_reply(
                &link_path,
                query,
                (number, size),
                total,
                &body,
            )?)
        }
        ApiEndpoint::AddTag(path) => {
            let (repository, reference) = artifact(&path)?;
            let new: NewTag = read_json(body).await?;
            accounts
                .add_tag(caller, &repository, &reference, &new.name)
                .await?;
            created(
                &format!(
                    "/projects/{}/repositories/{}/artifacts/{}/tags/{}",
                    path.repository.project,
                    encoded(&path.repository.repository),
                    path.reference,
                    new.name
                ),
                None,
            )
        }
        ApiEndpoint::DeleteTag {
            artifact: path,
            tag,
        } => {
            let (repository, reference) = artifact(&path)?;
            accounts
                .delete_artifact_tag(caller, &repository, &reference, &tag)
                .await?;
            ok()
        }
        other => Err(bad_request(format!("{other:?} is not a repository endpoint")).into()),
    }
}

#[derive(Deserialize)]
struct NewTag {
    name: String,
}

fn name(path: &RepositoryPath) -> Result<RepositoryName> {
    repository_name(&path.project, &path.repository)
}

fn artifact(path: &ArtifactPath) -> Result<(RepositoryName, Reference)> {
    Ok((name(&path.repository)?, path.reference.parse()?))
}

/// A repository name within its project as a path segment: slashes as `%252F`, as Harbor's
/// clients write them.
fn encoded(repository: &str) -> String {
    repository.replace('/', "%252F")
}

/// `page`, `page_size`, `q=name=…` (`~` for containing) and `sort` (`name`, `update_time`,
/// `-` before either for descending).
fn repository_query(query: Option<&str>) -> Result<RepositoryQuery> {
    let (number, size) = page(query)?;
    let mut parsed = RepositoryQuery {
        page: PageRequest {
            page: number,
            page_size: size,
        },
        ..RepositoryQuery::default()
    };
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*key {
            "q" => {
                for (field, matched) in filters(&value)? {
                    match field.as_str() {
                        "name" => parsed.name = Some(matched),
                        other => {
                            return Err(bad_request(format!(
                                "q: repositories are filtered by name, not {other:?}"
                            )));
                        }
                    }
                }
            }
            "sort" => {
                parsed.order = match &*value {
                    "name" | "" => RepositoryOrder::Name,
                    "-name" => RepositoryOrder::NameDescending,
                    "update_time" => RepositoryOrder::UpdateTime,
                    "-update_time" => RepositoryOrder::UpdateTimeDescending,
                    other => {
                        return Err(bad_request(format!(
                            "sort {other:?}: repositories sort by name or update_time"
                        )));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(parsed)
}

/// `page`, `page_size`, `q=tags=…` / `q=digest=…`, `sort=-push_time` and `with_tag`
/// (default true); returns the query and `with_tag`.
fn artifact_query(query: Option<&str>) -> Result<(ArtifactQuery, bool)> {
    let (number, size) = page(query)?;
    let mut parsed = ArtifactQuery {
        page: PageRequest {
            page: number,
            page_size: size,
        },
        ..ArtifactQuery::default()
    };
    let mut with_tag = true;
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*key {
            "q" => {
                for (field, matched) in filters(&value)? {
                    match (field.as_str(), matched) {
                        ("tags", matched) => parsed.tag = Some(matched),
                        ("digest", NameMatch::Exact(digest)) => parsed.digest = Some(digest),
                        (other, _) => {
                            return Err(bad_request(format!(
                                "q: artifacts are filtered by tags or an exact digest, not \
                                 {other:?}"
                            )));
                        }
                    }
                }
            }
            "sort" => {
                parsed.newest_first = match &*value {
                    "-push_time" => true,
                    "digest" | "" => false,
                    other => {
                        return Err(bad_request(format!(
                            "sort {other:?}: artifacts sort by digest or -push_time"
                        )));
                    }
                }
            }
            "with_tag" => {
                with_tag = value
                    .parse()
                    .map_err(|_| bad_request("with_tag must be true or false"))?;
            }
            _ => {}
        }
    }
    Ok((parsed, with_tag))
}

/// Harbor's `q`: comma-separated `key=value` (exact) or `key=~value` (containing).
fn filters(q: &str) -> Result<Vec<(String, NameMatch)>> {
    q.split(',')
        .map(str::trim)
        .filter(|filter| !filter.is_empty())
        .map(|filter| {
            let (key, value) = filter
                .split_once('=')
                .ok_or_else(|| bad_request(format!("q: {filter:?} is not key=value")))?;
            let matched = match value.strip_prefix('~') {
                Some(part) => NameMatch::Contains(part.to_owned()),
                None => NameMatch::Exact(value.to_owned()),
            };
            Ok((key.trim().to_owned(), matched))
        })
        .collect()
}

fn repository_json(summary: &RepositorySummary) -> Value {
    let name = summary.name.as_str();
    let mut answer = json!({
        "name": name,
        "project_name": berth_core::audit::project_of(name),
        "artifact_count": summary.artifact_count,
    });
    usage_fields(&mut answer, &summary.usage, "update_time");
    answer
}

fn tag_json(tag: &str, usage: &berth_core::statistics::Usage) -> Value {
    let mut answer = json!({ "name": tag, "immutable": false });
    usage_fields(&mut answer, usage, "push_time");
    if let Some(object) = answer.as_object_mut() {
        object.remove("pull_count");
    }
    answer
}

fn artifact_json(artifact: &ArtifactView, with_tag: bool) -> Value {
    let tags: Value = if with_tag {
        Value::Array(
            artifact
                .tags
                .iter()
                .map(|tag| tag_json(tag, &artifact.usage))
                .collect(),
        )
    } else {
        Value::Null
    };
    let references: Vec<Value> = artifact
        .references
        .iter()
        .map(|reference| {
            let platform = reference.platform.as_ref().map(|platform| {
                json!({
                    "os": platform.os,
                    "architecture": platform.architecture,
                    "variant": platform.variant,
                })
            });
            json!({
                "child_digest": reference.digest.as_str(),
                "platform": platform,
                "annotations": reference.annotations,
            })
        })
        .collect();
    let mut answer = json!({
        "digest": artifact.digest.as_str(),
        "repository_name": artifact.repository.as_str(),
        "type": artifact.artifact_type.as_str(),
        "media_type": artifact.artifact_media_type,
        "manifest_media_type": artifact.media_type,
        "size": artifact.size,
        "tags": tags,
        "references": references,
        "annotations": artifact.annotations,
    });
    usage_fields(&mut answer, &artifact.usage, "push_time");
    answer
}
