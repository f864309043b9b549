//! The private database (`db::embedded`): over TCP only SCRAM logins with the cluster's
//! generated passwords, trust only on its own socket directory (mode 0700), and a cluster
//! directory that someone planted is refused, never taken over: as root the fallback
//! directory, otherwise the cluster's own under the data directory (each test says which).

use std::fs::{self, Permissions};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use convcommerce::db::bootstrap;
use convcommerce::db::embedded::{self, Durability, EmbeddedPostgres};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::error::SqlState;

use crate::helpers::connect;

fn fresh_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{}", uuid::Uuid::now_v7().simple()));
    fs::create_dir_all(&dir).unwrap();
    dir.canonicalize().unwrap()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn uid_of(name: &str) -> (u32, u32) {
    let c_name = std::ffi::CString::new(name).unwrap();
    // SAFETY: getpwnam returns null or a pointer to static storage, read at once.
    let entry = unsafe { libc::getpwnam(c_name.as_ptr()) };
    assert!(!entry.is_null(), "the {name} account exists");
    // SAFETY: non-null, points to a valid passwd record.
    unsafe { ((*entry).pw_uid, (*entry).pw_gid) }
}

/// A data directory the `postgres` account cannot reach (inside a 0700 directory of root's), so
/// its cluster lives in the fallback directory.
fn unreachable_data_dir() -> PathBuf {
    let fence = fresh_dir("private-db").join("fence");
    fs::create_dir(&fence).unwrap();
    fs::set_permissions(&fence, Permissions::from_mode(0o700)).unwrap();
    let requested = fence.join("data");
    fs::create_dir(&requested).unwrap();
    requested
}

