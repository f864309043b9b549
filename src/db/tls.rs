//! TLS to PostgreSQL, with rustls: `sslmode` and `sslrootcert` read from a connection string
//! (a URL or libpq's `key=value` form) with libpq's meanings. tokio-postgres itself knows only
//! `disable`, `prefer` and `require` and verifies nothing, so both parameters are taken out of
//! the string before it parses the rest, and the certificate checks are ours:
//!
//! | `sslmode` | encrypted | certificate chain | host name |
//! | --- | --- | --- | --- |
//! | `disable` | no | - | - |
//! | `prefer` (default) | when the server offers it | only with `sslrootcert` | no |
//! | `require` | yes | only with `sslrootcert` | no |
//! | `verify-ca` | yes | yes | no |
//! | `verify-full` | yes | yes | yes |
//!
//! Roots come from `sslrootcert=<PEM file>`, else from the system's store; `sslrootcert=system`
//! asks for the system's store and, as in libpq, for `verify-full` (weaker modes are refused).

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, OnceLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Connection, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

/// The stream of a connection made through [`PgTarget::connect`].
pub type TlsStream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;

/// `sslmode`, with libpq's meanings (the module's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, TargetError> {
        Ok(match value {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => return Err(TargetError::SslMode(other.to_string())),
        })
    }

    /// What tokio-postgres is told: whether to ask for TLS, and whether to insist.
    fn on_the_wire(self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as Wire;
        match self {
            Self::Disable => Wire::Disable,
            Self::Prefer => Wire::Prefer,
            Self::Require | Self::VerifyCa | Self::VerifyFull => Wire::Require,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }
}

/// Where trusted root certificates come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Roots {
    File(String),
    System,
}

impl fmt::Display for Roots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "sslrootcert {path}"),
            Self::System => f.write_str("the system's root certificates"),
        }
    }
}

/// Why a connection string cannot be used. The messages never repeat the string (it may hold
/// a password).
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("not a PostgreSQL connection string ({0})")]
    Malformed(String),
    #[error("sslmode must be disable, prefer, require, verify-ca or verify-full, got {0:?}")]
    SslMode(String),
    #[error("sslrootcert=system needs sslmode=verify-full (as in libpq), got sslmode={0}")]
    WeakSystemRoots(&'static str),
    #[error("sslrootcert {path}: {cause}")]
    RootFile { path: String, cause: String },
    #[error("no system root certificates ({0}); name a CA file with sslrootcert")]
    NoSystemRoots(String),
}

/// A PostgreSQL server to connect to: tokio-postgres's settings, and the rustls connector that
/// enforces the string's `sslmode`. Every connection the service makes is opened from one.
#[derive(Clone)]
pub struct PgTarget {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
    mode: SslMode,
    roots: Option<Roots>,
}

impl PgTarget {
    /// Parses `url`, reading the root certificates that its TLS settings need.
    pub fn parse(url: &str) -> Result<Self, TargetError> {
        let TlsParams {
            rest,
            mode,
            root_cert,
        } = TlsParams::take(url)?;
        let (mode, roots) = resolve(mode, root_cert)?;
        let mut config: tokio_postgres::Config = rest
            .parse()
            .map_err(|e: tokio_postgres::Error| TargetError::Malformed(e.to_string()))?;
        config.ssl_mode(mode.on_the_wire());
        let tls = MakeRustlsConnect::new(client_config(mode, roots.as_ref())?);
        Ok(Self {
            config,
            tls,
            mode,
            roots,
        })
    }

    pub async fn connect(
        &self,
    ) -> Result<(Client, Connection<Socket, TlsStream>), tokio_postgres::Error> {
        self.config.connect(self.tls.clone()).await
    }

    /// `err` from connecting, with the TLS settings named when TLS is what failed.
    pub fn explain(&self, err: tokio_postgres::Error) -> anyhow::Error {
        // tokio-postgres's TLS errors have no kind of their own to match on, only this text.
        if err
            .to_string()
            .starts_with("error performing TLS handshake")
        {
            let context = format!("TLS to PostgreSQL failed ({self})");
            anyhow::Error::new(err).context(context)
        } else {
            err.into()
        }
    }
}

