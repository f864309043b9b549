-- The activity log (SPEC §7): append-only for the server's role. convcommerce_app may INSERT
-- and SELECT and nothing else (no UPDATE, no DELETE: privileges, not a policy, refuse them);
-- retention is purged by purge_activities(), a SECURITY DEFINER function of the migration role.
CREATE TABLE activities (
    tenant_id     uuid NOT NULL REFERENCES tenants (id),
    id            uuid NOT NULL,
    actor         uuid,
    actor_type    text NOT NULL CHECK (actor_type IN ('user', 'api_key', 'system')),
    action        text NOT NULL CHECK (length(action) BETWEEN 1 AND 100),
    category      text NOT NULL
        CHECK (category IN ('auth', 'data', 'request', 'security', 'trust', 'system')),
    method        text,
    route         text,
    resource_type text,
    resource_id   uuid,
    status        smallint,
    latency_ms    integer,
    ip            text,
    user_agent    text,
    request_id    text,
    details       jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
-- Newest first is id descending (UUID v7, made with created_at), like every list: the
-- primary key serves the plain page; each filter leads an index of its own after the tenant.
CREATE INDEX activities_category_idx ON activities (tenant_id, category, id);
CREATE INDEX activities_action_idx ON activities (tenant_id, action, id);
CREATE INDEX activities_actor_idx ON activities (tenant_id, actor, id);
CREATE INDEX activities_resource_idx ON activities (tenant_id, resource_type, resource_id, id);
CREATE INDEX activities_created_idx ON activities (tenant_id, created_at);

ALTER TABLE activities ENABLE ROW LEVEL SECURITY;
ALTER TABLE activities FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON activities FOR ALL
    USING (tenant_id = (SELECT nullif(current_setting('my.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT nullif(current_setting('my.tenant_id', true), '')::uuid));
REVOKE ALL ON activities FROM PUBLIC, convcommerce_app;
GRANT SELECT, INSERT ON activities TO convcommerce_app;

-- Deletes the current tenant's activities created before `cutoff`. The tenant is the
-- transaction's my.tenant_id (the caller's, so row-level security still scopes the delete:
-- the owner is subject to FORCE RLS too); it returns how many rows went.
CREATE FUNCTION purge_activities(cutoff timestamptz) RETURNS bigint
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    purged bigint;
BEGIN
    DELETE FROM activities
    WHERE tenant_id = nullif(current_setting('my.tenant_id', true), '')::uuid
      AND created_at < cutoff;
    GET DIAGNOSTICS purged = ROW_COUNT;
    RETURN purged;
END
$$;
REVOKE ALL ON FUNCTION purge_activities(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION purge_activities(timestamptz) TO convcommerce_app;
