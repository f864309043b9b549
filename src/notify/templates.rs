//! Templates (SPEC §8): the keys the service sends, their variables, the built-in defaults
//! shipped in the binary, resolution by locale (pt-BR -> pt -> en, the tenant's before the
//! built-ins), rendering with minijinja (HTML autoescape for email) and validation on save.

use std::sync::LazyLock;

use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::model::Locale;
use crate::commerce::text_enum;

text_enum! {
    /// A kind of message the service sends; each has built-in templates.
    TemplateKey {
        ManualMessage => "manual.message",
        OrderCreated => "order.created",
        OrderDisputed => "order.disputed",
        AlertTriggered => "alert.triggered",
        VerificationCode => "verification.code",
        TrustLevelChanged => "trust.level_changed",
        TrustVerificationDecided => "trust.verification_decided",
    }
}

text_enum! {
    /// The channels templates exist for (in-app shows a notification's own title and body).
    TemplateChannel {
        Email => "email",
        Sms => "sms",
    }
}

/// Every key's variables.
pub const BASE_VARIABLES: [&str; 6] = [
    "title", "body", "priority", "category", "metadata", "tenant",
];

impl TemplateKey {
    /// What this key adds to [`BASE_VARIABLES`].
    pub fn extra_variables(self) -> &'static [&'static str] {
        match self {
            Self::ManualMessage => &[],
            Self::OrderCreated | Self::OrderDisputed => &["order"],
            Self::AlertTriggered => &["alert", "rule"],
            Self::VerificationCode => &["code"],
            Self::TrustLevelChanged | Self::TrustVerificationDecided => &["trust"],
        }
    }

    pub fn allows(self, variable: &str) -> bool {
        BASE_VARIABLES.contains(&variable) || self.extra_variables().contains(&variable)
    }

    /// Variables of the shape the service passes, for previews and the check on save.
    pub fn sample(self) -> Value {
        let mut vars = json!({
            "title": "Sample title",
            "body": "Sample body",
            "priority": "high",
            "category": "general",
            "metadata": {},
            "tenant": {"name": "Acme"},
        });
        let extra = match self {
            Self::ManualMessage => json!({}),
            Self::OrderCreated | Self::OrderDisputed => json!({"order": {
                "id": "01900000-0000-7000-8000-000000000000", "status": "pending",
                "channel": "whatsapp", "customer": {"name": "Ana", "phone": "+5511912345678"},
                "items": [{"name": "Shirt", "quantity": 2, "unit_price_cents": 4990}],
                "subtotal_cents": 9980, "total_cents": 9980, "currency": "BRL"}}),
            Self::AlertTriggered => json!({
                "alert": {"id": "01900000-0000-7000-8000-000000000000", "severity": "high",
                          "status": "firing", "group_key": "{\"ip\":\"203.0.113.9\"}",
                          "event_count": 10},
                "rule": {"id": "01900000-0000-7000-8000-000000000001",
                         "name": "Authentication failure burst", "key": "auth_failure_burst",
                         "severity": "high"}}),
            Self::VerificationCode => json!({"code": "123456"}),
            Self::TrustLevelChanged => {
                json!({"trust": {"from": 0, "to": 1, "level_name": "verified", "reason": "requirements met"}})
            }
            Self::TrustVerificationDecided => {
                json!({"trust": {"kind": "tax_id", "status": "verified", "reason": "document checked"}})
            }
        };
        if let (Some(v), Some(e)) = (vars.as_object_mut(), extra.as_object()) {
            v.extend(e.clone());
        }
        vars
    }
}

/// A template's text: a subject (email only) and a body (HTML for email, text for SMS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub subject: Option<String>,
    pub body: String,
}

/// What a rendered template gives a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Rendered {
    /// Email only, without the priority prefix.
    #[schema(required = true)]
    pub subject: Option<String>,
    /// Email only.
    #[schema(required = true)]
    pub html: Option<String>,
    pub text: String,
}

