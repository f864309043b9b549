//! Channel choice (SPEC §8), pure: for one recipient and one channel of a notification, what
//! its delivery starts as. The tenant's settings (or an alert rule's channels) say which
//! channels a priority uses; then, in this order: the trust gate, whether the channel is
//! configured, the recipient's address, the user's opt-outs and quiet hours. Urgent goes past
//! opt-outs and quiet hours and says so on the delivery.

use chrono::{DateTime, NaiveDateTime, TimeZone as _, Utc};
use chrono_tz::Tz;

use super::model::{Bypass, DeliveryStatus, Preferences, Priority, QuietHours};
use crate::monitoring::rules::model::NotifyChannel;

/// Which providers this deployment has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Configured {
    pub email: bool,
    pub sms: bool,
}

/// The recipient as the choice needs it.
pub struct Recipient<'a> {
    pub email: Option<&'a str>,
    pub phone: Option<&'a str>,
    pub preferences: &'a Preferences,
}

/// What a delivery starts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    pub status: DeliveryStatus,
    pub address: Option<String>,
    /// When it may go: now, or the end of the user's quiet hours.
    pub due_at: DateTime<Utc>,
    /// Why it is skipped.
    pub reason: Option<String>,
    pub bypassed: Vec<Bypass>,
}

/// The delivery of a notification of `priority` and `category` to `to` on `channel`.
/// `external_allowed` is the trust gate's answer for this channel ([`super::channel_unlocked`]).
pub fn start(
    channel: NotifyChannel,
    priority: Priority,
    category: &str,
    to: &Recipient<'_>,
    external_allowed: bool,
    configured: Configured,
    now: DateTime<Utc>,
) -> Start {
    let skip = |reason: &str| Start {
        status: DeliveryStatus::Skipped,
        address: None,
        due_at: now,
        reason: Some(reason.to_string()),
        bypassed: Vec::new(),
    };
    let urgent = priority == Priority::Urgent;
    let mut bypassed = Vec::new();
    let address = match channel {
        NotifyChannel::InApp => None,
        NotifyChannel::Email | NotifyChannel::Sms => {
            if !external_allowed {
                return skip("email and SMS notifications need trust level 1 (verified)");
            }
            let (configured, address, missing) = match channel {
                NotifyChannel::Email => (
                    configured.email,
                    to.email,
                    "the recipient has no email address",
                ),
                _ => (
                    configured.sms,
                    to.phone,
                    "the recipient has no phone number",
                ),
            };
            if !configured {
                return skip(match channel {
                    NotifyChannel::Email => "email is not configured (SMTP_HOST)",
                    _ => "SMS is not configured (TWILIO_ACCOUNT_SID)",
                });
            }
            match address {
                Some(a) => Some(a.to_string()),
                None => return skip(missing),
            }
        }
    };
    if to.preferences.opted_out(channel, category) {
        if !urgent {
            return skip("the recipient opted out of this channel");
        }
        bypassed.push(Bypass::OptOut);
    }
    let mut due_at = now;
    if channel != NotifyChannel::InApp
        && let Some(end) = quiet_until(to.preferences.quiet_hours.as_ref(), now)
    {
        if urgent {
            bypassed.push(Bypass::QuietHours);
        } else {
            due_at = end;
        }
    }
    Start {
        status: match channel {
            NotifyChannel::InApp => DeliveryStatus::Delivered,
            _ => DeliveryStatus::Queued,
        },
        address,
        due_at,
        reason: None,
        bypassed,
    }
}

/// When the user's quiet hours that contain `now` end, if they do.
pub fn quiet_until(quiet: Option<&QuietHours>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let quiet = quiet?;
    let tz: Tz = quiet.timezone.parse().ok()?;
    let start = chrono::NaiveTime::parse_from_str(&quiet.start, "%H:%M").ok()?;
    let end = chrono::NaiveTime::parse_from_str(&quiet.end, "%H:%M").ok()?;
    let local = now.with_timezone(&tz).naive_local();
    let today = local.date();
    // The window that may hold `now`: the one starting today, or the one that started
    // yesterday and crosses midnight.
    for day in [today.pred_opt()?, today] {
        let from = day.and_time(start);
        let until = if end > start {
            day.and_time(end)
        } else {
            day.succ_opt()?.and_time(end)
        };
        if from <= local && local < until {
            return Some(to_utc(tz, until));
        }
    }
    None
}

