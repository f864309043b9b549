//! Parsed values shared across features: a value of these types has already been checked
//! (parse, don't validate): e-mails, slugs, E.164 phones, ISO 4217 currencies, prices, skus,
//! URLs, language tags, time zones, times of day.

pub mod schema;

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Serialize, Serializer};

/// An e-mail address of plausible shape (`local@domain.tld`), normalised so that spellings of
/// one address compare equal (SPEC §4): the local part in Unicode NFC and full lower case, the
/// domain in IDNA ASCII form (`bücher.example` is `xn--bcher-kva.example`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        use unicode_normalization::UnicodeNormalization;
        let trimmed = raw.trim();
        let (local, domain) = trimmed
            .rsplit_once('@')
            .ok_or("must be an e-mail address")?;
        let local: String = local.nfc().collect::<String>().to_lowercase();
        let domain = idna::domain_to_ascii(domain).map_err(|_| "must be an e-mail address")?;
        let value = format!("{local}@{domain}");
        if value.len() > 254 {
            return Err("must be at most 254 characters");
        }
        let valid = !local.is_empty()
            && local.len() <= 64
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !value.chars().any(|c| c.is_whitespace() || c.is_control())
            && !local.contains('@');
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
    if s.is_empty()
        || s.chars().count() > 255
        || s.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err("must be 1-255 characters without spaces");
    }
    Ok(s.to_string())
}

/// A phone number in E.164 form: `+`, a country code and subscriber number, 8-15 digits in all.
/// Spaces, hyphens, dots and parentheses are accepted on input and dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Phone(String);

impl Phone {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        const MESSAGE: &str = "must be an E.164 phone number, e.g. +5511912345678";
        let rest = raw.trim().strip_prefix('+').ok_or(MESSAGE)?;
        let mut digits = String::with_capacity(16);
        for c in rest.chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' | '.' | '(' | ')' => {}
                _ => return Err(MESSAGE),
            }
        }
        if !(8..=15).contains(&digits.len()) || digits.starts_with('0') {
            return Err(MESSAGE);
        }
        Ok(Self(format!("+{digits}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Active ISO 4217 currency codes, sorted (a fixed list: currencies change rarely, and an
/// unknown one is more likely a typo than news).
const CURRENCIES: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD",
    "CDF", "CHF", "CLP", "CNY", "COP", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD",
    "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ",
    "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD", "JOD",
    "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR",
    "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR",
    "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN",
    "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR",
    "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB",
    "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS",
    "VES", "VND", "VUV", "WST", "XAF", "XCD", "XCG", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWG",
];

/// An ISO 4217 currency code, upper case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let code = raw.trim().to_ascii_uppercase();
        match CURRENCIES.binary_search(&code.as_str()) {
            Ok(_) => {
                let b = code.as_bytes();
                Ok(Self([b[0], b[1], b[2]]))
            }
            Err(_) => Err("must be an ISO 4217 currency code, e.g. USD"),
        }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("parsed from ASCII")
    }
}

/// An amount in minor units that is greater than zero (prices).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PositiveCents(i64);

