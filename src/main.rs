//! The `convcommerce` binary: parses the command line and hands over to the library.

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use convcommerce::config::{Config, Environment};
use convcommerce::{Application, dev, telemetry};

/// mimalloc: a request allocates and frees many small buffers (rows, JSON, headers), where it
/// spends measurably less than glibc's allocator (bench/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "convcommerce",
    version,
    about = "Multi-tenant conversational-commerce backend"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (the default). Without DATABASE_URL it runs a private PostgreSQL.
    Serve,
    /// Apply pending migrations with MIGRATION_DATABASE_URL (or to the private database).
    Migrate,
    /// Mint an HS256 token for local use (JWT_HS256_SECRET or the private environment's).
    DevToken {
        /// The subject (`sub`) of the token.
        #[arg(long)]
        sub: String,
        /// Lifetime in hours.
        #[arg(long, default_value_t = 24)]
        ttl_hours: u64,
    },
    /// Seed a demo tenant (products, orders, a conversation) and print its id and a token.
    /// Without DATABASE_URL it seeds the private database.
    Demo {
        /// The demo tenant's slug; an existing tenant with it is reused.
        #[arg(long, default_value = "demo")]
        slug: String,
    },
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("convcommerce: {e}");
            std::process::exit(2);
        }
    };
    let command = cli.command.unwrap_or(Command::Serve);
    if let Err(refusal) = development_only(&config, &command) {
        eprintln!("convcommerce: {refusal}");
        std::process::exit(2);
    }
    let result = match command {
        Command::Serve => serve(config).await,
        Command::Migrate => migrate(config).await,
        Command::DevToken { sub, ttl_hours } => dev_token(&config, &sub, ttl_hours),
        Command::Demo { slug } => demo(config, &slug).await,
    };
    if let Err(e) = result {
        eprintln!("convcommerce: {e:#}");
        std::process::exit(1);
    }
}

/// The private database and dev tokens exist only in development (SPEC §10).
fn development_only(config: &Config, command: &Command) -> Result<(), String> {
    if config.environment == Environment::Development {
        return Ok(());
    }
    match command {
        Command::DevToken { .. } => Err(format!(
            "ENVIRONMENT: dev-token exists only in development (ENVIRONMENT is {:?})",
            config.environment
        )),
        _ if config.database_url.is_none() => Err(format!(
            "DATABASE_URL: required outside development (ENVIRONMENT is {:?}); the private \
             database exists only in development",
            config.environment
        )),
        _ => Ok(()),
    }
}

async fn serve(mut config: Config) -> anyhow::Result<()> {
    telemetry::init_logging(config.log_format);
    let dev_env = match config.database_url {
        Some(_) => {
            if let Some(owner) = &config.migration_database_url {
                let ran = convcommerce::migrate(owner).await?;
                tracing::info!(applied = ran, "migrations checked");
            }
            None
        }
        None => Some(dev::start(&mut config).await?),
    };
    let app = match Application::build(config.clone()).await {
        Ok(app) => app,
        Err(e) => {
            if let Some(env) = &dev_env {
                env.postgres.stop().await.ok();
            }
            return Err(e);
        }
    };
    tracing::info!(host = %config.host, port = app.port(), "listening");
    if let Some(env) = &dev_env {
        println!("{}", dev::banner(&config, env, app.port())?);
    }
    let served = app.run_until_stopped(true).await;
    if let Some(env) = dev_env {
        env.postgres
            .stop()
            .await
            .context("stopping the private database")?;
        tracing::info!("private database stopped");
    }
    served
}

async fn migrate(mut config: Config) -> anyhow::Result<()> {
    telemetry::init_logging(config.log_format);
    if let Some(owner) = &config.migration_database_url {
        let ran = convcommerce::migrate(owner).await?;
        println!("applied {ran} migration(s)");
        return Ok(());
    }
    if config.database_url.is_some() {
        anyhow::bail!("MIGRATION_DATABASE_URL is required to migrate an external database");
    }
    let env = dev::start(&mut config).await?;
    println!(
        "private database at {} is migrated",
        env.postgres.data_dir().display()
    );
    env.postgres.stop().await
}

async fn demo(mut config: Config, slug: &str) -> anyhow::Result<()> {
    telemetry::init_logging(config.log_format);
    let dev_env = match config.database_url {
        Some(_) => {
            if let Some(owner) = &config.migration_database_url {
                convcommerce::migrate(owner).await?;
            }
            None
        }
        None => Some(dev::start(&mut config).await?),
    };
    let seeded = convcommerce::demo::run(&config, slug).await;
    if let Some(env) = dev_env {
        env.postgres.stop().await?;
    }
    println!("{}", seeded?);
    Ok(())
}

fn dev_token(config: &Config, sub: &str, ttl_hours: u64) -> anyhow::Result<()> {
    let secret = match &config.jwt.hs256_secret {
        Some(secret) => secret.clone(),
        None => dev::dev_secret(&config.data_dir, false)?,
    };
    let token = convcommerce::auth::jwt::mint_hs256(
        &secret,
        config.jwt.issuer.as_deref(),
        sub,
        Duration::from_secs(ttl_hours * 3600),
    )?;
    println!("{token}");
    Ok(())
}
