//! Applying transitions in bulk. Each statement is `UPDATE jobs … FROM (VALUES …) WHERE jobs.job_id =
//! v.column1 AND jobs.status = v.column2`: still a compare-and-set per row, but one round trip for
//! hundreds of jobs. The count of rows it changed says whether all won; when some lost, the write
//! is made again with `RETURNING job_id`, which says which (see `Readback`). Both SQLite (3.33+)
//! and Postgres name the columns of a VALUES list column1, column2, ….

use std::collections::{HashMap, HashSet};

use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::{Any, Row, Transaction};

use super::events::{emit_moved, Emission, MovedJob};
use super::sql::{placeholder, placeholders, ROWS_PER_STATEMENT};
use super::{Dialect, Store, StoreError};
use crate::core::consumable::ConsumableRequest;
use crate::core::model::{Attempt, CurrentAttempt, JobId, JobStatus, Resources};

/// A move of one job, computed by `core::state_machine::transition`, with what it changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub job_id: JobId,
    pub from: JobStatus,
    pub to: JobStatus,
    pub effect: Effect,
}

impl Transition {
    /// The exit code an attempt's end reports, for its Job State Change event.
    pub fn exit_code(&self) -> Option<i32> {
        match &self.effect {
            Effect::AttemptEnded { attempt, .. } => attempt.exit_code,
            Effect::Placed { .. }
            | Effect::Started { .. }
            | Effect::Deferred { .. }
            | Effect::Cancelled { .. }
            | Effect::ArrayEnded { .. } => None,
        }
    }

