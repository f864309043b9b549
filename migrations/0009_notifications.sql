-- Notifications (SPEC §8, docs/NOTIFICATIONS.md): stored per recipient, one delivery per
-- notification and channel (the durable outbox), the tenant's channel settings, each member's
-- preferences, template overrides, and the SMS status callbacks received.

-- The SMS channel's address (SPEC §4 users): E.164, optional.
ALTER TABLE users ADD COLUMN phone text CONSTRAINT users_phone_check CHECK (phone ~ '^\+[1-9][0-9]{7,14}$');

CREATE TABLE notifications (
    tenant_id    uuid NOT NULL REFERENCES tenants (id),
    id           uuid NOT NULL,
    user_id      uuid NOT NULL,
    title        text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    body         text NOT NULL CHECK (length(body) <= 2000),
    priority     text NOT NULL CHECK (priority IN ('urgent', 'high', 'medium', 'low')),
    category     text NOT NULL CHECK (length(category) BETWEEN 1 AND 64),
    metadata     jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    source_type  text NOT NULL
        CHECK (source_type IN ('alert', 'rule', 'order', 'trust', 'system', 'manual')),
    source_id    uuid,
    -- The template its email and SMS are rendered from, and the variables the key adds
    -- (`order`, `alert` and `rule`, ...).
    template_key text NOT NULL,
    variables    jsonb NOT NULL DEFAULT '{}'::jsonb,
    read_at      timestamptz,
    -- Deleted by its recipient: gone from the API, its deliveries still finish.
    deleted_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT notifications_user_fkey FOREIGN KEY (tenant_id, user_id)
        REFERENCES users (tenant_id, id) ON DELETE CASCADE
);
-- A recipient's list, newest first (id descending: UUID v7).
CREATE INDEX notifications_user_idx ON notifications (tenant_id, user_id, id)
    WHERE deleted_at IS NULL;
CREATE INDEX notifications_unread_idx ON notifications (tenant_id, user_id, priority)
    WHERE read_at IS NULL AND deleted_at IS NULL;
CREATE INDEX notifications_created_idx ON notifications (tenant_id, created_at);

