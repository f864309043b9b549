-- Usage buckets, resource quotas and what the cleanup job needs (SPEC §5).

-- Admitted requests per tenant, in minute, hour and day buckets (written in batches).
CREATE TABLE api_usage (
    tenant_id    uuid NOT NULL REFERENCES tenants (id),
    granularity  text NOT NULL CHECK (granularity IN ('minute', 'hour', 'day')),
    bucket_start timestamptz NOT NULL,
    requests     bigint NOT NULL CHECK (requests >= 0),
    PRIMARY KEY (tenant_id, granularity, bucket_start)
);

-- What each quota has used: kept by the triggers below, in the transaction of the change.
CREATE TABLE tenant_quota_usage (
    tenant_id     uuid NOT NULL REFERENCES tenants (id),
    products      bigint NOT NULL DEFAULT 0 CHECK (products >= 0),
    users         bigint NOT NULL DEFAULT 0 CHECK (users >= 0),
    storage_bytes bigint NOT NULL DEFAULT 0 CHECK (storage_bytes >= 0),
    PRIMARY KEY (tenant_id)
);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['api_usage', 'tenant_quota_usage']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I FOR ALL '
                       'USING (tenant_id = (SELECT nullif(current_setting(''my.tenant_id'', true), '''')::uuid)) '
                       'WITH CHECK (tenant_id = (SELECT nullif(current_setting(''my.tenant_id'', true), '''')::uuid))', t);
    END LOOP;
END
$$;
GRANT SELECT, INSERT, UPDATE ON api_usage TO convcommerce_app;
GRANT DELETE ON api_usage TO convcommerce_app;
GRANT SELECT, INSERT, UPDATE ON tenant_quota_usage TO convcommerce_app;

-- A tenant's limit: its override in tenants.limits, else the platform default (the same
-- defaults as Limits::DEFAULT in src/tenancy/model.rs; a test keeps them equal).
CREATE FUNCTION tenant_limit(p_tenant uuid, p_limit text) RETURNS bigint
    LANGUAGE sql STABLE
    AS $$
    SELECT coalesce(
        (SELECT (t.limits ->> p_limit)::bigint FROM tenants t WHERE t.id = p_tenant),
        CASE p_limit
            WHEN 'requests_per_minute' THEN 60
            WHEN 'requests_per_hour' THEN 1000
            WHEN 'requests_per_day' THEN 10000
            WHEN 'max_products' THEN 1000
            WHEN 'max_users' THEN 100
            WHEN 'max_storage_bytes' THEN 1073741824
            WHEN 'conversation_retention_days' THEN 365
        END)
    $$;

-- Adds `amount` (negative to free room) to a quota; refuses to pass the limit. The counter
-- row's lock serialises concurrent creates, so N racing inserts admit exactly the room left.
CREATE FUNCTION charge_quota(tenant uuid, quota text, amount bigint) RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    cap bigint := tenant_limit(tenant, 'max_' || quota);
    now_used bigint;