/// The locales to look for, in order, for a stored locale (a delivery's, a preference's):
/// read as the API reads one (`pt_br` is `pt-BR`), so `pt-BR` gives `pt-BR`, `pt`, `en`;
/// one that does not parse gives English.
pub fn locale_chain(locale: &str) -> Vec<String> {
    Locale::parse(locale).map_or_else(|_| vec!["en".to_string()], |l| l.fallbacks())
}

/// The built-in template of `key` on `channel` for the first locale of `chain` that has one
/// (English always does).
pub fn builtin(key: TemplateKey, channel: TemplateChannel, chain: &[String]) -> Source {
    chain
        .iter()
        .find_map(|locale| builtin_exact(key, channel, locale))
        .or_else(|| builtin_exact(key, channel, "en"))
        .expect("every key has English templates")
}

fn builtin_exact(key: TemplateKey, channel: TemplateChannel, locale: &str) -> Option<Source> {
    BUILTINS
        .iter()
        .find(|b| b.0 == key && b.1 == channel && b.2.eq_ignore_ascii_case(locale))
        .map(|b| Source {
            subject: b.3.map(str::to_string),
            body: b.4.to_string(),
        })
}

type Builtin = (
    TemplateKey,
    TemplateChannel,
    &'static str,
    Option<&'static str>,
    &'static str,
);

const EMAIL_FOOTER: &str =
    "<p style=\"color:#666;font-size:12px\">{{ tenant.name }} · {{ category }}</p>";

