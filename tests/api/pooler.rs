//! Behind PgBouncer in transaction pooling mode (SPEC §9, Debian's `pgbouncer`, which .ci/run
//! installs): consecutive transactions of one client connection may run on different server
//! connections, so nothing may rely on session state, and no named prepared statement may
//! outlive its transaction (`DB_PREPARED_STATEMENTS=off`). The isolation, read-lane and
//! order-race tests run once directly and once through a PgBouncer of their own
//! ([`for_each_pooling`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use convcommerce::db::bootstrap::Provisioned;
use uuid::Uuid;

/// How a test's server reaches PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    Direct,
    /// Through a PgBouncer in transaction mode, with two server connections per user, so the
    /// test's transactions keep switching server connections; `LISTEN` goes direct
    /// (`DATABASE_LISTEN_URL`).
    PgBouncer,
}

impl Pooling {
    /// `DATABASE_URL` (and the variables that go with it) for this way to the database; the
    /// PgBouncer lives as long as the returned guard.
    pub fn configure(
        self,
        db: &Provisioned,
    ) -> (
        Option<PgBouncer>,
        impl FnOnce(&mut BTreeMap<String, String>) + use<>,
    ) {
        let bouncer = (self == Self::PgBouncer).then(|| PgBouncer::start(db));
        let vars: Vec<(String, String)> = match &bouncer {
            None => Vec::new(),
            Some(b) => vec![
                ("DATABASE_URL".into(), b.url(&db.app_url)),
                ("DATABASE_LISTEN_URL".into(), db.app_url.clone()),
                ("DB_PREPARED_STATEMENTS".into(), "off".into()),
            ],
        };
        (bouncer, move |v: &mut BTreeMap<String, String>| {
            v.extend(vars)
        })
    }
}

/// Runs each named test body, an `async fn(Pooling)` beside it, as `<name>::direct` and
/// `<name>::pgbouncer`.
macro_rules! for_each_pooling {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn direct() {
                super::$name($crate::pooler::Pooling::Direct).await
            }

            #[tokio::test]
            async fn pgbouncer() {
                super::$name($crate::pooler::Pooling::PgBouncer).await
            }
        }
    )+};
}
pub(crate) use for_each_pooling;

/// A PgBouncer process in front of the test cluster, stopped when dropped (and, should this
/// process die first, when its stdin closes).
pub struct PgBouncer {
    port: u16,
    dir: PathBuf,
    child: Child,
}

impl PgBouncer {
    pub fn start(db: &Provisioned) -> Self {
        let app = url::Url::parse(&db.app_url).expect("the app URL");
        let owner = url::Url::parse(&db.owner_url).expect("the owner URL");
        let server_port = app.port().unwrap_or(5432);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("pgbouncer-{}", Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        // PgBouncer logs in to PostgreSQL with these passwords (SCRAM on the private cluster).
        let users: String = [&app, &owner]
            .iter()
            .map(|u| {
                let password = percent_encoding::percent_decode_str(u.password().unwrap_or(""))
                    .decode_utf8_lossy()
                    .into_owned();
                format!("\"{}\" \"{}\"\n", u.username(), password)
            })
            .collect();
        write(&dir, "users.txt", &users);
        let ini = format!(
            "[databases]\n\
             * = host=127.0.0.1 port={server_port}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {dir}/users.txt\n\
             pool_mode = transaction\n\
             default_pool_size = 2\n\
             max_client_conn = 500\n\
             ignore_startup_parameters = options\n\
             logfile = {dir}/pgbouncer.log\n\
             pidfile = {dir}/pgbouncer.pid\n",
            dir = dir.display()
        );
        write(&dir, "pgbouncer.ini", &ini);
        // PgBouncer refuses to run as root: it switches to the postgres account.
        let as_root = unsafe { libc::geteuid() } == 0;
        if as_root {
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .expect("chown");
        }
        let user = if as_root { "-u postgres" } else { "" };
        // Debian installs it in /usr/sbin, which an unprivileged PATH may lack.
        let binary = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("pgbouncer");
        let script = format!(
            "{binary} {user} {ini} & pid=$!; cat >/dev/null; kill $pid",
            ini = dir.join("pgbouncer.ini").display()
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh");
        let bouncer = Self { port, dir, child };
        for _ in 0..300 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return bouncer;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let log = std::fs::read_to_string(bouncer.dir.join("pgbouncer.log")).unwrap_or_default();
        panic!("pgbouncer did not start (apt-get install pgbouncer; .ci/run installs it):\n{log}");
    }

    /// `url` with PgBouncer's address in place of PostgreSQL's.
    pub fn url(&self, url: &str) -> String {
        let mut url = url::Url::parse(url).expect("a URL");
        url.set_port(Some(self.port)).unwrap();
        url.to_string()
    }
}

fn write(dir: &std::path::Path, name: &str, contents: &str) {
    let path = dir.join(name);
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(contents.as_bytes()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // Closing the script's stdin makes it stop PgBouncer.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
