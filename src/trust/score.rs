//! The trust score (SPEC §6): nine factors over rolling windows, each worth up to its weight
//! (the weights add up to 100), and the requirements of each level. Pure: the figures come
//! from `store::figures`, so every rule here is tested without a database. docs/TRUST.md
//! is the prose of this file.

use serde::Serialize;
use utoipa::ToSchema;

use super::model::VerificationKind;

/// A factor's definition.
#[derive(Debug, Clone, Copy)]
pub struct FactorSpec {
    pub name: &'static str,
    pub weight: f64,
    /// The rolling window its samples come from (`None`: the account's whole life).
    pub window_days: Option<i64>,
    /// Below this many samples the factor counts its neutral points (half its weight).
    pub minimum_samples: i64,
}

pub const FULFILMENT: FactorSpec = spec("fulfilment_rate", 20.0, Some(90), 5);
pub const CANCELLATION: FactorSpec = spec("cancellation_rate", 10.0, Some(90), 10);
pub const DISPUTE: FactorSpec = spec("dispute_rate", 15.0, Some(90), 10);
pub const RATING: FactorSpec = spec("average_rating", 15.0, Some(180), 5);
pub const RESPONSE: FactorSpec = spec("first_response_time", 10.0, Some(30), 5);
pub const VOLUME: FactorSpec = spec("order_volume", 10.0, Some(90), 0);
pub const AGE: FactorSpec = spec("account_age", 10.0, None, 0);
pub const PAYMENT: FactorSpec = spec("payment_history", 5.0, None, 0);
pub const COMPLIANCE: FactorSpec = spec("compliance_flags", 5.0, Some(180), 0);

/// Every factor, in the trust document's order.
pub const FACTORS: [FactorSpec; 9] = [
    FULFILMENT,
    CANCELLATION,
    DISPUTE,
    RATING,
    RESPONSE,
    VOLUME,
    AGE,
    PAYMENT,
    COMPLIANCE,
];

const fn spec(name: &'static str, weight: f64, window: Option<i64>, minimum: i64) -> FactorSpec {
    FactorSpec {
        name,
        weight,
        window_days: window,
        minimum_samples: minimum,
    }
}

/// Orders younger than this are left out of the fulfilment rate: they had no time to ship.
pub const FULFILMENT_GRACE_DAYS: i64 = 3;
/// A first reply within this many seconds earns all the response factor's points.
const RESPONSE_FULL: f64 = 300.0;
/// A first reply after a day (or none within a day) earns none.
pub const RESPONSE_NONE: f64 = 86_400.0;

/// What the factors are computed from: counts over each factor's window, as of one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    pub account_age_days: i64,
    /// Orders placed 3 to 90 days ago, and how many of them shipped (shipped, delivered or
    /// disputed since).
    pub fulfilment_orders: i64,
    pub fulfilled: i64,
    /// Orders placed in the last 90 days, and how many of them were cancelled.
    pub orders: i64,
    pub cancelled: i64,
    /// Of those, the ones that shipped, and how many of these were disputed.
    pub shipped: i64,
    pub disputed: i64,
    /// Orders placed in the last 90 days that are delivered (and not disputed).
    pub delivered: i64,
    /// Ratings given in the last 180 days and the sum of their stars.
    pub ratings: i64,
    pub rating_stars: i64,
    /// Threads whose customer first wrote in the last 30 days (answered, or waiting more than a
    /// day), and the median seconds to the first merchant or bot reply.
    pub response_threads: i64,
    pub median_response_seconds: Option<f64>,
    /// Delivered, undisputed orders over the account's life.
    pub settled: i64,
    /// Rejected document submissions in the last 180 days, plus one for an open risk flag
    /// of high severity or more.
    pub compliance_flags: i64,
}

/// One factor of the trust document.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Factor {
    /// `fulfilment_rate`, `cancellation_rate`, `dispute_rate`, `average_rating`,
    /// `first_response_time`, `order_volume`, `account_age`, `payment_history`,
    /// `compliance_flags`.
    pub name: &'static str,
    /// A rate 0-1, stars 1-5, seconds, a count or days (see docs/TRUST.md); null without
    /// samples.
    #[schema(required = true)]
    pub value: Option<f64>,
    pub samples: i64,
    pub minimum_samples: i64,
    /// The rolling window in days; null for the account's whole life.
    #[schema(required = true)]
    pub window_days: Option<i64>,
    /// The most points the factor can give.
    pub weight: f64,
    /// The points it gives now: its neutral half below the minimum samples.
    pub points: f64,
}

