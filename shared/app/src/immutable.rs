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
