//! Tag immutability, as Harbor has it: a project's rules, each selecting repositories (by
//! their name within the project: `app` for `team/app`) and tags with doublestar patterns. A
//! tag that exists and that an enabled rule selects may not be moved to another manifest nor
//! deleted, and neither may the manifest it points at nor its repository. Pushing a new tag
//! that a rule selects is allowed (it is immutable from then on), and so is pushing the
//! manifest a tag already points at under it again.
//!
//! The rules live in their [`Project`](crate::accounts::Project) record. [`immutable`] answers
//! for one tag with no I/O (retention asks it before deleting); [`TagGuard`] enforces the
//! rules for the registry's and the management API's use cases.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::accounts::AccountStore;
use crate::digest::Digest;
use crate::error::{ErrorCode, RegistryError, Result};
use crate::glob::{Pattern, passes_all};
use crate::names::{RepositoryName, Tag};
use crate::ports::{MetadataStore, all_tag_targets};

/// The most rules one project holds.
pub const MAX_RULES: usize = 100;
/// The most selectors of one kind (repositories, tags) a rule holds.
pub const MAX_SELECTORS: usize = 16;

/// One doublestar pattern of a rule, selecting what it matches or, when `exclude`, what it
/// does not match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selector {
    pub pattern: String,
    #[serde(default)]
    pub exclude: bool,
}

impl Selector {
    pub fn matches(pattern: &str) -> Self {
        Self {
            pattern: pattern.to_owned(),
            exclude: false,
        }
    }

    pub fn excludes(pattern: &str) -> Self {
        Self {
            pattern: pattern.to_owned(),
            exclude: true,
        }
    }
}

/// A rule: the tags it makes immutable are those every tag selector selects, in the
/// repositories every repository selector selects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImmutableRule {
    /// Unique in its project, never reused.
    pub id: u64,
    /// Kept for Harbor's clients; it orders nothing (any enabled rule suffices).
    #[serde(default)]
    pub priority: i64,
    #[serde(default)]
    pub disabled: bool,
    pub repositories: Vec<Selector>,
    pub tags: Vec<Selector>,
    /// Harbor's free-form `params`, kept as given.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub params: serde_json::Map<String, serde_json::Value>,
}

impl ImmutableRule {
    /// Checks what a person wrote: at least one selector of each kind, and patterns that are
    /// valid globs.
    pub fn check(&self) -> Result<()> {
        for (kind, selectors) in [("repository", &self.repositories), ("tag", &self.tags)] {
            if selectors.is_empty() {
                return Err(bad_rule(format!(
                    "an immutability rule needs at least one {kind} selector"
                )));
            }
            if selectors.len() > MAX_SELECTORS {
                return Err(bad_rule(format!(
                    "an immutability rule holds at most {MAX_SELECTORS} {kind} selectors"
                )));
            }
            for selector in selectors {
                if selector.pattern.is_empty() {
                    return Err(bad_rule(format!(
                        "a {kind} selector's pattern is empty: write ** to select every {kind}"
                    )));
                }
                crate::glob::compile(&selector.pattern)
                    .map_err(|error| bad_rule(format!("{kind} selector: {}", error.message())))?;
            }
        }
        Ok(())
    }

    /// Whether two rules select the same: the same selectors, whatever their ids and state.
    fn same_selectors(&self, other: &Self) -> bool {
        self.repositories == other.repositories && self.tags == other.tags
    }

    /// The rule in words, for error messages: `rule 3 (repositories matching "**"; tags
    /// matching "v*", excluding "*-dev")`.
    pub fn describe(&self) -> String {
        let list = |selectors: &[Selector]| {
            selectors
                .iter()
                .map(|s| {
                    let verb = if s.exclude { "excluding" } else { "matching" };
                    format!("{verb} {:?}", s.pattern)
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "rule {} (repositories {}; tags {})",
            self.id,
            list(&self.repositories),
            list(&self.tags)
        )
    }
}

fn bad_rule(message: String) -> RegistryError {
    RegistryError::new(ErrorCode::BadRequest, message)
}

fn rule_not_found(id: u64) -> RegistryError {
    RegistryError::new(
        ErrorCode::NotFound,
        format!("immutability rule {id} not found"),
    )
}

/// A project's rules, in the order they were made, and the last id handed out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImmutableRules {
    #[serde(default)]
    pub rules: Vec<ImmutableRule>,
    #[serde(default)]
    pub last_id: u64,
}

impl ImmutableRules {
    /// Whether no rule was ever made (the project record then carries nothing for them).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.last_id == 0
    }

