//! The rate-limit headers of every tenant-scoped response (SPEC §5): the nine
//! `X-RateLimit-*` headers and the IETF `RateLimit-Policy` / `RateLimit` structured fields
//! (draft-ietf-httpapi-ratelimit-headers), one policy per window.

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use super::Decision;

fn title(name: &str) -> String {
    let mut chars = name.chars();
    chars
        .next()
        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

pub fn apply(decision: &Decision, headers: &mut HeaderMap) {
    let mut policy = Vec::with_capacity(3);
    let mut current = Vec::with_capacity(3);
    for s in &decision.windows {
        let window = title(s.window.name());
        for (field, value) in [
            ("Limit", s.limit),
            ("Remaining", s.remaining()),
            ("Reset", s.reset_seconds),
        ] {
            let name = HeaderName::try_from(format!("x-ratelimit-{field}-{window}"))
                .expect("a valid header name");
            headers.insert(name, HeaderValue::from(value));
        }
        policy.push(format!(
            "\"{}\";q={};w={}",
            s.window.name(),
            s.limit,
            s.window.seconds()
        ));
        current.push(format!(
            "\"{}\";r={};t={}",
            s.window.name(),
            s.remaining(),
            s.reset_seconds
        ));
    }
    for (name, value) in [("ratelimit-policy", policy), ("ratelimit", current)] {
        if let Ok(value) = HeaderValue::from_str(&value.join(", ")) {
            headers.insert(HeaderName::from_static(name), value);
        }
    }
}
