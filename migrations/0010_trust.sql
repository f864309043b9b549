-- Progressive trust (SPEC §6), tenant settings (SPEC §4) and API keys (SPEC §2, §6).
-- docs/TRUST.md explains the levels, the score and the risk signals.

-- The platform's standing of each tenant lives beside its status and limits, in the platform
-- table: what the platform decided (level, lock, grace, suspension reason) and what it found
-- (score, risk signals, an open review). Platform code writes these; a tenant reads its own
-- level, score and lock through GET /api/v1/trust, never its risk signals.
ALTER TABLE tenants
    ADD COLUMN status_reason text CHECK (length(status_reason) BETWEEN 1 AND 1000),
    ADD COLUMN trust_locked boolean NOT NULL DEFAULT false,
    ADD COLUMN trust_reason text CHECK (length(trust_reason) BETWEEN 1 AND 1000),
    ADD COLUMN trust_changed_at timestamptz,
    ADD COLUMN trust_score smallint CHECK (trust_score BETWEEN 0 AND 100),
    ADD COLUMN trust_computed_at timestamptz,
    -- Set while the tenant no longer meets its level's requirements: it is demoted once the
    -- grace period (TRUST_GRACE_SECONDS) has passed since.
    ADD COLUMN trust_grace_started_at timestamptz,
    ADD COLUMN risk_level text NOT NULL DEFAULT 'none'
        CHECK (risk_level IN ('none', 'low', 'medium', 'high', 'critical')),
    ADD COLUMN risk_signals jsonb NOT NULL DEFAULT '[]'::jsonb
        CHECK (jsonb_typeof(risk_signals) = 'array'),
    ADD COLUMN risk_assessed_at timestamptz,
    -- An open review for platform admins (a risk flag or a score drop), until an admin acts.
    ADD COLUMN review_reason text CHECK (length(review_reason) BETWEEN 1 AND 1000),
    ADD COLUMN review_opened_at timestamptz;
-- GET /api/v1/admin/risk reads only the flagged tenants.
CREATE INDEX tenants_flagged_idx ON tenants (id)
    WHERE risk_level <> 'none' OR review_opened_at IS NOT NULL;

-- The tenant's settings (SPEC §4); no row means the defaults.
CREATE TABLE tenant_settings (
    tenant_id           uuid NOT NULL REFERENCES tenants (id),
    timezone            text NOT NULL DEFAULT 'UTC' CHECK (length(timezone) BETWEEN 1 AND 64),
    auto_confirm_orders boolean NOT NULL DEFAULT false,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id)
);

-- One verification per tenant and kind, made with the tenant (below), so every kind has its
-- id from the start. business_info and store_setup are derived from the seller profile when
-- read; their rows only give them an id.
CREATE TABLE trust_verifications (
    tenant_id     uuid NOT NULL REFERENCES tenants (id),
    id            uuid NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('email', 'phone', 'business_info', 'store_setup',
                                               'registration', 'tax_id', 'address',
                                               'bank_account')),
    status        text NOT NULL DEFAULT 'unverified'
                  CHECK (status IN ('unverified', 'pending', 'verified', 'rejected')),
    -- Why it was rejected (documents).
    reason        text CHECK (length(reason) BETWEEN 1 AND 1000),
    -- email and phone: where the last code went, then the verified address.
    address       text CHECK (length(address) BETWEEN 1 AND 320),
    -- Documents: what the seller wrote for the reviewer.
    fields        jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(fields) = 'object'),
    -- Documents: the current submission (UUID v7: the review queue's order) and its time.
    submission_id uuid,
    submitted_at  timestamptz,
    decided_at    timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT trust_verifications_kind_key UNIQUE (tenant_id, kind)
);

-- A document's files. Media named here cannot be deleted (409 `media_in_use`) and is never
-- purged as unreferenced (track_media_references below).
CREATE TABLE verification_media (
    tenant_id       uuid NOT NULL REFERENCES tenants (id),
    verification_id uuid NOT NULL,
    media_id        uuid NOT NULL,
    position        smallint NOT NULL CHECK (position >= 0),
    PRIMARY KEY (tenant_id, verification_id, media_id),
    CONSTRAINT verification_media_verification_fkey FOREIGN KEY (tenant_id, verification_id)
        REFERENCES trust_verifications (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT verification_media_media_fkey FOREIGN KEY (tenant_id, media_id)
        REFERENCES media (tenant_id, id)
);
CREATE INDEX verification_media_media_idx ON verification_media (tenant_id, media_id);

-- One-time codes of the email and phone verifications: stored as a hash, single-use, with
-- an expiry and a count of wrong tries. Times come from the service clock.
CREATE TABLE trust_codes (
    tenant_id  uuid NOT NULL REFERENCES tenants (id),
    id         uuid NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('email', 'phone')),
    address    text NOT NULL CHECK (length(address) BETWEEN 1 AND 320),
    code_hash  bytea NOT NULL CHECK (length(code_hash) = 32),
    attempts   smallint NOT NULL DEFAULT 0 CHECK (attempts BETWEEN 0 AND 5),
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    voided_at  timestamptz,
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX trust_codes_kind_idx ON trust_codes (tenant_id, kind, created_at);

-- API keys (SPEC §2): the key itself is never stored, only its SHA-256 (a 256-bit random
-- secret needs no slow hash) and its first 12 characters, to recognise it.
CREATE TABLE api_keys (
    tenant_id  uuid NOT NULL REFERENCES tenants (id),
    id         uuid NOT NULL,
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    role       text NOT NULL CHECK (role IN ('owner', 'admin', 'staff')),
    prefix     text NOT NULL CHECK (length(prefix) = 12),
    key_hash   bytea NOT NULL CHECK (length(key_hash) = 32),
    -- The member who made it (null once that member is gone).
    created_by uuid,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz,
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT api_keys_hash_key UNIQUE (tenant_id, key_hash)
);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['tenant_settings', 'trust_verifications', 'verification_media',
                             'trust_codes', 'api_keys']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I FOR ALL '
                       'USING (tenant_id = (SELECT nullif(current_setting(''my.tenant_id'', true), '''')::uuid)) '
                       'WITH CHECK (tenant_id = (SELECT nullif(current_setting(''my.tenant_id'', true), '''')::uuid))', t);
    END LOOP;