/// What the server answers a startup message for `user` that carries no password: the
/// authentication request's code (0: in without one, 10: SASL) and its payload.
async fn startup_reply(port: u16, user: &str) -> (i32, String) {
    let mut body = 196_608_i32.to_be_bytes().to_vec();
    for part in ["user", user, "database", "postgres"] {
        body.extend_from_slice(part.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut message = (body.len() as i32 + 4).to_be_bytes().to_vec();
    message.extend(body);
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream.write_all(&message).await.unwrap();
    let kind = stream.read_u8().await.unwrap();
    let len = stream.read_i32().await.unwrap();
    let mut rest = vec![0; len as usize - 4];
    stream.read_exact(&mut rest).await.unwrap();
    assert_eq!(kind, b'R', "an authentication request: {rest:?}");
    let code = i32::from_be_bytes(rest[..4].try_into().unwrap());
    (code, String::from_utf8_lossy(&rest[4..]).into_owned())
}

#[tokio::test]
async fn the_private_database_takes_tcp_logins_only_with_their_password() {
    // As root the cluster runs as `postgres`; give it a directory it cannot reach, so the
    // fallback is what gets made and used.
    let requested = if is_root() {
        unreachable_data_dir()
    } else {
        fresh_dir("private-db")
    };
    let pg = EmbeddedPostgres::start(&requested, Durability::Ephemeral)
        .await
        .expect("the private cluster starts");
    let cluster = pg.data_dir().parent().unwrap().to_path_buf();
    let cluster_uid = fs::metadata(pg.data_dir()).unwrap().uid();
    // As root, the fallback of the postgres account; otherwise the requested directory's own,
    // of this process's user: private either way.
    assert_eq!(cluster, cluster_site(&requested));
    assert_eq!(cluster_uid, cluster_account().0);
    let meta = fs::symlink_metadata(&cluster).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.uid(), cluster_uid);
    assert_eq!(meta.mode() & 0o7777, 0o700, "{}", cluster.display());
    let db = bootstrap::provision(
        &pg.superuser_url("postgres"),
        "convcommerce",
        pg.passwords(),
    )
    .await
    .expect("provisioning over TCP with the passwords");

    let admin = connect(&db.superuser_url).await;
    let rules: Vec<(String, String, String, String, String)> = admin
        .query(
            "SELECT type, database::text, user_name::text, coalesce(address, ''), auth_method
             FROM pg_hba_file_rules ORDER BY line_number",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    let rule = |kind: &str, address: &str, method: &str| {
        let all = "{all}".to_string();
        (kind.into(), all.clone(), all, address.into(), method.into())
    };
    assert_eq!(
        rules,
        vec![
            rule("local", "", "trust"),
            rule("host", "127.0.0.1", "scram-sha-256"),
            rule("host", "::1", "scram-sha-256"),
        ]
    );

    for url in [&db.superuser_url, &db.owner_url, &db.app_url] {
        let mut parsed = url::Url::parse(url).unwrap();
        let user = parsed.username().to_string();
        let (code, mechanisms) = startup_reply(pg.port(), &user).await;
        assert_eq!(code, 10, "{user} without a password is asked for SASL");
        assert!(mechanisms.contains("SCRAM-SHA-256"), "{mechanisms:?}");

        for wrong in ["not-the-password", "convcommerce-dev"] {
            parsed.set_password(Some(wrong)).unwrap();
            let err = tokio_postgres::connect(parsed.as_str(), tokio_postgres::NoTls)
                .await
                .err()
                .expect("a wrong password is refused");
            assert_eq!(
                err.code(),
                Some(&SqlState::INVALID_PASSWORD),
                "{user}: {err}"
            );
        }
        parsed.set_password(None).unwrap();
        let err = tokio_postgres::connect(parsed.as_str(), tokio_postgres::NoTls)
            .await
            .err()
            .expect("no password is refused");
        assert!(
            format!("{err:?}").contains("password missing"),
            "{user}: {err}"
        );

        let client = connect(url).await;
        let current: String = client
            .query_one("SELECT current_user::text", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(current, user);
    }

    let socket = fs::metadata(pg.socket_dir()).unwrap();
    assert_eq!(socket.mode() & 0o7777, 0o700);
    assert_eq!(socket.uid(), cluster_uid);
    assert!(!pg.socket_dir().starts_with("/tmp"));
    assert!(
        pg.socket_dir()
            .join(format!(".s.PGSQL.{}", pg.port()))
            .exists()
    );
    let secret = fs::metadata(cluster.join("role-secret")).unwrap();
    assert_eq!(secret.mode() & 0o777, 0o600);

    // A restart reads the same secret: the URLs handed out before still log in.
    pg.stop().await.unwrap();
    let again = EmbeddedPostgres::start(&requested, Durability::Ephemeral)
        .await
        .unwrap();
    assert_eq!(
        again.passwords().password("postgres"),
        pg.passwords().password("postgres")
    );
    let db = bootstrap::provision(
        &again.superuser_url("postgres"),
        "convcommerce",
        again.passwords(),
    )
    .await
    .unwrap();
    connect(&db.app_url).await;
    again.stop().await.unwrap();
    fs::remove_dir_all(&cluster).unwrap();
}

/// The account the cluster runs as (uid, gid): `postgres` as root, else this process's user.
fn cluster_account() -> (u32, u32) {
    if is_root() {
        uid_of("postgres")
    } else {
        // SAFETY: geteuid and getegid have no preconditions and cannot fail.
        unsafe { (libc::geteuid(), libc::getegid()) }
    }
}

/// The directory the cluster of `requested` lives in: as root the `postgres` account's
/// fallback (`requested` is out of its reach, see [`unreachable_data_dir`]); otherwise
/// `requested/postgres`. Both are claimed by the same checks.
fn cluster_site(requested: &Path) -> PathBuf {
    if is_root() {
        embedded::fallback_dir(requested)
    } else {
        requested.join("postgres")
    }
}

/// Plants something where the cluster of a fresh data directory will live, then starts the
/// cluster there: it must refuse, naming that directory.
async fn refusal_of_planted(plant: impl FnOnce(&Path)) -> (String, PathBuf) {
    let requested = if is_root() {
        unreachable_data_dir()
    } else {
        fresh_dir("private-db")
    };
    let site = cluster_site(&requested);
    eprintln!(
        "{}: planted at {}",
        if is_root() {
            "as root, the fallback directory"
        } else {
            "not root, the cluster's own directory"
        },
        site.display()
    );
    plant(&site);
    let Err(err) = EmbeddedPostgres::start(&requested, Durability::Ephemeral).await else {
        panic!("a planted directory is refused");
    };
    let message = format!("{err:#}");
    assert!(
        message.contains(&format!("refusing {}", site.display())),
        "{message}"
    );
    (message, site)
}

fn assert_untouched(dir: &Path, uid: u32, mode: u32) {
    let meta = fs::metadata(dir).unwrap();
    assert_eq!(
        (meta.uid(), meta.mode() & 0o7777),
        (uid, mode),
        "{}",
        dir.display()
    );
    assert_eq!(
        fs::read_dir(dir).unwrap().count(),
        0,
        "nothing written into {}",
        dir.display()
    );
}

#[tokio::test]
async fn a_fallback_directory_of_another_account_is_refused() {
    if !is_root() {
        // Without root no directory of another account can be planted, and none is needed:
        // the cluster runs as this user in the requested directory, and never looks at the
        // fallback. One planted there, that would be refused, is left as it is.
        eprintln!("not root: the fallback directory is never used");
        let requested = fresh_dir("private-db");
        let fallback = embedded::fallback_dir(&requested);
        fs::create_dir(&fallback).unwrap();
        fs::set_permissions(&fallback, Permissions::from_mode(0o777)).unwrap();
        let pg = EmbeddedPostgres::start(&requested, Durability::Ephemeral)
            .await
            .expect("the private cluster starts");
        assert!(pg.data_dir().starts_with(requested.join("postgres")));
        pg.stop().await.unwrap();
        assert_untouched(&fallback, cluster_account().0, 0o777);
        fs::remove_dir(&fallback).unwrap();
        fs::remove_dir_all(&requested).unwrap();
        return;
    }
    let (nobody, nogroup) = uid_of("nobody");
    let (message, fallback) = refusal_of_planted(|dir| {
        fs::create_dir(dir).unwrap();
        std::os::unix::fs::chown(dir, Some(nobody), Some(nogroup)).unwrap();
        fs::set_permissions(dir, Permissions::from_mode(0o700)).unwrap();
    })
    .await;
    assert!(
        message.contains(&format!("belongs to uid {nobody}")),
        "{message}"
    );
    assert_untouched(&fallback, nobody, 0o700);
    fs::remove_dir(&fallback).unwrap();
}

#[tokio::test]
async fn a_cluster_directory_others_may_write_to_is_refused() {
    let (uid, gid) = cluster_account();
    let (message, site) = refusal_of_planted(|dir| {
        fs::create_dir(dir).unwrap();
        std::os::unix::fs::chown(dir, Some(uid), Some(gid)).unwrap();
        fs::set_permissions(dir, Permissions::from_mode(0o777)).unwrap();
    })
    .await;
    assert!(message.contains("mode 777"), "{message}");
    assert_untouched(&site, uid, 0o777);
    fs::remove_dir(&site).unwrap();
}

#[tokio::test]
async fn a_symlink_in_place_of_the_cluster_directory_is_refused() {
    // The link points at a directory that would pass every other check: only the link is wrong.
    let target = fresh_dir("planted-target");
    let (uid, gid) = cluster_account();
    std::os::unix::fs::chown(&target, Some(uid), Some(gid)).unwrap();
    fs::set_permissions(&target, Permissions::from_mode(0o700)).unwrap();
    let (message, site) =
        refusal_of_planted(|dir| std::os::unix::fs::symlink(&target, dir).unwrap()).await;
    assert!(message.contains("symbolic link"), "{message}");
    assert_untouched(&target, uid, 0o700);
    assert!(
        fs::symlink_metadata(&site)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    fs::remove_file(&site).unwrap();
    fs::remove_dir(&target).unwrap();
}