/// The built-in templates: English (`en`) and Portuguese (`pt`, written in Brazilian
/// Portuguese) for every key and channel; `pt-BR` (and any `pt-*`) finds the Portuguese ones
/// through its fallback to `pt`.
static BUILTINS: LazyLock<Vec<Builtin>> = LazyLock::new(|| {
    use TemplateChannel::{Email, Sms};
    use TemplateKey::*;
    let email = |body: &str| -> &'static str {
        Box::leak(format!("{body}\n{EMAIL_FOOTER}").into_boxed_str())
    };
    vec![
        (
            ManualMessage,
            Email,
            "en",
            Some("{{ title }}"),
            email("<h1>{{ title }}</h1>\n<p>{{ body }}</p>"),
        ),
        (
            ManualMessage,
            Email,
            "pt",
            Some("{{ title }}"),
            email("<h1>{{ title }}</h1>\n<p>{{ body }}</p>"),
        ),
        (
            ManualMessage,
            Sms,
            "en",
            None,
            "{{ tenant.name }}: {{ title }}. {{ body }}",
        ),
        (
            ManualMessage,
            Sms,
            "pt",
            None,
            "{{ tenant.name }}: {{ title }}. {{ body }}",
        ),
        (
            OrderCreated,
            Email,
            "en",
            Some("New order from {{ order.customer.name }}"),
            email(
                "<h1>New order</h1>\n<p>{{ order.customer.name }} ordered {{ order.items | length }} item(s): {{ \"%.2f\" | format(order.total_cents / 100) }} {{ order.currency }}.</p>\n<p>Order {{ order.id }}, via {{ order.channel }}.</p>",
            ),
        ),
        (
            OrderCreated,
            Email,
            "pt",
            Some("Novo pedido de {{ order.customer.name }}"),
            email(
                "<h1>Novo pedido</h1>\n<p>{{ order.customer.name }} pediu {{ order.items | length }} item(ns): {{ \"%.2f\" | format(order.total_cents / 100) }} {{ order.currency }}.</p>\n<p>Pedido {{ order.id }}, via {{ order.channel }}.</p>",
            ),
        ),
        (
            OrderCreated,
            Sms,
            "en",
            None,
            "{{ tenant.name }}: new order from {{ order.customer.name }}, {{ \"%.2f\" | format(order.total_cents / 100) }} {{ order.currency }}.",
        ),
        (
            OrderCreated,
            Sms,
            "pt",
            None,
            "{{ tenant.name }}: novo pedido de {{ order.customer.name }}, {{ \"%.2f\" | format(order.total_cents / 100) }} {{ order.currency }}.",
        ),
        (
            OrderDisputed,
            Email,
            "en",
            Some("Order disputed by {{ order.customer.name }}"),
            email(
                "<h1>Order disputed</h1>\n<p>{{ order.customer.name }} disputed order {{ order.id }} ({{ \"%.2f\" | format(order.total_cents / 100) }} {{ order.currency }}).</p>\n<p>{{ body }}</p>",
            ),
        ),
        (
            OrderDisputed,
            Email,
            "pt",
            Some("Pedido contestado por {{ order.customer.name }}"),
            email(
                "<h1>Pedido contestado</h1>\n<p>{{ order.customer.name }} contestou o pedido {{ order.id }} ({{ \"%.2f\" | format(order.total_cents / 100) }} {{ order.currency }}).</p>\n<p>{{ body }}</p>",
            ),
        ),
        (
            OrderDisputed,
            Sms,
            "en",
            None,
            "{{ tenant.name }}: order {{ order.id[:8] }} disputed by {{ order.customer.name }}.",
        ),
        (
            OrderDisputed,
            Sms,
            "pt",
            None,
            "{{ tenant.name }}: pedido {{ order.id[:8] }} contestado por {{ order.customer.name }}.",
        ),
        (
            AlertTriggered,
            Email,
            "en",
            Some("Alert: {{ rule.name }}"),
            email(
                "<h1>{{ rule.name }}</h1>\n<p>Severity {{ alert.severity }}: {{ alert.event_count }} matching event(s).</p>\n<p>{{ body }}</p>",
            ),
        ),
        (
            AlertTriggered,
            Email,
            "pt",
            Some("Alerta: {{ rule.name }}"),
            email(
                "<h1>{{ rule.name }}</h1>\n<p>Gravidade {{ alert.severity }}: {{ alert.event_count }} evento(s).</p>\n<p>{{ body }}</p>",
            ),
        ),
        (
            AlertTriggered,
            Sms,
            "en",
            None,
            "{{ tenant.name }} alert ({{ alert.severity }}): {{ rule.name }}, {{ alert.event_count }} event(s).",
        ),
        (
            AlertTriggered,
            Sms,
            "pt",
            None,
            "{{ tenant.name }} alerta ({{ alert.severity }}): {{ rule.name }}, {{ alert.event_count }} evento(s).",
        ),
        // The code comes first in every verification text, so no cut can lose it and phones
        // can offer to fill it in.
        (
            VerificationCode,
            Email,
            "en",
            Some("{{ code }} is your verification code"),
            email(
                "<p style=\"font-size:24px\"><strong>{{ code }}</strong></p>\n<p>is your {{ tenant.name }} verification code. It expires in 10 minutes. If you did not ask for it, ignore this message.</p>",
            ),
        ),
        (
            VerificationCode,
            Email,
            "pt",
            Some("{{ code }} é seu código de verificação"),
            email(
                "<p style=\"font-size:24px\"><strong>{{ code }}</strong></p>\n<p>é seu código de verificação {{ tenant.name }}. Ele expira em 10 minutos. Se você não o pediu, ignore esta mensagem.</p>",
            ),
        ),
        (
            VerificationCode,
            Sms,
            "en",
            None,
            "{{ code }} is your {{ tenant.name }} verification code. It expires in 10 minutes.",
        ),
        (
            VerificationCode,
            Sms,
            "pt",
            None,
            "{{ code }} é seu código de verificação {{ tenant.name }}. Expira em 10 minutos.",
        ),
        (
            TrustLevelChanged,
            Email,
            "en",
            Some("{{ title }}"),
            email(
                "<h1>{{ title }}</h1>\n<p>Trust level {{ trust.from }} → {{ trust.to }}.</p>\n<p>{{ body }}</p>",
            ),
        ),
        (
            TrustLevelChanged,
            Email,
            "pt",
            Some("{{ title }}"),
            email(
                "<h1>{{ title }}</h1>\n<p>Nível de confiança {{ trust.from }} → {{ trust.to }}.</p>\n<p>{{ body }}</p>",
            ),
        ),
        (
            TrustLevelChanged,
            Sms,
            "en",
            None,
            "{{ tenant.name }}: trust level {{ trust.from }} -> {{ trust.to }}. {{ body }}",
        ),
        (
            TrustLevelChanged,
            Sms,
            "pt",
            None,
            "{{ tenant.name }}: nível de confiança {{ trust.from }} -> {{ trust.to }}. {{ body }}",
        ),
        (
            TrustVerificationDecided,
            Email,
            "en",
            Some("{{ title }}"),
            email(
                "<h1>{{ title }}</h1>\n<p>Verification {{ trust.kind }}: {{ trust.status }}.</p>\n<p>{{ body }}</p>",
            ),
        ),
        (
            TrustVerificationDecided,
            Email,
            "pt",
            Some("{{ title }}"),
            email(
                "<h1>{{ title }}</h1>\n<p>Verificação {{ trust.kind }}: {{ trust.status }}.</p>\n<p>{{ body }}</p>",
            ),
        ),
        (
            TrustVerificationDecided,
            Sms,
            "en",
            None,
            "{{ tenant.name }}: verification {{ trust.kind }} {{ trust.status }}.",
        ),
        (
            TrustVerificationDecided,
            Sms,
            "pt",
            None,
            "{{ tenant.name }}: verificação {{ trust.kind }} {{ trust.status }}.",
        ),
    ]
});

