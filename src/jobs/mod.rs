//! Background work, in one home. Each job is a [`Job`] with a `run_once()` that tests call
//! directly; [`spawn`] runs it on a schedule until the jobs token is cancelled.
//!
//! - A pass that runs in a task of its own, so a panic ends that pass (logged and counted)
//!   and the next tick starts afresh.
//! - [`Scope::Cluster`] jobs (the cleanup, the trust recompute) run on one instance at a time: the pass is claimed
//!   by locking the job's `job_runs` row (`FOR UPDATE SKIP LOCKED`) for as long as it runs,
//!   and skipped when another instance holds it or started a pass less than half an interval
//!   ago. A crashed instance's lock goes with its connection.
//! - [`Scope::Instance`] jobs (the usage flush) work on this instance's memory, run on every
//!   instance, and run once more after the server has drained.

pub mod cleanup;
pub mod hub_events;
pub mod trust;
pub mod usage;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::db::Db;
use crate::metrics::Metrics;

/// A unit of background work.
pub trait Job: Send + Sync + 'static {
    /// The job's name: its log field, metric label and `job_runs` key.
    const NAME: &'static str;
    /// What a pass did, for the log.
    type Report: std::fmt::Debug + Send;

    /// One pass.
    fn run_once(&self) -> impl Future<Output = anyhow::Result<Self::Report>> + Send;
}

/// Where a job's passes may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One instance at a time, about once per interval across all of them.
    Cluster,
    /// Every instance (its own state), and once more at shutdown.
    Instance,
}

/// Runs `job` every `interval` (the first pass one interval after start) until `stop`.
pub fn spawn<J: Job>(
    job: J,
    scope: Scope,
    interval: Duration,
    db: Db,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let job = Arc::new(job);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticker.tick() => match scope {
                    Scope::Instance => pass(&job, &metrics).await,
                    Scope::Cluster => claimed_pass(&job, &db, interval, &metrics).await,
                },
            }
        }
        if scope == Scope::Instance {
            pass(&job, &metrics).await;
        }
    })
}

/// One pass in a task of its own: an error or a panic is logged and counted, never fatal.
async fn pass<J: Job>(job: &Arc<J>, metrics: &Metrics) {
    let job = job.clone();
    let outcome = tokio::spawn(async move { job.run_once().await }).await;
    match outcome {
        Ok(Ok(report)) => tracing::debug!(job = J::NAME, ?report, "job pass finished"),
        Ok(Err(e)) => {
            metrics.job_failure(J::NAME);
            tracing::warn!(job = J::NAME, error = %format!("{e:#}"), "job pass failed");
        }
        Err(e) => {
            metrics.job_failure(J::NAME);
            let panic = e.try_into_panic().ok().and_then(|p| {
                p.downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
            });
            tracing::error!(
                job = J::NAME,
                panic,
                "job pass panicked; the next tick starts afresh"
            );
        }
    }
}

/// A pass on this instance only if it wins the job's `job_runs` row (see the module docs).
async fn claimed_pass<J: Job>(job: &Arc<J>, db: &Db, interval: Duration, metrics: &Metrics) {
    let claim = async {
        let tx = db.begin_platform().await?;
        // The claim stays open while the pass runs on other connections.
        tx.execute("SET LOCAL idle_in_transaction_session_timeout = 0", &[])
            .await?;
        tx.execute(
            "INSERT INTO job_runs (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
            &[&J::NAME],
        )
        .await?;
        let due = tx
            .query_opt(
                "SELECT 1 FROM job_runs WHERE name = $1
                   AND (last_started_at IS NULL OR last_started_at < now() - $2 * interval '1 second')
                 FOR UPDATE SKIP LOCKED",
                &[&J::NAME, &(interval.as_secs_f64() / 2.0)],
            )
            .await?
            .is_some();
        if !due {
            return Ok(None);
        }
        tx.execute(
            "UPDATE job_runs SET last_started_at = now() WHERE name = $1",
            &[&J::NAME],
        )
        .await?;
        Ok::<_, crate::db::DbError>(Some(tx))
    };
    match claim.await {
        Ok(Some(tx)) => {
            pass(job, metrics).await;
            let finished = async {
                tx.execute(
                    "UPDATE job_runs SET last_finished_at = now() WHERE name = $1",
                    &[&J::NAME],
                )
                .await?;
                tx.commit().await
            };
            if let Err(e) = finished.await {
                tracing::warn!(job = J::NAME, error = %e, "job claim could not be released");
            }
        }
        Ok(None) => tracing::debug!(job = J::NAME, "pass skipped: claimed elsewhere or done"),
        Err(e) => {
            metrics.job_failure(J::NAME);
            tracing::warn!(job = J::NAME, error = %e, "job pass not claimed");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use secrecy::SecretString;

    use super::*;

    /// Panics on its first pass, fails on its second, then counts.
    struct Flaky(Arc<AtomicU32>);

    impl Job for Flaky {
        const NAME: &'static str = "flaky";
        type Report = u32;

        async fn run_once(&self) -> anyhow::Result<u32> {
            match self.0.fetch_add(1, Ordering::SeqCst) {
                0 => panic!("injected panic"),
                1 => anyhow::bail!("injected failure"),
                n => Ok(n),
            }
        }
    }

    #[tokio::test]
    async fn a_pass_that_panics_or_fails_does_not_stop_the_job() {
        let passes = Arc::new(AtomicU32::new(0));
        let metrics = Arc::new(Metrics::default());
        // Instance jobs never touch the database; the pool connects lazily.
        let db = Db::connect(
            &SecretString::from("postgres://nobody@127.0.0.1:1/none"),
            1,
            0,
        )
        .unwrap();
        let stop = CancellationToken::new();
        let job = spawn(
            Flaky(passes.clone()),
            Scope::Instance,
            Duration::from_millis(10),
            db,
            metrics.clone(),
            stop.clone(),
        );
        while passes.load(Ordering::SeqCst) < 4 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.cancel();
        job.await.expect("the runner itself never panics");
        let text = metrics.render(0, 0);
        assert!(
            text.contains(r#"convcommerce_job_failures_total{kind="flaky"} 2"#),
            "{text}"
        );
    }
}
