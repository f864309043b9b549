//! The OpenAPI schemas of the parsed types: each says, in JSON Schema, what its parser in
//! `types` accepts, so that a request a generated client builds from the document is not
//! refused. Patterns describe the canonical form (no surrounding blanks, which the parsers
//! trim), in the regex subset ECMA-262, Python and Rust share.

use utoipa::openapi::schema::{
    AdditionalProperties, Array, ArrayBuilder, KnownFormat, Object, ObjectBuilder, SchemaFormat,
    SchemaType, Type,
};

fn text() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

/// A string schema that also accepts `null` (an optional field sent as `null` is taken as
/// not sent).
fn or_null(schema: ObjectBuilder) -> Object {
    schema
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .build()
}

/// Characters `char::is_control` refuses.
const CONTROL: &str = r"\x00-\x1F\x7F-\x9F";

/// What [`super::name`] accepts: not blank, no control characters, at most `MAX` characters.
pub fn name<const MAX: usize>() -> Object {
    name_schema::<MAX>().build()
}

/// [`name`] or `null`.
pub fn name_or_null<const MAX: usize>() -> Object {
    or_null(name_schema::<MAX>())
}

fn name_schema<const MAX: usize>() -> ObjectBuilder {
    text()
        .min_length(Some(1))
        .max_length(Some(MAX))
        .pattern(Some(format!(
            r"^[^\s{CONTROL}](?:[^{CONTROL}]*[^\s{CONTROL}])?$"
        )))
        .description(Some(format!(
            "1-{MAX} characters, not blank, no control characters."
        )))
}

/// What [`super::external_id`] accepts.
pub fn external_id() -> Object {
    text()
        .min_length(Some(1))
        .max_length(Some(255))
        .pattern(Some(format!(r"^[^\s{CONTROL}]+$")))
        .description(Some(
            "The identity-provider subject (`sub`): 1-255 characters without spaces.",
        ))
        .build()
}

fn slug_schema() -> ObjectBuilder {
    text()
        .min_length(Some(3))
        .max_length(Some(63))
        .pattern(Some(r"^[a-z0-9]+(?:-[a-z0-9]+)*$"))
}

/// What [`super::Slug::parse`] accepts.
pub fn slug() -> Object {
    slug_schema()
        .description(Some(
            "3-63 lower-case letters, digits and single hyphens inside.",
        ))
        .build()
}

const PHONE: &str = r"^\+[1-9][0-9]{7,14}$";

/// What [`super::Phone::parse`] accepts (written without separators).
pub fn phone() -> Object {
    text()
        .pattern(Some(PHONE))
        .description(Some("E.164, e.g. `+5511912345678`."))
        .build()
}

/// [`phone`] or `null`.
pub fn phone_or_null() -> Object {
    or_null(
        text()
            .pattern(Some(PHONE))
            .description(Some("E.164, e.g. `+5511912345678`.")),
    )
}

fn email_schema() -> ObjectBuilder {
    text()
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Email)))
        .max_length(Some(254))
}

/// What [`super::Email::parse`] accepts.
pub fn email() -> Object {
    email_schema().build()
}

/// [`email`] or `null`.
pub fn email_or_null() -> Object {
    or_null(email_schema())
}

/// What [`super::http_url`] accepts: a host name (its last label not a number, which would
/// make it an IPv4 address), an optional port and anything after it (the URL parser
/// percent-encodes what a path cannot hold).
pub fn http_url_or_null() -> Object {
    or_null(
        text()
            .max_length(Some(2048))
            .pattern(Some(
                r"^[Hh][Tt][Tt][Pp][Ss]?://(?:[A-Za-z0-9_-]+\.)*[A-Za-z_-][A-Za-z0-9_-]*(?::[0-9]{1,4})?(?:[/?#]\S*)?$",
            ))
            .description(Some("An absolute http or https URL.")),
    )
}

fn currency_schema() -> ObjectBuilder {
    text()
        .pattern(Some(format!("^(?:{})$", super::CURRENCIES.join("|"))))
        .description(Some("ISO 4217 code, e.g. `BRL`."))
}

/// What [`super::Currency::parse`] accepts: one of the active ISO 4217 codes.
pub fn currency() -> Object {
    currency_schema().build()
}

/// [`currency`] or `null`.
pub fn currency_or_null() -> Object {
    or_null(currency_schema())
}

fn ids_schema<const MAX: usize>() -> ArrayBuilder {
    ArrayBuilder::new()
        .items(text().format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))))
        .max_items(Some(MAX))
        .unique_items(true)
        .description(Some(format!("At most {MAX} different ids, in order.")))
}

