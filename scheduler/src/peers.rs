//! Wake-ups between servers sharing one Postgres database, by `LISTEN`/`NOTIFY`.
//!
//! Every server serves the API, but only the leader's dispatcher runs. A job submitted (or a
//! terminate requested, or a resource applied) through a follower would otherwise wait for the
//! leader's next poll, up to a second. A follower sends each such wake-up as a `NOTIFY` on
//! [`CHANNEL`] after its write committed; every server listens and passes what it hears to its own
//! dispatcher (which does nothing unless it leads). Wake-ups only shorten waits: a lost one costs at
//! most the poll interval, never correctness.

use std::collections::BTreeSet;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::dispatcher::{DispatcherHandle, Wake};
use crate::leadership::{Role, RoleState};
use crate::store::Store;

pub const CHANNEL: &str = "batchctl_wake";

/// Sends this server's wake-ups to the others, each kind once per burst, while it follows (a
/// leader's own dispatcher is the one to wake, and the handle already did).
pub async fn send(
    store: Store,
    mut wakes: mpsc::Receiver<Wake>,
    role: Role,
    shutdown: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => return,
            first = wakes.recv() => first,
        };
        let Some(first) = first else { return };
        let mut burst = BTreeSet::from([first.as_str()]);
        while let Ok(next) = wakes.try_recv() {
            burst.insert(next.as_str());
        }
        if matches!(role.get(), RoleState::Leader { .. }) {
            continue;
        }
        for wake in burst {
            if let Err(error) = store.notify_peers(CHANNEL, wake).await {
                tracing::debug!(%error, "cannot wake the other servers; the leader's poll will see the change");
            }
        }
    }
}

/// Passes the other servers' wake-ups to this server's dispatcher, reconnecting as needed.
pub async fn listen(url: String, dispatcher: DispatcherHandle, shutdown: CancellationToken) {
    loop {
        match PgListener::connect(&url).await {
            Ok(mut listener) => match listener.listen(CHANNEL).await {
                Ok(()) => loop {
                    let received = tokio::select! {
                        () = shutdown.cancelled() => return,
                        received = listener.recv() => received,
                    };
                    match received {
                        Ok(notification) => {
                            if let Some(wake) = Wake::parse(notification.payload()) {
                                dispatcher.wake_local(wake);
                            }
                        }
                        Err(error) => {
                            tracing::warn!(%error, "lost the wake-up channel; reconnecting");
                            break;
                        }
                    }
                },
                Err(error) => tracing::warn!(%error, "cannot listen for wake-ups; retrying"),
            },
            Err(error) => tracing::warn!(%error, "cannot connect to listen for wake-ups; retrying"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