/// A local time as UTC; in a gap (spring forward) the first instant after it.
fn to_utc(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    let mut at = local;
    for _ in 0..4 {
        if let Some(t) = tz.from_local_datetime(&at).earliest() {
            return t.with_timezone(&Utc);
        }
        at += chrono::Duration::minutes(30);
    }
    Utc.from_utc_datetime(&local)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::model::OptOut;

    fn at(raw: &str) -> DateTime<Utc> {
        raw.parse().unwrap()
    }

    fn prefs(opt_outs: Vec<OptOut>, quiet: Option<(&str, &str)>) -> Preferences {
        Preferences {
            opt_outs,
            quiet_hours: quiet.map(|(s, e)| QuietHours {
                timezone: "America/Sao_Paulo".into(),
                start: s.into(),
                end: e.into(),
            }),
            locale: "pt-BR".into(),
        }
    }

    const ALL: Configured = Configured {
        email: true,
        sms: true,
    };

    #[test]
    fn quiet_hours_are_read_in_the_users_time_zone_across_midnight() {
        let p = prefs(vec![], Some(("22:00", "07:00")));
        // 23:30 in São Paulo (UTC-3) is 02:30 UTC; the quiet hours end at 07:00 local.
        assert_eq!(
            quiet_until(p.quiet_hours.as_ref(), at("2026-03-10T02:30:00Z")),
            Some(at("2026-03-10T10:00:00Z"))
        );
        // 06:59 local, still quiet; 07:00 local, not.
        assert_eq!(
            quiet_until(p.quiet_hours.as_ref(), at("2026-03-10T09:59:00Z")),
            Some(at("2026-03-10T10:00:00Z"))
        );
        assert_eq!(
            quiet_until(p.quiet_hours.as_ref(), at("2026-03-10T10:00:00Z")),
            None
        );
        assert_eq!(
            quiet_until(p.quiet_hours.as_ref(), at("2026-03-10T15:00:00Z")),
            None
        );
        let day = prefs(vec![], Some(("12:00", "13:00")));
        assert_eq!(
            quiet_until(day.quiet_hours.as_ref(), at("2026-03-10T15:30:00Z")),
            Some(at("2026-03-10T16:00:00Z"))
        );
    }

    #[test]
    fn urgent_goes_past_opt_outs_and_quiet_hours_and_says_so() {
        let p = prefs(
            vec![OptOut {
                channel: NotifyChannel::Email,
                category: None,
            }],
            Some(("22:00", "07:00")),
        );
        let to = Recipient {
            email: Some("a@b.example"),
            phone: None,
            preferences: &p,
        };
        let night = at("2026-03-10T02:30:00Z");
        let high = start(
            NotifyChannel::Email,
            Priority::High,
            "orders",
            &to,
            true,
            ALL,
            night,
        );
        assert_eq!(high.status, DeliveryStatus::Skipped);
        let urgent = start(
            NotifyChannel::Email,
            Priority::Urgent,
            "orders",
            &to,
            true,
            ALL,
            night,
        );
        assert_eq!(urgent.status, DeliveryStatus::Queued);
        assert_eq!(urgent.due_at, night);
        assert_eq!(urgent.bypassed, [Bypass::OptOut, Bypass::QuietHours]);
        let sms = start(
            NotifyChannel::Sms,
            Priority::Urgent,
            "orders",
            &to,
            true,
            ALL,
            night,
        );
        assert_eq!(
            sms.reason.as_deref(),
            Some("the recipient has no phone number")
        );
    }

    #[test]
    fn quiet_hours_delay_and_categories_scope_opt_outs() {
        let p = prefs(
            vec![OptOut {
                channel: NotifyChannel::Sms,
                category: Some("alerts".into()),
            }],
            Some(("22:00", "07:00")),
        );
        let to = Recipient {
            email: Some("a@b.example"),
            phone: Some("+5511912345678"),
            preferences: &p,
        };
        let night = at("2026-03-10T02:30:00Z");
        let email = start(
            NotifyChannel::Email,
            Priority::High,
            "orders",
            &to,
            true,
            ALL,
            night,
        );
        assert_eq!(email.status, DeliveryStatus::Queued);
        assert_eq!(email.due_at, at("2026-03-10T10:00:00Z"));
        let in_app = start(
            NotifyChannel::InApp,
            Priority::Low,
            "alerts",
            &to,
            true,
            ALL,
            night,
        );
        assert_eq!(
            (in_app.status, in_app.due_at),
            (DeliveryStatus::Delivered, night)
        );
        let sms = start(
            NotifyChannel::Sms,
            Priority::High,
            "alerts",
            &to,
            true,
            ALL,
            night,
        );
        assert_eq!(sms.status, DeliveryStatus::Skipped);
        let orders = start(
            NotifyChannel::Sms,
            Priority::High,
            "orders",
            &to,
            true,
            ALL,
            night,
        );
        assert_eq!(orders.status, DeliveryStatus::Queued);
    }

    #[test]
    fn trust_and_configuration_gate_email_and_sms() {
        let p = Preferences::default();
        let to = Recipient {
            email: Some("a@b.example"),
            phone: Some("+5511912345678"),
            preferences: &p,
        };
        let now = at("2026-03-10T12:00:00Z");
        let low_trust = start(
            NotifyChannel::Email,
            Priority::Urgent,
            "x",
            &to,
            false,
            ALL,
            now,
        );
        assert_eq!(low_trust.status, DeliveryStatus::Skipped);
        assert!(low_trust.reason.unwrap().contains("trust level 1"));
        let none = Configured {
            email: false,
            sms: false,
        };
        let unconfigured = start(
            NotifyChannel::Sms,
            Priority::Urgent,
            "x",
            &to,
            true,
            none,
            now,
        );
        assert!(unconfigured.reason.unwrap().contains("TWILIO_ACCOUNT_SID"));
        let in_app = start(
            NotifyChannel::InApp,
            Priority::Low,
            "x",
            &to,
            false,
            none,
            now,
        );
        assert_eq!(in_app.status, DeliveryStatus::Delivered);
    }
}