impl fmt::Display for PgTarget {
    /// The TLS settings, e.g. `sslmode=verify-full, roots from sslrootcert /etc/pg/ca.pem`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sslmode={}", self.mode.as_str())?;
        match &self.roots {
            Some(roots) => write!(f, ", roots from {roots}"),
            None => Ok(()),
        }
    }
}

/// The mode and the roots that `sslmode` and `sslrootcert` ask for, as libpq reads them.
fn resolve(
    mode: Option<SslMode>,
    root_cert: Option<String>,
) -> Result<(SslMode, Option<Roots>), TargetError> {
    let roots = root_cert.map(|value| match value.as_str() {
        "system" => Roots::System,
        _ => Roots::File(value),
    });
    let mode = match (mode, &roots) {
        (None, Some(Roots::System)) => SslMode::VerifyFull,
        (Some(weak), Some(Roots::System)) if weak != SslMode::VerifyFull => {
            return Err(TargetError::WeakSystemRoots(weak.as_str()));
        }
        (mode, _) => mode.unwrap_or(SslMode::Prefer),
    };
    // libpq checks the chain whenever it has roots, and in the verify modes it needs them.
    let roots = match (mode, roots) {
        (SslMode::Disable, _) => None,
        (SslMode::VerifyCa | SslMode::VerifyFull, None) => Some(Roots::System),
        (_, roots) => roots,
    };
    Ok((mode, roots))
}

/// A connection string split into its TLS parameters and the rest, which tokio-postgres parses.
#[derive(Debug, PartialEq, Eq)]
struct TlsParams {
    rest: String,
    mode: Option<SslMode>,
    root_cert: Option<String>,
}

const TLS_KEYS: [&str; 2] = ["sslmode", "sslrootcert"];

/// The TLS parameters found in a string, in order, with their decoded values.
type Found = Vec<(&'static str, String)>;

impl TlsParams {
    fn take(url: &str) -> Result<Self, TargetError> {
        let (rest, found) = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            split_url(url)
        } else {
            split_key_values(url)?
        };
        let mut params = Self {
            rest,
            mode: None,
            root_cert: None,
        };
        // As in libpq, a parameter given twice takes its last value.
        for (key, value) in found {
            match key {
                "sslmode" => params.mode = Some(SslMode::parse(&value)?),
                _ => params.root_cert = Some(value),
            }
        }
        Ok(params)
    }
}

/// The URL without its `sslmode` and `sslrootcert` query parameters, and their decoded values.
/// The query starts at the first `?` after the credentials, as tokio-postgres reads it.
fn split_url(url: &str) -> (String, Found) {
    let after_credentials = url.find('@').map_or(0, |at| at + 1);
    let Some(question) = url[after_credentials..]
        .find('?')
        .map(|q| q + after_credentials)
    else {
        return (url.to_string(), Vec::new());
    };
    let (base, query) = (&url[..question], &url[question + 1..]);
    let mut found = Vec::new();
    let mut kept = Vec::new();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match TLS_KEYS.into_iter().find(|k| decode(key) == *k) {
            Some(tls_key) => found.push((tls_key, decode(value).into_owned())),
            None => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (rest, found)
}

fn decode(s: &str) -> Cow<'_, str> {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy()
}