/// A list of at most `MAX` different ids.
pub fn unique_ids<const MAX: usize>() -> Array {
    ids_schema::<MAX>().build()
}

/// [`unique_ids`] or `null`.
pub fn unique_ids_or_null<const MAX: usize>() -> Array {
    ids_schema::<MAX>()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .build()
}

/// What [`super::Sku::parse`] accepts.
pub fn sku_or_null() -> Object {
    or_null(text().pattern(Some(r"^[!-~]{1,64}$")).description(Some(
        "Unique in the tenant: 1-64 visible ASCII characters without spaces.",
    )))
}

/// What [`super::TimeZone::parse`] accepts: an IANA time zone name.
pub fn time_zone() -> Object {
    let names: Vec<String> = chrono_tz::TZ_VARIANTS
        .iter()
        .map(|tz| regex_escape(tz.name()))
        .collect();
    text()
        .pattern(Some(format!("^(?:{})$", names.join("|"))))
        .description(Some("IANA time zone, e.g. `America/Sao_Paulo`."))
        .build()
}

fn regex_escape(raw: &str) -> String {
    raw.chars()
        .flat_map(|c| {
            let special = matches!(c, '+' | '.' | '-' | '(' | ')');
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

/// What [`super::TimeOfDay::parse`] accepts.
pub fn time_of_day() -> Object {
    text()
        .pattern(Some(r"^(?:[01][0-9]|2[0-3]):[0-5][0-9]$"))
        .description(Some("`HH:MM`, 24-hour clock."))
        .build()
}

/// What [`super::LanguageTag::parse`] accepts, as a list of 1 to `MAX` different tags.
pub fn language_tags<const MAX: usize>() -> Array {
    ArrayBuilder::new()
        .items(
            text()
                .pattern(Some(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8})*$"))
                .description(Some("A language tag such as `en` or `pt-BR`.")),
        )
        .min_items(Some(1))
        .max_items(Some(MAX))
        .unique_items(true)
        .description(Some(format!(
            "1-{MAX} different language tags, the first is the default."
        )))
        .build()
}

/// A map of social network name (1-32 lower-case letters, digits or `_`) to handle.
pub fn social_handles<const MAX: usize>() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property_names(Some(text().pattern(Some(r"^[a-z0-9_]{1,32}$")).build()))
        .additional_properties(Some(AdditionalProperties::RefOr(name::<100>().into())))
        .max_properties(Some(MAX))
        .description(Some(format!(
            "Network name to handle, e.g. `{{\"instagram\": \"@acme\"}}`; at most {MAX}."
        )))
        .build()
}

/// An ISO 3166-1 alpha-2 country code.
pub fn country() -> Object {
    text()
        .pattern(Some(r"^[A-Z]{2}$"))
        .description(Some("ISO 3166-1 alpha-2 country code, e.g. `BR`."))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(schema: &Object) -> regex::Regex {
        regex::Regex::new(schema.pattern.as_deref().unwrap()).unwrap()
    }

    #[test]
    fn patterns_accept_what_the_parsers_accept() {
        let zones = pattern(&time_zone());
        for tz in chrono_tz::TZ_VARIANTS {
            assert!(zones.is_match(tz.name()), "{}", tz.name());
        }
        assert!(!zones.is_match("Mars/Olympus"));
        let currencies = pattern(&currency());
        assert!(currencies.is_match("BRL") && !currencies.is_match("XYZ"));
        let names = pattern(&name::<200>());
        for good in ["Acme", "a", "Tee — Ipê print, M"] {
            assert!(
                names.is_match(good) && super::super::name(good, 200).is_ok(),
                "{good}"
            );
        }
        for bad in [" ", " a", "a\u{0}b", ""] {
            assert!(!names.is_match(bad), "{bad:?}");
        }
        let phones = pattern(&phone());
        assert!(phones.is_match("+5511912345678") && !phones.is_match("+0123456789"));
        let urls = pattern(&http_url_or_null());
        for good in [
            "https://cdn.acme.example/logo.png",
            "http://a/b",
            "http://x-1.y2z",
        ] {
            assert!(
                urls.is_match(good) && super::super::http_url(good).is_ok(),
                "{good}"
            );
        }
        assert!(!urls.is_match("http://a.b.4/x"));
        let slugs = pattern(&slug());
        assert!(slugs.is_match("acme-store-2") && !slugs.is_match("ac--me"));
    }
}