    /// Adds `rule` (its id is ignored) under the next id, which it returns. Refuses an invalid
    /// rule, one that selects what another rule selects, and more than [`MAX_RULES`].
    pub fn add(&mut self, mut rule: ImmutableRule) -> Result<u64> {
        rule.check()?;
        if self.rules.len() >= MAX_RULES {
            return Err(bad_rule(format!(
                "a project holds at most {MAX_RULES} immutability rules"
            )));
        }
        self.refuse_duplicate(&rule, None)?;
        self.last_id += 1;
        rule.id = self.last_id;
        self.rules.push(rule);
        Ok(self.last_id)
    }

    /// Replaces rule `id` with `rule` (keeping the id).
    pub fn replace(&mut self, id: u64, mut rule: ImmutableRule) -> Result<()> {
        let index = self
            .rules
            .iter()
            .position(|existing| existing.id == id)
            .ok_or_else(|| rule_not_found(id))?;
        rule.check()?;
        self.refuse_duplicate(&rule, Some(id))?;
        rule.id = id;
        self.rules[index] = rule;
        Ok(())
    }

    /// Removes rule `id` and returns it.
    pub fn remove(&mut self, id: u64) -> Result<ImmutableRule> {
        let index = self
            .rules
            .iter()
            .position(|rule| rule.id == id)
            .ok_or_else(|| rule_not_found(id))?;
        Ok(self.rules.remove(index))
    }

    /// Rule `id`.
    pub fn get(&self, id: u64) -> Result<&ImmutableRule> {
        self.rules
            .iter()
            .find(|rule| rule.id == id)
            .ok_or_else(|| rule_not_found(id))
    }

    fn refuse_duplicate(&self, rule: &ImmutableRule, except: Option<u64>) -> Result<()> {
        match self
            .rules
            .iter()
            .find(|other| Some(other.id) != except && other.same_selectors(rule))
        {
            Some(other) => Err(RegistryError::new(
                ErrorCode::Conflict,
                format!(
                    "immutability rule {} already selects these repositories and tags",
                    other.id
                ),
            )),
            None => Ok(()),
        }
    }
}

/// The enabled rules compiled once, to ask about many tags.
#[derive(Debug)]
pub struct Matcher<'a> {
    rules: Vec<Compiled<'a>>,
}

#[derive(Debug)]
struct Compiled<'a> {
    rule: &'a ImmutableRule,
    repositories: Vec<Pattern>,
    tags: Vec<Pattern>,
}

fn compile_all(selectors: &[Selector]) -> Result<Vec<Pattern>> {
    selectors
        .iter()
        .map(|selector| Pattern::new(&selector.pattern, selector.exclude))
        .collect()
}

