//! Carrying an execution out, one repository a step: the repository's artifacts become
//! candidates (with their push and pull times from the statistics store), the rules decide,
//! and what they do not retain is deleted through the registry (published as manifest
//! deletions, so that audit, webhooks and replication follow and garbage collection later
//! frees the bytes). Each step records the repository's task and the execution's progress.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use berth_core::manifest::parse_manifest;
use berth_core::ports::{ManifestRecord, MetadataStore, all_manifests, all_tag_targets};
use berth_core::retention::rules::{Candidate, decide};
use berth_core::retention::{
    MAX_LOG_LINES, RetentionExecution, RetentionStatus, RetentionStore, RetentionTask,
};
use berth_core::statistics::StatisticsStore;
use berth_core::{
    Actor, EntryPoint, ErrorCode, Reference, Registry, RepositoryName, RequestContext, Result,
};

/// Whether an artifact is protected from deletion by its project's immutable tag rules.
/// Retention never deletes an immutable artifact, as in Harbor: it is kept and logged.
#[async_trait]
pub trait ImmutabilityCheck: Send + Sync + 'static {
    /// Whether the artifact `digest` of `repository`, tagged `tags`, is immutable.
    async fn is_immutable(
        &self,
        repository: &RepositoryName,
        digest: &berth_core::Digest,
        tags: &[String],
    ) -> Result<bool>;
}

/// The stores and the registry an execution works with.
pub(crate) struct Engine {
    pub(crate) store: Arc<dyn RetentionStore>,
    pub(crate) metadata: Arc<dyn MetadataStore>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) statistics: Option<Arc<dyn StatisticsStore>>,
    pub(crate) immutability: Option<Arc<dyn ImmutabilityCheck>>,
    pub(crate) clock: super::Clock,
}

/// The request context of Berth's own retention runs.
pub fn retention_context(execution: u64) -> RequestContext {
    RequestContext {
        actor: Actor::System("retention".to_owned()),
        request_id: format!("retention-{execution}"),
        client: String::new(),
        entry: EntryPoint::System,
    }
}

/// A task's log, bounded.
struct Log(Vec<String>);

impl Log {
    fn note(&mut self, line: String) {
        if self.0.len() < MAX_LOG_LINES {
            self.0.push(line);
        } else if self.0.len() == MAX_LOG_LINES {
            self.0.push(format!(
                "(the log keeps {MAX_LOG_LINES} lines; the counts go on)"
            ));
        }
    }
}

impl Engine {
    /// The next repository of the execution's project after the last one done.
    async fn next_repository(&self, execution: &RetentionExecution) -> Result<Option<String>> {
        let prefix = format!("{}/", execution.project);
        let after = execution.after.clone().unwrap_or_else(|| prefix.clone());
        let next = self.metadata.repositories(Some(&after), 1).await?;
        Ok(next
            .into_iter()
            .next()
            .filter(|name| name.starts_with(&prefix)))
    }

    /// Does one repository of a running execution (or ends it when none is left); `now_ms`
    /// is the time rules count days back from. The execution is saved.
    pub(crate) async fn step(&self, execution: &mut RetentionExecution, now_ms: u64) -> Result<()> {
        let Some(name) = self.next_repository(execution).await? else {
            execution.status = if execution.error.is_some() {
                RetentionStatus::Error
            } else {
                RetentionStatus::Success
            };
            execution.end_ms = Some(now_ms);
            return self.save(execution).await;
        };
        let repository: RepositoryName = name.parse()?;
        let short = name
            .strip_prefix(&format!("{}/", execution.project))
            .unwrap_or(&name);
        let candidates = self.candidates(&repository).await?;
        if let Some(retained) = decide(&execution.rules, short, &candidates, now_ms) {
            execution.tasks += 1;
            let task = self
                .apply(execution, &repository, &candidates, &retained, now_ms)
                .await?;
            if task.status == RetentionStatus::Error {
                execution.error = Some(format!("task {} ({name}) failed", task.id));
            }
            self.store.put_task(&task).await?;
        }
        execution.after = Some(name);
        self.save(execution).await
    }

