//! API keys as secrets (SPEC §2, §6): `cck_`, 256 random bits (43 base64url characters), then
//! the tenant's id (32 hex digits). The tenant in the key lets a request without
//! `X-Tenant-ID` find its tenant without a cross-tenant lookup; the random part is the
//! secret. Only the key's SHA-256 is stored (a 256-bit random secret needs no slow password
//! hash, and a hash is one microsecond on the hot path) with its first 12 characters.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub const KEY_PREFIX: &str = "cck_";
const SECRET_CHARS: usize = 43;
const KEY_CHARS: usize = KEY_PREFIX.len() + SECRET_CHARS + 32;
/// The characters of a key kept in clear to recognise it (`cck_` and 8 of the secret's).
pub const SHOWN_CHARS: usize = 12;

/// A key's SHA-256: what the database stores and the cache is keyed by.
pub type KeyHash = [u8; 32];

/// A freshly made key: shown once, then only its hash and prefix remain.
pub struct NewKey {
    pub key: String,
    pub prefix: String,
    pub hash: KeyHash,
}

/// Makes a key for `tenant` from 256 bits of the operating system's randomness.
pub fn generate(tenant: Uuid) -> NewKey {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).expect("the operating system's random source");
    let key = format!(
        "{KEY_PREFIX}{}{}",
        URL_SAFE_NO_PAD.encode(secret),
        tenant.simple()
    );
    NewKey {
        prefix: key[..SHOWN_CHARS].to_string(),
        hash: hash(&key),
        key,
    }
}

pub fn hash(key: &str) -> KeyHash {
    Sha256::digest(key.as_bytes()).into()
}

/// Whether a bearer token is meant as an API key (then it is never tried as a JWT).
pub fn looks_like_key(token: &str) -> bool {
    token.starts_with(KEY_PREFIX)
}

/// The tenant a well-formed key names, or `None` for anything that is not a key.
pub fn tenant_of(key: &str) -> Option<Uuid> {
    if key.len() != KEY_CHARS || !key.starts_with(KEY_PREFIX) {
        return None;
    }
    let secret = &key[KEY_PREFIX.len()..KEY_PREFIX.len() + SECRET_CHARS];
    let decoded = URL_SAFE_NO_PAD.decode(secret).ok()?;
    if decoded.len() != 32 {
        return None;
    }
    let tenant = &key[KEY_PREFIX.len() + SECRET_CHARS..];
    if !tenant
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    Uuid::try_parse(tenant).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_names_its_tenant_and_hides_its_secret() {
        let tenant = Uuid::now_v7();
        let made = generate(tenant);
        assert_eq!(made.key.len(), KEY_CHARS);
        assert!(made.key.starts_with("cck_"));
        assert_eq!(made.prefix, &made.key[..12]);
        assert_eq!(tenant_of(&made.key), Some(tenant));
        assert_eq!(made.hash, hash(&made.key));
        assert_ne!(generate(tenant).key, made.key, "random");
    }

    #[test]
    fn anything_else_is_not_a_key() {
        let good = generate(Uuid::now_v7()).key;
        let mut upper = good.clone();
        upper.replace_range(KEY_CHARS - 1.., "A");
        for bad in [
            "",
            "cck_",
            "eyJhbGciOiJIUzI1NiJ9.e30.x",
            &good[..KEY_CHARS - 1],
            &format!("{good}0"),
            &good.replacen("cck_", "ccx_", 1),
            &upper,
            &format!("cck_{}{}", "!".repeat(43), Uuid::now_v7().simple()),
        ] {
            assert_eq!(tenant_of(bad), None, "{bad}");
        }
    }
}
