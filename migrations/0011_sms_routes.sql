-- Twilio's status callbacks come to one URL, exactly `PUBLIC_BASE_URL` +
-- `/api/v1/webhooks/twilio/status` (SPEC §8), so nothing in the URL says which tenant a
-- callback is about: its `MessageSid` does, through this routing table (docs/NOTIFICATIONS.md,
-- "The status webhook").
--
-- A platform table, like `tenants`: the webhook must find a sid before it knows the tenant, so
-- the table is read across tenants by design, and has no row-level security. It holds no tenant
-- data, only where a sid leads. Its tenant column is named `tenant`, not `tenant_id`: a
-- `tenant_id` column is what marks a tenant table (RLS, tenant_id in every key), for
-- db::safety's start-up check and for the isolation test that reads the catalog.
CREATE TABLE sms_routes (
    sid         text PRIMARY KEY CHECK (length(sid) BETWEEN 1 AND 64),
    tenant      uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    delivery_id uuid NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- The purge's look for routes whose delivery is gone (notify::purge).
CREATE INDEX sms_routes_delivery_idx ON sms_routes (tenant, delivery_id);

-- The outbox inserts a route as it records `sent`; the webhook reads it; the purge deletes it.
GRANT SELECT, INSERT, DELETE ON sms_routes TO convcommerce_app;

-- The SMS already sent, so their callbacks still find them (the owner is subject to FORCE
-- RLS: lifted for the backfill, inside this migration's transaction).
ALTER TABLE notification_deliveries NO FORCE ROW LEVEL SECURITY;
INSERT INTO sms_routes (sid, tenant, delivery_id)
SELECT d.provider_id, d.tenant_id, d.id
FROM notification_deliveries d
WHERE d.channel = 'sms' AND length(d.provider_id) BETWEEN 1 AND 64
ON CONFLICT (sid) DO NOTHING;
ALTER TABLE notification_deliveries FORCE ROW LEVEL SECURITY;
