-- The seller-facing store: media, product images, order items and ratings, conversation
-- threads, and the indexes behind product search and list filters.
--
-- New tenant tables follow the rules of 0001 (tenant_id leading every key and index, ENABLE +
-- FORCE RLS with the tenant_isolation policy, privileges for convcommerce_app).

-- Trigram search on product names and skus; btree_gin lets the GIN index lead with tenant_id.
-- Both are trusted extensions: the database owner may create them.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE EXTENSION IF NOT EXISTS btree_gin;

CREATE TABLE media (
    tenant_id    uuid NOT NULL REFERENCES tenants (id),
    id           uuid NOT NULL,
    content_type text NOT NULL,
    size_bytes   bigint NOT NULL CHECK (size_bytes > 0),
    filename     text CHECK (length(filename) BETWEEN 1 AND 255),
    -- Where the bytes live in the object store (MEDIA_STORE).
    storage_key  text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

-- Products reference media through this table, so a media id must exist in the same tenant
-- (the foreign keys include tenant_id) and deleting a media detaches it.
ALTER TABLE products DROP COLUMN media_ids;
CREATE TABLE product_media (
    tenant_id  uuid NOT NULL REFERENCES tenants (id),
    product_id uuid NOT NULL,
    media_id   uuid NOT NULL,
    position   smallint NOT NULL CHECK (position >= 0),
    PRIMARY KEY (tenant_id, product_id, media_id),
    CONSTRAINT product_media_position_key UNIQUE (tenant_id, product_id, position),
    CONSTRAINT product_media_product_fkey FOREIGN KEY (tenant_id, product_id)
        REFERENCES products (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT product_media_media_fkey FOREIGN KEY (tenant_id, media_id)
        REFERENCES media (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX product_media_media_idx ON product_media (tenant_id, media_id);

ALTER TABLE products ADD CONSTRAINT products_currency_check CHECK (currency ~ '^[A-Z]{3}$');
CREATE INDEX products_search_idx ON products
    USING gin (tenant_id, (name || ' ' || coalesce(sku, '')) gin_trgm_ops);
CREATE INDEX products_status_idx ON products (tenant_id, status, id DESC);
CREATE INDEX products_price_idx ON products (tenant_id, price_cents);

-- Orders: shipping details, the reason of a cancellation or dispute, when it was delivered.
ALTER TABLE orders
    ADD COLUMN tracking_number text CHECK (length(tracking_number) BETWEEN 1 AND 100),
    ADD COLUMN carrier         text CHECK (length(carrier) BETWEEN 1 AND 100),
    ADD COLUMN status_reason   text CHECK (length(status_reason) BETWEEN 1 AND 1000),
    ADD COLUMN delivered_at    timestamptz;
CREATE INDEX orders_tenant_channel_idx ON orders (tenant_id, channel, id DESC);
CREATE INDEX orders_tenant_created_idx ON orders (tenant_id, created_at);

-- An order's lines: the product's name, sku and price as they were when it was ordered.
-- Deleting a product keeps the line (product_id becomes null, tenant_id stays).
CREATE TABLE order_items (
    tenant_id        uuid NOT NULL REFERENCES tenants (id),
    order_id         uuid NOT NULL,
    position         smallint NOT NULL CHECK (position >= 0),
    product_id       uuid,
    name             text NOT NULL,
    sku              text,
    quantity         integer NOT NULL CHECK (quantity > 0),
    unit_price_cents bigint NOT NULL CHECK (unit_price_cents > 0),
    PRIMARY KEY (tenant_id, order_id, position),
    CONSTRAINT order_items_order_fkey FOREIGN KEY (tenant_id, order_id)
        REFERENCES orders (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT order_items_product_fkey FOREIGN KEY (tenant_id, product_id)
        REFERENCES products (tenant_id, id) ON DELETE SET NULL (product_id)
);
CREATE INDEX order_items_product_idx ON order_items (tenant_id, product_id);

CREATE TABLE order_ratings (
    tenant_id  uuid NOT NULL REFERENCES tenants (id),
    order_id   uuid NOT NULL,
    stars      smallint NOT NULL CHECK (stars BETWEEN 1 AND 5),
    comment    text CHECK (length(comment) <= 2000),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, order_id),
    CONSTRAINT order_ratings_order_fkey FOREIGN KEY (tenant_id, order_id)
        REFERENCES orders (tenant_id, id) ON DELETE CASCADE
);

-- One thread per customer and channel; conversation_history rows belong to a thread.
CREATE TABLE conversation_threads (
    tenant_id       uuid NOT NULL REFERENCES tenants (id),
    id              uuid NOT NULL,
    customer_handle text NOT NULL CHECK (length(customer_handle) BETWEEN 1 AND 200),
    channel         text NOT NULL CHECK (channel IN ('whatsapp', 'instagram', 'web', 'other')),
    -- The newest message (UUID v7, so also the thread's keyset position).
    last_message_id uuid NOT NULL,
    -- Customer messages since the last merchant or bot message.
    unread_count    integer NOT NULL DEFAULT 0 CHECK (unread_count >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT conversation_threads_handle_key UNIQUE (tenant_id, channel, customer_handle)
);
CREATE INDEX conversation_threads_recent_idx
    ON conversation_threads (tenant_id, last_message_id DESC);
ALTER TABLE conversation_history
    ADD CONSTRAINT conversation_history_thread_fkey FOREIGN KEY (tenant_id, thread_id)
        REFERENCES conversation_threads (tenant_id, id),
    ADD CONSTRAINT conversation_history_message_check CHECK (length(message) BETWEEN 1 AND 4096);
ALTER TABLE conversation_history
    RENAME CONSTRAINT conversation_history_tenant_id_order_id_fkey TO conversation_history_order_fkey;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['media', 'product_media', 'order_items', 'order_ratings',
                             'conversation_threads']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I FOR ALL '
                       'USING (tenant_id = (SELECT nullif(current_setting(''my.tenant_id'', true), '''')::uuid)) '
                       'WITH CHECK (tenant_id = (SELECT nullif(current_setting(''my.tenant_id'', true), '''')::uuid))', t);
    END LOOP;
END
$$;

GRANT SELECT, INSERT, DELETE ON media TO convcommerce_app;
GRANT SELECT, INSERT, DELETE ON product_media TO convcommerce_app;
GRANT SELECT, INSERT ON order_items TO convcommerce_app;
GRANT SELECT, INSERT ON order_ratings TO convcommerce_app;
GRANT SELECT, INSERT, UPDATE ON conversation_threads TO convcommerce_app;
