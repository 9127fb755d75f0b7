//! Name and tag patterns as Harbor writes them, shared by replication filters and project
//! policies: `*` matches within one path component, `**` across components, `?` one
//! character, `{a,b}` alternatives, `[abc]` classes. An empty pattern matches everything.

use globset::{GlobBuilder, GlobMatcher};

use crate::error::{ErrorCode, RegistryError, Result};

/// The longest pattern accepted.
pub const MAX_PATTERN_LEN: usize = 256;

/// A compiled pattern that selects or, when `exclude`, rejects what it matches.
#[derive(Debug, Clone)]
pub struct Pattern {
    matcher: Option<GlobMatcher>,
    exclude: bool,
}

impl Pattern {
    /// Compiles `pattern`; a bad one is refused with the reason.
    pub fn new(pattern: &str, exclude: bool) -> Result<Self> {
        let matcher = if pattern.is_empty() {
            None
        } else {
            Some(compile(pattern)?)
        };
        Ok(Self { matcher, exclude })
    }

    /// Whether `text` passes: it matches an including pattern, or does not match an
    /// excluding one.
    pub fn passes(&self, text: &str) -> bool {
        self.matcher.as_ref().is_none_or(|m| m.is_match(text)) != self.exclude
    }
}

/// Whether `text` passes every pattern (no patterns: it passes).
pub fn passes_all(patterns: &[Pattern], text: &str) -> bool {
    patterns.iter().all(|pattern| pattern.passes(text))
}

/// Checks a pattern, with the error a person can act on.
pub fn compile(pattern: &str) -> Result<GlobMatcher> {
    if pattern.len() > MAX_PATTERN_LEN {
        return Err(invalid(format!(
            "pattern is over {MAX_PATTERN_LEN} characters"
        )));
    }
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map(|glob| glob.compile_matcher())
        .map_err(|e| invalid(format!("pattern {pattern:?} is not a valid glob: {e}")))
}

fn invalid(message: String) -> RegistryError {
    RegistryError::new(ErrorCode::BadRequest, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_harbor_writes_them() {
        let within = Pattern::new("library/*", false).expect("valid");
        assert!(within.passes("library/app"));
        assert!(!within.passes("library/team/app"), "* stays in a component");
        let across = Pattern::new("library/**", false).expect("valid");
        assert!(across.passes("library/team/app"));
        let excluded = Pattern::new("*-rc*", true).expect("valid");
        assert!(excluded.passes("v1") && !excluded.passes("v1-rc1"));
        let empty = Pattern::new("", false).expect("valid");
        assert!(empty.passes("anything/at/all"));
        let alternatives = Pattern::new("{v1,v2}.?", false).expect("valid");
        assert!(passes_all(std::slice::from_ref(&alternatives), "v2.9"));
        assert!(!passes_all(&[alternatives, excluded], "v1.10"));
    }

    #[test]
    fn bad_patterns_are_refused_with_the_reason() {
        let error = compile("v[1").expect_err("unclosed class");
        assert!(error.message().contains("v[1"), "{}", error.message());
        assert!(compile(&"a".repeat(300)).is_err());
    }
}