BEGIN
    INSERT INTO tenant_quota_usage (tenant_id) VALUES (tenant) ON CONFLICT DO NOTHING;
    EXECUTE format(
        'UPDATE tenant_quota_usage SET %1$I = greatest(%1$I + $2, 0)
         WHERE tenant_id = $1 AND ($2 <= 0 OR %1$I + $2 <= $3)
         RETURNING %1$I', quota)
        INTO now_used USING tenant, amount, cap;
    IF now_used IS NULL THEN
        EXECUTE format('SELECT %I FROM tenant_quota_usage WHERE tenant_id = $1', quota)
            INTO now_used USING tenant;
        RAISE EXCEPTION 'quota % exceeded', quota
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'quota_' || quota,
                  DETAIL = json_build_object('quota', quota, 'used', now_used, 'limit', cap)::text;
    END IF;
END
$$;

-- Trigger: TG_ARGV[0] is the quota; TG_ARGV[1], when given, the column holding the amount
-- (else each row counts 1).
CREATE FUNCTION count_quota() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    row_amount bigint := 1;
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF TG_NARGS > 1 THEN
            EXECUTE format('SELECT ($1).%I', TG_ARGV[1]) INTO row_amount USING NEW;
        END IF;
        PERFORM charge_quota(NEW.tenant_id, TG_ARGV[0], row_amount);
        RETURN NEW;
    END IF;
    IF TG_NARGS > 1 THEN
        EXECUTE format('SELECT ($1).%I', TG_ARGV[1]) INTO row_amount USING OLD;
    END IF;
    PERFORM charge_quota(OLD.tenant_id, TG_ARGV[0], -row_amount);
    RETURN OLD;
END
$$;

CREATE TRIGGER users_quota BEFORE INSERT OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION count_quota('users');
CREATE TRIGGER products_quota BEFORE INSERT OR DELETE ON products
    FOR EACH ROW EXECUTE FUNCTION count_quota('products');
CREATE TRIGGER media_quota BEFORE INSERT OR DELETE ON media
    FOR EACH ROW EXECUTE FUNCTION count_quota('storage_bytes', 'size_bytes');

-- Since when no product shows a media (NULL while one does): the cleanup job purges media
-- unreferenced for 24 hours. Kept by triggers on product_media, so every path that attaches
-- or detaches (including a product's deletion cascading) keeps it true.
ALTER TABLE media ADD COLUMN unreferenced_since timestamptz DEFAULT now();
CREATE INDEX media_unreferenced_idx ON media (tenant_id, unreferenced_since)
    WHERE unreferenced_since IS NOT NULL;
GRANT UPDATE (unreferenced_since) ON media TO convcommerce_app;

CREATE FUNCTION track_media_references() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE media SET unreferenced_since = NULL
        WHERE tenant_id = NEW.tenant_id AND id = NEW.media_id AND unreferenced_since IS NOT NULL;
    ELSE
        UPDATE media SET unreferenced_since = now()
        WHERE tenant_id = OLD.tenant_id AND id = OLD.media_id
          AND NOT EXISTS (SELECT 1 FROM product_media pm
                          WHERE pm.tenant_id = OLD.tenant_id AND pm.media_id = OLD.media_id);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER product_media_references AFTER INSERT OR DELETE ON product_media
    FOR EACH ROW EXECUTE FUNCTION track_media_references();

-- The cleanup job removes threads whose messages have all passed the retention.
GRANT DELETE ON conversation_threads TO convcommerce_app;

-- Count what exists already. The owner is subject to FORCE RLS, so lift it for the backfill
-- inside this migration's transaction.
ALTER TABLE users NO FORCE ROW LEVEL SECURITY;
ALTER TABLE products NO FORCE ROW LEVEL SECURITY;
ALTER TABLE media NO FORCE ROW LEVEL SECURITY;
ALTER TABLE product_media NO FORCE ROW LEVEL SECURITY;
ALTER TABLE tenant_quota_usage NO FORCE ROW LEVEL SECURITY;
INSERT INTO tenant_quota_usage (tenant_id, users, products, storage_bytes)
SELECT t.id,
       (SELECT count(*) FROM users u WHERE u.tenant_id = t.id),
       (SELECT count(*) FROM products p WHERE p.tenant_id = t.id),
       (SELECT coalesce(sum(size_bytes), 0) FROM media m WHERE m.tenant_id = t.id)
FROM tenants t;
UPDATE media m SET unreferenced_since = NULL
WHERE EXISTS (SELECT 1 FROM product_media pm WHERE pm.tenant_id = m.tenant_id AND pm.media_id = m.id);
ALTER TABLE users FORCE ROW LEVEL SECURITY;
ALTER TABLE products FORCE ROW LEVEL SECURITY;
ALTER TABLE media FORCE ROW LEVEL SECURITY;
ALTER TABLE product_media FORCE ROW LEVEL SECURITY;
ALTER TABLE tenant_quota_usage FORCE ROW LEVEL SECURITY;
