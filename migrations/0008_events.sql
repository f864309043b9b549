-- Hub events too large for one NOTIFY payload (src/monitoring/hub/fanout.rs): the publisher
-- stores the event here and NOTIFY carries its id; every instance reads it back. Rows are
-- purged a few minutes later (jobs::hub_events).
CREATE TABLE hub_events (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id bigint GENERATED ALWAYS AS IDENTITY,
    channel text NOT NULL,
    user_id uuid,
    data jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX hub_events_created ON hub_events (tenant_id, created_at);
ALTER TABLE hub_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE hub_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON hub_events FOR ALL
    USING (tenant_id = (SELECT nullif(current_setting('my.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT nullif(current_setting('my.tenant_id', true), '')::uuid));
GRANT SELECT, INSERT, DELETE ON hub_events TO convcommerce_app;
