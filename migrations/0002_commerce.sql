-- The seller-facing store: media, product images, product search terms, order items and
-- ratings, conversation threads, and the indexes behind list filters.
--
-- New tenant tables follow the rules of 0001 (tenant_id leading every key and index, ENABLE +
-- FORCE RLS with the tenant_isolation policy, privileges for convcommerce_app).

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
CREATE INDEX products_status_idx ON products (tenant_id, status, id DESC);
CREATE INDEX products_price_idx ON products (tenant_id, price_cents);

-- Product search by text. Under row-level security PostgreSQL turns a condition into an index
-- condition only when its operator is LEAKPROOF; ILIKE and the pg_trgm and full-text operators
-- are not, so a GIN index on products would never be used for them. Instead the trigrams of
-- each product's name and sku are kept here and found by equality (leakproof), and the
-- candidates are rechecked with ILIKE.
--
-- Trigrams: the text is lower-cased and split into words at ASCII characters other than letters
-- and digits; every three consecutive characters of a word are one trigram. A text that
-- contains the query contains every trigram of the query.
CREATE FUNCTION product_search_trigrams(t text) RETURNS text[]
    LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    word text;
    grams text[] := '{}';
BEGIN
    FOREACH word IN ARRAY regexp_split_to_array(lower(t), '[\x01-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]+')
    LOOP
        FOR i IN 1 .. length(word) - 2 LOOP
            IF NOT substr(word, i, 3) = ANY (grams) THEN
                grams := grams || substr(word, i, 3);
            END IF;
        END LOOP;
    END LOOP;
    RETURN grams;
END
$$;

CREATE TABLE product_search_terms (
    tenant_id  uuid NOT NULL REFERENCES tenants (id),
    trigram    text NOT NULL,
    product_id uuid NOT NULL,
    PRIMARY KEY (tenant_id, trigram, product_id),
    CONSTRAINT product_search_terms_product_fkey FOREIGN KEY (tenant_id, product_id)
        REFERENCES products (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX product_search_terms_product_idx ON product_search_terms (tenant_id, product_id);

CREATE FUNCTION product_search_terms_sync() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        DELETE FROM product_search_terms WHERE tenant_id = OLD.tenant_id AND product_id = OLD.id;
    END IF;
    INSERT INTO product_search_terms (tenant_id, trigram, product_id)
    SELECT NEW.tenant_id, g, NEW.id
    FROM unnest(product_search_trigrams(NEW.name || ' ' || coalesce(NEW.sku, ''))) AS g;
    RETURN NULL;
END
$$;
CREATE TRIGGER products_search_terms_insert AFTER INSERT ON products
    FOR EACH ROW EXECUTE FUNCTION product_search_terms_sync();
CREATE TRIGGER products_search_terms_update AFTER UPDATE OF name, sku ON products
    FOR EACH ROW WHEN (OLD.name IS DISTINCT FROM NEW.name OR OLD.sku IS DISTINCT FROM NEW.sku)
    EXECUTE FUNCTION product_search_terms_sync();

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
    FOREACH t IN ARRAY ARRAY['media', 'product_media', 'product_search_terms', 'order_items',
                             'order_ratings', 'conversation_threads']
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
GRANT SELECT, INSERT, DELETE ON product_search_terms TO convcommerce_app;
GRANT SELECT, INSERT ON order_items TO convcommerce_app;
GRANT SELECT, INSERT ON order_ratings TO convcommerce_app;
GRANT SELECT, INSERT, UPDATE ON conversation_threads TO convcommerce_app;
