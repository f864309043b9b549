//! Analytics: the query, the range in the tenant's time zone, and the answers.

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::commerce::text_enum;
use crate::error::{AppError, Fields};
use crate::types;

/// The longest range one request may read.
pub const MAX_RANGE_DAYS: i64 = 366;
/// Without `since`, the range starts this many local days back (today included).
pub const DEFAULT_DAYS: i64 = 30;

text_enum! {
    /// A time series bucket: a local day, an ISO week (from Monday) or a calendar month.
    Interval {
        Day => "day",
        Week => "week",
        Month => "month",
    }
}

/// The summary's query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SummaryQuery {
    /// Orders placed at or after this time (RFC 3339); default the start of the tenant's day
    /// 29 days ago (30 days with today).
    #[param(value_type = Option<DateTime<Utc>>)]
    pub since: Option<String>,
    /// Orders placed before this time (RFC 3339); default now. At most 366 days after
    /// `since`.
    #[param(value_type = Option<DateTime<Utc>>)]
    pub until: Option<String>,
}

/// The time series' query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SeriesQuery {
    /// As the summary's.
    #[param(value_type = Option<DateTime<Utc>>)]
    pub since: Option<String>,
    /// As the summary's.
    #[param(value_type = Option<DateTime<Utc>>)]
    pub until: Option<String>,
    /// `day` (default), `week` or `month`, in the tenant's time zone.
    #[param(value_type = Option<Interval>)]
    pub interval: Option<String>,
}

/// A validated range.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

fn time(f: &mut Fields, name: &str, raw: Option<&str>) -> Option<Option<DateTime<Utc>>> {
    f.check(
        name,
        raw.map(|v| {
            DateTime::parse_from_rfc3339(v.trim())
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| "must be an RFC 3339 time")
        })
        .transpose(),
    )
}

/// The instant a local date starts in `tz` (the first instant of that day when midnight is
/// skipped by a daylight-saving change).
pub fn local_start(tz: Tz, date: NaiveDate) -> DateTime<Utc> {
    let midnight = date.and_hms_opt(0, 0, 0).expect("midnight");
    (0..=2)
        .find_map(|h| {
            tz.from_local_datetime(&(midnight + Duration::hours(h)))
                .earliest()
        })
        .map_or_else(
            || Utc.from_utc_datetime(&midnight),
            |t| t.with_timezone(&Utc),
        )
}

fn range(
    f: &mut Fields,
    since: Option<&str>,
    until: Option<&str>,
    tz: Tz,
    now: DateTime<Utc>,
) -> Option<Range> {
    let since = time(f, "since", since);
    let until = time(f, "until", until);
    let (since, until) = (since?, until?);
    let until = until.unwrap_or(now);
    let since = since.unwrap_or_else(|| {
        let today = until.with_timezone(&tz).date_naive();
        local_start(tz, today - Duration::days(DEFAULT_DAYS - 1))
    });
    if since >= until {
        f.fail("until", "must be after since");
        return None;
    }
    if until - since > Duration::days(MAX_RANGE_DAYS) {
        f.fail(
            "until",
            format!("at most {MAX_RANGE_DAYS} days after since"),
        );
        return None;
    }
    Some(Range { since, until })
}

impl SummaryQuery {
    pub fn parse(&self, tz: Tz, now: DateTime<Utc>) -> Result<Range, AppError> {
        let mut f = Fields::default();
        let range = range(
            &mut f,
            self.since.as_deref(),
            self.until.as_deref(),
            tz,
            now,
        );
        f.finish(|| range)
    }
}

impl SeriesQuery {
    pub fn parse(&self, tz: Tz, now: DateTime<Utc>) -> Result<(Range, Interval), AppError> {
        let mut f = Fields::default();
        let interval = f.check(
            "interval",
            match self.interval.as_deref().map(str::trim) {
                None => Ok(Interval::Day),
                Some(raw) => Interval::ALL
                    .iter()
                    .copied()
                    .find(|i| i.as_str() == raw)
                    .ok_or("must be day, week or month"),
            },
        );
        let range = range(
            &mut f,
            self.since.as_deref(),
            self.until.as_deref(),
            tz,
            now,
        );
        f.finish(|| Some((range?, interval?)))
    }
}

/// The local start dates of the buckets that cover `range` in `tz`.
pub fn buckets(range: Range, interval: Interval, tz: Tz) -> Vec<NaiveDate> {
    let first = range.since.with_timezone(&tz).date_naive();
    let last = (range.until - Duration::microseconds(1))
        .with_timezone(&tz)
        .date_naive();
    let mut start = match interval {
        Interval::Day => first,
        Interval::Week => first - Duration::days(i64::from(first.weekday().num_days_from_monday())),
        Interval::Month => first.with_day(1).expect("day 1"),
    };
    let mut all = Vec::new();
    while start <= last {
        all.push(start);
        start = match interval {
            Interval::Day => start + Duration::days(1),
            Interval::Week => start + Duration::days(7),
            Interval::Month => start
                .checked_add_months(chrono::Months::new(1))
                .expect("a later month"),
        };
    }
    all
}

