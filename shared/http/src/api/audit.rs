//! The audit log's wire format, in Harbor's shape: `q` filters, `sort`, pages with
//! `X-Total-Count` and `Link`, and entries with `op_time`.

use axum::response::Response;
use berth_core::Result;
use berth_core::audit::{AuditEntry, AuditPage, AuditQuery, MAX_AUDIT_PAGE};
use chrono::{DateTime, NaiveDateTime, SecondsFormat};
use serde_json::{Value, json};

use super::{bad_request, positive};

/// The query of `GET /audit-logs` or `/projects/{p}/logs` (`project`): `q` holds
/// comma-separated `key=value` filters on `operation`, `resource_type`, `username`,
/// `resource` (`~text`: containing the text) and `op_time` (`[from~to]`, either end may be
/// empty, as `2026-01-31 23:59:59` in UTC or RFC 3339); `sort` is `op_time` or `-op_time`
/// (the default, newest first).
pub(crate) fn parse_query(query: Option<&str>, project: Option<String>) -> Result<AuditQuery> {
    let mut parsed = AuditQuery {
        project,
        ..AuditQuery::default()
    };
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match &*key {
            "page" => parsed.page = positive(&key, &value)?,
            "page_size" => parsed.page_size = positive(&key, &value)?.min(MAX_AUDIT_PAGE),
            "sort" => {
                parsed.oldest_first = match &*value {
                    "op_time" => true,
                    "-op_time" | "" => false,
                    other => {
                        return Err(bad_request(format!(
                            "sort {other:?}: the audit log sorts by op_time or -op_time"
                        )));
                    }
                }
            }
            "q" => filters(&value, &mut parsed)?,
            _ => {}
        }
    }
    Ok(parsed)
}

fn filters(q: &str, query: &mut AuditQuery) -> Result<()> {
    for filter in q.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let (key, value) = filter
            .split_once('=')
            .ok_or_else(|| bad_request(format!("q: {filter:?} is not key=value")))?;
        let exact = |value: &str| Some(value.strip_prefix('~').unwrap_or(value).to_owned());
        match key.trim() {
            "operation" => query.operation = exact(value),
            "resource_type" => query.resource_type = exact(value),
            "username" => query.username = exact(value),
            "resource" => query.resource = exact(value),
            "op_time" => {
                let range = value
                    .strip_prefix('[')
                    .and_then(|v| v.strip_suffix(']'))
                    .and_then(|v| v.split_once('~'))
                    .ok_or_else(|| bad_request("q: op_time is [from~to]"))?;
                query.from_ms = time_ms(range.0)?;
                query.to_ms = time_ms(range.1)?;
            }
            other => {
                return Err(bad_request(format!(
                    "q: the audit log filters by operation, resource_type, resource, username \
                     and op_time, not {other:?}"
                )));
            }
        }
    }
    Ok(())
}

fn time_ms(text: &str) -> Result<Option<u64>> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let parsed = DateTime::parse_from_rfc3339(text)
        .map(|time| time.timestamp_millis())
        .or_else(|_| {
            NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S")
                .map(|time| time.and_utc().timestamp_millis())
        })
        .map_err(|_| {
            bad_request(format!(
                "q: op_time {text:?} is not a time: write 2026-01-31 23:59:59 (UTC) or RFC 3339"
            ))
        })?;
    Ok(Some(u64::try_from(parsed).unwrap_or(0)))
}

fn entry_json(entry: &AuditEntry) -> Value {
    let op_time = i64::try_from(entry.at_ms)
        .ok()
        .and_then(DateTime::from_timestamp_millis)
        .map(|time| time.to_rfc3339_opts(SecondsFormat::Millis, true));
    json!({
        "id": entry.id,
        "username": entry.username,
        "resource": entry.resource,
        "resource_type": entry.resource_type,
        "operation": entry.operation,
        "op_time": op_time,
    })
}

/// The page as a response, with the total and links to its neighbours, which repeat the
/// request's `q` and `sort`.
pub(crate) fn page_response(
    path: &str,
    request_query: Option<&str>,
    query: &AuditQuery,
    page: &AuditPage,
) -> Result<Response> {
    let body = Value::Array(page.entries.iter().map(entry_json).collect());
    let total = usize::try_from(page.total).unwrap_or(usize::MAX);
    super::paged_reply(
        path,
        request_query,
        (query.page, query.page_size),
        total,
        &body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harbors_query_syntax_is_read() {
        let query = parse_query(
            Some(
                "q=operation%3Dpull%2Cresource%3D~team%2Fapp%2Cusername%3Ddev%2Cop_time%3D%5B2026-01-01%2000%3A00%3A00~2026-01-02T00%3A00%3A00Z%5D&sort=op_time&page=2&page_size=500",
            ),
            Some("team".into()),
        )
        .expect("a query");
        assert_eq!(query.operation.as_deref(), Some("pull"));
        assert_eq!(query.resource.as_deref(), Some("team/app"));
        assert_eq!(query.username.as_deref(), Some("dev"));
        assert_eq!(query.from_ms, Some(1_767_225_600_000));
        assert_eq!(query.to_ms, Some(1_767_312_000_000));
        assert!(query.oldest_first);
        assert_eq!((query.page, query.page_size), (2, MAX_AUDIT_PAGE));
        assert_eq!(query.project.as_deref(), Some("team"));
    }

    #[test]
    fn bad_queries_are_refused_with_the_reason() {
        for (query, says) in [
            ("q=colour%3Dred", "not \"colour\""),
            ("q=op_time%3Dyesterday", "[from~to]"),
            ("q=op_time%3D%5Bnoon~%5D", "not a time"),
            ("sort=name", "op_time"),
            ("page=0", "positive"),
        ] {
            let error = parse_query(Some(query), None).expect_err(query);
            assert!(
                error.message().contains(says),
                "{query}: {}",
                error.message()
            );
        }
    }
}
