//! What a submit reads (its queue, its definition, the compute environments), kept in memory for
//! a short while: a submit then costs one write instead of three reads and a write.
//!
//! Freshness: an apply through this store empties the cache when it commits (any other write of
//! queues, definitions or environments added later must call `invalidate` too), so this server sees
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
    environments: HashMap<(), (Arc<Vec<ComputeEnvironment>>, Instant)>,
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

    /// The value under `key` in the map `slot` picks, if read less than `FRESH_FOR` ago; else
    /// what `read` finds, kept unless the cache was emptied while it read.
    async fn get_or_read<K, V, Fut>(
        &self,
        slot: fn(&mut Snapshot) -> &mut HashMap<K, (V, Instant)>,
        key: K,
        read: impl FnOnce() -> Fut,
    ) -> Result<Option<V>, StoreError>
    where
        K: Eq + std::hash::Hash,
        V: Clone,
        Fut: std::future::Future<Output = Result<Option<V>, StoreError>>,
    {
        let generation = {
            let mut snapshot = self.lock();
            if let Some((value, read_at)) = slot(&mut snapshot).get(&key) {
                if read_at.elapsed() < FRESH_FOR {
                    return Ok(Some(value.clone()));
                }
            }
            snapshot.generation
        };
        let value = read().await?;
        if let Some(value) = &value {
            let mut snapshot = self.lock();
            if snapshot.generation == generation {
                slot(&mut snapshot).insert(key, (value.clone(), Instant::now()));
            }
        }
        Ok(value)
    }
}

impl Store {
    /// The queue, as of at most `FRESH_FOR` ago (see the module's doc).
    pub async fn job_queue_for_submit(
        &self,
        name: &QueueName,
    ) -> Result<Option<JobQueue>, StoreError> {
        self.resource_cache
            .get_or_read(|s| &mut s.queues, name.clone(), || self.job_queue(name))
            .await
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
        self.resource_cache
            .get_or_read(
                |s| &mut s.definitions,
                key,
                || self.job_definition(reference),
            )
            .await
    }

    /// Every compute environment, as of at most `FRESH_FOR` ago.
    pub async fn compute_environments_for_submit(
        &self,
    ) -> Result<Arc<Vec<ComputeEnvironment>>, StoreError> {
        let environments = self
            .resource_cache
            .get_or_read(
                |s| &mut s.environments,
                (),
                || async { Ok(Some(Arc::new(self.compute_environments().await?))) },
            )
            .await?;
        Ok(environments.unwrap_or_default())
    }
}