END
$$;
GRANT SELECT, INSERT, UPDATE ON tenant_settings TO convcommerce_app;
GRANT SELECT, INSERT, UPDATE ON trust_verifications TO convcommerce_app;
GRANT SELECT, INSERT, DELETE ON verification_media TO convcommerce_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON trust_codes TO convcommerce_app;
GRANT SELECT, INSERT, DELETE ON api_keys TO convcommerce_app;

-- The platform admins' review queue of document submissions. A platform table by nature (it
-- is the admins' work list across tenants, reached by a verification id alone), so it names
-- its tenant in `tenant`, like job_runs names jobs, and holds no document content: that stays
-- in the tenant's own rows, read with the tenant set.
CREATE TABLE verification_queue (
    verification_id uuid PRIMARY KEY,
    tenant          uuid NOT NULL REFERENCES tenants (id),
    kind            text NOT NULL
                    CHECK (kind IN ('registration', 'tax_id', 'address', 'bank_account')),
    status          text NOT NULL CHECK (status IN ('pending', 'verified', 'rejected')),
    submission_id   uuid NOT NULL,
    submitted_at    timestamptz NOT NULL,
    decided_at      timestamptz
);
CREATE INDEX verification_queue_status_idx ON verification_queue (status, submission_id);
GRANT SELECT, INSERT, UPDATE ON verification_queue TO convcommerce_app;