/// The `key=value` string without its `sslmode` and `sslrootcert` pairs (cut out as written,
/// so the rest keeps its quoting), and their unquoted values. Same grammar as libpq's:
/// whitespace between pairs and around `=`, values bare or single-quoted, `\` escaping.
fn split_key_values(s: &str) -> Result<(String, Found), TargetError> {
    let malformed = |what: &str| TargetError::Malformed(what.to_string());
    let mut rest = String::new();
    let mut found = Vec::new();
    let mut chars = s.char_indices().peekable();
    let mut kept_from = 0;
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(start, _)) = chars.peek() else {
            break;
        };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        if chars.next().map(|(_, c)| c) != Some('=') {
            return Err(malformed("expected `=` after a key"));
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let quoted = chars.next_if(|(_, c)| *c == '\'').is_some();
        let mut value = String::new();
        while let Some(&(_, c)) = chars.peek() {
            if (quoted && c == '\'') || (!quoted && c.is_whitespace()) {
                break;
            }
            chars.next();
            if c == '\\' {
                if let Some((_, escaped)) = chars.next() {
                    value.push(escaped);
                }
            } else {
                value.push(c);
            }
        }
        if quoted && chars.next_if(|(_, c)| *c == '\'').is_none() {
            return Err(malformed("unterminated quoted value"));
        }
        let end = chars.peek().map_or(s.len(), |&(i, _)| i);
        if let Some(tls_key) = TLS_KEYS.into_iter().find(|k| *k == key) {
            rest.push_str(&s[kept_from..start]);
            kept_from = end;
            found.push((tls_key, value));
        }
    }
    rest.push_str(&s[kept_from..]);
    Ok((rest, found))
}

fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// The system's roots, read once per process.
fn system_roots() -> Result<Arc<RootCertStore>, TargetError> {
    static SYSTEM: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    SYSTEM
        .get_or_init(|| {
            let loaded = rustls_native_certs::load_native_certs();
            let mut store = RootCertStore::empty();
            store.add_parsable_certificates(loaded.certs);
            if store.is_empty() {
                let errors: Vec<String> = loaded.errors.iter().map(|e| e.to_string()).collect();
                return Err(if errors.is_empty() {
                    "none found".to_string()
                } else {
                    errors.join("; ")
                });
            }
            Ok(Arc::new(store))
        })
        .clone()
        .map_err(TargetError::NoSystemRoots)
}

fn file_roots(path: &str) -> Result<Arc<RootCertStore>, TargetError> {
    let failed = |cause: String| TargetError::RootFile {
        path: path.to_string(),
        cause,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| failed(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| failed(e.to_string()))?;
    let mut store = RootCertStore::empty();
    for cert in certs {
        store
            .add(cert)
            .map_err(|e| failed(format!("not a usable CA certificate: {e}")))?;
    }
    if store.is_empty() {
        return Err(failed("holds no PEM certificate".to_string()));
    }
    Ok(Arc::new(store))
}

fn client_config(mode: SslMode, roots: Option<&Roots>) -> Result<ClientConfig, TargetError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions");
    let store = match roots {
        None => None,
        Some(Roots::System) => Some(system_roots()?),
        Some(Roots::File(path)) => Some(file_roots(path)?),
    };
    // The builder fails only without roots or with bad revocation lists: neither happens here.
    let chain = store.map(|store| {
        WebPkiServerVerifier::builder_with_provider(store, provider.clone())
            .build()
            .expect("a non-empty root store makes a verifier")
    });
    let config = match (mode, chain) {
        (SslMode::VerifyFull, Some(chain)) => builder.with_webpki_verifier(chain),
        (_, chain) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnly { chain, provider })),
    };
    Ok(config.with_no_client_auth())
}

/// libpq's checks short of `verify-full`: the chain when there are roots (`verify-ca`, and
/// `prefer`/`require` with `sslrootcert`), nothing otherwise; never the host name. The
/// handshake's signatures are always checked, so the peer holds the certificate's key.
#[derive(Debug)]
struct ChainOnly {
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        // The name is checked after the chain: a name error means the chain was trusted.
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            verified => verified,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(url: &str) -> TlsParams {
        TlsParams::take(url).unwrap()
    }