/// Bounds a template's run: a tenant's template cannot spin or grow without end.
const FUEL: u64 = 50_000;
/// The most a rendered part may hold.
pub const MAX_RENDERED: usize = 100_000;
/// An SMS's longest text: two segments.
pub const SMS_MAX_CHARS: usize = 320;

/// Names ending `.html` are escaped for HTML (email bodies); the rest are text.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|name| {
        if name.ends_with(".html") {
            AutoEscape::Html
        } else {
            AutoEscape::None
        }
    });
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    env.set_fuel(Some(FUEL));
    env
}

/// Why a template cannot be used: which part, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{part}: {message}")]
pub struct TemplateError {
    /// `subject` or `body`.
    pub part: &'static str,
    pub message: String,
}

fn render_part(
    env: &Environment<'static>,
    part: &'static str,
    name: &str,
    source: &str,
    vars: &Value,
) -> Result<String, TemplateError> {
    let fail = |e: minijinja::Error| TemplateError {
        part,
        message: e.to_string(),
    };
    let template = env.template_from_named_str(name, source).map_err(fail)?;
    let out = template.render(vars).map_err(fail)?;
    if out.len() > MAX_RENDERED {
        return Err(TemplateError {
            part,
            message: format!("renders to more than {MAX_RENDERED} bytes"),
        });
    }
    Ok(out)
}

/// Renders `source` for `channel` with `vars`: email gives the subject, the HTML body (with
/// every variable escaped) and its text; SMS the text, cut to [`SMS_MAX_CHARS`].
pub fn render(
    channel: TemplateChannel,
    source: &Source,
    vars: &Value,
) -> Result<Rendered, TemplateError> {
    let env = environment();
    match channel {
        TemplateChannel::Email => {
            let subject = render_part(
                &env,
                "subject",
                "subject.txt",
                source.subject.as_deref().unwrap_or("{{ title }}"),
                vars,
            )?;
            let html = render_part(&env, "body", "body.html", &source.body, vars)?;
            Ok(Rendered {
                subject: Some(one_line(&subject)),
                text: html_to_text(&html),
                html: Some(html),
            })
        }
        TemplateChannel::Sms => {
            let text = render_part(&env, "body", "body.txt", &source.body, vars)?;
            Ok(Rendered {
                subject: None,
                html: None,
                text: sms_text(&text),
            })
        }
    }
}

/// A subject is one line.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// GSM 03.38's basic character set (one septet each; the escape itself left out).
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// GSM 03.38's extension table (two septets each: the escape and the character).
const GSM7_EXTENSION: &str = "\u{c}^{}\\[~]|€";

