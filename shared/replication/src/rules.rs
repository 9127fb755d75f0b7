//! What a policy selects and where it puts it: Harbor's glob filters on repository names and
//! tags, and destination namespace rewriting.
//!
//! Patterns are globs as Harbor writes them (see [`berth_core::glob`]).

use berth_core::glob::{Pattern, passes_all};
use berth_core::replication::{Filter, FilterKind, Policy};
use berth_core::{ErrorCode, RegistryError, Result};

/// A policy's filters, compiled.
#[derive(Debug, Clone)]
pub struct Selector {
    names: Vec<Pattern>,
    tags: Vec<Pattern>,
}

impl Selector {
    pub fn new(filters: &[Filter]) -> Result<Self> {
        let mut selector = Self {
            names: Vec::new(),
            tags: Vec::new(),
        };
        for filter in filters {
            if filter.pattern.is_empty() {
                continue;
            }
            let pattern = Pattern::new(&filter.pattern, filter.exclude)?;
            match filter.kind {
                FilterKind::Name => selector.names.push(pattern),
                FilterKind::Tag => selector.tags.push(pattern),
            }
        }
        Ok(selector)
    }

    /// Whether the repository (project included) passes every name filter.
    pub fn repository(&self, name: &str) -> bool {
        passes_all(&self.names, name)
    }

    /// Whether the tag passes every tag filter.
    pub fn tag(&self, tag: &str) -> bool {
        passes_all(&self.tags, tag)
    }

    /// Whether the policy filters on tags at all: an artifact known by digest only (a deleted
    /// manifest) is selected by its repository alone when it does not.
    pub fn has_tag_filters(&self) -> bool {
        !self.tags.is_empty()
    }
}

/// Where `repository` lands in the destination under `policy`.
///
/// With a namespace, `dest_namespace_replace_count` says how many leading components it
/// replaces: `-1` all but the last (`a/b/c` → `ns/c`), `0` none (`ns/a/b/c`), `n` the first
/// `n` (`1`: `ns/b/c`), always keeping the last. Without one the name is kept.
pub fn destination_repository(policy: &Policy, repository: &str) -> String {
    rewrite(
        repository,
        &policy.dest_namespace,
        policy.dest_namespace_replace_count,
    )
}

fn rewrite(repository: &str, namespace: &str, replace_count: i8) -> String {
    let namespace = namespace.trim_matches('/');
    if namespace.is_empty() {
        return repository.to_owned();
    }
    let parts: Vec<&str> = repository.split('/').collect();
    let keep_from = match usize::try_from(replace_count) {
        Err(_) => parts.len() - 1,
        Ok(count) => count.min(parts.len() - 1),
    };
    let mut name = namespace.to_owned();
    for part in &parts[keep_from..] {
        name.push('/');
        name.push_str(part);
    }
    name
}

/// Checks a namespace and replace count before a policy is stored.
pub fn check_namespace(namespace: &str, replace_count: i8) -> Result<()> {
    if !(-1..=16).contains(&replace_count) {
        return Err(invalid(format!(
            "dest_namespace_replace_count must be -1 (flatten all), 0 (none) or the number of \
             components to replace, not {replace_count}"
        )));
    }
    let namespace = namespace.trim_matches('/');
    if namespace.is_empty() {
        return Ok(());
    }
    // A namespace must itself be a valid repository name.
    namespace
        .parse::<berth_core::RepositoryName>()
        .map(|_| ())
        .map_err(|e| invalid(format!("dest_namespace {namespace:?}: {}", e.message())))
}

fn invalid(message: String) -> RegistryError {
    RegistryError::new(ErrorCode::BadRequest, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(kind: FilterKind, pattern: &str, exclude: bool) -> Filter {
        Filter {
            kind,
            pattern: pattern.into(),
            exclude,
        }
    }

    #[test]
    fn globs_match_as_harbor_does() {
        let selector = Selector::new(&[
            filter(FilterKind::Name, "library/**", false),
            filter(FilterKind::Tag, "v*", false),
        ])
        .expect("valid");
        assert!(selector.repository("library/app"));
        assert!(selector.repository("library/team/app"));
        assert!(!selector.repository("other/app"));
        assert!(selector.tag("v1"));
        assert!(selector.tag("v1.2.3"));
        assert!(!selector.tag("latest"));
        assert!(!selector.tag("1v"));

        let one_level = Selector::new(&[filter(FilterKind::Name, "library/*", false)]).expect("ok");
        assert!(one_level.repository("library/app"));
        assert!(
            !one_level.repository("library/team/app"),
            "* stays within a component"
        );

        let alternatives =
            Selector::new(&[filter(FilterKind::Tag, "{v1,v2}.?", false)]).expect("valid");
        assert!(alternatives.tag("v1.0") && alternatives.tag("v2.9"));
        assert!(!alternatives.tag("v3.0") && !alternatives.tag("v1.10"));

        let classes = Selector::new(&[filter(FilterKind::Tag, "[0-9]*", false)]).expect("valid");
        assert!(classes.tag("1.0") && !classes.tag("latest"));
    }

    #[test]
    fn excludes_and_empty_patterns() {
        let selector = Selector::new(&[
            filter(FilterKind::Tag, "*-rc*", true),
            filter(FilterKind::Name, "", false),
        ])
        .expect("valid");
        assert!(selector.tag("v1"));
        assert!(!selector.tag("v1-rc1"));
        assert!(selector.repository("anything/at/all"));
        assert!(!selector.has_tag_filters() || selector.tag("latest"));
    }

    #[test]
    fn namespaces_rewrite_like_harbor() {
        assert_eq!(rewrite("a/b/c", "", 1), "a/b/c");
        assert_eq!(rewrite("a/b/c", "ns", -1), "ns/c");
        assert_eq!(rewrite("a/b/c", "ns", 0), "ns/a/b/c");
        assert_eq!(rewrite("a/b/c", "ns", 1), "ns/b/c");
        assert_eq!(rewrite("a/b/c", "ns", 2), "ns/c");
        assert_eq!(
            rewrite("a/b/c", "ns", 5),
            "ns/c",
            "the last component stays"
        );
        assert_eq!(rewrite("library/app", "mirror/", 1), "mirror/app");
        assert!(check_namespace("Bad Name", 1).is_err());
        assert!(check_namespace("mirror/team", 1).is_ok());
        assert!(check_namespace("mirror", -2).is_err());
    }
}
