-- Follow-up fixes to trust (docs/TRUST.md, "Risk signals").

-- When a platform admin last overrode the tenant's level, and the trust score then: the
-- override closes the open review, and a new one opens only on evidence newer than it (a
-- further drop below that score, a risk signal counted from the override on), as a
-- reactivation sticks with `reactivated_at`.
ALTER TABLE tenants
    ADD COLUMN trust_overridden_at timestamptz,
    ADD COLUMN trust_override_score smallint CHECK (trust_override_score BETWEEN 0 AND 100);

-- A change an API key makes to members reads the key's role FOR SHARE in its transaction, so
-- a revocation (a DELETE) waits for the change or the change sees the key gone. PostgreSQL
-- asks UPDATE on some column for a row lock; `tenant_id` is the one that grants nothing:
-- row-level security's WITH CHECK keeps it the tenant's own, so such an UPDATE changes no
-- value (keys stay immutable for the server's role).
GRANT UPDATE (tenant_id) ON api_keys TO convcommerce_app;