/// How an SMS is encoded: GSM-7 when every character is in GSM 03.38, else UCS-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmsCoding {
    /// 160 septets in one segment, 153 in each part of a longer message; the extension
    /// table's characters take two.
    Gsm7,
    /// 70 UTF-16 units in one segment, 67 in each part; a character beyond the BMP takes two.
    Ucs2,
}

impl SmsCoding {
    pub fn of(text: &str) -> Self {
        if text
            .chars()
            .all(|c| GSM7_BASIC.contains(c) || GSM7_EXTENSION.contains(c))
        {
            Self::Gsm7
        } else {
            Self::Ucs2
        }
    }

    fn width(self, c: char) -> usize {
        match self {
            Self::Gsm7 if GSM7_EXTENSION.contains(c) => 2,
            Self::Gsm7 => 1,
            Self::Ucs2 => c.len_utf16(),
        }
    }

    /// (one segment, each part of a longer message), in units of this coding.
    fn capacity(self) -> (usize, usize) {
        match self {
            Self::Gsm7 => (160, 153),
            Self::Ucs2 => (70, 67),
        }
    }

    /// (parts, units in the last part) after one more character of `width` units, in parts of
    /// a longer message: a character's units are never split between two parts.
    fn place(self, (parts, fill): (usize, usize), width: usize) -> (usize, usize) {
        if fill + width > self.capacity().1 {
            (parts + 1, width)
        } else {
            (parts, fill + width)
        }
    }
}

/// How many segments `text` takes: its units in one segment, else parts of the smaller size,
/// a character's units never split between two parts.
pub fn sms_segments(text: &str) -> usize {
    let coding = SmsCoding::of(text);
    let (single, _) = coding.capacity();
    if text.chars().map(|c| coding.width(c)).sum::<usize>() <= single {
        return 1;
    }
    text.chars()
        .fold((1, 0), |packed, c| coding.place(packed, coding.width(c)))
        .0
}

/// An SMS: whitespace collapsed, within two segments (SPEC's 320 characters at most): one
/// that does not fit is cut on a character boundary and ends in ASCII `...`, which GSM-7
/// has (a `…` would make the whole text UCS-2, 70 characters a segment).
pub fn sms_text(text: &str) -> String {
    let text = one_line(text);
    if sms_segments(&text) <= 2 && text.chars().count() <= SMS_MAX_CHARS {
        return text;
    }
    // Cut in the text's own coding: what is left is in it, or in GSM-7, which is no larger.
    let coding = SmsCoding::of(&text);
    let mut packed = (1, 0);
    let mut end = 0;
    for (i, c) in text.char_indices() {
        let with = coding.place(packed, coding.width(c));
        let dots = (0..3).fold(with, |p, _| coding.place(p, 1));
        if dots.0 > 2 {
            break;
        }
        packed = with;
        end = i + c.len_utf8();
    }
    format!("{}...", text[..end].trim_end())
}