    #[test]
    fn urls_lose_their_tls_parameters_and_keep_the_rest() {
        let p = take(
            "postgres://u:p%3Fw@h:5432/db?sslmode=verify-full&application_name=x&sslrootcert=%2Fetc%2Fca%201.pem",
        );
        assert_eq!(p.rest, "postgres://u:p%3Fw@h:5432/db?application_name=x");
        assert_eq!(p.mode, Some(SslMode::VerifyFull));
        assert_eq!(p.root_cert.as_deref(), Some("/etc/ca 1.pem"));

        let p = take("postgresql://h/db?sslmode=require");
        assert_eq!(p.rest, "postgresql://h/db");
        assert_eq!(p.mode, Some(SslMode::Require));

        // A `?` in the credentials is not the query.
        let p = take("postgres://u:a?b@h/db");
        assert_eq!(p.rest, "postgres://u:a?b@h/db");
        assert_eq!(p.mode, None);
    }

    #[test]
    fn key_value_strings_lose_their_tls_pairs_and_keep_their_quoting() {
        let p = take(
            "host=h sslmode = verify-ca password='a b\\'c' sslrootcert='/etc/my ca.pem' dbname=d",
        );
        assert_eq!(p.rest, "host=h  password='a b\\'c'  dbname=d");
        assert_eq!(p.mode, Some(SslMode::VerifyCa));
        assert_eq!(p.root_cert.as_deref(), Some("/etc/my ca.pem"));
        let parsed: tokio_postgres::Config = p.rest.parse().unwrap();
        assert_eq!(parsed.get_password(), Some(&b"a b'c"[..]));

        let p = take("sslmode=disable sslmode=require");
        assert_eq!(p.mode, Some(SslMode::Require), "the last value wins");
        assert!(TlsParams::take("host='h").is_err());
        assert!(TlsParams::take("host h").is_err());
    }

    #[test]
    fn modes_have_libpq_meanings() {
        let resolved = |mode: Option<&str>, root: Option<&str>| {
            resolve(
                mode.map(|m| SslMode::parse(m).unwrap()),
                root.map(str::to_string),
            )
        };
        let file = || Some(Roots::File("/ca.pem".into()));
        assert_eq!(
            resolved(None, None).unwrap(),
            (SslMode::Prefer, None),
            "prefer by default, verifying nothing"
        );
        assert_eq!(
            resolved(Some("require"), Some("/ca.pem")).unwrap(),
            (SslMode::Require, file()),
            "require checks the chain when it has roots"
        );
        assert_eq!(
            resolved(Some("disable"), Some("/ca.pem")).unwrap(),
            (SslMode::Disable, None),
            "disable reads no roots"
        );
        assert_eq!(
            resolved(Some("verify-ca"), None).unwrap(),
            (SslMode::VerifyCa, Some(Roots::System))
        );
        assert_eq!(
            resolved(None, Some("system")).unwrap(),
            (SslMode::VerifyFull, Some(Roots::System))
        );
        assert!(matches!(
            resolved(Some("require"), Some("system")),
            Err(TargetError::WeakSystemRoots("require"))
        ));
        assert!(matches!(
            SslMode::parse("allow"),
            Err(TargetError::SslMode(m)) if m == "allow"
        ));
        use tokio_postgres::config::SslMode as Wire;
        assert_eq!(SslMode::Prefer.on_the_wire(), Wire::Prefer);
        assert_eq!(SslMode::VerifyCa.on_the_wire(), Wire::Require);
    }

    #[test]
    fn strings_that_cannot_be_used_are_refused_without_repeating_them() {
        let missing =
            PgTarget::parse("postgres://u:secret@h/db?sslmode=require&sslrootcert=/nowhere/ca.pem");
        let Err(err @ TargetError::RootFile { .. }) = missing else {
            panic!("a missing root file is refused");
        };
        assert!(
            err.to_string().starts_with("sslrootcert /nowhere/ca.pem: "),
            "{err}"
        );
        let Err(err) = PgTarget::parse("postgres://u:secret@h:port/db") else {
            panic!("a bad port is refused");
        };
        assert!(matches!(err, TargetError::Malformed(_)));
        assert!(!err.to_string().contains("secret"), "{err}");
        let target = PgTarget::parse("host=h sslmode=disable").unwrap();
        assert_eq!(target.to_string(), "sslmode=disable");
    }
}
