//! Parsed values shared across features: a value of these types has already been checked.

use serde::Serialize;

/// A trimmed, lower-cased e-mail address of plausible shape (`local@domain.tld`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let value = raw.trim().to_ascii_lowercase();
        if value.len() > 254 {
            return Err("must be at most 254 characters");
        }
        let (local, domain) = value.split_once('@').ok_or("must be an e-mail address")?;
        let valid = !local.is_empty()
            && local.len() <= 64
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !value.chars().any(|c| c.is_whitespace() || c.is_control())
            && !domain.contains('@');
        if valid {
            Ok(Self(value))
        } else {
            Err("must be an e-mail address")
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A URL-safe identifier: 3-63 lower-case letters, digits and single hyphens inside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Slug(String);

impl Slug {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let s = raw.trim();
        let ok = (3..=63).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-')
            && !s.contains("--");
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err("must be 3-63 lower-case letters, digits or inner single hyphens")
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A trimmed display name of 1 to `max` characters.
pub fn name(raw: &str, max: usize) -> Result<String, String> {
    let s = raw.trim();
    let len = s.chars().count();
    if len == 0 || len > max {
        return Err(format!("must be 1-{max} characters"));
    }
    if s.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(s.to_string())
}

/// An identity-provider subject (`sub`): 1-255 visible characters.
pub fn external_id(raw: &str) -> Result<String, &'static str> {
    let s = raw.trim();
    if s.is_empty() || s.len() > 255 || s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must be 1-255 characters without spaces");
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(
            Email::parse(" Ana@Shop.Example ").unwrap().as_str(),
            "ana@shop.example"
        );
        for bad in [
            "",
            "ana",
            "ana@",
            "@shop.example",
            "ana@shop",
            "a b@shop.example",
            "a@b@c.de",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn slugs() {
        assert!(Slug::parse("acme-store-2").is_ok());
        for bad in [
            "ab",
            "Acme",
            "-acme",
            "acme-",
            "ac--me",
            "acme_store",
            &"a".repeat(64),
        ] {
            assert!(Slug::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(name("  Acme ", 200).unwrap(), "Acme");
        assert!(name("   ", 200).is_err());
        assert!(name(&"x".repeat(201), 200).is_err());
        assert!(name("a\u{0}b", 200).is_err());
    }
}
