//! Project storage quotas as the management API shows them: limits set by system
//! administrators, usage read from the metadata store that keeps it (see
//! [`berth_core::quota`]), and the project summary that reports both.

use std::sync::Arc;

use berth_core::accounts::{Project, ProjectRole};
use berth_core::quota::{Quota, QuotaStore};
use berth_core::{ErrorCode, RegistryError, Result};

use crate::accounts::Accounts;
use crate::permission::{Caller, forbidden};

/// What `GET /projects/{name}/summary` reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProjectSummary {
    pub repositories: usize,
    /// Members per role, in [`ProjectRole::ALL`] order.
    pub members: [usize; 5],
    /// `None` when this deployment keeps no quotas.
    pub quota: Option<Quota>,
}

impl ProjectSummary {
    pub fn members_with(&self, role: ProjectRole) -> usize {
        ProjectRole::ALL
            .iter()
            .position(|r| *r == role)
            .map_or(0, |at| self.members[at])
    }
}

impl Accounts {
    /// Keeps project storage limits and usage in `quotas`.
    pub fn with_quotas(mut self, quotas: Arc<dyn QuotaStore>) -> Self {
        self.quotas = Some(quotas);
        self
    }

    fn quota_store(&self) -> Result<&dyn QuotaStore> {
        self.quotas.as_deref().ok_or_else(|| {
            RegistryError::new(
                ErrorCode::Unsupported,
                "this deployment keeps no storage quotas",
            )
        })
    }

    /// Refuses a storage limit from a caller who may not set one: only system
    /// administrators do (`None`, no limit, is what every project starts with).
    pub fn check_limit_change(&self, caller: &Caller, limit: Option<u64>) -> Result<()> {
        if limit.is_some() && !caller.is_admin() {
            return Err(forbidden(
                "only system administrators set a project's storage_limit",
            ));
        }
        Ok(())
    }

    /// Sets a project's storage limit (`None`: no limit). System administrators only.
    pub async fn set_storage_limit(
        &self,
        caller: &Caller,
        project: &str,
        limit: Option<u64>,
    ) -> Result<()> {
        if !caller.is_admin() {
            return Err(forbidden(
                "only system administrators set a project's storage_limit",
            ));
        }
        self.quota_store()?.set_limit(project, limit).await
    }

    /// The project's limit and usage.
    pub async fn project_quota(&self, project: &str) -> Result<Quota> {
        self.quota_store()?.quota(project).await
    }

    /// A page of projects with their quotas, in name order (system administrators).
    pub async fn quotas(&self, page: usize, size: usize) -> Result<(Vec<(Project, Quota)>, usize)> {
        let store = self.quota_store()?;
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let batch = self.accounts.projects(after.as_deref(), 100).await?;
            after = batch.last().map(|p| p.name.clone());
            let done = batch.len() < 100;
            all.extend(batch);
            if done {
                break;
            }
        }
        let total = all.len();
        let mut listed = Vec::new();
        for project in all
            .into_iter()
            .skip(page.saturating_sub(1) * size)
            .take(size)
        {
            let quota = store.quota(&project.name).await?;
            listed.push((project, quota));
        }
        Ok((listed, total))
    }

    /// The project's repository and member counts and its quota (the edge has checked the
    /// caller may read the project).
    pub async fn project_summary(&self, project: &str) -> Result<ProjectSummary> {
        let repositories = self.project_repositories(project).await?.len();
        let mut members = [0; 5];
        for member in self.accounts.members(project).await? {
            if let Some(at) = ProjectRole::ALL.iter().position(|r| *r == member.role) {
                members[at] += 1;
            }
        }
        let quota = match &self.quotas {
            Some(store) => Some(store.quota(project).await?),
            None => None,
        };
        Ok(ProjectSummary {
            repositories,
            members,
            quota,
        })
    }
}
