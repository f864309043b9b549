//! The usage flush as a job: this instance's in-memory request counts, written in batches.

use crate::db::Db;
use crate::jobs::Job;
use crate::limits::usage::{UsageRecorder, flush};

pub struct UsageFlush {
    pub db: Db,
    pub recorder: UsageRecorder,
}

impl Job for UsageFlush {
    const NAME: &'static str = "usage_flush";
    /// Requests written.
    type Report = i64;

    async fn run_once(&self) -> anyhow::Result<i64> {
        Ok(flush(&self.db, &self.recorder).await?)
    }
}
