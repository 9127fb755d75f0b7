//! What a policy keeps of one repository, as Harbor decides it: each enabled rule that
//! covers the repository picks artifacts with its tag selectors (in order, each from what
//! the one before picked) and retains some of them by its template; an artifact is retained
//! when any rule retains it (the `or` algorithm), and every other artifact of a covered
//! repository is deleted, including those no selector picked. A repository no rule covers
//! is left alone.

use std::cmp::Reverse;

use crate::digest::Digest;
use crate::error::{ErrorCode, RegistryError, Result};
use crate::glob::Pattern;
use crate::retention::{MAX_PARAM, MAX_RULES, RetentionRule, RuleTemplate, Selector};

const DAY_MS: u64 = 86_400_000;

/// One artifact of a repository as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub digest: Digest,
    pub tags: Vec<String>,
    /// Unix milliseconds of the last push (0: unknown).
    pub pushed_ms: u64,
    /// Unix milliseconds of the last pull (0: never pulled).
    pub pulled_ms: u64,
}

impl Candidate {
    fn picked_by(&self, selector: &Selector, pattern: &Pattern) -> bool {
        if self.tags.is_empty() {
            // An untagged artifact: picked by a matching selector that asks for untagged
            // ones, and by an excluding selector that does not.
            return selector.untagged != selector.decoration.excludes();
        }
        // `pattern` already turns an excluding selector's match around: any tag that
        // passes picks the artifact.
        self.tags.iter().any(|tag| pattern.passes(tag))
    }
}

fn bad_request(message: String) -> RegistryError {
    RegistryError::new(ErrorCode::BadRequest, message)
}

fn pattern_of(selector: &Selector) -> Result<Pattern> {
    Pattern::new(&selector.pattern, selector.decoration.excludes())
}

/// Checks a policy's rules, with the error a person can act on.
pub fn validate(rules: &[RetentionRule]) -> Result<()> {
    if rules.len() > MAX_RULES {
        return Err(bad_request(format!(
            "a policy holds at most {MAX_RULES} rules"
        )));
    }
    for (number, rule) in rules.iter().enumerate() {
        let place = format!("rule {number} ({})", rule.template.name());
        if rule.template.unit().is_some() && rule.param > MAX_PARAM {
            return Err(bad_request(format!(
                "{place}: {} must be from 0 to {MAX_PARAM}",
                rule.template.name()
            )));
        }
        if rule.tag_selectors.is_empty() {
            return Err(bad_request(format!(
                "{place} needs a tag selector (\"matches\" \"**\" picks every tag)"
            )));
        }
        for selector in &rule.tag_selectors {
            if selector.decoration.for_repositories() {
                return Err(bad_request(format!(
                    "{place}: a tag selector's decoration is \"matches\" or \"excludes\", not {:?}",
                    selector.decoration.as_str()
                )));
            }
            pattern_of(selector).map_err(|e| bad_request(format!("{place}: {}", e.message())))?;
        }
        for selector in &rule.repository_selectors {
            if !selector.decoration.for_repositories() {
                return Err(bad_request(format!(
                    "{place}: a repository selector's decoration is \"repoMatches\" or \
                     \"repoExcludes\", not {:?}",
                    selector.decoration.as_str()
                )));
            }
            pattern_of(selector).map_err(|e| bad_request(format!("{place}: {}", e.message())))?;
        }
    }
    for (number, rule) in rules.iter().enumerate() {
        if let Some(same) = rules[..number].iter().position(|other| other == rule) {
            return Err(RegistryError::new(
                ErrorCode::Conflict,
                format!("rule {number} is the same as rule {same}"),
            ));
        }
    }
    Ok(())
}

/// Whether `rule` is enabled and covers the repository `name` (without the project, as
/// Harbor matches it).
pub fn covers(rule: &RetentionRule, name: &str) -> bool {
    !rule.disabled
        && rule
            .repository_selectors
            .iter()
            .all(|selector| pattern_of(selector).is_ok_and(|pattern| pattern.passes(name)))
}

/// The indices of `candidates` that `rule`'s tag selectors pick.
fn picked(rule: &RetentionRule, candidates: &[Candidate]) -> Vec<usize> {
    let mut chosen: Vec<usize> = (0..candidates.len()).collect();
    for selector in &rule.tag_selectors {
        let Ok(pattern) = pattern_of(selector) else {
            return Vec::new();
        };
        chosen.retain(|&index| candidates[index].picked_by(selector, &pattern));
    }
    chosen
}