/// An amount in one currency.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Money {
    #[schema(example = "BRL")]
    pub currency: String,
    pub amount_cents: i64,
}

/// Revenue in one currency: orders that were not cancelled or disputed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Revenue {
    pub currency: String,
    pub amount_cents: i64,
    pub orders: i64,
    /// `amount_cents / orders`, rounded down.
    pub average_order_cents: i64,
}

/// Orders placed in the range, by their status now.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct StatusCounts {
    pub pending: i64,
    pub confirmed: i64,
    pub processing: i64,
    pub shipped: i64,
    pub delivered: i64,
    pub cancelled: i64,
    pub disputed: i64,
}

/// A best seller of the range.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TopProduct {
    /// Null for a product deleted since.
    #[schema(required = true)]
    pub product_id: Option<Uuid>,
    pub name: String,
    pub currency: String,
    pub quantity: i64,
    pub revenue_cents: i64,
}

/// Conversations turned into orders: threads where a customer wrote in the range, and those
/// of them with a message linked to an order in the range.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Conversion {
    pub threads: i64,
    pub converted: i64,
    /// `converted / threads`; null without threads.
    #[schema(required = true, minimum = 0, maximum = 1)]
    pub rate: Option<f64>,
}

/// `GET /api/v1/analytics/summary`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Summary {
    #[serde(serialize_with = "types::timestamp")]
    pub since: DateTime<Utc>,
    #[serde(serialize_with = "types::timestamp")]
    pub until: DateTime<Utc>,
    /// The tenant's time zone (its settings).
    pub timezone: String,
    /// Orders placed in the range, whatever their status.
    pub orders: i64,
    pub orders_by_status: StatusCounts,
    /// Per currency, largest first.
    pub revenue: Vec<Revenue>,
    /// The five products with the most revenue.
    pub top_products: Vec<TopProduct>,
    pub conversations: Conversion,
}

/// One bucket of the time series.
#[derive(Debug, Serialize, ToSchema)]
pub struct Point {
    /// The bucket's first local day (`YYYY-MM-DD` in the tenant's time zone).
    #[schema(example = "2026-03-10")]
    pub date: String,
    /// When that local day starts.
    #[serde(serialize_with = "types::timestamp")]
    pub start: DateTime<Utc>,
    pub orders: i64,
    /// Per currency (orders that were not cancelled or disputed).
    pub revenue: Vec<Money>,
}

/// `GET /api/v1/analytics/timeseries`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Timeseries {
    #[serde(serialize_with = "types::timestamp")]
    pub since: DateTime<Utc>,
    #[serde(serialize_with = "types::timestamp")]
    pub until: DateTime<Utc>,
    pub timezone: String,
    pub interval: Interval,
    /// Every bucket that overlaps the range, in order, empty ones included.
    pub points: Vec<Point>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_range_is_thirty_local_days() {
        let tz: Tz = "America/Sao_Paulo".parse().unwrap();
        let now = Utc.with_ymd_and_hms(2026, 3, 10, 2, 0, 0).unwrap();
        let range = SummaryQuery::default().parse(tz, now).unwrap();
        // 02:00 UTC is still the 9th in São Paulo (UTC-3): the range starts on Feb 8th there.
        assert_eq!(
            range.since,
            Utc.with_ymd_and_hms(2026, 2, 8, 3, 0, 0).unwrap()
        );
        assert_eq!(range.until, now);
        let days = buckets(range, Interval::Day, tz);
        assert_eq!(days.len(), 30);
        assert_eq!(days.last().unwrap().to_string(), "2026-03-09");
    }

    #[test]
    fn bad_ranges_name_their_field() {
        let now = Utc::now();
        for (since, until, interval, field) in [
            (Some("yesterday"), None, None, "since"),
            (
                Some("2026-03-10T00:00:00Z"),
                Some("2026-03-01T00:00:00Z"),
                None,
                "until",
            ),
            (
                Some("2024-01-01T00:00:00Z"),
                Some("2026-01-01T00:00:00Z"),
                None,
                "until",
            ),
            (None, None, Some("hour"), "interval"),
        ] {
            let q = SeriesQuery {
                since: since.map(String::from),
                until: until.map(String::from),
                interval: interval.map(String::from),
            };
            match q.parse(Tz::UTC, now) {
                Err(AppError::Validation(errors)) => assert_eq!(errors[0].field, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn weeks_start_on_monday_and_months_on_the_first() {
        let range = Range {
            since: Utc.with_ymd_and_hms(2026, 3, 11, 12, 0, 0).unwrap(),
            until: Utc.with_ymd_and_hms(2026, 5, 2, 0, 0, 0).unwrap(),
        };
        let weeks = buckets(range, Interval::Week, Tz::UTC);
        assert_eq!(weeks[0].to_string(), "2026-03-09");
        let months = buckets(range, Interval::Month, Tz::UTC);
        let names: Vec<String> = months.iter().map(|d| d.to_string()).collect();
        assert_eq!(names, ["2026-03-01", "2026-04-01", "2026-05-01"]);
    }
}
