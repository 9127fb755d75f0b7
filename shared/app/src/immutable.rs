//! The tag immutability use cases of the management API: a project's rules listed, created,
//! changed and deleted, each change published as an account change of the project. The
//! rules live in the project record, so two changes racing on one project may lose one of
//! them (the last write wins); enforcing them is [`berth_core::immutable::TagGuard`]'s.

use berth_core::Result;
use berth_core::accounts::Project;
use berth_core::events::{AccountResource, Operation};
use berth_core::immutable::{ImmutableRule, ImmutableRules, TagGuard};

use crate::accounts::Accounts;
use crate::artifacts::{Listing, PageRequest};
use crate::permission::{Caller, not_found};

impl Accounts {
    /// The guard of the projects' rules over this registry's stores.
    pub(crate) fn tag_guard(&self) -> TagGuard {
        TagGuard::new(self.accounts.clone(), self.metadata.clone())
    }

    async fn rules_project(&self, project: &str) -> Result<Project> {
        self.accounts
            .project(project)
            .await?
            .ok_or_else(|| not_found(&format!("project {project:?}")))
    }

    /// Changes the rules of `project` with `change` and stores the project again.
    async fn change_rules<T>(
        &self,
        project: &str,
        change: impl FnOnce(&mut ImmutableRules) -> Result<T>,
    ) -> Result<T> {
        let mut record = self.rules_project(project).await?;
        let outcome = change(&mut record.immutable_tags)?;
        if !self.accounts.update_project(&record).await? {
            return Err(not_found(&format!("project {project:?}")));
        }
        Ok(outcome)
    }

    fn rule_changed(&self, caller: &Caller, project: &str, id: u64, operation: Operation) {
        self.changed(
            caller,
            AccountResource::ImmutableRule,
            operation,
            format!("{project}/{id}"),
        );
    }

    /// A page of `project`'s rules, in the order they were made.
    pub async fn immutable_rules(
        &self,
        project: &str,
        page: PageRequest,
    ) -> Result<Listing<ImmutableRule>> {
        let rules = self.rules_project(project).await?.immutable_tags.rules;
        Ok(Listing {
            total: rules.len(),
            items: page.slice(rules),
        })
    }

    /// Adds a rule to `project` (its id is the project's next) and returns it.
    pub async fn create_immutable_rule(
        &self,
        caller: &Caller,
        project: &str,
        rule: ImmutableRule,
    ) -> Result<ImmutableRule> {
        let created = self
            .change_rules(project, |rules| {
                let id = rules.add(rule)?;
                rules.get(id).cloned()
            })
            .await?;
        self.rule_changed(caller, project, created.id, Operation::Create);
        Ok(created)
    }

    /// Replaces rule `id` of `project` (enabling or disabling it among the rest).
    pub async fn update_immutable_rule(
        &self,
        caller: &Caller,
        project: &str,
        id: u64,
        rule: ImmutableRule,
    ) -> Result<()> {
        self.change_rules(project, |rules| rules.replace(id, rule))
            .await?;
        self.rule_changed(caller, project, id, Operation::Update);
        Ok(())
    }

    /// Deletes rule `id` of `project`.
    pub async fn delete_immutable_rule(
        &self,
        caller: &Caller,
        project: &str,
        id: u64,
    ) -> Result<()> {
        self.change_rules(project, |rules| rules.remove(id).map(drop))
            .await?;
        self.rule_changed(caller, project, id, Operation::Delete);
        Ok(())
    }
}

/// Retention's question to the projects' rules: an artifact carrying an immutable tag is
/// kept whatever the retention rules say (as in Harbor).
pub struct ProjectRules {
    accounts: std::sync::Arc<dyn berth_core::AccountStore>,
}

impl std::fmt::Debug for ProjectRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectRules").finish_non_exhaustive()
    }
}

impl ProjectRules {
    pub fn new(accounts: std::sync::Arc<dyn berth_core::AccountStore>) -> Self {
        Self { accounts }
    }
}

#[async_trait::async_trait]
impl crate::retention::ImmutabilityCheck for ProjectRules {
    async fn is_immutable(
        &self,
        repository: &berth_core::RepositoryName,
        _digest: &berth_core::Digest,
        tags: &[String],
    ) -> Result<bool> {
        if tags.is_empty() {
            return Ok(false);
        }
        let Some(project) = self.accounts.project(repository.project()).await? else {
            return Ok(false);
        };
        let matcher = berth_core::immutable::Matcher::new(&project.immutable_tags.rules)?
            .for_repository(repository);
        Ok(tags
            .iter()
            .any(|tag| matcher.rule_for(repository, tag).is_some()))
    }
}
