//! The start-up check that the server's database role cannot bypass row-level security.

use anyhow::bail;

/// Refuses a role that is (or can become) a superuser, has BYPASSRLS, owns a tenant table
/// (or can act as its owner), and a schema where a tenant table lacks FORCE RLS or a policy.
pub async fn check(client: &tokio_postgres::Client) -> anyhow::Result<()> {
    let role = client
        .query_one(
            "SELECT current_user::text,
                    EXISTS (SELECT 1 FROM pg_roles r
                            WHERE r.rolsuper AND pg_has_role(current_user, r.oid, 'MEMBER')),
                    EXISTS (SELECT 1 FROM pg_roles r
                            WHERE r.rolbypassrls AND pg_has_role(current_user, r.oid, 'MEMBER'))",
            &[],
        )
        .await?;
    let name: String = role.get(0);
    if role.get::<_, bool>(1) {
        bail!(
            "refusing to run: DATABASE_URL connects as {name:?}, a superuser (or a member of one), \
             which bypasses row-level security; connect as the application role (docs/OPERATIONS.md)"
        );
    }
    if role.get::<_, bool>(2) {
        bail!(
            "refusing to run: DATABASE_URL connects as {name:?}, which has BYPASSRLS; \
             connect as the application role (docs/OPERATIONS.md)"
        );
    }

    let tables = client
        .query(
            "SELECT c.relname::text,
                    c.relrowsecurity,
                    c.relforcerowsecurity,
                    pg_has_role(current_user, c.relowner, 'MEMBER'),
                    EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid)
             FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
               AND EXISTS (SELECT 1 FROM pg_attribute a
                           WHERE a.attrelid = c.oid AND a.attname = 'tenant_id'
                             AND NOT a.attisdropped)
             ORDER BY 1",
            &[],
        )
        .await?;
    if tables.is_empty() {
        bail!(
            "refusing to run: the database has no tenant tables; run `convcommerce migrate` first"
        );
    }
    for t in &tables {
        let table: String = t.get(0);
        if t.get::<_, bool>(3) {
            bail!(
                "refusing to run: DATABASE_URL connects as {name:?}, which owns tenant table \
                 {table:?} (owners can alter or disable its policy); connect as the application role"
            );
        }
        if !t.get::<_, bool>(1) || !t.get::<_, bool>(2) || !t.get::<_, bool>(4) {
            bail!(
                "refusing to run: tenant table {table:?} lacks ENABLE + FORCE ROW LEVEL SECURITY \
                 or its policy"
            );
        }
    }
    Ok(())
}