/// The indices of `candidates` that `rule` retains, at `now_ms`.
pub fn retained_by(rule: &RetentionRule, candidates: &[Candidate], now_ms: u64) -> Vec<usize> {
    let mut chosen = picked(rule, candidates);
    let count = usize::try_from(rule.param).unwrap_or(usize::MAX);
    let since = now_ms.saturating_sub(rule.param.saturating_mul(DAY_MS));
    // Ties go to the digest, so that a run is repeatable.
    let newest = |chosen: &mut Vec<usize>, time: fn(&Candidate) -> u64| {
        chosen.sort_by_key(|&index| {
            let candidate = &candidates[index];
            (
                Reverse(time(candidate)),
                candidate.digest.as_str().to_owned(),
            )
        });
        chosen.truncate(count);
    };
    match rule.template {
        RuleTemplate::LatestPushed => newest(&mut chosen, |c| c.pushed_ms),
        RuleTemplate::LatestPulled => newest(&mut chosen, |c| c.pulled_ms),
        RuleTemplate::PushedWithinDays => chosen.retain(|&i| candidates[i].pushed_ms >= since),
        RuleTemplate::PulledWithinDays => {
            chosen.retain(|&i| candidates[i].pulled_ms > 0 && candidates[i].pulled_ms >= since);
        }
        RuleTemplate::Always => {}
    }
    chosen
}

