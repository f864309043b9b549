//! JWT verification: RS256/ES256 against a JWKS (cached by `kid`), HS256 with a shared secret
//! only when one is configured. The accepted algorithm is chosen by the key, never by the
//! token alone, so `alg: none` and algorithm confusion have nothing to verify against.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, RwLock};

use crate::config::JwtConfig;

/// Tokens larger than this are refused before any parsing.
const MAX_TOKEN_LEN: usize = 8 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("algorithm not accepted")]
    Algorithm,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("invalid token: {0}")]
    Invalid(String),
}

impl TokenError {
    /// The reason as a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Algorithm => "algorithm",
            Self::UnknownKey => "unknown_key",
            Self::Invalid(_) => "invalid",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

struct CachedKey {
    key: DecodingKey,
    alg: Algorithm,
}

#[derive(Default)]
struct KeySet {
    keys: HashMap<String, CachedKey>,
    last_fetch: Option<Instant>,
    /// Past this the set is fetched again before it verifies (a key removed from the JWKS
    /// stops verifying): the JWKS's `Cache-Control: max-age`, at most an hour.
    fresh_until: Option<Instant>,
}

/// The longest a fetched JWKS is trusted without a refresh.
const JWKS_MAX_AGE: Duration = Duration::from_secs(3_600);

impl KeySet {
    fn fresh(&self) -> bool {
        self.fresh_until.is_some_and(|t| Instant::now() < t)
    }
}

struct Jwks {
    url: url::Url,
    http: reqwest::Client,
    refetch_interval: Duration,
    set: RwLock<KeySet>,
    /// One fetch at a time; others wait for it and then read the result.
    fetching: Mutex<()>,
}

pub struct Verifier {
    hs256: Option<DecodingKey>,
    jwks: Option<Jwks>,
    issuer: Option<String>,
    audience: Option<Vec<String>>,
    leeway: Duration,
}

impl Verifier {
    pub fn new(config: &JwtConfig, http: reqwest::Client) -> Self {
        Self {
            hs256: config
                .hs256_secret
                .as_ref()
                .map(|s| DecodingKey::from_secret(s.expose_secret().as_bytes())),
            jwks: config.jwks_url.clone().map(|url| Jwks {
                url,
                http,
                refetch_interval: config.jwks_refetch_interval,
                set: RwLock::new(KeySet::default()),
                fetching: Mutex::new(()),
            }),
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            leeway: config.leeway,
        }
    }

    /// Verifies `token` and returns its subject.
    pub async fn verify(&self, token: &str) -> Result<String, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        let key = match header.alg {
            Algorithm::HS256 => self.hs256.clone().ok_or(TokenError::Algorithm)?,
            Algorithm::RS256 | Algorithm::ES256 => {
                let jwks = self.jwks.as_ref().ok_or(TokenError::Algorithm)?;
                let kid = header.kid.as_deref().ok_or(TokenError::UnknownKey)?;
                let (key, alg) = jwks.key(kid).await?;
                if alg != header.alg {
                    return Err(TokenError::Algorithm);
                }
                key
            }
            _ => return Err(TokenError::Algorithm),
        };

        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway.as_secs();
        validation.validate_nbf = true;
        match &self.issuer {
            Some(iss) => {
                validation.set_required_spec_claims(&["exp", "sub", "iss"]);
                validation.set_issuer(&[iss]);
            }
            None => {
                validation.set_required_spec_claims(&["exp", "sub"]);
                validation.iss = None;
            }
        }
        match &self.audience {
            Some(aud) => validation.set_audience(aud),
            None => validation.validate_aud = false,
        }
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|e| TokenError::Invalid(e.to_string()))?;
        if data.claims.sub.is_empty() || data.claims.sub.len() > 255 {
            return Err(TokenError::Invalid("subject".into()));
        }
        Ok(data.claims.sub)
    }
}

