//! Listings on a remote registry: a repository's tags and the catalog, fetched page by
//! page along `Link` headers.

use http::header::LINK;
use http::{HeaderMap, Method, StatusCode};
use reqwest::Url;
use serde::Deserialize;

use super::auth::{CATALOG_SCOPE, pull_scopes};
use super::error::RemoteError;
use super::request::Call;
use super::response::{join_location, read_body, take_token, take_value};
use super::{RemoteRegistry, repository};

/// The largest page of tags or repositories read.
const MAX_LIST_BYTES: usize = 16 * 1024 * 1024;
/// Entries asked for per page of a listing.
const PAGE_SIZE: u32 = 1000;
/// A bound on pages followed, so a registry whose `Link` chain never ends cannot loop us.
const MAX_PAGES: usize = 100_000;

impl RemoteRegistry {
    /// Every tag of a repository, in the registry's order; empty when the repository is
    /// unknown.
    pub async fn tags(&self, repo: &str) -> Result<Vec<String>, RemoteError> {
        let repo = repository(repo)?;
        let url = self.endpoint(&format!("/v2/{repo}/tags/list"));
        self.list(url, pull_scopes(&repo), Listing::Tags).await
    }

    /// Every repository the registry lists in its catalog (those the credentials may see).
    pub async fn catalog(&self) -> Result<Vec<String>, RemoteError> {
        let url = self.endpoint("/v2/_catalog");
        self.list(url, vec![CATALOG_SCOPE.to_owned()], Listing::Catalog)
            .await
    }

    /// Fetches every page of a listing, following `Link: <..>; rel="next"`.
    async fn list(
        &self,
        mut url: Url,
        scopes: Vec<String>,
        listing: Listing,
    ) -> Result<Vec<String>, RemoteError> {
        url.query_pairs_mut()
            .append_pair("n", &PAGE_SIZE.to_string());
        let mut entries = Vec::new();
        for page in 0..MAX_PAGES {
            let call = Call::new(Method::GET, url.clone(), scopes.clone());
            let describe = call.describe();
            let response = self.execute(call).await?;
            match response.status() {
                StatusCode::OK => {}
                StatusCode::NOT_FOUND if page == 0 && listing == Listing::Tags => {
                    return Ok(Vec::new());
                }
                _ => return Err(self.failure(&describe, response).await),
            }
            let next = next_link(response.headers())
                .map(|link| join_location(&url, &link, &describe))
                .transpose()?;
            let body = read_body(response, MAX_LIST_BYTES, &describe).await?;
            entries.extend(listing.entries(&body, &describe)?);
            match next {
                Some(next) if next == url => {
                    return Err(RemoteError::Protocol(format!(
                        "{describe}: the registry's next page link points to the same page"
                    )));
                }
                Some(next) => url = next,
                None => return Ok(entries),
            }
        }
        Err(RemoteError::Protocol(format!(
            "{} lists more than {MAX_PAGES} pages: giving up",
            url.path()
        )))
    }
}

/// The two listings, by the JSON key holding their entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listing {
    Tags,
    Catalog,
}

impl Listing {
    fn entries(self, body: &[u8], describe: &str) -> Result<Vec<String>, RemoteError> {
        #[derive(Deserialize)]
        struct Page {
            tags: Option<Vec<String>>,
            repositories: Option<Vec<String>>,
        }
        let page: Page = serde_json::from_slice(body).map_err(|e| {
            RemoteError::Protocol(format!("{describe}: the listing is not valid JSON: {e}"))
        })?;
        // Distribution answers `"tags": null` for a repository without tags.
        Ok(match self {
            Self::Tags => page.tags,
            Self::Catalog => page.repositories,
        }
        .unwrap_or_default())
    }
}

/// The target of the `rel="next"` link among `Link` headers (RFC 8288), if there is one.
fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(LINK)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(parse_next_link)
}

fn parse_next_link(header: &str) -> Option<String> {
    let mut rest = header;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        let (target, after) = rest.strip_prefix('<')?.split_once('>')?;
        rest = after;
        let mut next = false;
        while let Some(param) = rest.trim_start().strip_prefix(';') {
            let (name, after_name) = take_token(param.trim_start());
            rest = after_name;
            let Some(value_text) = after_name.trim_start().strip_prefix('=') else {
                continue;
            };
            let (value, after_value) = take_value(value_text.trim_start())?;
            rest = after_value;
            if name.eq_ignore_ascii_case("rel")
                && value
                    .split_whitespace()
                    .any(|relation| relation.eq_ignore_ascii_case("next"))
            {
                next = true;
            }
        }
        if next {
            return Some(target.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers() {
        assert_eq!(
            parse_next_link(r#"</v2/_catalog?last=b&n=2>; rel="next""#).as_deref(),
            Some("/v2/_catalog?last=b&n=2")
        );
        assert_eq!(
            parse_next_link("<https://r.example.com/v2/a/tags/list?n=1&last=x>;rel=next")
                .as_deref(),
            Some("https://r.example.com/v2/a/tags/list?n=1&last=x")
        );
        assert_eq!(
            parse_next_link(r#"</first>; rel="prev", </second>; title="a;b"; rel="next last""#)
                .as_deref(),
            Some("/second")
        );
        for none in [
            "",
            "garbage",
            r#"</x>; rel="prev""#,
            "</x>",
            "<unterminated; rel=next",
        ] {
            assert_eq!(parse_next_link(none), None, "{none:?}");
        }
    }
}
