//! What `serve` refuses to start with: unsafe database roles, unsafe schemas, bad config.

use convcommerce::Application;
use convcommerce::config::Config;

use crate::helpers::*;

async fn build_error(url: &str) -> String {
    let mut vars = config_vars(&database().await);
    vars.insert("DATABASE_URL".into(), url.to_string());
    let config = Config::from_source(&vars).unwrap();
    match Application::build(config).await {
        Ok(_) => panic!("the server must refuse {url}"),
        Err(e) => format!("{e:#}"),
    }
}

fn with_user(url: &str, user: &str, password: Option<&str>) -> String {
    let mut parsed = url::Url::parse(url).unwrap();
    parsed.set_username(user).unwrap();
    parsed.set_password(password).unwrap();
    parsed.to_string()
}

#[tokio::test]
async fn refuses_a_superuser() {
    let db = database().await;
    let err = build_error(&db.superuser_url).await;
    assert!(err.contains("superuser"), "{err}");
}

#[tokio::test]
async fn refuses_a_bypassrls_role_and_the_owner() {
    let db = database().await;
    let admin = connect(&db.superuser_url).await;
    // Several test processes may race to create the role: serialise on a lock.
    admin
        .execute("SELECT pg_advisory_lock(77)", &[])
        .await
        .unwrap();
    admin
        .batch_execute(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'cc_test_bypass') THEN
                 CREATE ROLE cc_test_bypass LOGIN BYPASSRLS PASSWORD 'bypass';
               END IF;
             END $$",
        )
        .await
        .unwrap();
    admin
        .execute("SELECT pg_advisory_unlock(77)", &[])
        .await
        .unwrap();
    let err = build_error(&with_user(&db.app_url, "cc_test_bypass", Some("bypass"))).await;
    assert!(err.contains("BYPASSRLS"), "{err}");

    let err = build_error(&db.owner_url).await;
    assert!(err.contains("owns tenant table"), "{err}");
}

#[tokio::test]
async fn refuses_a_tenant_table_without_forced_rls() {
    let db = private_database().await;
    let owner = connect(&db.owner_url).await;
    owner
        .batch_execute("ALTER TABLE orders NO FORCE ROW LEVEL SECURITY")
        .await
        .unwrap();
    let mut vars = config_vars(&db);
    vars.insert("DATABASE_URL".into(), db.app_url.clone());
    let err = match Application::build(Config::from_source(&vars).unwrap()).await {
        Ok(_) => panic!("must refuse"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("\"orders\"") && err.contains("FORCE"), "{err}");
    drop(owner);
    drop_database(&db).await;
}

#[tokio::test]
async fn migrations_are_idempotent_and_refuse_edited_history() {
    let db = database().await;
    assert_eq!(
        convcommerce::db::migrate::run(&db.owner_url).await.unwrap(),
        0
    );
    let own = private_database().await;
    let owner = connect(&own.owner_url).await;
    owner
        .batch_execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
        .await
        .unwrap();
    let err = convcommerce::db::migrate::run(&own.owner_url)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("changed after it was applied"),
        "{err}"
    );
    drop(owner);
    drop_database(&own).await;
}

#[tokio::test]
async fn the_binary_names_a_bad_variable_and_stops() {
    for (var, value) in [
        ("PORT", "eighty"),
        ("JWT_JWKS_URL", "not a url"),
        ("BACKEND_CORS_ORIGINS", "*"),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_convcommerce"))
            .arg("serve")
            .env(var, value)
            .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{var}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(var), "{var}: {stderr}");
    }
}

#[tokio::test]
async fn dev_token_mints_a_token_the_server_accepts() {
    let app = TestApp::spawn().await;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_convcommerce"))
        .args(["dev-token", "--sub", ADMIN])
        .env("JWT_HS256_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(output.status.success());
    let token = String::from_utf8(output.stdout).unwrap();
    app.get("/api/v1/admin/tenants")
        .token(token.trim())
        .send()
        .await
        .expect(200);
}

/// Runs the binary with `args` and only the variables given (plus PATH).
fn run_bare(args: &[&str], vars: &[(&str, &str)]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_convcommerce"));
    command.args(args).env_clear().env("PATH", env!("PATH"));
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    command.current_dir(dir);
    for (k, v) in vars {
        command.env(k, v);
    }
    command.output().unwrap()
}

#[tokio::test]
async fn production_refuses_what_is_unsafe_and_names_the_variable() {
    let unreachable = "postgres://app:secret@127.0.0.1:1/none";
    for (vars, named) in [
        (vec![("ENVIRONMENT", "production")], "DATABASE_URL"),
        (
            vec![
                ("ENVIRONMENT", "production"),
                ("DATABASE_URL", unreachable),
                ("JWT_HS256_SECRET", SECRET),
            ],
            "JWT_HS256_SECRET",
        ),
        (
            vec![
                ("ENVIRONMENT", "production"),
                ("DATABASE_URL", unreachable),
                (
                    "JWT_JWKS_URL",
                    "https://issuer.example/.well-known/jwks.json",
                ),
            ],
            "JWT_ISSUER",
        ),
    ] {
        let output = run_bare(&["serve"], &vars);
        assert_eq!(output.status.code(), Some(2), "{named}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(named), "{named}: {stderr}");
        assert!(!stderr.contains("secret"), "no password printed: {stderr}");
    }
    // With all three satisfied production starts (and fails only to reach the database,
    // without printing its password).
    let output = run_bare(
        &["serve"],
        &[
            ("ENVIRONMENT", "production"),
            ("DATABASE_URL", unreachable),
            (
                "JWT_JWKS_URL",
                "https://issuer.example/.well-known/jwks.json",
            ),
            ("JWT_ISSUER", "https://issuer.example"),
        ],
    );
    assert_eq!(output.status.code(), Some(1));
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!printed.contains("secret"), "{printed}");
}

#[tokio::test]
async fn dev_tokens_and_the_private_database_exist_only_in_development() {
    for environment in ["test", "production"] {
        let output = run_bare(
            &["dev-token", "--sub", "someone"],
            &[
                ("ENVIRONMENT", environment),
                ("DATABASE_URL", "postgres://app@127.0.0.1:1/none"),
                (
                    "JWT_JWKS_URL",
                    "https://issuer.example/.well-known/jwks.json",
                ),
                ("JWT_ISSUER", "https://issuer.example"),
            ],
        );
        assert_eq!(output.status.code(), Some(2), "{environment}");
        assert!(
            output.stdout.is_empty(),
            "no token printed in {environment}"
        );
    }
    let output = run_bare(&["serve"], &[("ENVIRONMENT", "test")]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("DATABASE_URL"));
}

#[tokio::test]
async fn demo_prints_no_token_outside_development() {
    let db = database().await;
    let output = run_bare(
        &[
            "demo",
            "--slug",
            &format!("d-{}", uuid::Uuid::now_v7().simple()),
        ],
        &[
            ("ENVIRONMENT", "test"),
            ("DATABASE_URL", &db.app_url),
            ("JWT_HS256_SECRET", SECRET),
            ("RUST_LOG", "warn"),
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("TENANT_ID="), "{stdout}");
    assert!(!stdout.contains("TOKEN"), "{stdout}");
}