impl<'a> Matcher<'a> {
    /// The enabled ones of `rules`. A stored pattern that no longer compiles is an error,
    /// never a rule silently dropped.
    pub fn new(rules: &'a [ImmutableRule]) -> Result<Self> {
        let rules = rules
            .iter()
            .filter(|rule| !rule.disabled)
            .map(|rule| {
                Ok(Compiled {
                    rule,
                    repositories: compile_all(&rule.repositories)?,
                    tags: compile_all(&rule.tags)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self { rules })
    }

    /// Only the rules that select `repository`: what to ask about its tags.
    pub fn for_repository(mut self, repository: &RepositoryName) -> Self {
        let name = repository.within_project();
        self.rules
            .retain(|compiled| passes_all(&compiled.repositories, name));
        self
    }

    /// Whether no rule is left to select anything.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The first rule that makes `tag` of `repository` immutable.
    pub fn rule_for(&self, repository: &RepositoryName, tag: &str) -> Option<&'a ImmutableRule> {
        let name = repository.within_project();
        self.rules
            .iter()
            .find(|c| passes_all(&c.repositories, name) && passes_all(&c.tags, tag))
            .map(|compiled| compiled.rule)
    }
}

/// The first enabled rule of `rules` (a project's) that makes `tag` of `repository`
/// immutable, if any. Pure: retention asks it before it deletes a tag.
pub fn immutable<'a>(
    rules: &'a [ImmutableRule],
    repository: &RepositoryName,
    tag: &str,
) -> Result<Option<&'a ImmutableRule>> {
    Ok(Matcher::new(rules)?.rule_for(repository, tag))
}

/// The refusal of a change to an immutable tag.
fn refusal(
    rule: &ImmutableRule,
    repository: &RepositoryName,
    tag: &str,
    what: &str,
) -> RegistryError {
    RegistryError::new(
        ErrorCode::PreconditionFailed,
        format!(
            "the tag {repository}:{tag} is configured as immutable by {}, {what}",
            rule.describe()
        ),
    )
}

/// Enforces the rules of a repository's project on the use cases that move or delete tags.
/// Each check reads the project record once, and reads tags only when an enabled rule
/// selects the repository. A check and the change it guards are two steps: a rule made in
/// between is not seen by that change.
#[derive(Clone)]
pub struct TagGuard {
    accounts: Arc<dyn AccountStore>,
    meta: Arc<dyn MetadataStore>,
}

impl std::fmt::Debug for TagGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TagGuard").finish_non_exhaustive()
    }
}

impl TagGuard {
    pub fn new(accounts: Arc<dyn AccountStore>, meta: Arc<dyn MetadataStore>) -> Self {
        Self { accounts, meta }
    }

    /// The enabled rules of `repository`'s project (none when it has no project).
    async fn rules(&self, repository: &RepositoryName) -> Result<Vec<ImmutableRule>> {
        Ok(self
            .accounts
            .project(repository.project())
            .await?
            .map(|project| project.immutable_tags.rules)
            .unwrap_or_default()
            .into_iter()
            .filter(|rule| !rule.disabled)
            .collect())
    }

    /// Refuses to point an existing immutable `tag` at another manifest than `digest`.
    pub async fn check_tag_move(
        &self,
        repository: &RepositoryName,
        tag: &Tag,
        digest: &Digest,
    ) -> Result<()> {
        let rules = self.rules(repository).await?;
        if rules.is_empty() {
            return Ok(());
        }
        let Some(rule) = immutable(&rules, repository, tag.as_str())? else {
            return Ok(());
        };
        match self.meta.tagged_manifest(repository, tag).await? {
            Some(current) if &current.digest != digest => Err(refusal(
                rule,
                repository,
                tag.as_str(),
                &format!("cannot be moved from {} to {digest}", current.digest),
            )),
            _ => Ok(()),
        }
    }

    /// Refuses to delete an existing immutable `tag`.
    pub async fn check_tag_delete(&self, repository: &RepositoryName, tag: &Tag) -> Result<()> {
        let rules = self.rules(repository).await?;
        if rules.is_empty() {
            return Ok(());
        }
        let Some(rule) = immutable(&rules, repository, tag.as_str())? else {
            return Ok(());
        };
        if self.meta.tagged_manifest(repository, tag).await?.is_some() {
            return Err(refusal(rule, repository, tag.as_str(), "cannot be deleted"));
        }
        Ok(())
    }

    /// Refuses to delete manifest `digest` while an immutable tag points at it.
    pub async fn check_manifest_delete(
        &self,
        repository: &RepositoryName,
        digest: &Digest,
    ) -> Result<()> {
        self.check_tags(repository, Some(digest), "its artifact cannot be deleted")
            .await
    }

