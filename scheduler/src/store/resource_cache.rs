//! What a submit reads (its queue, its definition, the compute environments), kept in memory for
//! a short while: a submit then costs one write instead of three reads and a write.
//!
//! Freshness: an apply through this store empties the cache when it commits, so this server sees
//! its own changes at once. Changes applied through another server sharing the database are seen
//! within `FRESH_FOR`, and a queue or definition the cache does not know is always read again, so
//! a resource created elsewhere is never refused for being missing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Store, StoreError, StoredDefinition};
use crate::core::model::{ComputeEnvironment, DefinitionRef, JobQueue, QueueName};

/// How long what was read serves submits before it is read again.
pub const FRESH_FOR: Duration = Duration::from_secs(1);

#[derive(Clone, Default)]
pub(super) struct ResourceCache {
    snapshot: Arc<Mutex<Snapshot>>,
}

#[derive(Default)]
struct Snapshot {
    /// Bumped by every invalidation, so a read that began before one is not kept after it.
    generation: u64,
    queues: HashMap<QueueName, (JobQueue, Instant)>,
    definitions: HashMap<String, (StoredDefinition, Instant)>,
    environments: Option<(Arc<Vec<ComputeEnvironment>>, Instant)>,
}

impl std::fmt::Debug for ResourceCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourceCache").finish_non_exhaustive()
    }
}

impl ResourceCache {
    pub(super) fn invalidate(&self) {
        let mut snapshot = self.lock();
        let generation = snapshot.generation + 1;
        *snapshot = Snapshot {
            generation,
            ..Snapshot::default()
        };
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        self.snapshot.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn fresh(read_at: &Instant) -> bool {
    read_at.elapsed() < FRESH_FOR
}

impl Store {
    /// The queue, as of at most `FRESH_FOR` ago (see the module's doc).
    pub async fn job_queue_for_submit(
        &self,
        name: &QueueName,
    ) -> Result<Option<JobQueue>, StoreError> {
        let generation = {
            let snapshot = self.resource_cache.lock();
            if let Some((queue, read_at)) = snapshot.queues.get(name) {
                if fresh(read_at) {
                    return Ok(Some(queue.clone()));
                }
            }
            snapshot.generation
        };
        let queue = self.job_queue(name).await?;
        if let Some(queue) = &queue {
            let mut snapshot = self.resource_cache.lock();
            if snapshot.generation == generation {
                snapshot
                    .queues
                    .insert(name.clone(), (queue.clone(), Instant::now()));
            }
        }
        Ok(queue)
    }

    /// The definition revision `reference` names (the latest when it names none), as of at most
    /// `FRESH_FOR` ago.
    pub async fn job_definition_for_submit(
        &self,
        reference: &DefinitionRef,
    ) -> Result<Option<StoredDefinition>, StoreError> {
        let key = match reference.revision {
            Some(revision) => format!("{}:{revision}", reference.name),
            None => reference.name.to_string(),
        };
        let generation = {
            let snapshot = self.resource_cache.lock();
            if let Some((definition, read_at)) = snapshot.definitions.get(&key) {
                if fresh(read_at) {
                    return Ok(Some(definition.clone()));
                }
            }
            snapshot.generation
        };
        let definition = self.job_definition(reference).await?;
        if let Some(definition) = &definition {
            let mut snapshot = self.resource_cache.lock();
            if snapshot.generation == generation {
                snapshot
                    .definitions
                    .insert(key, (definition.clone(), Instant::now()));
            }
        }
        Ok(definition)
    }

    /// Every compute environment, as of at most `FRESH_FOR` ago.
    pub async fn compute_environments_for_submit(
        &self,
    ) -> Result<Arc<Vec<ComputeEnvironment>>, StoreError> {
        let generation = {
            let snapshot = self.resource_cache.lock();
            if let Some((environments, read_at)) = &snapshot.environments {
                if fresh(read_at) {
                    return Ok(Arc::clone(environments));
                }
            }
            snapshot.generation
        };
        let environments = Arc::new(self.compute_environments().await?);
        let mut snapshot = self.resource_cache.lock();
        if snapshot.generation == generation {
            snapshot.environments = Some((Arc::clone(&environments), Instant::now()));
        }
        Ok(environments)
    }
}
