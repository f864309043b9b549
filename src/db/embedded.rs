//! A private PostgreSQL cluster run from the installed binaries, for development and tests.
//!
//! Layout under its directory (mode 0700): `pgdata/` (the cluster), `socket/` (its Unix socket,
//! mode 0700), `role-secret` (mode 0600: what the roles' passwords derive from), `port` (where
//! it listens), `postgres.log`, `.lock` (serialises processes that start it at the same time).
//! TCP (127.0.0.1) takes only SCRAM logins with those passwords; trust is only for the socket,
//! which only the cluster's account (and root) can reach. When the process runs as root, the
//! cluster runs as the unprivileged `postgres` account (PostgreSQL refuses to run as root) and
//! the directory belongs to that account; if the account cannot reach the requested directory,
//! a directory under /var/tmp named after it is used instead. The directory is created
//! exclusively, or else used only if it is a real directory of the cluster's account that no
//! one else can write to: /var/tmp is everyone's, and root must not chown what another user
//! planted there.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};
use base64::Engine;
use sha2::{Digest, Sha256};

use super::bootstrap::{self, RolePasswords};

const SUPERUSER: &str = "postgres";
const SECRET_FILE: &str = "role-secret";
/// Trust only on the private socket; TCP from this machine only, with a SCRAM password.
const HBA: &str = "local all all trust\n\
                   host all all 127.0.0.1/32 scram-sha-256\n\
                   host all all ::1/128 scram-sha-256\n";

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
    passwords: RolePasswords,
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
        let (pg, lock) =
            tokio::task::spawn_blocking(move || Self::start_blocking(&dir, durability, setup))
                .await??;
        if pg.started {
            // Under the lock: a process that attaches next already finds the password set.
            pg.set_superuser_password().await?;
        }
        drop(lock);
        Ok(pg)
    }

    /// Starts or attaches; returns the directory's lock, still held.
    fn start_blocking(
        requested: &Path,
        durability: Durability,
        setup: ServerSetup,
    ) -> anyhow::Result<(Self, File)> {
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
            Some(acct) if !reachable_by(&requested, acct) => fallback_dir(&requested),
            _ => requested.join("postgres"),
        };
        claim_dir(&dir, run_as.as_ref())?;

        let lock = OpenOptions::new()
            .write(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(dir.join(".lock"))
            .with_context(|| format!("opening {}", dir.join(".lock").display()))?;
        lock.lock()
            .context("locking the private database directory")?;

        let passwords = role_passwords(&dir)?;
        let mut pg = Self {
            dir,
            bin,
            port: 0,
            run_as,
            started: false,
            durability,
            setup,
            passwords,
        };
        if let Some(port) = pg.running_port() {
            pg.port = port;
            return Ok((pg, lock));
        }
        pg.started = true;
        if !pg.data().join("PG_VERSION").exists() {
            pg.initdb()?;
        }
        claim_dir(&pg.socket_dir(), pg.run_as.as_ref())?;
        // Every start: a cluster made before the socket and passwords existed gets them too.
        write_private(
            &pg.data().join("pg_hba.conf"),
            HBA.as_bytes(),
            pg.run_as.as_ref(),
        )?;
        pg.write_setup_files()?;
        pg.port = free_port()?;
        pg.pg_ctl_start()?;
        write_private(
            &pg.dir.join("port"),
            format!("{}\n", pg.port).as_bytes(),
            None,
        )?;
        Ok((pg, lock))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data()
    }

    /// The directory of the cluster's Unix socket (`.s.PGSQL.<port>`), where it trusts.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.join("socket")
    }

    /// The passwords of this cluster's roles (the superuser's, and those `provision` sets).
    pub fn passwords(&self) -> &RolePasswords {
        &self.passwords
    }

    /// A URL for the cluster's superuser over TCP, with its password.
    pub fn superuser_url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}:{}@127.0.0.1:{}/{database}",
            self.passwords.password(SUPERUSER),
            self.port
        )
    }

    /// Sets the superuser's password through the socket, the one way in without one.
    async fn set_superuser_password(&self) -> anyhow::Result<()> {
        // Not through `PgTarget`: TLS and its settings mean nothing on a Unix socket.
        let (client, connection) = tokio_postgres::Config::new()
            .host_path(self.socket_dir())
            .port(self.port)
            .user(SUPERUSER)
            .dbname("postgres")
            .connect(tokio_postgres::NoTls)
            .await
            .with_context(|| {
                format!(
                    "connecting to the private database through {}",
                    self.socket_dir().display()
                )
            })?;
        let connection = tokio::spawn(connection);
        client
            .batch_execute(&bootstrap::set_password(
                SUPERUSER,
                &self.passwords.password(SUPERUSER),
            ))
            .await
            .context("setting the superuser's password")?;
        drop(client);
        connection.await??;
        Ok(())
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
            // The killed postmaster's socket and its lock file stay behind; its pid may still
            // look alive (an unreaped zombie), so the new one would refuse the lock.
            for entry in fs::read_dir(pg.socket_dir())?.flatten() {
                if entry.file_name().to_string_lossy().starts_with(".s.PGSQL.") {
                    let _ = fs::remove_file(entry.path());
                }
            }
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
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
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
        for (name, contents) in &self.setup.files {
            write_private(&self.setup_file(name), contents, self.run_as.as_ref())?;
        }
        Ok(())
    }

    fn setup_file(&self, setting: &str) -> PathBuf {
        self.data().join(format!("{setting}.setup"))
    }

    fn pg_ctl_start(&self) -> anyhow::Result<()> {
        let mut options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_permissions=0700 \
             -c password_encryption=scram-sha-256 -c max_connections=400",
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
        let socket = (
            "unix_socket_directories".to_string(),
            self.socket_dir().to_string_lossy().into_owned(),
        );
        let settings = self.setup.settings.iter().cloned().chain(files);
        for (name, value) in std::iter::once(socket).chain(settings) {
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
    current_uid() == 0
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

/// Where the cluster of `requested` lives when its account cannot reach `requested`.
pub fn fallback_dir(requested: &Path) -> PathBuf {
    let hash = Sha256::digest(requested.to_string_lossy().as_bytes());
    let name: String = hash[..6].iter().map(|b| format!("{b:02x}")).collect();
    PathBuf::from(format!("/var/tmp/convcommerce-{name}"))
}

/// Makes `path` a directory of mode 0700 belonging to `owner` (else this process's user):
/// creates it exclusively, or takes an existing one only if it is a real directory (never a
/// symbolic link) of that user that neither group nor others can write to.
fn claim_dir(path: &Path, owner: Option<&Account>) -> anyhow::Result<()> {
    let refuse = |why: String| {
        anyhow::anyhow!(
            "refusing {} as a private database directory: {why}",
            path.display()
        )
    };
    let created = match fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => true,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => false,
        Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
    };
    // The checks and changes go through one descriptor opened without following a link, so
    // nothing swapped in between is what gets chowned.
    let dir = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            // O_NOFOLLOW | O_DIRECTORY on a link fails with ENOTDIR (or ELOOP): tell them apart.
            Some(libc::ELOOP | libc::ENOTDIR)
                if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) =>
            {
                refuse("it is a symbolic link".into())
            }
            Some(libc::ENOTDIR) => refuse("it is not a directory".into()),
            _ => anyhow::Error::new(e).context(format!("opening {}", path.display())),
        })?;
    let uid = owner.map_or_else(current_uid, |acct| acct.uid);
    if created {
        if let Some(acct) = owner {
            std::os::unix::fs::fchown(&dir, Some(acct.uid), Some(acct.gid))?;
        }
    } else {
        let meta = dir.metadata()?;
        if meta.uid() != uid {
            return Err(refuse(format!(
                "it belongs to uid {}, not to the cluster's account (uid {uid})",
                meta.uid()
            )));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(refuse(format!(
                "group or others may write to it (mode {:o})",
                meta.mode() & 0o7777
            )));
        }
    }
    dir.set_permissions(fs::Permissions::from_mode(0o700))?;
    Ok(())
}