fn ratio(part: i64, whole: i64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

fn clamp01(x: f64) -> f64 {
    x.clamp(0.0, 1.0)
}

/// How much of its weight a factor earns for `value`.
fn share(spec: &FactorSpec, value: f64) -> f64 {
    match spec.name {
        "fulfilment_rate" => clamp01((value - 0.5) / 0.45),
        "cancellation_rate" => clamp01(1.0 - value / 0.2),
        "dispute_rate" => clamp01(1.0 - value / 0.1),
        "average_rating" => clamp01((value - 2.0) / 2.5),
        "first_response_time" => clamp01(
            1.0 - (value.max(RESPONSE_FULL) / RESPONSE_FULL).ln()
                / (RESPONSE_NONE / RESPONSE_FULL).ln(),
        ),
        "order_volume" => clamp01(value / 50.0),
        "account_age" => clamp01(value / 180.0),
        "payment_history" => clamp01(value / 100.0),
        "compliance_flags" => clamp01(1.0 - value / 2.0),
        _ => 0.0,
    }
}

fn factor(spec: FactorSpec, value: Option<f64>, samples: i64) -> Factor {
    let points = match value {
        Some(v) if samples >= spec.minimum_samples => spec.weight * share(&spec, v),
        _ => spec.weight / 2.0,
    };
    Factor {
        name: spec.name,
        value: value.map(|v| (v * 1000.0).round() / 1000.0),
        samples,
        minimum_samples: spec.minimum_samples,
        window_days: spec.window_days,
        weight: spec.weight,
        points: (points * 10.0).round() / 10.0,
    }
}

/// Every factor from `f`.
pub fn factors(f: &Figures) -> Vec<Factor> {
    vec![
        factor(
            FULFILMENT,
            ratio(f.fulfilled, f.fulfilment_orders),
            f.fulfilment_orders,
        ),
        factor(CANCELLATION, ratio(f.cancelled, f.orders), f.orders),
        factor(DISPUTE, ratio(f.disputed, f.shipped), f.shipped),
        factor(RATING, ratio(f.rating_stars, f.ratings), f.ratings),
        factor(RESPONSE, f.median_response_seconds, f.response_threads),
        factor(VOLUME, Some(f.orders as f64), f.orders),
        factor(
            AGE,
            Some(f.account_age_days as f64),
            f.account_age_days.max(0),
        ),
        factor(PAYMENT, Some(f.settled as f64), f.settled),
        factor(
            COMPLIANCE,
            Some(f.compliance_flags as f64),
            f.compliance_flags,
        ),
    ]
}

/// The score: the factors' points, rounded, 0-100.
pub fn score(factors: &[Factor]) -> i16 {
    factors
        .iter()
        .map(|f| f.points)
        .sum::<f64>()
        .round()
        .clamp(0.0, 100.0) as i16
}

/// What the level requirements are checked against.
#[derive(Debug, Clone, Default)]
pub struct Standing {
    /// The kinds whose verification is `verified` (business information and store setup as
    /// derived from the seller profile).
    pub verified: Vec<VerificationKind>,
    pub score: i16,
    pub account_age_days: i64,
    pub delivered_orders: i64,
    /// A platform review (risk flag or score drop) is open.
    pub review_open: bool,
}

/// A requirement's figure: a yes/no or a number.
#[derive(Debug, Clone, Copy, Serialize, ToSchema, PartialEq)]
#[serde(untagged)]
pub enum Figure {
    Flag(bool),
    Count(i64),
}

/// One requirement of a level, met or not.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq)]
pub struct Requirement {
    pub name: &'static str,
    pub met: bool,
    pub current: Figure,
    pub required: Figure,
}

fn verified(standing: &Standing, name: &'static str, kind: VerificationKind) -> Requirement {
    let done = standing.verified.contains(&kind);
    Requirement {
        name,
        met: done,
        current: Figure::Flag(done),
        required: Figure::Flag(true),
    }
}

fn at_least(name: &'static str, current: i64, required: i64) -> Requirement {
    Requirement {
        name,
        met: current >= required,
        current: Figure::Count(current),
        required: Figure::Count(required),
    }
}

/// The requirements added by `level` itself (docs/TRUST.md, "Levels").
fn own_requirements(level: i16, s: &Standing) -> Vec<Requirement> {
    use VerificationKind as K;
    match level {
        1 => vec![
            verified(s, "email_verified", K::Email),
            verified(s, "phone_verified", K::Phone),
            verified(s, "business_info", K::BusinessInfo),
            verified(s, "store_setup", K::StoreSetup),
        ],
        2 => vec![
            verified(s, "registration_verified", K::Registration),
            verified(s, "tax_id_verified", K::TaxId),
            at_least("account_age_days", s.account_age_days, 30),
            at_least("delivered_orders", s.delivered_orders, 10),
            at_least("score", i64::from(s.score), 60),
        ],
        3 => vec![
            verified(s, "address_verified", K::Address),
            verified(s, "bank_account_verified", K::BankAccount),
            at_least("account_age_days", s.account_age_days, 60),
            at_least("delivered_orders", s.delivered_orders, 25),
            at_least("score", i64::from(s.score), 75),
            Requirement {
                name: "no_open_review",
                met: !s.review_open,
                current: Figure::Flag(!s.review_open),
                required: Figure::Flag(true),
            },
        ],
        _ => Vec::new(),
    }
}

/// Everything `level` needs: its own requirements and those of the levels below, a
/// requirement named again by a higher level taking that level's figure.
pub fn requirements(level: i16, standing: &Standing) -> Vec<Requirement> {
    let mut all: Vec<Requirement> = Vec::new();
    for l in 1..=level {
        for r in own_requirements(l, standing) {
            match all.iter_mut().find(|have| have.name == r.name) {
                Some(have) => *have = r,
                None => all.push(r),
            }
        }
    }
    all
}

/// The names of `level`'s requirements that are not met.
pub fn unmet(level: i16, standing: &Standing) -> Vec<&'static str> {
    requirements(level, standing)
        .into_iter()
        .filter(|r| !r.met)
        .map(|r| r.name)
        .collect()
}

