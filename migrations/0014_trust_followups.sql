-- Follow-up fixes to trust (docs/TRUST.md, "Risk signals").

-- When a platform admin last overrode the tenant's level, and the trust score then: the
-- override closes the open review, and a new one opens only on evidence newer than it (a
-- further drop below that score, a risk signal counted from the override on), as a
-- reactivation sticks with `reactivated_at`.
ALTER TABLE tenants
    ADD COLUMN trust_overridden_at timestamptz,
    ADD COLUMN trust_override_score smallint CHECK (trust_override_score BETWEEN 0 AND 100);