impl PositiveCents {
    pub fn parse(raw: i64) -> Result<Self, &'static str> {
        if raw > 0 {
            Ok(Self(raw))
        } else {
            Err("must be greater than 0 (an amount in minor units)")
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// A stock-keeping unit: 1-64 visible ASCII characters without spaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sku(String);

impl Sku {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let s = raw.trim();
        if (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(Self(s.to_string()))
        } else {
            Err("must be 1-64 visible ASCII characters without spaces")
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Optional free text of at most `max` characters, without NUL (PostgreSQL text cannot hold
/// it); blank means none.
pub fn text(raw: Option<&str>, max: usize) -> Result<Option<String>, String> {
    let Some(s) = raw.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    if s.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    if s.contains('\0') {
        return Err("must not contain NUL characters".into());
    }
    Ok(Some(s.to_string()))
}

/// An absolute `http` or `https` URL of at most 2048 characters.
pub fn http_url(raw: &str) -> Result<String, &'static str> {
    const MESSAGE: &str = "must be an http or https URL";
    let s = raw.trim();
    if s.len() > 2048 {
        return Err("must be at most 2048 characters");
    }
    let url = url::Url::parse(s).map_err(|_| MESSAGE)?;
    if matches!(url.scheme(), "http" | "https") && url.host().is_some() {
        Ok(url.to_string())
    } else {
        Err(MESSAGE)
    }
}

/// A BCP 47 language tag of the common shape: a 2-3 letter language and optional subtags
/// (`en`, `pt-BR`, `zh-Hant-TW`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LanguageTag(String);

impl LanguageTag {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let s = raw.trim();
        let mut parts = s.split('-');
        let language = parts.next().unwrap_or("");
        let ok = (2..=3).contains(&language.len())
            && language.bytes().all(|b| b.is_ascii_alphabetic())
            && parts.all(|p| {
                (1..=8).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_alphanumeric())
            });
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err("must be a language tag such as en or pt-BR")
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An IANA time zone name (`America/Sao_Paulo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeZone(chrono_tz::Tz);

impl TimeZone {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        raw.trim()
            .parse::<chrono_tz::Tz>()
            .map(Self)
            .map_err(|_| "must be an IANA time zone such as America/Sao_Paulo")
    }

    pub fn name(&self) -> &'static str {
        self.0.name()
    }
}

/// A time of day written `HH:MM` (24-hour clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeOfDay(chrono::NaiveTime);

impl TimeOfDay {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let s = raw.trim();
        if s.len() != 5 {
            return Err("must be a time HH:MM");
        }
        chrono::NaiveTime::parse_from_str(s, "%H:%M")
            .map(Self)
            .map_err(|_| "must be a time HH:MM")
    }

    pub fn to_hh_mm(self) -> String {
        self.0.format("%H:%M").to_string()
    }
}

/// Serializes a timestamp exactly as chrono's `Serialize` does (RFC 3339 in UTC, `Z`, with 0,
/// 3, 6 or 9 fractional digits, as few as the value needs) but without `core::fmt`: a page of
/// 20 products holds 40 timestamps, and chrono's formatting was a twentieth of the server's
/// CPU on the product list (bench/README.md). Years outside 0-9999 and leap seconds, which
/// the database never returns, go through chrono.
pub fn timestamp<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    let year = at.year();
    let nanos = at.nanosecond();
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return at.serialize(serializer);
    }
    let mut out = [0u8; 30];
    let mut put = |at: usize, value: u32, digits: usize| {
        let mut v = value;
        for i in (0..digits).rev() {
            out[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, year as u32, 4);
    put(5, at.month(), 2);
    put(8, at.day(), 2);
    put(11, at.hour(), 2);
    put(14, at.minute(), 2);
    put(17, at.second(), 2);
    let (fraction, digits) = match nanos {
        0 => (0, 0),
        n if n % 1_000_000 == 0 => (n / 1_000_000, 3),
        n if n % 1_000 == 0 => (n / 1_000, 6),
        n => (n, 9),
    };
    if digits > 0 {
        put(20, fraction, digits);
    }
    for (i, c) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
    ] {
        out[i] = c;
    }
    let end = if digits > 0 { 20 + digits } else { 19 };
    out[end] = b'Z';
    let text = std::str::from_utf8(&out[..=end]).expect("ASCII digits and separators");
    serializer.serialize_str(text)
}

/// [`timestamp`] for an optional one (`null` when absent).
pub fn timestamp_opt<S: Serializer>(
    at: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => timestamp(at, serializer),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_serialize_as_chrono_does() {
        #[derive(Serialize)]
        struct Fast(#[serde(serialize_with = "timestamp")] DateTime<Utc>);
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut cases: Vec<DateTime<Utc>> = [
            "0000-01-01T00:00:00Z",
            "1970-01-01T00:00:00Z",
            "2026-11-28T01:03:08.1Z",
            "2026-11-28T01:03:08.123Z",
            "2026-11-28T01:03:08.000123Z",
            "2026-11-28T01:03:08.123456Z",
            "2026-11-28T01:03:08.000000001Z",
            "9999-12-31T23:59:59.999999999Z",
            "+10000-01-01T00:00:00Z",
            "-0001-12-31T23:59:59Z",
        ]
        .iter()
        .map(|raw| raw.parse().unwrap())
        .collect();
        for _ in 0..10_000 {
            let seconds = (next() % 400_000_000_000) as i64 - 62_000_000_000;
            let nanos = match next() % 4 {
                0 => 0,
                1 => (next() % 1000) as u32 * 1_000_000,
                2 => (next() % 1_000_000) as u32 * 1_000,
                _ => (next() % 1_000_000_000) as u32,
            };
            cases.push(DateTime::from_timestamp(seconds, nanos).unwrap());
        }
        for at in cases {
            assert_eq!(
                serde_json::to_string(&Fast(at)).unwrap(),
                serde_json::to_string(&at).unwrap()
            );
        }
        #[derive(Serialize)]
        struct Maybe(#[serde(serialize_with = "timestamp_opt")] Option<DateTime<Utc>>);
        assert_eq!(serde_json::to_string(&Maybe(None)).unwrap(), "null");
    }

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
    fn look_alike_spellings_of_an_email_are_one_address() {
        let composed = Email::parse("JOS\u{c9}@B\u{fc}cher.Example").unwrap();
        let decomposed = Email::parse("jose\u{301}@bu\u{308}cher.example").unwrap();
        assert_eq!(composed, decomposed);
        assert_eq!(composed.as_str(), "jos\u{e9}@xn--bcher-kva.example");
        assert_eq!(
            Email::parse("ana@xn--bcher-kva.example").unwrap(),
            Email::parse("Ana@BÜCHER.example").unwrap()
        );
        // Full Unicode lower case, not ASCII only.
        assert_eq!(
            Email::parse("ÅSA@shop.example").unwrap().as_str(),
            "\u{e5}sa@shop.example"
        );
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
    #[test]
    fn phones() {
        assert_eq!(
            Phone::parse(" +55 (11) 91234-5678 ").unwrap().as_str(),
            "+5511912345678"
        );
        assert_eq!(
            Phone::parse("+14155550100").unwrap().as_str(),
            "+14155550100"
        );
        for bad in [
            "",
            "14155550100",
            "+",
            "+0123456789",
            "+1234567",
            "+1234567890123456",
            "+1415abc0100",
            "++14155550100",
        ] {
            assert!(Phone::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn currencies() {
        assert!(
            CURRENCIES.windows(2).all(|w| w[0] < w[1]),
            "sorted, no duplicates"
        );
        assert_eq!(Currency::parse("usd").unwrap().as_str(), "USD");
        assert_eq!(Currency::parse("BRL").unwrap().as_str(), "BRL");
        for bad in ["", "US", "USDX", "XYZ", "$"] {
            assert!(Currency::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn amounts_skus_and_texts() {
        assert_eq!(PositiveCents::parse(1).unwrap().get(), 1);
        assert!(PositiveCents::parse(0).is_err());
        assert!(PositiveCents::parse(-5).is_err());
        assert_eq!(Sku::parse(" TS-001/b ").unwrap().as_str(), "TS-001/b");
        for bad in ["", "has space", "é", &"x".repeat(65)] {
            assert!(Sku::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(text(Some("  "), 5).unwrap(), None);
        assert_eq!(text(Some(" hi "), 5).unwrap().as_deref(), Some("hi"));
        assert!(text(Some("toolong"), 5).is_err());
        assert!(text(Some("a\0b"), 5).is_err());
    }

    #[test]
    fn urls_languages_zones_and_times() {
        assert!(http_url("https://cdn.example/logo.png").is_ok());
        for bad in ["", "ftp://x.example/a", "javascript:alert(1)", "https://"] {
            assert!(http_url(bad).is_err(), "{bad}");
        }
        for good in ["en", "pt-BR", "zh-Hant-TW", "yue"] {
            assert!(LanguageTag::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "e", "english", "pt_BR", "en-", "12"] {
            assert!(LanguageTag::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            TimeZone::parse("America/Sao_Paulo").unwrap().name(),
            "America/Sao_Paulo"
        );
        assert!(TimeZone::parse("Mars/Olympus").is_err());
        assert_eq!(TimeOfDay::parse("09:30").unwrap().to_hh_mm(), "09:30");
        for bad in ["9:30", "24:00", "12:60", "noon", "09:30:00"] {
            assert!(TimeOfDay::parse(bad).is_err(), "{bad}");
        }
    }
}
