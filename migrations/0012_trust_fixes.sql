-- Fixes to trust after review (docs/TRUST.md).

-- An owner or admin API key may make keys (SPEC §2, §6: a key acts with its role), so a key's
-- creator is a member or a key: `created_by` holds its id (no foreign key: a key id is no
-- user, and the creator may be gone since; every key was made with one) and `created_by_type`
-- says which.
ALTER TABLE api_keys
    ALTER COLUMN created_by SET NOT NULL,
    ADD COLUMN created_by_type text NOT NULL DEFAULT 'user'
        CHECK (created_by_type IN ('user', 'api_key'));

-- When a platform admin last set a suspended tenant active again: an automatic suspension
-- then needs evidence newer than this (a critical signal's window can outlast the
-- reactivation by up to a day).
ALTER TABLE tenants ADD COLUMN reactivated_at timestamptz;