/// The highest level whose requirements are all met.
pub fn qualified_level(standing: &Standing) -> i16 {
    (1..=super::level::PREMIUM)
        .take_while(|&l| requirements(l, standing).iter().all(|r| r.met))
        .last()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(factors: &[Factor], name: &str) -> f64 {
        factors.iter().find(|f| f.name == name).unwrap().points
    }

    #[test]
    fn the_weights_add_up_to_a_hundred() {
        assert_eq!(FACTORS.iter().map(|f| f.weight).sum::<f64>(), 100.0);
    }

    #[test]
    fn below_the_minimum_samples_a_factor_is_neutral() {
        // One bad order of a small seller: cancelled, disputed, rated one star.
        let small = Figures {
            orders: 1,
            cancelled: 1,
            shipped: 1,
            disputed: 1,
            ratings: 1,
            rating_stars: 1,
            ..Default::default()
        };
        let f = factors(&small);
        for name in ["cancellation_rate", "dispute_rate", "average_rating"] {
            assert_eq!(
                points(&f, name),
                points(&factors(&Figures::default()), name)
            );
        }
        assert_eq!(points(&f, "cancellation_rate"), 5.0);
        let big = Figures {
            orders: 10,
            cancelled: 10,
            ..Default::default()
        };
        assert_eq!(points(&factors(&big), "cancellation_rate"), 0.0);
    }

    #[test]
    fn a_good_seller_scores_high_and_a_new_one_in_the_middle() {
        let good = Figures {
            account_age_days: 200,
            fulfilment_orders: 100,
            fulfilled: 99,
            orders: 100,
            cancelled: 1,
            shipped: 99,
            disputed: 0,
            delivered: 95,
            ratings: 50,
            rating_stars: 240,
            response_threads: 40,
            median_response_seconds: Some(120.0),
            settled: 400,
            compliance_flags: 0,
        };
        let s = score(&factors(&good));
        assert!(s >= 95, "{s}");
        let new = score(&factors(&Figures::default()));
        assert!((35..=50).contains(&new), "{new}");
    }

    #[test]
    fn response_points_fall_with_the_log_of_the_wait() {
        let at = |seconds: f64| {
            points(
                &factors(&Figures {
                    response_threads: 10,
                    median_response_seconds: Some(seconds),
                    ..Default::default()
                }),
                "first_response_time",
            )
        };
        assert_eq!(at(60.0), 10.0);
        assert_eq!(at(86_400.0), 0.0);
        assert!(at(3_600.0) > 5.0 && at(3_600.0) < 6.0, "{}", at(3_600.0));
    }

    #[test]
    fn levels_need_everything_below_them() {
        use VerificationKind as K;
        let mut s = Standing {
            verified: vec![K::Email, K::Phone, K::BusinessInfo],
            score: 90,
            account_age_days: 400,
            delivered_orders: 100,
            review_open: false,
        };
        assert_eq!(qualified_level(&s), 0);
        s.verified.push(K::StoreSetup);
        assert_eq!(qualified_level(&s), 1);
        s.verified
            .extend([K::Registration, K::TaxId, K::Address, K::BankAccount]);
        assert_eq!(qualified_level(&s), 3);
        s.review_open = true;
        assert_eq!(qualified_level(&s), 2);
        s.score = 59;
        assert_eq!(qualified_level(&s), 1);
        // The cumulative list keeps the higher level's figure for a shared name.
        let three = requirements(3, &s);
        let age = three.iter().find(|r| r.name == "account_age_days").unwrap();
        assert_eq!(age.required, Figure::Count(60));
        assert_eq!(three.len(), 4 + 5 + 3);
    }
}