/// Writes `contents` to `path` with mode 0600, for `owner` (else this process's user),
/// without following a link planted at `path`.
fn write_private(path: &Path, contents: &[u8], owner: Option<&Account>) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(contents)?;
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    if let Some(acct) = owner {
        std::os::unix::fs::fchown(&file, Some(acct.uid), Some(acct.gid))?;
    }
    Ok(())
}

/// The role passwords of the cluster in `dir`: from its `role-secret`, made on first use (under
/// the directory's lock) from 32 random bytes, so a restart finds the same passwords.
fn role_passwords(dir: &Path) -> anyhow::Result<RolePasswords> {
    let path = dir.join(SECRET_FILE);
    let mut secret = String::new();
    match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
    {
        Ok(mut file) => {
            file.read_to_string(&mut secret)
                .with_context(|| format!("reading {}", path.display()))?;
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
            secret = base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes);
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("writing {}", path.display()))?;
            file.write_all(secret.as_bytes())?;
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    Ok(RolePasswords::from_secret(secret.trim().as_bytes()))
}

fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Whether `acct` can traverse every ancestor of `path` (owner, group or other bit).
fn reachable_by(path: &Path, acct: &Account) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("claim-{}", uuid::Uuid::now_v7().simple()));
        fs::create_dir(&dir).unwrap();
        dir
    }

    #[test]
    fn a_claimed_directory_is_created_private() {
        let base = scratch();
        let dir = base.join("db");
        claim_dir(&dir, None).unwrap();
        let meta = fs::symlink_metadata(&dir).unwrap();
        assert!(meta.is_dir());
        assert_eq!(meta.mode() & 0o7777, 0o700);
        assert_eq!(meta.uid(), current_uid());
        claim_dir(&dir, None).expect("this process's own private directory is taken again");
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_link_a_file_or_a_writable_directory_is_refused_and_left_alone() {
        let base = scratch();
        let target = base.join("target");
        fs::create_dir(&target).unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).unwrap();
        let link = base.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = format!("{:#}", claim_dir(&link, None).unwrap_err());
        assert!(
            err.contains(&format!("refusing {}", link.display())),
            "{err}"
        );
        assert!(err.contains("symbolic link"), "{err}");
        assert_eq!(fs::metadata(&target).unwrap().mode() & 0o7777, 0o755);

        let file = base.join("file");
        fs::write(&file, b"").unwrap();
        let err = format!("{:#}", claim_dir(&file, None).unwrap_err());
        assert!(err.contains("not a directory"), "{err}");

        let open = base.join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let err = format!("{:#}", claim_dir(&open, None).unwrap_err());
        assert!(err.contains("mode 777"), "{err}");
        assert_eq!(fs::metadata(&open).unwrap().mode() & 0o7777, 0o777);
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn private_files_are_not_written_through_a_link() {
        let base = scratch();
        let victim = base.join("victim");
        fs::write(&victim, b"keep").unwrap();
        let link = base.join("port");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(write_private(&link, b"1234", None).is_err());
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn the_role_secret_is_made_once_private_and_then_reused() {
        let base = scratch();
        let first = role_passwords(&base).unwrap().password("postgres");
        let meta = fs::metadata(base.join(SECRET_FILE)).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(role_passwords(&base).unwrap().password("postgres"), first);
        let other = scratch();
        assert_ne!(role_passwords(&other).unwrap().password("postgres"), first);
        fs::remove_dir_all(&base).unwrap();
        fs::remove_dir_all(&other).unwrap();
    }
}
