//! The pure part of firing: a group's state and what one more matching event does to it. The
//! engine keeps the state in PostgreSQL (locked per rule and group); a backtest keeps it in a
//! map. Time is the events' own `created_at`, so both give the same answer.

use std::collections::VecDeque;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Sample activity ids kept on an alert.
pub const MAX_SAMPLES: usize = 10;

/// An alert to raise.
#[derive(Debug, Clone, PartialEq)]
pub struct Firing {
    pub event_count: i64,
    pub first_event_at: DateTime<Utc>,
    pub last_event_at: DateTime<Utc>,
    pub samples: Vec<Uuid>,
}

/// How a rule decides to fire.
#[derive(Debug, Clone)]
pub enum Evaluator {
    /// At least `count` matching events within the last `window`.
    Threshold {
        count: usize,
        window: Duration,
        cooldown: Duration,
    },
    /// The current bucket's count far above the tenant's own rolling mean (SPEC's
    /// `request_volume_anomaly`; docs/MONITORING.md gives the formula).
    Baseline {
        bucket: Duration,
        min_count: i64,
        cooldown: Duration,
    },
}

/// Weight of the newest bucket in the exponentially weighted mean.
pub const BASELINE_ALPHA: f64 = 0.1;
/// How many times the mean the current bucket must reach.
pub const BASELINE_FACTOR: f64 = 3.0;
/// Closed buckets needed before the baseline can fire (an hour of five-minute buckets).
pub const BASELINE_MIN_BUCKETS: i64 = 12;

/// One group's state, stored as JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Threshold: the newest matching events (at most `count`), oldest first. Baseline: the
    /// current bucket's samples.
    #[serde(default)]
    events: VecDeque<(DateTime<Utc>, Uuid)>,
    #[serde(default)]
    cooled_until: Option<DateTime<Utc>>,
    /// Baseline: the current bucket's index (seconds since the epoch / bucket length).
    #[serde(default)]
    bucket: i64,
    #[serde(default)]
    bucket_count: i64,
    #[serde(default)]
    mean: f64,
    /// Baseline: buckets closed so far.
    #[serde(default)]
    seen: i64,
}

impl State {
    /// Applies one matching event; `Some` when it makes the rule fire.
    pub fn push(&mut self, evaluator: &Evaluator, at: DateTime<Utc>, id: Uuid) -> Option<Firing> {
        match evaluator {
            Evaluator::Threshold {
                count,
                window,
                cooldown,
            } => self.threshold(*count, *window, *cooldown, at, id),
            Evaluator::Baseline {
                bucket,
                min_count,
                cooldown,
            } => self.baseline(*bucket, *min_count, *cooldown, at, id),
        }
    }

    fn cooling(&self, at: DateTime<Utc>) -> bool {
        self.cooled_until.is_some_and(|until| at < until)
    }

    fn threshold(
        &mut self,
        count: usize,
        window: Duration,
        cooldown: Duration,
        at: DateTime<Utc>,
        id: Uuid,
    ) -> Option<Firing> {
        // Events from several instances may arrive slightly out of order: keep them sorted.
        let position = self.events.partition_point(|(t, _)| *t <= at);
        self.events.insert(position, (at, id));
        let newest = self.events.back().map_or(at, |(t, _)| *t);
        while self
            .events
            .front()
            .is_some_and(|(t, _)| *t <= newest - window)
        {
            self.events.pop_front();
        }
        while self.events.len() > count {
            self.events.pop_front();
        }
        if self.events.len() < count || self.cooling(at) || !self.events.iter().any(|e| e.1 == id) {
            return None;
        }
        let firing = Firing {
            event_count: self.events.len() as i64,
            first_event_at: self.events.front().map_or(at, |e| e.0),
            last_event_at: newest,
            samples: self
                .events
                .iter()
                .rev()
                .take(MAX_SAMPLES)
                .map(|e| e.1)
                .collect(),
        };
        self.cooled_until = Some(at + cooldown);
        self.events.clear();
        Some(firing)
    }

