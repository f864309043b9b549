-- The platform table and the seed's six tenant tables, with row-level security.
--
-- Rules every tenant table follows (SPEC §3):
--   * tenant_id uuid NOT NULL REFERENCES tenants, leading every primary key, unique
--     constraint, foreign key between tenant tables and composite index;
--   * ENABLE + FORCE ROW LEVEL SECURITY with one policy for all commands (USING and WITH CHECK)
--     that compares tenant_id with the transaction-local setting my.tenant_id;
--   * privileges for the application role convcommerce_app, which owns nothing.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'convcommerce_app') THEN
        RAISE EXCEPTION 'role convcommerce_app does not exist: create it before migrating (docs/OPERATIONS.md)';
    END IF;
END
$$;

REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO convcommerce_app;

CREATE TABLE tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    slug        text NOT NULL CONSTRAINT tenants_slug_key UNIQUE,
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    trust_level smallint NOT NULL DEFAULT 0 CHECK (trust_level BETWEEN 0 AND 3),
    -- Per-tenant overrides of the default limits; a missing key means "the default".
    limits      jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(limits) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT, INSERT, UPDATE ON tenants TO convcommerce_app;

CREATE TABLE users (
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    id          uuid NOT NULL,
    external_id text NOT NULL CHECK (length(external_id) BETWEEN 1 AND 255),
    email       text NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    role        text NOT NULL CHECK (role IN ('owner', 'admin', 'staff')),
    is_active   boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT users_external_id_key UNIQUE (tenant_id, external_id),
    CONSTRAINT users_email_key UNIQUE (tenant_id, email)
);

CREATE TABLE seller_profiles (
    tenant_id        uuid NOT NULL REFERENCES tenants (id),
    store_name       text NOT NULL,
    slug             text NOT NULL,
    bio              text,
    logo_url         text,
    banner_url       text,
    contact_email    text,
    contact_phone    text,
    social_handles   jsonb NOT NULL DEFAULT '{}'::jsonb,
    business_address jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id)
);

CREATE TABLE products (
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    id          uuid NOT NULL,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    description text,
    price_cents bigint NOT NULL CHECK (price_cents > 0),
    currency    char(3) NOT NULL,
    sku         text,
    stock       integer NOT NULL DEFAULT 0 CHECK (stock >= 0),
    status      text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'active', 'archived')),
    media_ids   uuid[] NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT products_sku_key UNIQUE (tenant_id, sku)
);

CREATE TABLE orders (
    tenant_id        uuid NOT NULL REFERENCES tenants (id),
    id               uuid NOT NULL,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN
                        ('pending', 'confirmed', 'processing', 'shipped', 'delivered',
                         'cancelled', 'disputed')),
    channel          text NOT NULL CHECK (channel IN ('whatsapp', 'instagram', 'web', 'other')),
    customer         jsonb NOT NULL,
    notes            text,
    subtotal_cents   bigint NOT NULL CHECK (subtotal_cents >= 0),
    total_cents      bigint NOT NULL CHECK (total_cents >= 0),
    currency         char(3) NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
CREATE INDEX orders_tenant_status_idx ON orders (tenant_id, status, id DESC);

CREATE TABLE conversation_history (
    tenant_id       uuid NOT NULL REFERENCES tenants (id),
    id              uuid NOT NULL,
    thread_id       uuid NOT NULL,
    customer_handle text NOT NULL,
    channel         text NOT NULL CHECK (channel IN ('whatsapp', 'instagram', 'web', 'other')),
    sender_type     text NOT NULL CHECK (sender_type IN ('customer', 'merchant', 'bot')),
    message         text NOT NULL,
    order_id        uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    FOREIGN KEY (tenant_id, order_id) REFERENCES orders (tenant_id, id)
);
CREATE INDEX conversation_history_thread_idx ON conversation_history (tenant_id, thread_id, id DESC);

CREATE TABLE ai_config (
    tenant_id          uuid NOT NULL REFERENCES tenants (id),
    bot_name           text NOT NULL,
    style_tone         text NOT NULL,
    auto_reply_enabled boolean NOT NULL DEFAULT false,
    active_hours       jsonb,
    languages          text[] NOT NULL DEFAULT '{}',
    system_prompt      text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id)
);

-- Row-level security, identical on every tenant table.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['users', 'seller_profiles', 'products', 'orders',
                             'conversation_history', 'ai_config']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I FOR ALL '
                       'USING (tenant_id = (SELECT nullif(current_setting(''my.tenant_id'', true), '''')::uuid)) '
                       'WITH CHECK (tenant_id = (SELECT nullif(current_setting(''my.tenant_id'', true), '''')::uuid))', t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO convcommerce_app', t);
    END LOOP;
END
$$;
