//! The chat bot's configuration: its defaults, the request body and its validation.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_postgres::Row;
use utoipa::ToSchema;

use crate::commerce::{json_column, text_enum};
use crate::error::{AppError, Fields, sent};
use crate::types::{self, LanguageTag, TimeOfDay, TimeZone};

text_enum! {
    /// The voice the bot answers in.
    StyleTone {
        Friendly => "friendly",
        Professional => "professional",
        Casual => "casual",
        Formal => "formal",
        Playful => "playful",
    }
}

/// When the bot answers on its own: every day from `start` to `end` (local time in
/// `timezone`); an `end` before `start` spans midnight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActiveHours {
    #[schema(schema_with = types::schema::time_zone)]
    pub timezone: String,
    #[schema(schema_with = types::schema::time_of_day)]
    pub start: String,
    /// Not equal to `start`.
    #[schema(schema_with = types::schema::time_of_day)]
    pub end: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AiConfig {
    pub bot_name: String,
    pub style_tone: StyleTone,
    pub auto_reply_enabled: bool,
    /// `null`: at any hour.
    #[schema(required = true)]
    pub active_hours: Option<ActiveHours>,
    pub languages: Vec<String>,
    #[schema(required = true)]
    pub system_prompt: Option<String>,
    /// `null` while the tenant runs on the defaults (never saved).
    #[serde(serialize_with = "crate::types::timestamp_opt")]
    #[schema(required = true)]
    pub updated_at: Option<DateTime<Utc>>,
}

impl AiConfig {
    pub const COLUMNS: &'static str = "bot_name, style_tone, auto_reply_enabled, active_hours, languages, system_prompt, updated_at";

    /// What a tenant that never saved a configuration gets.
    pub fn default_config() -> Self {
        Self {
            bot_name: "Assistant".into(),
            style_tone: StyleTone::Friendly,
            auto_reply_enabled: false,
            active_hours: None,
            languages: vec!["en".into()],
            system_prompt: None,
            updated_at: None,
        }
    }

    pub fn from_row(row: &Row) -> Result<Self, crate::db::DbError> {
        Ok(Self {
            bot_name: row.get("bot_name"),
            style_tone: row.get("style_tone"),
            auto_reply_enabled: row.get("auto_reply_enabled"),
            active_hours: json_column(row, "active_hours")?,
            languages: row.get("languages"),
            system_prompt: row.get("system_prompt"),
            updated_at: Some(row.get("updated_at")),
        })
    }
}

/// The whole configuration: optional fields left out are cleared.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "bot_name": "Ana",
    "style_tone": "friendly",
    "auto_reply_enabled": true,
    "active_hours": {"timezone": "America/Sao_Paulo", "start": "08:00", "end": "22:00"},
    "languages": ["pt-BR", "en"],
    "system_prompt": "You sell hand-printed tees. Never promise delivery dates."
}))]
pub struct PutAiConfig {
    #[schema(schema_with = types::schema::name::<100>)]
    pub bot_name: String,
    pub style_tone: StyleTone,
    pub auto_reply_enabled: bool,
    pub active_hours: Option<ActiveHours>,
    #[schema(schema_with = types::schema::language_tags::<MAX_LANGUAGES>)]
    pub languages: Vec<String>,
    #[schema(max_length = 4000, pattern = r"^[^\x00]*$")]
    pub system_prompt: Option<String>,
}

pub struct AiConfigInput {
    pub bot_name: String,
    pub style_tone: StyleTone,
    pub auto_reply_enabled: bool,
    pub active_hours: Option<ActiveHours>,
    pub languages: Vec<String>,
    pub system_prompt: Option<String>,
}

const MAX_LANGUAGES: usize = 10;

fn active_hours(hours: ActiveHours, f: &mut Fields) -> Option<ActiveHours> {
    let timezone = f.check("active_hours.timezone", TimeZone::parse(&hours.timezone));
    let start = f.check("active_hours.start", TimeOfDay::parse(&hours.start));
    let end = f.check("active_hours.end", TimeOfDay::parse(&hours.end));
    let (timezone, start, end) = (timezone?, start?, end?);
    if start == end {
        f.fail("active_hours.end", "must differ from start");
        return None;
    }
    Some(ActiveHours {
        timezone: timezone.name().to_string(),
        start: start.to_hh_mm(),
        end: end.to_hh_mm(),
    })
}

impl PutAiConfig {
    pub fn validate(self) -> Result<AiConfigInput, AppError> {
        let mut f = Fields::default();
        let bot_name = f.check("bot_name", types::name(&self.bot_name, 100));
        let hours = self.active_hours.map(|h| active_hours(h, &mut f));
        if self.languages.is_empty() || self.languages.len() > MAX_LANGUAGES {
            f.fail(
                "languages",
                format!("must list 1-{MAX_LANGUAGES} languages"),
            );
        }
        let mut languages: Vec<String> = Vec::new();
        for (i, raw) in self.languages.iter().enumerate() {
            let field = format!("languages[{i}]");
            if let Some(tag) = f.check(field.clone(), LanguageTag::parse(raw)) {
                if languages
                    .iter()
                    .any(|l| l.eq_ignore_ascii_case(tag.as_str()))
                {
                    f.fail(field, "is listed twice");
                } else {
                    languages.push(tag.as_str().to_string());
                }
            }
        }
        let system_prompt = f.check(
            "system_prompt",
            types::text(self.system_prompt.as_deref(), 4000),
        );
        f.finish(|| {
            Some(AiConfigInput {
                bot_name: bot_name?,
                style_tone: self.style_tone,
                auto_reply_enabled: self.auto_reply_enabled,
                active_hours: sent(hours)?,
                languages,
                system_prompt: system_prompt?,
            })
        })
    }
}