    /// An attempt's end from STARTING whose attempt did start: its start (STARTING → RUNNING)
    /// and its end were reported together and are written as this one move, which still
    /// counts as having passed RUNNING (its Job State Change events include RUNNING).
    pub fn passes_running(&self) -> bool {
        matches!(
            (&self.effect, self.from),
            (Effect::AttemptEnded { attempt, .. }, JobStatus::Starting) if attempt.started_at.is_some()
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Capacity was reserved for this attempt.
    Placed {
        attempt: CurrentAttempt,
        /// NON_REPLENISHABLE consumable resources it uses up (`core::consumable`), recorded in
        /// the placement's transaction.
        used_up: Vec<ConsumableRequest>,
    },
    /// The executor confirmed the attempt runs.
    Started {
        at: i64,
    },
    /// The attempt was not handed over; the job waits in its queue again.
    Deferred {
        reason: String,
    },
    /// The attempt ended; `attempt` is its record. A retried job waiting out a backoff is not placed
    /// before `runnable_after`.
    AttemptEnded {
        attempt: Attempt,
        runnable_after: Option<i64>,
        /// Retried without spending one of the job's attempts (`RETRY_WITHOUT_COUNT`).
        disruption: bool,
        /// A retry's grown requirements (`ResourceAdjustments`), from the next attempt on.
        next_resources: Option<Resources>,
    },
    Cancelled {
        reason: String,
        at: i64,
    },
    /// Every child of the array job has finished.
    ArrayEnded {
        reason: String,
        at: i64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Placed,
    Started,
    Deferred,
    AttemptEnded,
    /// Ended without an attempt ending: cancelled, or an array parent whose children ended.
    Closed,
}

impl Kind {
    /// The order kinds are applied within a wave; a wave holds each job at most once.
    const ORDER: [Kind; 5] = [
        Kind::Placed,
        Kind::Started,
        Kind::Deferred,
        Kind::AttemptEnded,
        Kind::Closed,
    ];

    fn of(effect: &Effect) -> Kind {
        match effect {
            Effect::Placed { .. } => Kind::Placed,
            Effect::Started { .. } => Kind::Started,
            Effect::Deferred { .. } => Kind::Deferred,
            Effect::AttemptEnded { .. } => Kind::AttemptEnded,
            Effect::Cancelled { .. } | Effect::ArrayEnded { .. } => Kind::Closed,
        }
    }

    /// Columns after (job_id, from, to), what they set, and any extra condition.
    fn shape(self) -> (usize, &'static str, &'static str) {
        match self {
            Kind::Placed => (
                5,
                "status_reason = NULL, attempt_number = v.column4, attempt_environment = v.column5, \
                 attempt_handle = v.column6, attempt_placed_at = v.column7, attempt_started_at = NULL, \
                 attempt_gpu_ids = v.column8",
                // A job suspended after placement read it is not placed after all.
                " AND jobs.suspended = 0",
            ),
            Kind::Started => (
                1,
                "attempt_started_at = v.column4, started_at = COALESCE(started_at, v.column4)",
                "",
            ),
            Kind::Deferred => (
                1,
                "status_reason = v.column4, attempt_number = NULL, attempt_environment = NULL, \
                 attempt_handle = NULL, attempt_placed_at = NULL, attempt_started_at = NULL, \
                 attempt_gpu_ids = NULL",
                "",
            ),
            // `started_at` for an end from STARTING that carries its start (`Transition::
            // passes_running`): the start and the end written at once.
            Kind::AttemptEnded => (
                8,
                "status_reason = v.column4, stopped_at = v.column5, n_attempts = n_attempts + 1, \
                 disruptions = disruptions + v.column9, \
                 vcpu_millis = COALESCE(v.column10, vcpu_millis), \
                 memory_mib = COALESCE(v.column11, memory_mib), \
                 runnable_after = v.column7, started_at = COALESCE(started_at, v.column8), \
                 attempt_number = NULL, attempt_environment = NULL, attempt_handle = NULL, \
                 attempt_placed_at = NULL, attempt_started_at = NULL, attempt_gpu_ids = NULL, \
                 stop_requested = NULL",
                " AND jobs.attempt_number = v.column6",
            ),
            Kind::Closed => (2, "status_reason = v.column4, stopped_at = v.column5", ""),
        }
    }
}

/// How a write learns which of its compare-and-sets won.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Readback {
    /// From the count of rows changed: when every row of every statement changed, all won. No
    /// row comes back: on SQLite each returned row is a hand-off between sqlx's connection
    /// thread and the caller, and a drained job's placement and end returned one each (its
    /// head read's row remains). See BENCHMARKS.md, session 18.
    Counted,
    /// From the rows `RETURNING` gives back: which won, and what their events need.
    Returned,
}

impl Store {
    /// Applies each transition with compare-and-set, all in one transaction, and returns per
    /// transition whether it applied (false: the job was no longer in `from`). Transitions of one
    /// job are applied in the order given.
    /// Unless events are stored, the write first only counts the rows it changed; in the rare
    /// case that some job moved meanwhile (a cancel racing a placement), that transaction is
    /// rolled back and the write made again, learning row by row which moves won.
    pub async fn apply_transitions(
        &self,
        transitions: &[Transition],
        now: i64,
    ) -> Result<Vec<bool>, StoreError> {
        let emission = self.emission();
        let mut readback = match emission.wanted {
            true => Readback::Returned,
            false => Readback::Counted,
        };
        // At most twice: a counted write that lost some move is made again reading rows back,
        // which always answers.
        let applied = loop {
            match self
                .apply_transitions_once(transitions, now, emission, readback)
                .await?
            {
                Some(applied) => break applied,
                None => readback = Readback::Returned,
            }
        };
        self.finish_waits.announce(
            transitions
                .iter()
                .zip(&applied)
                .filter(|(transition, applied)| **applied && transition.to.is_terminal())
                .map(|(transition, _)| &transition.job_id),
        );
        Ok(applied)
    }

    /// One try of `apply_transitions`; `None` when a `Readback::Counted` write found some move
    /// lost, and was rolled back.
    async fn apply_transitions_once(
        &self,
        transitions: &[Transition],
        now: i64,
        emission: Emission,
        readback: Readback,
    ) -> Result<Option<Vec<bool>>, StoreError> {
        let mut applied = vec![false; transitions.len()];
        let mut transaction = self.begin_fenced().await?;
        for wave in waves(transitions) {
            for kind in Kind::ORDER {
                let members: Vec<usize> = wave
                    .iter()
                    .copied()
                    .filter(|&i| Kind::of(&transitions[i].effect) == kind)
                    .collect();
                for chunk in members.chunks(ROWS_PER_STATEMENT) {
                    let rows: Vec<&Transition> = chunk.iter().map(|&i| &transitions[i]).collect();
                    let sql = update_sql(self.dialect, emission, kind, rows.len(), readback);
                    let statement = bind_rows(&sql, &rows, now);
                    let returned = match readback {
                        Readback::Counted => {
                            let changed = statement.execute(&mut *transaction).await?;
                            if changed.rows_affected() != rows.len() as u64 {
                                transaction.rollback().await?;
                                return Ok(None);
                            }
                            for &i in chunk {
                                applied[i] = true;
                            }
                            continue;
                        }
                        Readback::Returned => statement.fetch_all(&mut *transaction).await?,
                    };
                    let changed = returned
                        .iter()
                        .map(|row| row.try_get::<String, _>("job_id"))
                        .collect::<Result<HashSet<String>, _>>()?;
                    for &i in chunk {
                        applied[i] = changed.contains(&transitions[i].job_id.0);
                    }
                    // Only read when events are stored.
                    let moved: HashMap<&str, MovedJob> = match emission.wanted {
                        true => rows
                            .iter()
                            .map(|t| {
                                let moved = MovedJob {
                                    exit_code: t.exit_code(),
                                    passed_running: t.passes_running(),
                                };
                                (t.job_id.0.as_str(), moved)
                            })
                            .collect(),
                        false => HashMap::new(),
                    };
                    emit_moved(
                        emission,
                        &mut transaction,
                        &returned,
                        |job_id| moved.get(job_id).copied(),
                        now,
                    )
                    .await?;
                }
            }
            let ended: Vec<&Transition> = wave
                .iter()
                .copied()
                .filter(|&i| applied[i] && Kind::of(&transitions[i].effect) == Kind::AttemptEnded)
                .map(|i| &transitions[i])
                .collect();
            insert_attempts(&mut transaction, self.dialect, &ended).await?;
            for &i in wave.iter().filter(|&&i| applied[i]) {
                if let Effect::Placed { used_up, .. } = &transitions[i].effect {
                    use_up(&mut transaction, used_up).await?;
                }
            }
        }
        transaction.commit().await?;
        Ok(Some(applied))
    }
}

/// Splits transitions into waves in which no job appears twice: a job's k-th transition goes into
/// wave k, so its transitions stay in order while each wave stays as large as it can be.
fn waves(transitions: &[Transition]) -> Vec<Vec<usize>> {
    let mut waves: Vec<Vec<usize>> = Vec::new();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, transition) in transitions.iter().enumerate() {
        let count = seen.entry(transition.job_id.0.as_str()).or_insert(0);
        if waves.len() == *count {
            waves.push(Vec::new());
        }
        waves[*count].push(i);
        *count += 1;
    }
    waves
}

/// The compare-and-set of `n` rows of `kind`, reading back what `readback` says (see `bind_rows`).
fn update_sql(
    dialect: Dialect,
    emission: Emission,
    kind: Kind,
    n: usize,
    readback: Readback,
) -> String {
    let returning = match readback {
        Readback::Counted => "",
        Readback::Returned => emission.returning(),
    };
    let (extra_columns, assignments, condition) = kind.shape();
    let columns = 3 + extra_columns;
    // `now` comes first in the text, so it is the first parameter.
    format!(
        "UPDATE jobs SET status = v.column3, {assignments}, updated_at = {} \
         FROM (VALUES {}) AS v \
         WHERE jobs.job_id = v.column1 AND jobs.status = v.column2{condition} \
         {returning}",
        placeholder(dialect, 1),
        placeholders(dialect, n, columns, 2)
    )
}

/// `update_sql`'s statement for `rows`, all of one kind, with their values bound.
fn bind_rows<'q>(sql: &'q str, rows: &[&Transition], now: i64) -> Query<'q, Any, AnyArguments<'q>> {
    let mut query = sqlx::query(sql).bind(now);
    for transition in rows {
        query = query
            .bind(transition.job_id.0.clone())
            .bind(transition.from.as_str())
            .bind(transition.to.as_str());
        query = match &transition.effect {
            Effect::Placed { attempt, .. } => query
                .bind(i64::from(attempt.number))
                .bind(attempt.compute_environment.to_string())
                .bind(attempt.executor_handle.clone())
                .bind(attempt.placed_at)
                .bind(attempt.gpu_ids.join(",")),
            Effect::Started { at } => query.bind(*at),
            Effect::Deferred { reason } => query.bind(reason.clone()),
            Effect::AttemptEnded {
                attempt,
                runnable_after,
                disruption,
                next_resources,
            } => query
                .bind(attempt.status_reason.clone())
                .bind(transition.to.is_terminal().then_some(attempt.stopped_at))
                .bind(i64::from(attempt.number))
                .bind(*runnable_after)
                .bind(attempt.started_at)
                .bind(i64::from(*disruption))
                .bind(next_resources.map(|r| r.vcpu_millis as i64))
                .bind(next_resources.map(|r| r.memory_mib as i64)),
            Effect::Cancelled { reason, at } | Effect::ArrayEnded { reason, at } => {
                query.bind(reason.clone()).bind(*at)
            }
        };
    }
    query
}