    /// Saves the execution's progress, keeping a stop that came in meanwhile.
    async fn save(&self, execution: &mut RetentionExecution) -> Result<()> {
        if let Some(stored) = self.store.execution(execution.id).await?
            && stored.status == RetentionStatus::Stopped
        {
            execution.status = RetentionStatus::Stopped;
            execution.end_ms = stored.end_ms;
        }
        self.store.update_execution(execution).await
    }

    /// The repository's artifacts: its manifests but those an index there lists and those
    /// attached to a subject there (accessories go with their subject, children with their
    /// index).
    async fn candidates(&self, repository: &RepositoryName) -> Result<Vec<Candidate>> {
        let manifests = all_manifests(self.metadata.as_ref(), repository).await?;
        let tags = all_tag_targets(self.metadata.as_ref(), repository).await?;
        let present: HashSet<&str> = manifests.iter().map(|m| m.digest.as_str()).collect();
        let children: HashSet<String> = manifests
            .iter()
            .filter_map(|m| parse_manifest(Some(&m.media_type), &m.bytes).ok())
            .flat_map(|parsed| parsed.manifests.into_iter().map(|c| c.digest.to_string()))
            .collect();
        let top_level = |m: &&ManifestRecord| {
            !children.contains(m.digest.as_str())
                && m.referrer
                    .as_ref()
                    .is_none_or(|(subject, _)| !present.contains(subject.as_str()))
        };
        let mut candidates = Vec::new();
        for manifest in manifests.iter().filter(top_level) {
            let usage = match &self.statistics {
                Some(statistics) => {
                    statistics
                        .artifact_usage(repository, &manifest.digest)
                        .await?
                }
                None => berth_core::statistics::Usage::default(),
            };
            let mut names: Vec<String> = tags
                .iter()
                .filter(|(_, digest)| *digest == manifest.digest)
                .map(|(tag, _)| tag.clone())
                .collect();
            names.sort();
            candidates.push(Candidate {
                digest: manifest.digest.clone(),
                tags: names,
                pushed_ms: usage.push_ms.unwrap_or(0),
                pulled_ms: usage.last_pull_ms.unwrap_or(0),
            });
        }
        Ok(candidates)
    }

    /// Deletes (or, in a dry run, reports) what the rules do not retain, and makes the
    /// repository's task.
    async fn apply(
        &self,
        execution: &RetentionExecution,
        repository: &RepositoryName,
        candidates: &[Candidate],
        retained: &[bool],
        now_ms: u64,
    ) -> Result<RetentionTask> {
        let mut log = Log(Vec::new());
        let mut kept = 0;
        let mut failed = false;
        let context = retention_context(execution.id);
        for (candidate, retain) in candidates.iter().zip(retained) {
            let tags = if candidate.tags.is_empty() {
                "<untagged>".to_owned()
            } else {
                candidate.tags.join(",")
            };
            let line = format!("{repository}@{} [{tags}]", candidate.digest);
            if *retain {
                kept += 1;
                log.note(format!("{line}: RETAIN"));
                continue;
            }
            if self.immutable(repository, candidate).await? {
                kept += 1;
                log.note(format!("{line}: RETAIN (immutable)"));
                continue;
            }
            if execution.dry_run {
                log.note(format!("{line}: DEL (dry run: not deleted)"));
                continue;
            }
            let reference = Reference::Digest(candidate.digest.clone());
            match self
                .registry
                .delete_manifest(&context, repository, &reference)
                .await
            {
                Ok(()) => log.note(format!("{line}: DEL")),
                Err(error) if error.code() == ErrorCode::ManifestUnknown => {
                    log.note(format!("{line}: DEL (already gone)"));
                }
                Err(error) => {
                    failed = true;
                    log.note(format!("{line}: DEL failed: {error}"));
                }
            }
        }
        Ok(RetentionTask {
            id: execution.tasks,
            execution_id: execution.id,
            repository: repository.to_string(),
            status: if failed {
                RetentionStatus::Error
            } else {
                RetentionStatus::Success
            },
            start_ms: now_ms,
            end_ms: (self.clock)().max(now_ms),
            total: candidates.len() as u64,
            retained: kept,
            log: log.0,
        })
    }

    async fn immutable(&self, repository: &RepositoryName, candidate: &Candidate) -> Result<bool> {
        match &self.immutability {
            Some(check) => {
                check
                    .is_immutable(repository, &candidate.digest, &candidate.tags)
                    .await
            }
            None => Ok(false),
        }
    }
}