impl Jwks {
    async fn key(&self, kid: &str) -> Result<(DecodingKey, Algorithm), TokenError> {
        {
            let set = self.set.read().await;
            if let (true, Some(k)) = (set.fresh(), set.keys.get(kid)) {
                return Ok((k.key.clone(), k.alg));
            }
        }
        let _guard = self.fetching.lock().await;
        {
            // Another request may have fetched while we waited; and an unknown kid may
            // trigger a fetch at most once per refetch interval.
            let set = self.set.read().await;
            let throttled = set
                .last_fetch
                .is_some_and(|t| t.elapsed() < self.refetch_interval);
            match set.keys.get(kid) {
                Some(k) if set.fresh() => return Ok((k.key.clone(), k.alg)),
                None if set.fresh() && throttled => return Err(TokenError::UnknownKey),
                _ => {}
            }
        }
        let fetched = self.fetch().await;
        let mut set = self.set.write().await;
        let now = Instant::now();
        set.last_fetch = Some(now);
        match fetched {
            Ok((keys, max_age)) => {
                set.keys = keys;
                set.fresh_until = Some(now + max_age);
            }
            // The keys we have keep verifying while the JWKS cannot be reached; it is tried
            // again after the refetch interval.
            Err(e) => {
                tracing::warn!(error = %e, url = %self.url, "JWKS fetch failed");
                set.fresh_until = Some(now + self.refetch_interval);
            }
        }
        set.keys
            .get(kid)
            .map(|k| (k.key.clone(), k.alg))
            .ok_or(TokenError::UnknownKey)
    }

    /// The published keys, and how long to trust them: the response's max-age, between the
    /// refetch interval and an hour.
    async fn fetch(&self) -> anyhow::Result<(HashMap<String, CachedKey>, Duration)> {
        let response = self
            .http
            .get(self.url.clone())
            .timeout(Duration::from_secs(5))
            .send()
            .await?
            .error_for_status()?;
        let max_age = trusted_for(
            response
                .headers()
                .get(reqwest::header::CACHE_CONTROL)
                .and_then(|v| v.to_str().ok()),
            self.refetch_interval,
        );
        let set: JwkSet = response.json().await?;
        let keys = set
            .keys
            .iter()
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                let alg = key_algorithm(jwk)?;
                let key = DecodingKey::from_jwk(jwk).ok()?;
                Some((kid, CachedKey { key, alg }))
            })
            .collect();
        Ok((keys, max_age))
    }
}

/// How long a fetched JWKS is trusted: its `Cache-Control` max-age, at least the refetch
/// interval (a key set is not fetched more often than unknown kids may fetch it) and at most
/// an hour, also when the header is missing or says nothing of max-age, so a key removed from
/// the JWKS stops verifying within the hour.
fn trusted_for(cache_control: Option<&str>, refetch_interval: Duration) -> Duration {
    cache_control
        .and_then(max_age)
        .unwrap_or(JWKS_MAX_AGE)
        .clamp(refetch_interval.min(JWKS_MAX_AGE), JWKS_MAX_AGE)
}

/// `max-age` of a Cache-Control header value.
fn max_age(cache_control: &str) -> Option<Duration> {
    cache_control.split(',').find_map(|directive| {
        let (name, value) = directive.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("max-age")
            .then(|| value.trim().trim_matches('"').parse().ok())?
            .map(Duration::from_secs)
    })
}

/// The one algorithm a JWK may verify: RSA keys RS256, P-256 keys ES256, nothing else.
fn key_algorithm(jwk: &Jwk) -> Option<Algorithm> {
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        _ => return None,
    };
    match jwk.common.key_algorithm {
        Some(declared) if declared.to_string() != format!("{alg:?}") => None,
        _ => Some(alg),
    }
}

/// Mints an HS256 token (the `dev-token` command and tests).
pub fn mint_hs256(
    secret: &SecretString,
    issuer: Option<&str>,
    sub: &str,
    ttl: Duration,
) -> anyhow::Result<String> {
    let now = chrono::Utc::now().timestamp() as u64;
    let claims = Claims {
        sub: sub.to_string(),
        exp: now + ttl.as_secs(),
        iat: Some(now),
        iss: issuer.map(str::to_string),
    };
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.expose_secret().as_bytes()),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(
            max_age("public, max-age=300"),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            max_age("MAX-AGE=\"60\", must-revalidate"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(max_age("no-store"), None);
        assert_eq!(max_age("max-age=soon"), None);
    }

    #[test]
    fn a_jwks_is_trusted_at_most_an_hour() {
        let floor = Duration::from_secs(30);
        let hour = Duration::from_secs(3_600);
        for cache_control in [
            Some("public, max-age=86400"),
            Some("max-age=3601"),
            Some("no-cache"),
            None,
        ] {
            assert_eq!(trusted_for(cache_control, floor), hour, "{cache_control:?}");
        }
        assert_eq!(
            trusted_for(Some("max-age=600"), floor),
            Duration::from_secs(600)
        );
        // Not below the refetch interval, which itself counts no more than an hour.
        assert_eq!(trusted_for(Some("max-age=0"), floor), floor);
        assert_eq!(
            trusted_for(Some("max-age=5"), Duration::from_secs(7_200)),
            hour
        );
    }
}
