-- Order search (`q`: the customer's name, phone or e-mail) through trigrams found by equality,
-- like product search (0002): under row-level security ILIKE on orders could only scan the
-- tenant's orders. An order's customer never changes, so the terms are written once.
CREATE TABLE order_search_terms (
    tenant_id uuid NOT NULL REFERENCES tenants (id),
    trigram   text NOT NULL,
    order_id  uuid NOT NULL,
    PRIMARY KEY (tenant_id, trigram, order_id),
    CONSTRAINT order_search_terms_order_fkey FOREIGN KEY (tenant_id, order_id)
        REFERENCES orders (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX order_search_terms_order_idx ON order_search_terms (tenant_id, order_id);

ALTER TABLE order_search_terms ENABLE ROW LEVEL SECURITY;
ALTER TABLE order_search_terms FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON order_search_terms FOR ALL
    USING (tenant_id = (SELECT nullif(current_setting('my.tenant_id', true), '')::uuid))
    WITH CHECK (tenant_id = (SELECT nullif(current_setting('my.tenant_id', true), '')::uuid));
GRANT SELECT, INSERT ON order_search_terms TO convcommerce_app;

-- The searchable text of an order, as the order list's recheck sees it.
CREATE FUNCTION order_search_text(customer jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN concat_ws(' ', customer->>'name', customer->>'phone', customer->>'email');

CREATE FUNCTION order_search_terms_sync() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO order_search_terms (tenant_id, trigram, order_id)
    SELECT NEW.tenant_id, g, NEW.id
    FROM unnest(product_search_trigrams(order_search_text(NEW.customer))) AS g;
    RETURN NULL;
END
$$;
CREATE TRIGGER orders_search_terms_insert AFTER INSERT ON orders
    FOR EACH ROW EXECUTE FUNCTION order_search_terms_sync();

-- The orders placed so far (the owner is subject to FORCE RLS: lifted for the backfill).
ALTER TABLE orders NO FORCE ROW LEVEL SECURITY;
ALTER TABLE order_search_terms NO FORCE ROW LEVEL SECURITY;
INSERT INTO order_search_terms (tenant_id, trigram, order_id)
SELECT o.tenant_id, g, o.id
FROM orders o, unnest(product_search_trigrams(order_search_text(o.customer))) AS g;
ALTER TABLE orders FORCE ROW LEVEL SECURITY;
ALTER TABLE order_search_terms FORCE ROW LEVEL SECURITY;