-- The outbox: one row per (notification, channel), written in the notification's
-- transaction; a one-time code (verification.code) has a row and no notification.
CREATE TABLE notification_deliveries (
    tenant_id       uuid NOT NULL REFERENCES tenants (id),
    id              uuid NOT NULL,
    notification_id uuid,
    channel         text NOT NULL CHECK (channel IN ('in_app', 'email', 'sms')),
    -- The e-mail address or phone number, as it was when the delivery was queued.
    address         text,
    locale          text NOT NULL,
    template_key    text NOT NULL,
    priority        text NOT NULL CHECK (priority IN ('urgent', 'high', 'medium', 'low')),
    -- A code's variables (kept only until it is sent).
    variables       jsonb,
    status          text NOT NULL CHECK (status IN
                        ('queued', 'sending', 'sent', 'delivered', 'failed', 'undelivered', 'skipped')),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- queued: when it may be sent; sending: when its worker's lease ends.
    due_at          timestamptz NOT NULL,
    -- The worker's claim while it is `sending`; a result is recorded only under its claim.
    claim           uuid,
    last_error      text,
    provider_id     text,
    -- What an urgent notification bypassed for this delivery: opt_out, quiet_hours.
    bypassed        text[] NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT notification_deliveries_channel_key UNIQUE (tenant_id, notification_id, channel),
    CONSTRAINT notification_deliveries_notification_fkey FOREIGN KEY (tenant_id, notification_id)
        REFERENCES notifications (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX notification_deliveries_due_idx ON notification_deliveries (tenant_id, due_at)
    WHERE status IN ('queued', 'sending');

-- A final status never changes, and a delivery never moves back from `sent` to the queue. A
-- code's variables (the code) go once nothing will render it again: sent or final.
CREATE FUNCTION notification_deliveries_forward() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status AND (
        OLD.status IN ('delivered', 'undelivered', 'failed', 'skipped')
        OR (OLD.status = 'sent' AND NEW.status IN ('queued', 'sending'))) THEN
        RAISE EXCEPTION 'delivery % cannot move from % to %', OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation', CONSTRAINT = 'notification_deliveries_forward';
    END IF;
    IF NEW.status IN ('sent', 'delivered', 'undelivered', 'failed', 'skipped')
       AND NEW.notification_id IS NULL THEN
        NEW.variables := NULL;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER notification_deliveries_forward BEFORE UPDATE ON notification_deliveries
    FOR EACH ROW EXECUTE FUNCTION notification_deliveries_forward();

-- The tenant's channels per priority (NULL columns: never saved, the defaults apply).
CREATE TABLE notification_settings (
    tenant_id  uuid NOT NULL REFERENCES tenants (id),
    channels   jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id)
);

CREATE TABLE notification_preferences (
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    user_id     uuid NOT NULL,
    opt_outs    jsonb NOT NULL DEFAULT '[]'::jsonb,
    quiet_hours jsonb,
    locale      text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id),
    CONSTRAINT notification_preferences_user_fkey FOREIGN KEY (tenant_id, user_id)
        REFERENCES users (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE notification_templates (
    tenant_id  uuid NOT NULL REFERENCES tenants (id),
    id         uuid NOT NULL,
    key        text NOT NULL,
    channel    text NOT NULL CHECK (channel IN ('email', 'sms')),
    locale     text NOT NULL,
    subject    text,
    body       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT notification_templates_key_key UNIQUE (tenant_id, key, channel, locale)
);

-- Twilio's status callbacks, one per (delivery, status): a repeated callback changes nothing.
CREATE TABLE notification_sms_events (
    tenant_id      uuid NOT NULL REFERENCES tenants (id),
    delivery_id    uuid NOT NULL,
    message_status text NOT NULL CHECK (length(message_status) BETWEEN 1 AND 32),
    message_sid    text,
    error_code     text,
    received_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, delivery_id, message_status),
    CONSTRAINT notification_sms_events_delivery_fkey FOREIGN KEY (tenant_id, delivery_id)
        REFERENCES notification_deliveries (tenant_id, id) ON DELETE CASCADE
);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['notifications', 'notification_deliveries', 'notification_settings',
                             'notification_preferences', 'notification_templates',
                             'notification_sms_events']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I FOR ALL '
                       'USING (tenant_id = (SELECT nullif(current_setting(''my.tenant_id'', true), '''')::uuid)) '
                       'WITH CHECK (tenant_id = (SELECT nullif(current_setting(''my.tenant_id'', true), '''')::uuid))', t);
    END LOOP;
END
$$;
GRANT SELECT, INSERT, UPDATE, DELETE ON notifications TO convcommerce_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON notification_deliveries TO convcommerce_app;
GRANT SELECT, INSERT, UPDATE ON notification_settings TO convcommerce_app;
GRANT SELECT, INSERT, UPDATE ON notification_preferences TO convcommerce_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON notification_templates TO convcommerce_app;
GRANT SELECT, INSERT ON notification_sms_events TO convcommerce_app;

-- The outbox workers' sweep (src/notify/outbox.rs): the tenants with a delivery on one of
-- `channels` that is queued or sending, and the earliest time one is due. It visits the
-- tenants one at a time, each with its own my.tenant_id, so row-level security scopes every
-- probe (one index probe per tenant); the caller's setting comes back at the end.
CREATE FUNCTION notification_due_tenants(channels text[])
    RETURNS TABLE (tenant uuid, due_at timestamptz)
    LANGUAGE plpgsql AS $$
DECLARE
    previous text := coalesce(current_setting('my.tenant_id', true), '');
    t uuid;
    due timestamptz;
BEGIN
    FOR t IN SELECT id FROM tenants ORDER BY id LOOP
        PERFORM set_config('my.tenant_id', t::text, true);
        SELECT min(d.due_at) INTO due FROM notification_deliveries d
        WHERE d.tenant_id = t AND d.status IN ('queued', 'sending') AND d.channel = ANY(channels);
        IF due IS NOT NULL THEN
            tenant := t;
            due_at := due;
            RETURN NEXT;
        END IF;
    END LOOP;
    PERFORM set_config('my.tenant_id', previous, true);
END
$$;
