//! Reading jobs: one, a page (bounded by specs' bytes), an array's children, queue heads, what
//! the dispatcher and `why` need.

use super::*;

impl Store {
    /// Each array job's children by status (`arrayProperties.statusSummary`), from the counters
    /// the database keeps (migration 0016), not by counting the children.
    pub async fn array_status_summaries(
        &self,
        parents: &[JobId],
    ) -> Result<HashMap<JobId, BTreeMap<JobStatus, u64>>, StoreError> {
        let mut summaries: HashMap<JobId, BTreeMap<JobStatus, u64>> = HashMap::new();
        for chunk in parents.chunks(crate::store::sql::ROWS_PER_STATEMENT) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|n| format!("${n}")).collect();
            let placeholders = placeholders.join(", ");
            let sql = match self.dialect {
                Dialect::Sqlite => format!(
                    "SELECT array_parent, status, n FROM array_counts \
                     WHERE array_parent IN ({placeholders}) AND n <> 0"
                ),
                Dialect::Postgres => format!(
                    "SELECT array_parent, status, SUM(n)::BIGINT FROM array_count_deltas \
                     WHERE array_parent IN ({placeholders}) \
                     GROUP BY array_parent, status HAVING SUM(n) <> 0"
                ),
            };
            let mut query = sqlx::query(&sql);
            for parent in chunk {
                query = query.bind(parent.0.clone());
            }
            for row in query.fetch_all(&self.read).await? {
                let status: String = row.try_get(1)?;
                let status = JobStatus::parse(&status)
                    .ok_or_else(|| StoreError::corrupt("job status", status))?;
                summaries
                    .entry(JobId(row.try_get(0)?))
                    .or_default()
                    .insert(status, row.try_get::<i64, _>(2)? as u64);
            }
        }
        Ok(summaries)
    }

    /// The job with its finished attempts.
    pub async fn job(&self, job_id: &JobId) -> Result<Option<Job>, StoreError> {
        let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = $1"))
            .bind(&job_id.0)
            .fetch_optional(&self.read)
            .await?;
        let Some(mut job) = row.as_ref().map(job_from_row).transpose()? else {
            return Ok(None);
        };
        self.load_attempts(std::slice::from_mut(&mut job)).await?;
        Ok(Some(job))
    }

    /// Fills in the finished attempts of each job, with one query.
    pub(in crate::store) async fn load_attempts(&self, jobs: &mut [Job]) -> Result<(), StoreError> {
        if jobs.is_empty() {
            return Ok(());
        }
        let placeholders: Vec<String> = (1..=jobs.len()).map(|n| format!("${n}")).collect();
        let sql = format!(
            "SELECT job_id, attempt_number, compute_environment, exit_code, status_reason, \
             started_at, stopped_at, vcpu_millis, memory_mib, gpus FROM attempts \
             WHERE job_id IN ({}) \
             ORDER BY job_id, attempt_number",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for job in jobs.iter() {
            query = query.bind(&job.job_id.0);
        }
        let rows = query.fetch_all(&self.read).await?;
        let mut by_job: std::collections::HashMap<String, Vec<Attempt>> =
            std::collections::HashMap::new();
        for row in &rows {
            by_job
                .entry(row.try_get("job_id")?)
                .or_default()
                .push(attempt_from_row(row)?);
        }
        for job in jobs {
            job.attempts = by_job.remove(&job.job_id.0).unwrap_or_default();
        }
        Ok(())
    }

    /// Jobs newest first, with their finished attempts.
    pub async fn jobs(&self, filter: &JobFilter) -> Result<JobPage, StoreError> {
        // No index leads to a name or a tag: a page filtered by either reads at most
        // NAME_SCAN_WINDOW sequence numbers below its cursor, and then says where to go on.
        let unindexed = filter.name.is_some() || !filter.tags.0.is_empty();
        let (floor, next_floor) = match unindexed {
            true => {
                let (lowest, highest): (Option<i64>, Option<i64>) = sqlx::query_as(
                    "SELECT (SELECT MIN(seq) FROM jobs), (SELECT MAX(seq) FROM jobs)",
                )
                .fetch_one(&self.read)
                .await?;
                let top = filter.before.unwrap_or(highest.unwrap_or(0) + 1);
                let floor = top - NAME_SCAN_WINDOW;
                (
                    Some(floor),
                    Some(floor).filter(|floor| lowest.is_some_and(|lowest| lowest < *floor)),
                )
            }
            false => (None, None),
        };
        let plan = listing_plan(self.dialect, filter, floor);
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs{} WHERE {} ORDER BY {} LIMIT {}",
            self.listing_index(&plan),
            plan.conditions.join(" AND "),
            plan.order,
            format_args!("${}", bound_parameters(filter) + 1)
        );
        let limit = self.limit_by_spec_bytes(filter, &plan).await?;
        let query = bind_filter(sqlx::query(&sql), filter, self.dialect);
        let rows = query
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.read)
            .await?;
        let mut jobs = Vec::with_capacity(rows.len());
        let mut last_seq = None;
        for row in rows.iter().take(limit as usize) {
            last_seq = Some(row.try_get::<i64, _>("seq")?);
            jobs.push(job_from_row(row)?);
        }
        let next = if rows.len() > limit as usize {
            last_seq
        } else {
            // Older jobs the name filter has not looked at yet.
            next_floor
        };
        self.load_attempts(&mut jobs).await?;
        Ok(JobPage { jobs, next })
    }

    /// How many of the `filter.limit` jobs `jobs` may read within `MAX_PAGE_SPEC_BYTES` of specs
    /// (at least one): their sizes are read first, without the specs.
    async fn limit_by_spec_bytes(
        &self,
        filter: &JobFilter,
        plan: &ListingPlan,
    ) -> Result<u32, StoreError> {
        let limit = filter.limit.max(1);
        let sql = format!(
            "SELECT CASE WHEN array_parent IS NULL THEN LENGTH(spec) \
             ELSE (SELECT LENGTH(p.spec) FROM jobs p WHERE p.job_id = jobs.array_parent) END AS spec_bytes \
             FROM jobs{} WHERE {} ORDER BY {} LIMIT {}",
            self.listing_index(plan),
            plan.conditions.join(" AND "),
            plan.order,
            format_args!("${}", bound_parameters(filter) + 1)
        );
        let query = bind_filter(sqlx::query(&sql), filter, self.dialect);
        let rows = query.bind(i64::from(limit)).fetch_all(&self.read).await?;
        let mut total = 0i64;
        let mut fitting = 0u32;
        for row in &rows {
            total += row.try_get::<Option<i64>, _>("spec_bytes")?.unwrap_or(0);
            if total > MAX_PAGE_SPEC_BYTES && fitting > 0 {
                break;
            }
            fitting += 1;
        }
        Ok(fitting.clamp(1, limit))
    }

    /// `INDEXED BY` the index `plan` names, on SQLite.
    fn listing_index(&self, plan: &ListingPlan) -> String {
        plan.index
            .map(|index| indexed_by(self.dialect, index))
            .unwrap_or_default()
    }

    /// A page of an array's children, newest first, without their spec (it is the parent's).
    pub async fn array_children(
        &self,
        parent: &JobId,
        status: Option<JobStatus>,
        before: Option<i64>,
        limit: u32,
    ) -> Result<ChildPage, StoreError> {
        let limit = limit.max(1);
        let status_condition = if status.is_some() {
            "AND status = $3 "
        } else {
            ""
        };
        let limit_parameter = if status.is_some() { "$4" } else { "$3" };
        let sql = format!(
            "SELECT seq, job_id, job_name, job_queue, status, status_reason, created_at, started_at, \
             stopped_at, n_attempts, attempt_number, array_index FROM jobs \
             WHERE seq < $1 AND array_parent = $2 {status_condition}\
             ORDER BY seq DESC LIMIT {limit_parameter}"
        );
        let mut query = sqlx::query(&sql)
            .bind(before.unwrap_or(i64::MAX))
            .bind(parent.0.as_str());
        if let Some(status) = status {
            query = query.bind(status.as_str());
        }
        let rows = query
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.read)
            .await?;
        let mut children = Vec::with_capacity(rows.len());
        let mut last_seq = None;
        for row in rows.iter().take(limit as usize) {
            last_seq = Some(row.try_get::<i64, _>("seq")?);
            let job_id: String = row.try_get("job_id")?;
            let status: String = row.try_get("status")?;
            let status = JobStatus::parse(&status).ok_or_else(|| {
                StoreError::corrupt(format!("job {job_id}"), format!("unknown status {status}"))
            })?;
            let n_attempts = row.try_get::<i64, _>("n_attempts")?;
            let current = row.try_get::<Option<i64>, _>("attempt_number")?;
            children.push(ChildSummary {
                job_id: JobId(job_id),
                job_name: row.try_get("job_name")?,
                queue: row.try_get("job_queue")?,
                status,
                status_reason: row.try_get("status_reason")?,
                created_at: row.try_get("created_at")?,
                started_at: row.try_get("started_at")?,
                stopped_at: row.try_get("stopped_at")?,
                array_index: row
                    .try_get::<Option<i64>, _>("array_index")?
                    .map(|index| index as u32),
                n_attempts: n_attempts.max(current.unwrap_or(0)) as u32,
            });
        }
        let next = if rows.len() > limit as usize {
            last_seq
        } else {
            None
        };
        Ok(ChildPage { children, next })
    }

    /// RUNNABLE jobs of the same queue submitted before this one, counted up to `limit + 1`: a
    /// count past `limit` only says there are more, and costs no more behind a million jobs.
    pub async fn runnable_ahead(&self, job_id: &JobId, limit: u64) -> Result<u64, StoreError> {
        let by_queue = indexed_by(self.dialect, "jobs_runnable_by_queue");
        // On Postgres as a row comparison in the index's order, for the reason `runnable_jobs`
        // gives (the primary key walked backwards: 257 ms behind a million jobs, 2.6 ms so).
        let ahead = match self.dialect {
            Dialect::Postgres => {
                "(job_queue, seq) < (SELECT job_queue, seq FROM jobs WHERE job_id = $1) \
                 AND job_queue >= (SELECT job_queue FROM jobs WHERE job_id = $1) \
                 ORDER BY job_queue DESC, seq DESC"
            }
            Dialect::Sqlite => {
                "job_queue = (SELECT job_queue FROM jobs WHERE job_id = $1) \
                 AND seq < (SELECT seq FROM jobs WHERE job_id = $1)"
            }
        };
        let count: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM jobs{by_queue} WHERE status = 'RUNNABLE' \
             AND suspended = 0 AND {ahead} LIMIT $2) AS ahead"
        ))
        .bind(&job_id.0)
        .bind(i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX))
        .fetch_one(&self.read)
        .await?;
        Ok(count as u64)
    }

    /// The jobs this one depends on whose condition is not met yet, with their status; for an
    /// array child, with those its parent depends on.
    pub async fn unfinished_dependencies(
        &self,
        job_id: &JobId,
    ) -> Result<Vec<(JobId, JobStatus)>, StoreError> {
        let met = super::moves::dependency_sql(crate::core::model::DependencyCondition::met_by);
        let rows = sqlx::query(&format!(
            "SELECT p.job_id, p.status FROM job_dependencies d JOIN jobs p ON p.job_id = d.depends_on \
             WHERE d.job_id IN ($1, (SELECT array_parent FROM jobs WHERE job_id = $1)) \
             AND NOT {met} ORDER BY p.seq",
        ))
        .bind(&job_id.0)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                let status: String = row.try_get(1)?;
                let status = JobStatus::parse(&status)
                    .ok_or_else(|| StoreError::corrupt("job status", status))?;
                Ok((JobId(row.try_get(0)?), status))
            })
            .collect()
    }

    /// What STARTING and RUNNING attempts hold, per compute environment.
    pub async fn capacity_in_use(
        &self,
    ) -> Result<std::collections::HashMap<EnvironmentName, crate::core::model::Resources>, StoreError>
    {
        let rows = sqlx::query(
            "SELECT attempt_environment, CAST(SUM(vcpu_millis) AS BIGINT), \
             CAST(SUM(memory_mib) AS BIGINT), CAST(SUM(gpus) AS BIGINT) FROM jobs \
             WHERE status IN ('STARTING', 'RUNNING') AND attempt_environment IS NOT NULL \
             GROUP BY attempt_environment",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                let name: String = row.try_get(0)?;
                let name = EnvironmentName::try_from(name)
                    .map_err(|e| StoreError::corrupt("environment name", e))?;
                let resources = crate::core::model::Resources {
                    vcpu_millis: row.try_get::<i64, _>(1)? as u64,
                    memory_mib: row.try_get::<i64, _>(2)? as u64,
                    gpus: row.try_get::<i64, _>(3)? as u64,
                };
                Ok((name, resources))
            })
            .collect()
    }

    /// Of `ids`, those that name a job, each with its array size (`None` for a job that is not an
    /// array parent).
    pub async fn existing_jobs(
        &self,
        ids: &[JobId],
    ) -> Result<HashMap<JobId, Option<u32>>, StoreError> {
        let mut found = HashMap::new();
        for chunk in ids.chunks(crate::store::sql::ROWS_PER_STATEMENT) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|n| format!("${n}")).collect();
            let sql = format!(
                "SELECT job_id, array_size FROM jobs WHERE job_id IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(id.0.clone());
            }
            for row in query.fetch_all(&self.read).await? {
                let size: Option<i64> = row.try_get(1)?;
                found.insert(JobId(row.try_get(0)?), size.map(|size| size as u32));
            }
        }
        Ok(found)
    }

    /// The oldest RUNNABLE jobs of a queue that may be placed at `now`, in submission order,
    /// after the job of `after_seq` (0: from the head), each with its place in that order.
    pub async fn runnable_jobs(
        &self,
        queue: &QueueName,
        after_seq: i64,
        limit: u32,
        now: i64,
    ) -> Result<Vec<(i64, Job)>, StoreError> {
        let by_queue = indexed_by(self.dialect, "jobs_runnable_by_queue");
        // On Postgres, `job_queue = $1 … ORDER BY seq LIMIT n` let the planner walk the primary
        // key in seq order and filter, expecting a queue's RUNNABLE jobs to be spread evenly
        // through the table (custom and generic plans alike): 450 ms a read behind a million
        // jobs. As a row comparison the order is (job_queue, seq), which only the partial index
        // gives. SQLite, told its index, takes the plain form, which bounds seq in the index.
        let position = match self.dialect {
            Dialect::Postgres => "(job_queue, seq) > ($1, $4) AND job_queue <= $1",
            Dialect::Sqlite => "job_queue = $1 AND seq > $4",
        };
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs{by_queue} WHERE status = 'RUNNABLE' AND suspended = 0 \
             AND {position} \
             AND (runnable_after IS NULL OR runnable_after <= $3) \
             ORDER BY job_queue, seq LIMIT $2"
        ))
        .bind(queue.as_str())
        .bind(i64::from(limit))
        .bind(now)
        .bind(after_seq)
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("seq")?, job_from_row(row)?)))
            .collect()
    }

    /// The shares with RUNNABLE jobs in a queue; `None` for jobs submitted without one (before
    /// the queue had a fair-share policy).
    pub async fn runnable_shares(
        &self,
        queue: &QueueName,
    ) -> Result<Vec<Option<String>>, StoreError> {
        let by_share = indexed_by(self.dialect, "jobs_runnable_by_share");
        let rows = sqlx::query(&format!(
            "SELECT DISTINCT share_identifier FROM jobs{by_share} WHERE status = 'RUNNABLE' \
             AND suspended = 0 AND job_queue = $1"
        ))
        .bind(queue.as_str())
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| row.try_get(0).map_err(StoreError::from))
            .collect()
    }

    /// The RUNNABLE jobs of one share of a queue that may be placed at `now`: highest
    /// `schedulingPriority` first, then in submission order.
    pub async fn runnable_jobs_of_share(
        &self,
        queue: &QueueName,
        share: Option<&str>,
        limit: u32,
        now: i64,
    ) -> Result<Vec<Job>, StoreError> {
        let share_condition = match share {
            Some(_) => "share_identifier = $4",
            None => "share_identifier IS NULL",
        };
        let by_share = indexed_by(self.dialect, "jobs_runnable_by_share");
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs{by_share} WHERE status = 'RUNNABLE' AND suspended = 0 \
             AND job_queue = $1 \
             AND (runnable_after IS NULL OR runnable_after <= $3) AND {share_condition} \
             ORDER BY scheduling_priority DESC, seq LIMIT $2"
        );
        let mut query = sqlx::query(&sql)
            .bind(queue.as_str())
            .bind(i64::from(limit))
            .bind(now);
        if let Some(share) = share {
            query = query.bind(share);
        }
        let rows = query.fetch_all(&self.read).await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Every job holding capacity: STARTING or RUNNING.
    pub async fn active_jobs(&self) -> Result<Vec<Job>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE status IN ('STARTING', 'RUNNING') ORDER BY seq"
        ))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// How many jobs are in `status`.
    pub async fn count_jobs(&self, status: JobStatus) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE status = $1")
            .bind(status.as_str())
            .fetch_one(&self.read)
            .await?;
        Ok(count as u64)
    }

    /// Terminate requests of STARTING and RUNNING jobs, with their reasons.
    pub async fn stop_requests(&self) -> Result<Vec<(JobId, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT job_id, stop_requested FROM jobs \
             WHERE status IN ('STARTING', 'RUNNING') AND stop_requested IS NOT NULL",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    JobId(row.try_get("job_id")?),
                    row.try_get("stop_requested")?,
                ))
            })
            .collect()
    }
}
