//! Group commit for submits: concurrent submit requests are written in one transaction, so the
//! submit rate is bounded by how many jobs a commit can hold, not by commits per second.
//! A submit is acknowledged only after its transaction committed.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::core::model::Job;
use crate::dispatcher::DispatcherHandle;
use crate::store::{Store, StoreError};

/// The most jobs written in one transaction.
const MAX_BATCH: usize = 1024;

type Reply = oneshot::Sender<Result<Job, Arc<StoreError>>>;

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the server is shutting down; submit again")]
    ShuttingDown,
    #[error(transparent)]
    Store(Arc<StoreError>),
}

#[derive(Clone)]
pub struct Submitter {
    sender: mpsc::Sender<(Job, Reply)>,
}

impl Submitter {
    pub fn start(
        store: Store,
        dispatcher: DispatcherHandle,
        cancel: CancellationToken,
    ) -> Submitter {
        let (sender, receiver) = mpsc::channel(MAX_BATCH * 4);
        tokio::spawn(write_batches(store, dispatcher, receiver, cancel));
        Submitter { sender }
    }

    /// Stores a SUBMITTED job, or returns the job that already holds its idempotency key.
    pub async fn submit(&self, job: Job) -> Result<Job, SubmitError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send((job, reply))
            .await
            .map_err(|_| SubmitError::ShuttingDown)?;
        answer
            .await
            .map_err(|_| SubmitError::ShuttingDown)?
            .map_err(SubmitError::Store)
    }
}

async fn write_batches(
    store: Store,
    dispatcher: DispatcherHandle,
    mut receiver: mpsc::Receiver<(Job, Reply)>,
    cancel: CancellationToken,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        let first = tokio::select! {
            () = cancel.cancelled() => return,
            first = receiver.recv() => first,
        };
        let Some(first) = first else { return };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let jobs: Vec<Job> = batch.iter().map(|(job, _)| job.clone()).collect();
        match store.insert_jobs(&jobs).await {
            Ok(stored) => {
                for ((_, reply), job) in batch.drain(..).zip(stored) {
                    let _ = reply.send(Ok(job));
                }
                dispatcher.notify_work();
            }
            Err(error) => {
                tracing::error!(%error, jobs = batch.len(), "storing submitted jobs failed");
                let error = Arc::new(error);
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(Arc::clone(&error)));
                }
            }
        }
    }
}