/// Records NON_REPLENISHABLE consumable resources as used up by a placement.
async fn use_up(
    transaction: &mut Transaction<'static, Any>,
    used_up: &[ConsumableRequest],
) -> Result<(), StoreError> {
    for request in used_up {
        sqlx::query("UPDATE consumable_resources SET consumed = consumed + $1 WHERE name = $2")
            .bind(request.quantity as i64)
            .bind(&request.consumable_resource)
            .execute(&mut **transaction)
            .await?;
    }
    Ok(())
}

async fn insert_attempts(
    transaction: &mut Transaction<'static, Any>,
    dialect: Dialect,
    ended: &[&Transition],
) -> Result<(), StoreError> {
    const COLUMNS: usize = 10;
    for chunk in ended.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO attempts (job_id, attempt_number, compute_environment, exit_code, \
             status_reason, started_at, stopped_at, vcpu_millis, memory_mib, gpus) VALUES {}",
            placeholders(dialect, chunk.len(), COLUMNS, 1)
        );
        let mut query = sqlx::query(&sql);
        for transition in chunk {
            let Effect::AttemptEnded { attempt, .. } = &transition.effect else {
                unreachable!("only attempt ends are inserted")
            };
            query = query
                .bind(transition.job_id.0.clone())
                .bind(i64::from(attempt.number))
                .bind(attempt.compute_environment.to_string())
                .bind(attempt.exit_code.map(i64::from))
                .bind(attempt.status_reason.clone())
                .bind(attempt.started_at)
                .bind(attempt.stopped_at)
                .bind(attempt.resources.map(|r| r.vcpu_millis as i64))
                .bind(attempt.resources.map(|r| r.memory_mib as i64))
                .bind(attempt.resources.map(|r| r.gpus as i64));
        }
        query.execute(&mut **transaction).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waves_keep_each_jobs_transitions_in_order() {
        use crate::core::model::{JobId, JobStatus};
        let transition = |id: &str| Transition {
            job_id: JobId(id.into()),
            from: JobStatus::Starting,
            to: JobStatus::Running,
            effect: Effect::Started { at: 0 },
        };
        let batch = ["a", "a", "b", "b", "c", "a"].map(transition);
        assert_eq!(waves(&batch), [vec![0, 2, 4], vec![1, 3], vec![5]]);
    }

    #[test]
    fn placeholders_number_rows_and_columns() {
        assert_eq!(
            placeholders(Dialect::Postgres, 2, 3, 1),
            "($1, $2, $3), ($4, $5, $6)"
        );
        assert_eq!(placeholders(Dialect::Postgres, 1, 2, 5), "($5, $6)");
        assert_eq!(placeholders(Dialect::Sqlite, 2, 2, 1), "(?, ?), (?, ?)");
    }
}
