//! A private PostgreSQL cluster run from the installed binaries, for development and tests.
//!
//! Layout under its directory: `pgdata/` (the cluster), `port` (where it listens),
//! `postgres.log`, `.lock` (serialises processes that start it at the same time). When the
//! process runs as root, the cluster runs as the unprivileged `postgres` account (PostgreSQL
//! refuses to run as root) and the directory is handed to that account; if the account cannot
//! reach the requested directory, a directory under /var/tmp named after it is used instead.

use std::fs::{self, File};
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use sha2::{Digest, Sha256};

const SUPERUSER: &str = "postgres";

#[derive(Debug, Clone)]
struct Account {
    name: String,
    uid: u32,
    gid: u32,
}

#[derive(Debug, Clone)]
pub struct EmbeddedPostgres {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    run_as: Option<Account>,
    /// Whether this process started the cluster (rather than attaching to one that another
    /// process, say a running `serve`, started): only then does `stop` stop it.
    started: bool,
    durability: Durability,
    setup: ServerSetup,
}

/// What a cluster runs with beyond the defaults (the TLS tests' cluster).
#[derive(Debug, Clone, Default)]
pub struct ServerSetup {
    /// `-c name=value` settings.
    pub settings: Vec<(String, String)>,
    /// Settings whose value is a file (`ssl_key_file`, `hba_file`), by setting name: each
    /// file is written into the data directory before the server starts, owned by the account
    /// it runs as with mode 0600 (as PostgreSQL wants of a private key), and its setting names it.
    pub files: Vec<(String, Vec<u8>)>,
}

/// How the cluster trades durability for speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync on: nothing committed is lost on a crash (development servers).
    Durable,
    /// fsync off: for throw-away test clusters.
    Ephemeral,
}

impl EmbeddedPostgres {
    /// Starts the cluster under `dir` (creating it on first use), or attaches to it when it
    /// is already running.
    pub async fn start(dir: &Path, durability: Durability) -> anyhow::Result<Self> {
        Self::start_with(dir, durability, ServerSetup::default()).await
    }

    /// [`EmbeddedPostgres::start`] with `setup`, which applies when this call starts the
    /// cluster (one already running keeps what it was started with).
    pub async fn start_with(
        dir: &Path,
        durability: Durability,
        setup: ServerSetup,
    ) -> anyhow::Result<Self> {
        let dir = dir.to_path_buf();
        tokio::task::spawn_blocking(move || Self::start_blocking(&dir, durability, setup)).await?
    }

    fn start_blocking(
        requested: &Path,
        durability: Durability,
        setup: ServerSetup,
    ) -> anyhow::Result<Self> {
        let bin = find_bin_dir()?;
        let run_as = if is_root() {
            Some(account(
                &std::env::var("PG_RUN_AS").unwrap_or_else(|_| "postgres".into()),
            )?)
        } else {
            None
        };
        fs::create_dir_all(requested)
            .with_context(|| format!("creating {}", requested.display()))?;
        let requested = requested.canonicalize()?;
        let dir = match &run_as {
            Some(acct) if !reachable_by(&requested, acct) => {
                let hash = Sha256::digest(requested.to_string_lossy().as_bytes());
                let name: String = hash[..6].iter().map(|b| format!("{b:02x}")).collect();
                let fallback = PathBuf::from(format!("/var/tmp/convcommerce-{name}"));
                fs::create_dir_all(&fallback)?;
                fs::set_permissions(&fallback, fs::Permissions::from_mode(0o700))?;
                fallback
            }
            _ => requested.join("postgres"),
        };
        fs::create_dir_all(&dir)?;
        if let Some(acct) = &run_as {
            std::os::unix::fs::chown(&dir, Some(acct.uid), Some(acct.gid))?;
        }

        let lock = File::create(dir.join(".lock"))?;
        lock.lock()
            .context("locking the private database directory")?;

        let mut pg = Self {
            dir,
            bin,
            port: 0,
            run_as,
            started: false,
            durability,
            setup,
        };
        if let Some(port) = pg.running_port() {
            pg.port = port;
            return Ok(pg);
        }
        pg.started = true;
        if !pg.data().join("PG_VERSION").exists() {
            pg.initdb()?;
        }
        pg.write_setup_files()?;
        pg.port = free_port()?;
        pg.pg_ctl_start()?;
        let mut f = File::create(pg.dir.join("port"))?;
        writeln!(f, "{}", pg.port)?;
        Ok(pg)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data()
    }

    /// A URL for the cluster's superuser (trust authentication on 127.0.0.1 only).
    pub fn superuser_url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Stops the cluster if this process started it; a cluster it only attached to keeps
    /// running for the process that started it.
    pub async fn stop(&self) -> anyhow::Result<()> {
        if !self.started {
            return Ok(());
        }
        let pg = self.clone();
        tokio::task::spawn_blocking(move || {
            let status = pg
                .command("pg_ctl")
                .args(["stop", "-m", "fast", "-w", "-D"])
                .arg(pg.data())
                .stdout(Stdio::null())
                .status()?;
            if !status.success() {
                bail!("pg_ctl stop failed ({status})");
            }
            let _ = fs::remove_file(pg.dir.join("port"));
            Ok(())
        })
        .await?
    }

    /// `pg_ctl restart -m fast`: sessions are ended, the server is back on the same port when
    /// this returns (fault drills: the service must ride through it).
    pub async fn restart(&self) -> anyhow::Result<()> {
        let pg = self.clone();
        tokio::task::spawn_blocking(move || {
            let status = pg
                .command("pg_ctl")
                .args(["restart", "-m", "fast", "-w", "-t", "60", "-D"])
                .arg(pg.data())
                .arg("-l")
                .arg(pg.dir.join("postgres.log"))
                .stdout(Stdio::null())
                .status()?;
            if !status.success() {
                bail!("pg_ctl restart failed ({status})");
            }
            Ok(())
        })
        .await?
    }