/// What `rules` make of the repository `name` (without the project): `None` when no enabled
/// rule covers it (nothing is touched); otherwise, for each candidate, whether it is
/// retained.
pub fn decide(
    rules: &[RetentionRule],
    name: &str,
    candidates: &[Candidate],
    now_ms: u64,
) -> Option<Vec<bool>> {
    let covering: Vec<&RetentionRule> = rules.iter().filter(|rule| covers(rule, name)).collect();
    if covering.is_empty() {
        return None;
    }
    let mut retained = vec![false; candidates.len()];
    for rule in covering {
        for index in retained_by(rule, candidates, now_ms) {
            retained[index] = true;
        }
    }
    Some(retained)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;
    use crate::retention::Decoration;

    const NOW: u64 = 1_000 * DAY_MS;

    fn candidate(
        seed: &str,
        tags: &[&str],
        pushed_days_ago: u64,
        pulled: Option<u64>,
    ) -> Candidate {
        Candidate {
            digest: Digest::of(Algorithm::Sha256, seed.as_bytes()),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            pushed_ms: NOW - pushed_days_ago * DAY_MS,
            pulled_ms: pulled.map_or(0, |days| NOW - days * DAY_MS),
        }
    }

    fn tags(pattern: &str) -> Selector {
        Selector {
            decoration: Decoration::Matches,
            pattern: pattern.to_owned(),
            untagged: false,
        }
    }

    fn rule(template: RuleTemplate, param: u64, selectors: Vec<Selector>) -> RetentionRule {
        RetentionRule {
            disabled: false,
            priority: 0,
            template,
            param,
            tag_selectors: selectors,
            repository_selectors: Vec::new(),
        }
    }

    /// The first tag of each retained candidate, in candidate order.
    fn kept(rules: &[RetentionRule], name: &str, candidates: &[Candidate]) -> Vec<String> {
        let decided = decide(rules, name, candidates, NOW).expect("covered");
        candidates
            .iter()
            .zip(decided)
            .filter(|(_, keep)| *keep)
            .map(|(c, _)| {
                c.tags
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "<untagged>".into())
            })
            .collect()
    }

    fn five() -> Vec<Candidate> {
        vec![
            candidate("a", &["v1"], 50, Some(1)),
            candidate("b", &["v2"], 40, None),
            candidate("c", &["v3"], 30, Some(20)),
            candidate("d", &["v4", "latest"], 2, Some(3)),
            candidate("e", &["dev-1"], 1, None),
        ]
    }

    #[test]
    fn latest_pushed_keeps_the_n_most_recently_pushed() {
        let rules = [rule(RuleTemplate::LatestPushed, 2, vec![tags("**")])];
        assert_eq!(kept(&rules, "app", &five()), ["v4", "dev-1"]);
    }

    #[test]
    fn latest_pulled_keeps_the_n_most_recently_pulled() {
        let rules = [rule(RuleTemplate::LatestPulled, 2, vec![tags("**")])];
        assert_eq!(kept(&rules, "app", &five()), ["v1", "v4"]);
    }

    #[test]
    fn days_since_push_and_pull_count_back_from_now() {
        let pushed = [rule(RuleTemplate::PushedWithinDays, 30, vec![tags("**")])];
        assert_eq!(kept(&pushed, "app", &five()), ["v3", "v4", "dev-1"]);
        let pulled = [rule(RuleTemplate::PulledWithinDays, 5, vec![tags("**")])];
        assert_eq!(kept(&pulled, "app", &five()), ["v1", "v4"]);
    }

    #[test]
    fn always_keeps_what_its_selectors_pick() {
        let rules = [rule(RuleTemplate::Always, 0, vec![tags("v*")])];
        assert_eq!(kept(&rules, "app", &five()), ["v1", "v2", "v3", "v4"]);
    }

    #[test]
    fn rules_are_ored_and_the_rest_is_deleted() {
        let rules = [
            rule(RuleTemplate::LatestPushed, 1, vec![tags("v*")]),
            rule(RuleTemplate::Always, 0, vec![tags("dev-*")]),
        ];
        // v4 is the newest v*, dev-1 is always kept; v1..v3 go.
        assert_eq!(kept(&rules, "app", &five()), ["v4", "dev-1"]);
    }

    #[test]
    fn an_artifact_is_picked_when_any_of_its_tags_matches() {
        let rules = [rule(RuleTemplate::Always, 0, vec![tags("latest")])];
        assert_eq!(kept(&rules, "app", &five()), ["v4"]);
    }

    #[test]
    fn excludes_picks_artifacts_with_a_tag_that_does_not_match() {
        let exclude = Selector {
            decoration: Decoration::Excludes,
            pattern: "v*".into(),
            untagged: false,
        };
        let rules = [rule(RuleTemplate::Always, 0, vec![exclude])];
        // v4 also carries `latest`, which does not match v*.
        assert_eq!(kept(&rules, "app", &five()), ["v4", "dev-1"]);
    }

    #[test]
    fn selectors_apply_in_order() {
        let exclude = Selector {
            decoration: Decoration::Excludes,
            pattern: "v1".into(),
            untagged: false,
        };
        let rules = [rule(RuleTemplate::Always, 0, vec![tags("v*"), exclude])];
        assert_eq!(kept(&rules, "app", &five()), ["v2", "v3", "v4"]);
    }

    #[test]
    fn untagged_artifacts_are_picked_only_when_asked() {
        let mut candidates = five();
        candidates.push(candidate("u", &[], 0, None));
        let plain = [rule(RuleTemplate::Always, 0, vec![tags("**")])];
        assert_eq!(
            kept(&plain, "app", &candidates).len(),
            5,
            "untagged deleted"
        );
        let mut with_untagged = tags("**");
        with_untagged.untagged = true;
        let asked = [rule(RuleTemplate::Always, 0, vec![with_untagged])];
        assert_eq!(
            kept(&asked, "app", &candidates).last().map(String::as_str),
            Some("<untagged>")
        );
        // An excluding selector picks untagged artifacts unless told otherwise.
        let exclude = Selector {
            decoration: Decoration::Excludes,
            pattern: "**".into(),
            untagged: false,
        };
        let excluding = [rule(RuleTemplate::Always, 0, vec![exclude])];
        assert_eq!(kept(&excluding, "app", &candidates), ["<untagged>"]);
    }

    #[test]
    fn repository_selectors_choose_the_repositories_a_rule_covers() {
        let mut only_web = rule(RuleTemplate::Always, 0, vec![tags("**")]);
        only_web.repository_selectors = vec![Selector {
            decoration: Decoration::RepoMatches,
            pattern: "web/**".into(),
            untagged: false,
        }];
        let mut not_db = rule(RuleTemplate::LatestPushed, 1, vec![tags("**")]);
        not_db.repository_selectors = vec![Selector {
            decoration: Decoration::RepoExcludes,
            pattern: "db".into(),
            untagged: false,
        }];
        let rules = [only_web, not_db];
        assert_eq!(kept(&rules, "web/front", &five()).len(), 5);
        assert_eq!(kept(&rules, "api", &five()), ["dev-1"]);
        assert_eq!(decide(&rules, "db", &five(), NOW), None, "untouched");
        let mut disabled = rules.clone();
        disabled[1].disabled = true;
        assert_eq!(decide(&disabled, "api", &five(), NOW), None);
    }

    #[test]
    fn bad_rules_are_refused_with_a_reason() {
        let good = rule(RuleTemplate::LatestPushed, 3, vec![tags("**")]);
        assert!(validate(std::slice::from_ref(&good)).is_ok());
        let mut no_tags = good.clone();
        no_tags.tag_selectors.clear();
        assert!(validate(&[no_tags]).is_err());
        let mut too_many = good.clone();
        too_many.param = MAX_PARAM + 1;
        assert!(validate(&[too_many]).is_err());
        let mut bad_glob = good.clone();
        bad_glob.tag_selectors = vec![tags("[")];
        assert!(validate(&[bad_glob]).is_err());
        let mut wrong_kind = good.clone();
        wrong_kind.repository_selectors = vec![tags("x")];
        assert!(validate(&[wrong_kind]).is_err());
        let twice = validate(&[good.clone(), good.clone()]).expect_err("a conflict");
        assert_eq!(twice.code(), ErrorCode::Conflict);
        assert!(validate(&vec![good; MAX_RULES + 1]).is_err());
    }
}