-- Analytics (and the score's windows) read orders and messages by time: covering indexes,
-- so a day range is an index-only scan of the tenant's rows in it, and each order's lines
-- an index-only lookup by key.
DROP INDEX orders_tenant_created_idx;
CREATE INDEX orders_tenant_created_idx ON orders (tenant_id, created_at)
    INCLUDE (id, status, total_cents, currency);
-- An order's lines carry when the order was placed: inserted in the order's own transaction,
-- their default now() is the order's created_at. So the lines of a time range are a range of
-- this index, joined by hash to the orders of the same range (not one lookup per order).
ALTER TABLE order_items ADD COLUMN placed_at timestamptz NOT NULL DEFAULT now();
ALTER TABLE order_items NO FORCE ROW LEVEL SECURITY;
ALTER TABLE orders NO FORCE ROW LEVEL SECURITY;
UPDATE order_items i SET placed_at = o.created_at
FROM orders o WHERE o.tenant_id = i.tenant_id AND o.id = i.order_id;
ALTER TABLE order_items FORCE ROW LEVEL SECURITY;
ALTER TABLE orders FORCE ROW LEVEL SECURITY;
CREATE INDEX order_items_placed_idx ON order_items (tenant_id, placed_at)
    INCLUDE (order_id, product_id, name, quantity, unit_price_cents);
CREATE INDEX conversation_history_created_idx ON conversation_history (tenant_id, created_at)
    INCLUDE (thread_id, sender_type, order_id);

-- Product caps by trust level: 5 at level 0, 50 at level 1, none above (SPEC §6).
CREATE FUNCTION trust_product_cap(level smallint) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE level WHEN 0 THEN 5 WHEN 1 THEN 50 END;

-- A quota's effective bound and what sets it: the tenant's quota, or for products the trust
-- level's cap when that is lower (`trust_level`).
CREATE FUNCTION quota_bound(tenant uuid, quota text, OUT cap bigint, OUT reason text)
    LANGUAGE plpgsql STABLE
    AS $$
DECLARE
    quota_cap bigint := tenant_limit(tenant, 'max_' || quota);
    trust_cap bigint;
BEGIN
    IF quota = 'products' THEN
        SELECT trust_product_cap(t.trust_level) INTO trust_cap FROM tenants t WHERE t.id = tenant;
    END IF;
    IF trust_cap < quota_cap THEN
        cap := trust_cap;
        reason := 'trust_level';
    ELSE
        cap := quota_cap;
        reason := 'quota';
    END IF;
END
$$;

-- The error every store turns into 403 `quota_exceeded` (with `quota`, `used`, `limit`, `reason`).
CREATE FUNCTION quota_exceeded(quota text, used bigint, cap bigint, reason text) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    RAISE EXCEPTION 'quota % exceeded', quota
        USING ERRCODE = 'check_violation',
              CONSTRAINT = 'quota_' || quota,
              DETAIL = json_build_object('quota', quota, 'used', used, 'limit', cap,
                                         'reason', reason)::text;
END
$$;

-- As in 0003, with the bound of quota_bound (the counter row's lock still serialises
-- concurrent creates, so N racing inserts admit exactly the room left).
CREATE OR REPLACE FUNCTION charge_quota(tenant uuid, quota text, amount bigint) RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    bound record;
    now_used bigint;
BEGIN
    SELECT * INTO bound FROM quota_bound(tenant, quota);
    INSERT INTO tenant_quota_usage (tenant_id) VALUES (tenant) ON CONFLICT DO NOTHING;
    EXECUTE format(
        'UPDATE tenant_quota_usage SET %1$I = greatest(%1$I + $2, 0)
         WHERE tenant_id = $1 AND ($2 <= 0 OR %1$I + $2 <= $3)
         RETURNING %1$I', quota)
        INTO now_used USING tenant, amount, bound.cap;
    IF now_used IS NULL THEN
        EXECUTE format('SELECT %I FROM tenant_quota_usage WHERE tenant_id = $1', quota)
            INTO now_used USING tenant;
        PERFORM quota_exceeded(quota, now_used, bound.cap, bound.reason);
    END IF;
END
$$;

-- Locks the counter and refuses unless `amount` more fit: a batch of N creates counts as one
-- create of N (the rows' own triggers then charge them under the same lock).
CREATE FUNCTION require_quota_room(tenant uuid, quota text, amount bigint) RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    bound record;
    now_used bigint;
BEGIN
    SELECT * INTO bound FROM quota_bound(tenant, quota);
    INSERT INTO tenant_quota_usage (tenant_id) VALUES (tenant) ON CONFLICT DO NOTHING;
    EXECUTE format('SELECT %I FROM tenant_quota_usage WHERE tenant_id = $1 FOR UPDATE', quota)
        INTO now_used USING tenant;
    IF now_used + amount > bound.cap THEN
        PERFORM quota_exceeded(quota, now_used, bound.cap, bound.reason);
    END IF;
END
$$;

-- A media is unreferenced only when neither a product nor a verification names it.
CREATE OR REPLACE FUNCTION track_media_references() RETURNS trigger
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
                          WHERE pm.tenant_id = OLD.tenant_id AND pm.media_id = OLD.media_id)
          AND NOT EXISTS (SELECT 1 FROM verification_media vm
                          WHERE vm.tenant_id = OLD.tenant_id AND vm.media_id = OLD.media_id);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER verification_media_references AFTER INSERT OR DELETE ON verification_media
    FOR EACH ROW EXECUTE FUNCTION track_media_references();

-- Every kind's verification row; run with the tenant set.
CREATE FUNCTION trust_verification_rows(p_tenant uuid) RETURNS void
    LANGUAGE sql AS $$
    INSERT INTO trust_verifications (tenant_id, id, kind)
    SELECT p_tenant, monitoring_uuid_v7(), k
    FROM unnest(ARRAY['email', 'phone', 'business_info', 'store_setup', 'registration',
                      'tax_id', 'address', 'bank_account']) AS k
    ON CONFLICT (tenant_id, kind) DO NOTHING
    $$;

CREATE FUNCTION tenants_trust_rows() RETURNS trigger
    LANGUAGE plpgsql AS $$
DECLARE
    previous text := coalesce(current_setting('my.tenant_id', true), '');
BEGIN
    PERFORM set_config('my.tenant_id', NEW.id::text, true);
    PERFORM trust_verification_rows(NEW.id);
    PERFORM set_config('my.tenant_id', previous, true);
    RETURN NULL;
END
$$;
CREATE TRIGGER tenants_trust_rows AFTER INSERT ON tenants
    FOR EACH ROW EXECUTE FUNCTION tenants_trust_rows();

-- Tenants that existed before trust keep what they had: level 2 (no product cap under the
-- quota, custom monitoring rules), locked so that the recompute does not demote them before an
-- admin reviews them (docs/TRUST.md, "Existing tenants").
DO $$
DECLARE
    t uuid;
BEGIN
    FOR t IN SELECT id FROM tenants LOOP
        PERFORM set_config('my.tenant_id', t::text, true);
        PERFORM trust_verification_rows(t);
    END LOOP;
    PERFORM set_config('my.tenant_id', '', true);
END
$$;
UPDATE tenants SET trust_level = 2, trust_locked = true, trust_changed_at = now(),
    trust_reason = 'Existing tenant: kept at level 2 when progressive trust was introduced';