    /// Kills the postmaster and every backend with SIGKILL, as a crash would, and leaves the
    /// cluster down; [`EmbeddedPostgres::recover`] starts it again (with crash recovery).
    pub async fn crash(&self) -> anyhow::Result<()> {
        let pid_file = fs::read_to_string(self.data().join("postmaster.pid"))
            .context("reading postmaster.pid")?;
        let postmaster: i32 = pid_file
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .context("postmaster.pid names no process")?;
        let mut victims = vec![postmaster];
        for entry in fs::read_dir("/proc")?.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            let stat = fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // The parent pid is the second field after the parenthesised command name.
            let parent = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok());
            if parent == Some(postmaster) {
                victims.push(pid);
            }
        }
        for pid in victims {
            // SAFETY: kill has no memory preconditions; a pid that is gone is ignored.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        bail!("PostgreSQL still accepts connections after SIGKILL")
    }

    /// Starts a crashed cluster again on its port; returns once it accepts connections.
    pub async fn recover(&self) -> anyhow::Result<()> {
        let pg = self.clone();
        tokio::task::spawn_blocking(move || {
            let _ = fs::remove_file(pg.data().join("postmaster.pid"));
            pg.pg_ctl_start()
        })
        .await?
    }

    fn data(&self) -> PathBuf {
        self.dir.join("pgdata")
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.current_dir(&self.dir);
        if let Some(acct) = &self.run_as {
            cmd.uid(acct.uid).gid(acct.gid);
            cmd.env("USER", &acct.name);
        }
        cmd
    }

    fn running_port(&self) -> Option<u16> {
        let port: u16 = fs::read_to_string(self.dir.join("port"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let running = self
            .command("pg_ctl")
            .args(["status", "-D"])
            .arg(self.data())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok()?
            .success();
        (running && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()).then_some(port)
    }

    fn initdb(&self) -> anyhow::Result<()> {
        let output = self
            .command("initdb")
            .args([
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-instructions",
            ])
            .arg("--locale=C")
            .arg("-D")
            .arg(self.data())
            .output()
            .context("running initdb")?;
        if !output.status.success() {
            bail!(
                "initdb failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    fn write_setup_files(&self) -> anyhow::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        for (name, contents) in &self.setup.files {
            let path = self.setup_file(name);
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("writing {}", path.display()))?;
            file.write_all(contents)?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
            if let Some(acct) = &self.run_as {
                std::os::unix::fs::chown(&path, Some(acct.uid), Some(acct.gid))?;
            }
        }
        Ok(())
    }

    fn setup_file(&self, setting: &str) -> PathBuf {
        self.data().join(format!("{setting}.setup"))
    }

    fn pg_ctl_start(&self) -> anyhow::Result<()> {
        let mut options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c max_connections=400",
            self.port
        );
        if self.durability == Durability::Ephemeral {
            options.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        // pg_ctl hands the options to /bin/sh: each value goes in single quotes.
        let files = self.setup.files.iter().map(|(name, _)| {
            let path = self.setup_file(name);
            (name.clone(), path.to_string_lossy().into_owned())
        });
        for (name, value) in self.setup.settings.iter().cloned().chain(files) {
            let quoted = value.replace('\'', r"'\''");
            options.push_str(&format!(" -c {name}='{quoted}'"));
        }
        let status = self
            .command("pg_ctl")
            .args(["start", "-w", "-t", "60", "-o", &options, "-l"])
            .arg(self.dir.join("postgres.log"))
            .arg("-D")
            .arg(self.data())
            .stdout(Stdio::null())
            .status()
            .context("running pg_ctl start")?;
        if !status.success() {
            let log = fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(10).collect();
            bail!(
                "pg_ctl start failed ({status}); log tail:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        Ok(())
    }
}

fn find_bin_dir() -> anyhow::Result<PathBuf> {
    if let Ok(dir) = std::env::var("PG_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let mut versioned: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versioned.sort();
    if let Some((_, bin)) = versioned.pop() {
        return Ok(bin);
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists())
        .context(
            "no PostgreSQL server binaries (initdb, pg_ctl) found under /usr/lib/postgresql/*/bin \
             or on PATH; install them (e.g. apt-get install postgresql) or set DATABASE_URL",
        )
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn account(name: &str) -> anyhow::Result<Account> {
    let c_name = std::ffi::CString::new(name)?;
    // SAFETY: getpwnam returns null or a pointer to static storage, read at once.
    let entry = unsafe { libc::getpwnam(c_name.as_ptr()) };
    if entry.is_null() {
        bail!(
            "running as root, the private database needs an unprivileged account {name:?} \
             to run PostgreSQL; create it or set PG_RUN_AS"
        );
    }
    // SAFETY: non-null, points to a valid passwd record.
    let (uid, gid) = unsafe { ((*entry).pw_uid, (*entry).pw_gid) };
    Ok(Account {
        name: name.to_string(),
        uid,
        gid,
    })
}

/// Whether `acct` can traverse every ancestor of `path` (owner, group or other bit).
fn reachable_by(path: &Path, acct: &Account) -> bool {
    use std::os::unix::fs::MetadataExt;
    path.ancestors().skip(1).all(|dir| {
        fs::metadata(dir)
            .map(|m| {
                let mode = m.mode();
                (m.uid() == acct.uid && mode & 0o100 != 0)
                    || (m.gid() == acct.gid && mode & 0o010 != 0)
                    || mode & 0o001 != 0
            })
            .unwrap_or(false)
    })
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}
