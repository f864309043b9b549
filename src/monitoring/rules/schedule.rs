//! When a rule is active: weekly windows in an IANA time zone; a window whose `end` is before
//! its `start` crosses midnight and belongs to the day it starts on.

use chrono::{DateTime, Datelike, NaiveTime, Utc, Weekday};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::Fields;
use crate::types;

pub const MAX_WINDOWS: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Day {
    fn weekday(self) -> Weekday {
        match self {
            Self::Mon => Weekday::Mon,
            Self::Tue => Weekday::Tue,
            Self::Wed => Weekday::Wed,
            Self::Thu => Weekday::Thu,
            Self::Fri => Weekday::Fri,
            Self::Sat => Weekday::Sat,
            Self::Sun => Weekday::Sun,
        }
    }
}

/// A rule's schedule as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleBody {
    #[schema(schema_with = types::schema::time_zone)]
    pub timezone: String,
    /// 1-20 windows; the rule is active inside any of them.
    #[schema(min_items = 1, max_items = 20)]
    pub windows: Vec<WindowBody>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowBody {
    /// The days the window starts on, each at most once.
    #[schema(min_items = 1, max_items = 7)]
    pub days: Vec<Day>,
    #[schema(schema_with = types::schema::time_of_day)]
    pub start: String,
    /// Not equal to `start`; before it, the window ends the next day.
    #[schema(schema_with = types::schema::time_of_day)]
    pub end: String,
}

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    tz: chrono_tz::Tz,
    windows: Vec<Window>,
}

#[derive(Debug, Clone)]
struct Window {
    /// Bit `n` set: starts on the day `n` days after Monday.
    days: u8,
    start: NaiveTime,
    end: NaiveTime,
}

fn time_of_day(raw: &str) -> Result<NaiveTime, &'static str> {
    if raw.len() != 5 {
        return Err("must be a time HH:MM");
    }
    NaiveTime::parse_from_str(raw, "%H:%M").map_err(|_| "must be a time HH:MM")
}

impl Schedule {
    pub fn parse(body: &ScheduleBody, path: &str, f: &mut Fields) -> Option<Self> {
        let tz = f.check(
            format!("{path}.timezone"),
            body.timezone
                .parse::<chrono_tz::Tz>()
                .map_err(|_| "must be an IANA time zone such as America/Sao_Paulo".to_string()),
        );
        if body.windows.is_empty() || body.windows.len() > MAX_WINDOWS {
            f.fail(
                format!("{path}.windows"),
                format!("must list 1-{MAX_WINDOWS} windows"),
            );
            return None;
        }
        let mut windows = Vec::new();
        for (i, w) in body.windows.iter().enumerate() {
            let at = format!("{path}.windows[{i}]");
            let start = f.check(format!("{at}.start"), time_of_day(&w.start));
            let end = f.check(format!("{at}.end"), time_of_day(&w.end));
            let mut days = 0u8;
            if w.days.is_empty() {
                f.fail(format!("{at}.days"), "must list at least one day");
            }
            for (j, day) in w.days.iter().enumerate() {
                let bit = 1 << day.weekday().num_days_from_monday();
                if days & bit != 0 {
                    f.fail(format!("{at}.days[{j}]"), "is listed twice");
                }
                days |= bit;
            }
            if let (Some(start), Some(end)) = (start, end) {
                if start == end {
                    f.fail(format!("{at}.end"), "must differ from start");
                }
                windows.push(Window { days, start, end });
            }
        }
        Some(Self { tz: tz?, windows })
    }

    /// Whether the rule is active at `at`.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        let local = at.with_timezone(&self.tz);
        let today = 1u8 << local.weekday().num_days_from_monday();
        let yesterday = 1u8 << local.weekday().pred().num_days_from_monday();
        let time = local.time();
        self.windows.iter().any(|w| {
            if w.start < w.end {
                w.days & today != 0 && w.start <= time && time < w.end
            } else {
                (w.days & today != 0 && time >= w.start)
                    || (w.days & yesterday != 0 && time < w.end)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(tz: &str, days: Vec<Day>, start: &str, end: &str) -> Schedule {
        let body = ScheduleBody {
            timezone: tz.into(),
            windows: vec![WindowBody {
                days,
                start: start.into(),
                end: end.into(),
            }],
        };
        let mut f = Fields::default();
        let s = Schedule::parse(&body, "schedule", &mut f);
        f.finish(|| s).unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn windows_are_local_and_may_cross_midnight() {
        // 2026-01-05 is a Monday; São Paulo is UTC-3.
        let office = schedule("America/Sao_Paulo", vec![Day::Mon], "09:00", "18:00");
        assert!(office.contains(at("2026-01-05T12:00:00Z")));
        assert!(!office.contains(at("2026-01-05T11:59:00Z")));
        assert!(!office.contains(at("2026-01-06T12:00:00Z")));
        let night = schedule("UTC", vec![Day::Mon], "22:00", "02:00");
        assert!(night.contains(at("2026-01-05T23:00:00Z")));
        assert!(night.contains(at("2026-01-06T01:59:00Z")));
        assert!(!night.contains(at("2026-01-06T02:00:00Z")));
        assert!(!night.contains(at("2026-01-05T01:00:00Z")));
    }

    #[test]
    fn faults_are_named() {
        let body = ScheduleBody {
            timezone: "Mars/Base".into(),
            windows: vec![WindowBody {
                days: vec![Day::Mon, Day::Mon],
                start: "25:00".into(),
                end: "10:00".into(),
            }],
        };
        let mut f = Fields::default();
        let s = Schedule::parse(&body, "schedule", &mut f);
        let Err(crate::error::AppError::Validation(errors)) = f.finish(|| s) else {
            panic!("accepted")
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "schedule.timezone",
                "schedule.windows[0].start",
                "schedule.windows[0].days[1]"
            ]
        );
    }
}