    /// Refuses to delete a repository that holds an immutable tag.
    pub async fn check_repository_delete(&self, repository: &RepositoryName) -> Result<()> {
        self.check_tags(repository, None, "its repository cannot be deleted")
            .await
    }

    /// Refuses when a tag of `repository` (pointing at `digest`, when given) is immutable.
    async fn check_tags(
        &self,
        repository: &RepositoryName,
        digest: Option<&Digest>,
        what: &str,
    ) -> Result<()> {
        let rules = self.rules(repository).await?;
        let matcher = Matcher::new(&rules)?.for_repository(repository);
        if matcher.is_empty() {
            return Ok(());
        }
        for (tag, target) in all_tag_targets(self.meta.as_ref(), repository).await? {
            if digest.is_some_and(|digest| digest != &target) {
                continue;
            }
            if let Some(rule) = matcher.rule_for(repository, &tag) {
                return Err(refusal(rule, repository, &tag, what));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: u64, repositories: Vec<Selector>, tags: Vec<Selector>) -> ImmutableRule {
        ImmutableRule {
            id,
            priority: 0,
            disabled: false,
            repositories,
            tags,
            params: serde_json::Map::new(),
        }
    }

    fn repo(name: &str) -> RepositoryName {
        name.parse().expect("a valid name")
    }

    fn id_for(rules: &[ImmutableRule], repository: &str, tag: &str) -> Option<u64> {
        immutable(rules, &repo(repository), tag)
            .expect("valid rules")
            .map(|rule| rule.id)
    }

    #[test]
    fn a_rule_selects_tags_it_matches_in_repositories_it_matches() {
        let rules = [rule(
            1,
            vec![Selector::matches("**")],
            vec![Selector::matches("v*")],
        )];
        assert_eq!(id_for(&rules, "team/app", "v1"), Some(1));
        assert_eq!(id_for(&rules, "team/app", "latest"), None);
        assert_eq!(id_for(&rules, "team/deep/nested/app", "v2.0"), Some(1));
    }

    #[test]
    fn excluding_selectors_select_what_they_do_not_match() {
        let rules = [rule(
            7,
            vec![Selector::excludes("scratch/**")],
            vec![Selector::matches("v*"), Selector::excludes("*-dev")],
        )];
        assert_eq!(id_for(&rules, "team/app", "v1"), Some(7));
        assert_eq!(
            id_for(&rules, "team/app", "v1-dev"),
            None,
            "an excluded tag"
        );
        assert_eq!(
            id_for(&rules, "team/scratch/app", "v1"),
            None,
            "an excluded repository"
        );
        assert_eq!(id_for(&rules, "team/scratchy", "v1"), Some(7));
    }

    #[test]
    fn repositories_are_matched_without_their_project() {
        let rules = [rule(
            2,
            vec![Selector::matches("app")],
            vec![Selector::matches("**")],
        )];
        assert_eq!(id_for(&rules, "team/app", "any"), Some(2));
        assert_eq!(
            id_for(&rules, "app/other", "any"),
            None,
            "the project is not the name"
        );
        let nested = [rule(
            3,
            vec![Selector::matches("tools/*")],
            vec![Selector::matches("**")],
        )];
        assert_eq!(id_for(&nested, "team/tools/cli", "x"), Some(3));
        assert_eq!(
            id_for(&nested, "team/tools/cli/arm", "x"),
            None,
            "* stays in a component"
        );
        assert_eq!(id_for(&nested, "team/cli", "x"), None);
    }

    #[test]
    fn disabled_rules_select_nothing_and_any_enabled_rule_suffices() {
        let mut off = rule(
            1,
            vec![Selector::matches("**")],
            vec![Selector::matches("**")],
        );
        off.disabled = true;
        let release = rule(
            2,
            vec![Selector::matches("app")],
            vec![Selector::matches("release-*")],
        );
        let stable = rule(
            3,
            vec![Selector::matches("**")],
            vec![Selector::matches("stable")],
        );
        let rules = [off, release, stable];
        assert_eq!(id_for(&rules, "team/app", "release-1"), Some(2));
        assert_eq!(id_for(&rules, "team/web", "release-1"), None);
        assert_eq!(id_for(&rules, "team/web", "stable"), Some(3));
        assert_eq!(
            id_for(&rules, "team/web", "latest"),
            None,
            "only the disabled rule"
        );
        assert_eq!(id_for(&[], "team/web", "latest"), None);
    }

    #[test]
    fn a_matcher_narrowed_to_a_repository_keeps_the_rules_that_select_it() {
        let rules = [
            rule(
                1,
                vec![Selector::matches("app")],
                vec![Selector::matches("**")],
            ),
            rule(
                2,
                vec![Selector::matches("web")],
                vec![Selector::matches("**")],
            ),
        ];
        let matcher = Matcher::new(&rules)
            .expect("valid")
            .for_repository(&repo("team/web"));
        assert_eq!(
            matcher.rule_for(&repo("team/web"), "x").map(|r| r.id),
            Some(2)
        );
        let none = Matcher::new(&rules)
            .expect("valid")
            .for_repository(&repo("team/db"));
        assert!(none.is_empty());
    }

    #[test]
    fn rules_get_stable_unique_ids_and_duplicates_are_refused() {
        let mut rules = ImmutableRules::default();
        assert!(rules.is_empty());
        let make = |tag: &str| {
            rule(
                99,
                vec![Selector::matches("**")],
                vec![Selector::matches(tag)],
            )
        };
        assert_eq!(rules.add(make("v*")).expect("added"), 1);
        assert_eq!(rules.add(make("release-*")).expect("added"), 2);
        let duplicate = rules.add(make("v*")).expect_err("the same selectors");
        assert_eq!(duplicate.code(), ErrorCode::Conflict);
        assert_eq!(rules.remove(2).expect("removed").id, 2);
        assert_eq!(
            rules.add(make("stable")).expect("added"),
            3,
            "ids are never reused"
        );
        rules.replace(1, make("v1.*")).expect("replaced");
        assert_eq!(
            rules.get(1).expect("kept").tags,
            vec![Selector::matches("v1.*")]
        );
        let clash = rules
            .replace(1, make("stable"))
            .expect_err("rule 3's selectors");
        assert_eq!(clash.code(), ErrorCode::Conflict);
        assert_eq!(
            rules.replace(9, make("x")).expect_err("no rule 9").code(),
            ErrorCode::NotFound
        );
        assert_eq!(
            rules.remove(9).expect_err("no rule 9").code(),
            ErrorCode::NotFound
        );
    }

    #[test]
    fn invalid_rules_are_refused_with_the_reason() {
        let mut rules = ImmutableRules::default();
        for (bad, expected) in [
            (
                rule(0, vec![], vec![Selector::matches("v*")]),
                "repository selector",
            ),
            (
                rule(0, vec![Selector::matches("**")], vec![]),
                "tag selector",
            ),
            (
                rule(
                    0,
                    vec![Selector::matches("**")],
                    vec![Selector::matches("")],
                ),
                "empty",
            ),
            (
                rule(
                    0,
                    vec![Selector::matches("a[b")],
                    vec![Selector::matches("v*")],
                ),
                "a[b",
            ),
        ] {
            let error = rules.add(bad).expect_err(expected);
            assert_eq!(error.code(), ErrorCode::BadRequest);
            assert!(error.message().contains(expected), "{}", error.message());
        }
        assert!(rules.is_empty());
    }

    #[test]
    fn a_refusal_names_the_rule_its_patterns_and_the_tag() {
        let rule = rule(
            4,
            vec![Selector::matches("**")],
            vec![Selector::matches("v*"), Selector::excludes("*-dev")],
        );
        let error = refusal(&rule, &repo("team/app"), "v1", "cannot be deleted");
        assert_eq!(error.code(), ErrorCode::PreconditionFailed);
        assert_eq!(
            error.message(),
            "the tag team/app:v1 is configured as immutable by rule 4 (repositories matching \
             \"**\"; tags matching \"v*\", excluding \"*-dev\"), cannot be deleted"
        );
    }
}
