-- Monitoring rules, their shared window state and alerts (SPEC §7 "Rules", "Alerts").

CREATE TABLE monitoring_rules (
    tenant_id        uuid NOT NULL REFERENCES tenants (id),
    id               uuid NOT NULL,
    -- Built-ins only; a rule with a key is a built-in.
    key              text CHECK (key IN ('auth_failure_burst', 'server_error_burst',
                                         'destructive_delete', 'rate_limit_hammering',
                                         'request_volume_anomaly')),
    name             text NOT NULL,
    enabled          boolean NOT NULL DEFAULT true,
    severity         text NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    condition        jsonb NOT NULL,
    threshold        jsonb,
    schedule         jsonb,
    -- NULL: the severity's default.
    cooldown_seconds integer CHECK (cooldown_seconds > 0),
    channels         jsonb,
    recipients       jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT monitoring_rules_key_key UNIQUE (tenant_id, key)
);

-- A counter per tenant bumped by every change to its rules: each instance compares it with
-- the version of the rules it compiled, so a change applies everywhere on the next batch.
CREATE TABLE monitoring_rule_sets (
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    version   bigint NOT NULL,
    PRIMARY KEY (tenant_id)
);

-- One row per (rule, group): the sliding window or baseline (JSON, see rules/window.rs).
-- Instances lock it while they apply their events, so they count together and fire once.
CREATE TABLE monitoring_rule_windows (
    tenant_id  uuid NOT NULL REFERENCES tenants (id),
    rule_id    uuid NOT NULL,
    group_key  text NOT NULL,
    state      jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, rule_id, group_key),
    CONSTRAINT monitoring_rule_windows_rule_fkey FOREIGN KEY (tenant_id, rule_id)
        REFERENCES monitoring_rules (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE monitoring_alerts (
    tenant_id           uuid NOT NULL REFERENCES tenants (id),
    id                  uuid NOT NULL,
    -- Kept when the rule is deleted, so deleting a rule cannot erase what it caught.
    rule_id             uuid,
    severity            text NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    status              text NOT NULL DEFAULT 'firing'
                        CHECK (status IN ('firing', 'acknowledged', 'resolved')),
    group_key           text NOT NULL,
    event_count         bigint NOT NULL CHECK (event_count > 0),
    first_event_at      timestamptz NOT NULL,
    last_event_at       timestamptz NOT NULL,
    sample_activity_ids uuid[] NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    acknowledged_at     timestamptz,
    resolved_at         timestamptz,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT monitoring_alerts_rule_fkey FOREIGN KEY (tenant_id, rule_id)
        REFERENCES monitoring_rules (tenant_id, id) ON DELETE SET NULL (rule_id)
);
CREATE INDEX monitoring_alerts_status_idx ON monitoring_alerts (tenant_id, status, id);
CREATE INDEX monitoring_alerts_rule_idx ON monitoring_alerts (tenant_id, rule_id);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['monitoring_rules', 'monitoring_rule_sets', 'monitoring_rule_windows',
                             'monitoring_alerts']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I FOR ALL '
                       'USING (tenant_id = (SELECT nullif(current_setting(''my.tenant_id'', true), '''')::uuid)) '
                       'WITH CHECK (tenant_id = (SELECT nullif(current_setting(''my.tenant_id'', true), '''')::uuid))', t);
    END LOOP;
END
$$;
GRANT SELECT, INSERT, UPDATE, DELETE ON monitoring_rules TO convcommerce_app;
GRANT SELECT, INSERT, UPDATE ON monitoring_rule_sets TO convcommerce_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON monitoring_rule_windows TO convcommerce_app;
GRANT SELECT, INSERT, UPDATE ON monitoring_alerts TO convcommerce_app;

CREATE FUNCTION monitoring_rule_sets_bump() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    tenant uuid := CASE WHEN TG_OP = 'DELETE' THEN OLD.tenant_id ELSE NEW.tenant_id END;
BEGIN
    INSERT INTO monitoring_rule_sets (tenant_id, version) VALUES (tenant, 1)
    ON CONFLICT (tenant_id) DO UPDATE SET version = monitoring_rule_sets.version + 1;
    RETURN NULL;
END
$$;
CREATE TRIGGER monitoring_rules_version AFTER INSERT OR UPDATE OR DELETE ON monitoring_rules
    FOR EACH ROW EXECUTE FUNCTION monitoring_rule_sets_bump();

-- A UUID v7 (SPEC §1) made in SQL: PostgreSQL 15 has no uuidv7().
CREATE FUNCTION monitoring_uuid_v7() RETURNS uuid
    LANGUAGE sql VOLATILE AS $$
    SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
        PLACING substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
        FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid
    $$;

-- The built-in security rules (docs/MONITORING.md); run with the tenant set.
CREATE FUNCTION monitoring_builtin_rules(p_tenant uuid) RETURNS void
    LANGUAGE sql AS $$
    INSERT INTO monitoring_rules (tenant_id, id, key, name, severity, condition, threshold)
    SELECT p_tenant, monitoring_uuid_v7(), b.key, b.name, b.severity, b.condition, b.threshold
    FROM (VALUES
        ('auth_failure_burst', 'Authentication failure burst', 'high',
         '{"field": "action", "op": "eq", "value": "auth.failed"}'::jsonb,
         '{"count": 10, "window_seconds": 300, "group_by": ["ip"]}'::jsonb),
        ('server_error_burst', 'Server error burst', 'high',
         '{"field": "status", "op": "gte", "value": 500}'::jsonb,
         '{"count": 10, "window_seconds": 300, "group_by": []}'::jsonb),
        ('destructive_delete', 'Destructive deletes', 'high',
         '{"all": [{"field": "method", "op": "eq", "value": "DELETE"}, {"field": "status", "op": "gte", "value": 200}, {"field": "status", "op": "lt", "value": 300}]}'::jsonb,
         '{"count": 20, "window_seconds": 600, "group_by": ["actor"]}'::jsonb),
        ('rate_limit_hammering', 'Rate-limit hammering', 'medium',
         '{"field": "action", "op": "eq", "value": "rate_limited"}'::jsonb,
         '{"count": 50, "window_seconds": 300, "group_by": ["ip"]}'::jsonb),
        ('request_volume_anomaly', 'Request volume far above the baseline', 'medium',
         '{"field": "method", "op": "exists", "value": true}'::jsonb,
         '{"count": 100, "window_seconds": 300, "group_by": []}'::jsonb)
    ) AS b (key, name, severity, condition, threshold)
    ON CONFLICT (tenant_id, key) DO NOTHING
    $$;

-- Every new tenant gets the built-ins, whichever path creates it. The tenant is set for the
-- inserts only, then the caller's setting comes back.
CREATE FUNCTION tenants_builtin_rules() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    previous text := coalesce(current_setting('my.tenant_id', true), '');
BEGIN
    PERFORM set_config('my.tenant_id', NEW.id::text, true);
    PERFORM monitoring_builtin_rules(NEW.id);
    PERFORM set_config('my.tenant_id', previous, true);
    RETURN NULL;
END
$$;
CREATE TRIGGER tenants_builtin_rules AFTER INSERT ON tenants
    FOR EACH ROW EXECUTE FUNCTION tenants_builtin_rules();

-- Existing tenants.
DO $$
DECLARE
    t uuid;
BEGIN
    FOR t IN SELECT id FROM tenants LOOP
        PERFORM set_config('my.tenant_id', t::text, true);
        PERFORM monitoring_builtin_rules(t);
    END LOOP;
    PERFORM set_config('my.tenant_id', '', true);
END
$$;
