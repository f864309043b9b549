-- Background jobs that must run on one instance at a time claim their pass by locking their
-- row here (src/jobs/mod.rs). A platform table: it names jobs, never tenants.
CREATE TABLE job_runs (
    name text PRIMARY KEY,
    last_started_at timestamptz,
    last_finished_at timestamptz
);
GRANT SELECT, INSERT, UPDATE ON job_runs TO convcommerce_app;