/// The plain-text part of an email from its HTML: tags dropped, block ends as line breaks,
/// the escapes minijinja writes undone.
pub fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(start) = rest.find('<') {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('>') else {
            rest = &rest[start..];
            break;
        };
        let tag = rest[start + 1..start + end]
            .trim_start_matches('/')
            .to_ascii_lowercase();
        let name = tag
            .split(|c: char| !c.is_ascii_alphanumeric())
            .next()
            .unwrap_or("");
        if matches!(name, "br" | "p" | "div" | "h1" | "h2" | "h3" | "li" | "tr") {
            out.push('\n');
        }
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    let text = out
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#x2f;", "/")
        .replace("&amp;", "&");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Checks a template on save: it parses, names only `key`'s variables, and renders with
/// sample variables. Each fault names its part.
pub fn validate(
    key: TemplateKey,
    channel: TemplateChannel,
    source: &Source,
) -> Result<(), Vec<TemplateError>> {
    let env = environment();
    let mut errors = Vec::new();
    let mut parts: Vec<(&'static str, &str, &str)> = vec![(
        "body",
        match channel {
            TemplateChannel::Email => "body.html",
            TemplateChannel::Sms => "body.txt",
        },
        source.body.as_str(),
    )];
    if let Some(subject) = &source.subject {
        parts.push(("subject", "subject.txt", subject.as_str()));
    }
    for (part, name, text) in parts {
        match env.template_from_named_str(name, text) {
            Err(e) => errors.push(TemplateError {
                part,
                message: format!("does not parse: {e}"),
            }),
            Ok(template) => {
                let mut unknown: Vec<String> = template
                    .undeclared_variables(false)
                    .into_iter()
                    .filter(|v| !key.allows(v))
                    .collect();
                unknown.sort();
                if !unknown.is_empty() {
                    errors.push(TemplateError {
                        part,
                        message: format!(
                            "unknown variables: {} ({} has {})",
                            unknown.join(", "),
                            key.as_str(),
                            BASE_VARIABLES
                                .iter()
                                .chain(key.extra_variables())
                                .copied()
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    });
                }
            }
        }
    }
    if errors.is_empty()
        && let Err(e) = render(channel, source, &key.sample())
    {
        errors.push(e);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_renders_its_sample_in_english_and_portuguese() {
        for key in TemplateKey::ALL {
            for channel in TemplateChannel::ALL {
                for locale in ["en", "pt"] {
                    let source = builtin_exact(*key, *channel, locale)
                        .unwrap_or_else(|| panic!("{key:?} {channel:?} {locale}"));
                    validate(*key, *channel, &source).unwrap();
                }
                let pt_br = builtin(*key, *channel, &locale_chain("pt-BR"));
                assert_eq!(Some(pt_br), builtin_exact(*key, *channel, "pt"));
            }
        }
    }

    #[test]
    fn locales_fall_back_to_the_language_then_english() {
        assert_eq!(locale_chain("pt-BR"), ["pt-BR", "pt", "en"]);
        assert_eq!(locale_chain("en-GB"), ["en-GB", "en"]);
        assert_eq!(locale_chain("en"), ["en"]);
        assert_eq!(locale_chain("PT_br"), ["pt-BR", "pt", "en"]);
        assert_eq!(locale_chain("not a locale"), ["en"]);
        let chain = locale_chain("pt-PT");
        let pt = builtin(TemplateKey::OrderCreated, TemplateChannel::Sms, &chain);
        assert!(pt.body.contains("novo pedido") || pt.body.contains("new order"));
        let de = builtin(
            TemplateKey::OrderCreated,
            TemplateChannel::Sms,
            &locale_chain("de"),
        );
        assert!(de.body.contains("new order"));
    }

    #[test]
    fn variables_are_escaped_in_html_only() {
        let source = Source {
            subject: Some("{{ title }}".into()),
            body: "<p>{{ body }}</p>".into(),
        };
        let vars = json!({"title": "<b>Hi</b>", "body": "<script>x</script> & co"});
        let email = render(TemplateChannel::Email, &source, &vars).unwrap();
        assert_eq!(
            email.html.as_deref(),
            Some("<p>&lt;script&gt;x&lt;&#x2f;script&gt; &amp; co</p>")
        );
        assert_eq!(email.text, "<script>x</script> & co");
        assert_eq!(email.subject.as_deref(), Some("<b>Hi</b>"));
        let sms = render(TemplateChannel::Sms, &source, &vars).unwrap();
        assert_eq!(sms.text, "<p><script>x</script> & co</p>");
    }

    #[test]
    fn unknown_variables_and_syntax_errors_are_named() {
        let bad = Source {
            subject: Some("{{ order.id }}".into()),
            body: "{{ code }} {{ title }} {% for x in %}".into(),
        };
        let errors =
            validate(TemplateKey::AlertTriggered, TemplateChannel::Email, &bad).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0].part, "body");
        assert!(errors[0].message.contains("does not parse"));
        assert_eq!(errors[1].part, "subject");
        assert!(
            errors[1].message.contains("unknown variables: order"),
            "{}",
            errors[1].message
        );
        let unknown = Source {
            subject: None,
            body: "{{ code }} {{ secret }}".into(),
        };
        let errors =
            validate(TemplateKey::OrderCreated, TemplateChannel::Sms, &unknown).unwrap_err();
        assert!(
            errors[0].message.contains("code, secret"),
            "{}",
            errors[0].message
        );
    }

    #[test]
    fn a_verification_code_comes_first_in_every_built_in() {
        let key = TemplateKey::VerificationCode;
        let mut vars = key.sample();
        vars["tenant"]["name"] = json!("A store whose name is long ".repeat(20));
        for locale in ["en", "pt"] {
            for channel in TemplateChannel::ALL {
                let source = builtin_exact(key, *channel, locale).unwrap();
                let out = render(*channel, &source, &vars).unwrap();
                let first = |text: &str| text.split_whitespace().next().map(str::to_string);
                assert_eq!(
                    first(&out.text).as_deref(),
                    Some("123456"),
                    "{locale} {channel:?}"
                );
                if let Some(subject) = out.subject {
                    assert_eq!(first(&subject).as_deref(), Some("123456"), "{subject}");
                }
            }
        }
    }

    #[test]
    fn a_template_that_spins_runs_out_of_fuel() {
        let spin = Source {
            subject: None,
            body: "{% for a in range(1000) %}{% for b in range(1000) %}x{% endfor %}{% endfor %}"
                .into(),
        };
        assert!(render(TemplateChannel::Sms, &spin, &json!({})).is_err());
    }

    #[test]
    fn sms_are_counted_in_their_coding_and_cut_to_two_segments_with_ascii_dots() {
        assert_eq!(SmsCoding::of("Pedido às 10h: 2 × ¿Ñ? {€}"), SmsCoding::Ucs2);
        assert_eq!(
            SmsCoding::of("Pedido às 10h: ¿Ñ? {€} [ok]"),
            SmsCoding::Gsm7
        );
        assert_eq!(SmsCoding::of("Código ção"), SmsCoding::Ucs2);
        assert_eq!(sms_segments(&"a".repeat(160)), 1);
        assert_eq!(sms_segments(&"a".repeat(161)), 2);
        assert_eq!(sms_segments(&"a".repeat(306)), 2);
        assert_eq!(sms_segments(&"a".repeat(307)), 3);
        assert_eq!(sms_segments(&"€".repeat(80)), 1);
        assert_eq!(sms_segments(&"€".repeat(81)), 2);
        // An escape pair is not split: 76 pairs fill 152 septets, the 77th starts part 2.
        assert_eq!(sms_segments(&"€".repeat(153)), 3);
        assert_eq!(sms_segments(&"ç".repeat(70)), 1);
        assert_eq!(sms_segments(&"ç".repeat(134)), 2);
        assert_eq!(sms_segments(&"ç".repeat(135)), 3);
        assert_eq!(sms_segments(&"😀".repeat(35)), 1);
        assert_eq!(sms_segments(&"😀".repeat(67)), 3);

        let gsm = sms_text(&"word ".repeat(100));
        assert!(gsm.ends_with("wor..."), "{gsm}");
        assert_eq!(sms_segments(&gsm), 2);
        assert!(gsm.chars().count() <= 306);
        assert!(gsm.len() > 290, "two parts are used: {}", gsm.len());
        let extended = sms_text(&"€ ".repeat(200));
        assert_eq!(sms_segments(&extended), 2);
        assert!(extended.ends_with("€..."), "{extended}");
        let ucs2 = sms_text(&"ção ".repeat(100));
        assert_eq!(SmsCoding::of(&ucs2), SmsCoding::Ucs2);
        assert_eq!(sms_segments(&ucs2), 2);
        assert!(
            ucs2.chars().count() > 120 && ucs2.ends_with("..."),
            "{ucs2}"
        );
        let emoji = sms_text(&"😀".repeat(100));
        assert_eq!(sms_segments(&emoji), 2);
        let short = "Short and sweet";
        assert_eq!(sms_text(short), short);
    }
}