    fn baseline(
        &mut self,
        bucket: Duration,
        min_count: i64,
        cooldown: Duration,
        at: DateTime<Utc>,
        id: Uuid,
    ) -> Option<Firing> {
        let length = bucket.num_seconds().max(1);
        let index = at.timestamp().div_euclid(length);
        if self.seen == 0 && self.bucket_count == 0 && self.bucket == 0 {
            self.bucket = index;
        }
        if index > self.bucket {
            // Close the current bucket, then every empty one skipped since.
            let closed = self.bucket_count as f64;
            self.mean = if self.seen == 0 {
                closed
            } else {
                BASELINE_ALPHA * closed + (1.0 - BASELINE_ALPHA) * self.mean
            };
            let empty = (index - self.bucket - 1).min(10_000);
            self.mean *= (1.0 - BASELINE_ALPHA).powi(empty as i32);
            self.seen += 1 + empty;
            self.bucket = index;
            self.bucket_count = 0;
            self.events.clear();
        }
        // A late event from a closed bucket counts in the current one.
        self.bucket_count += 1;
        self.events.push_back((at, id));
        if self.events.len() > MAX_SAMPLES {
            self.events.pop_front();
        }
        let needed = (min_count as f64).max((BASELINE_FACTOR * self.mean).ceil());
        if self.seen < BASELINE_MIN_BUCKETS
            || (self.bucket_count as f64) < needed
            || self.cooling(at)
        {
            return None;
        }
        self.cooled_until = Some(at + cooldown);
        let start = DateTime::from_timestamp(self.bucket * length, 0).unwrap_or(at);
        Some(Firing {
            event_count: self.bucket_count,
            first_event_at: start,
            last_event_at: at,
            samples: self.events.iter().rev().map(|e| e.1).collect(),
        })
    }
}

/// Replays `events` (time, id, group key), in order, through fresh states: the alerts a
/// rule would have raised. The backtest's core.
pub fn replay<'a>(
    evaluator: &Evaluator,
    events: impl IntoIterator<Item = (DateTime<Utc>, Uuid, &'a str)>,
) -> Vec<(String, Firing)> {
    let mut states: std::collections::HashMap<&str, State> = std::collections::HashMap::new();
    let mut out = Vec::new();
    for (at, id, group) in events {
        if let Some(firing) = states.entry(group).or_default().push(evaluator, at, id) {
            out.push((group.to_string(), firing));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn threshold(count: usize, window: i64, cooldown: i64) -> Evaluator {
        Evaluator::Threshold {
            count,
            window: Duration::seconds(window),
            cooldown: Duration::seconds(cooldown),
        }
    }

    #[test]
    fn a_threshold_fires_once_per_window_full_and_cooldown() {
        let rule = threshold(3, 60, 600);
        let ids: Vec<Uuid> = (0..10).map(|_| Uuid::now_v7()).collect();
        let fired = replay(
            &rule,
            [0, 10, 100, 110, 115, 120, 130, 700, 710, 720]
                .iter()
                .zip(&ids)
                .map(|(s, id)| (t(*s), *id, "")),
        );
        // 0 and 10 fall out before 100; 100,110,115 fire; 120,130 cool down; 700-720 fire.
        assert_eq!(fired.len(), 2, "{fired:?}");
        assert_eq!(fired[0].1.event_count, 3);
        assert_eq!(fired[0].1.first_event_at, t(100));
        assert_eq!(fired[0].1.last_event_at, t(115));
        assert_eq!(fired[0].1.samples, vec![ids[4], ids[3], ids[2]]);
        assert_eq!(fired[1].1.last_event_at, t(720));
    }

    #[test]
    fn groups_count_apart_and_late_events_sort_in() {
        let rule = threshold(2, 60, 600);
        let fired = replay(
            &rule,
            [(0, "a"), (1, "b"), (50, "a")]
                .into_iter()
                .map(|(s, g)| (t(s), Uuid::now_v7(), g)),
        );
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].0, "a");
        let mut state = State::default();
        assert!(state.push(&rule, t(100), Uuid::now_v7()).is_none());
        assert!(
            state.push(&rule, t(30), Uuid::now_v7()).is_none(),
            "outside the window"
        );
        assert!(
            state.push(&rule, t(90), Uuid::now_v7()).is_some(),
            "late, in the window"
        );
    }

    #[test]
    fn the_baseline_fires_far_above_the_tenants_own_mean() {
        let rule = Evaluator::Baseline {
            bucket: Duration::seconds(300),
            min_count: 20,
            cooldown: Duration::seconds(3600),
        };
        let mut state = State::default();
        let mut fired = Vec::new();
        // Twelve quiet buckets of 30 requests, then a bucket of 200.
        for bucket in 0..12 {
            for i in 0..30 {
                if let Some(f) = state.push(&rule, t(bucket * 300 + i), Uuid::now_v7()) {
                    fired.push(f);
                }
            }
        }
        assert!(fired.is_empty(), "a steady tenant never fires");
        for i in 0..200 {
            if let Some(f) = state.push(&rule, t(12 * 300 + i), Uuid::now_v7()) {
                fired.push(f);
            }
        }
        assert_eq!(fired.len(), 1);
        // The mean is 30, so the 90th request of the bucket is the first at 3x.
        assert_eq!(fired[0].event_count, 90);
        assert_eq!(fired[0].samples.len(), MAX_SAMPLES);
    }

    #[test]
    fn the_state_round_trips_as_json() {
        let mut state = State::default();
        state.push(&threshold(5, 60, 60), t(0), Uuid::now_v7());
        let json = serde_json::to_value(&state).unwrap();
        assert_eq!(serde_json::from_value::<State>(json).unwrap(), state);
    }
}
