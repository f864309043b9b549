//! The local hub (SPEC §7): per tenant an event stream (an epoch, strictly increasing
//! offsets, the recent events kept for resume) and the connections subscribed to it. Events
//! reach it only from the fan-out ([`fanout`]), on every instance alike, the publishing one
//! included.

pub mod fanout;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use crate::config::WebSocketLimits;
use crate::metrics::Metrics;

/// Every tenant's last this many events are kept for resume...
pub const KEEP_EVENTS: usize = 1_000;
/// ... and at least the events of this long, unless a tenant passes [`MAX_KEPT_BYTES`].
pub const KEEP_FOR: Duration = Duration::from_secs(300);
/// A tenant's kept events never take more than this (frames' bytes), whatever their age.
pub const MAX_KEPT_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// The tenant's activity log (owners and admins).
    Activity,
    /// The tenant's alerts (owners and admins).
    Alerts,
    /// Per user: only events addressed to the connection's own user.
    Notifications,
}

impl Channel {
    /// The channels a member receives: derived by the server, never asked for.
    pub fn for_role(can_manage: bool) -> Vec<Channel> {
        if can_manage {
            vec![Channel::Activity, Channel::Alerts, Channel::Notifications]
        } else {
            vec![Channel::Notifications]
        }
    }
}

/// What a producer publishes after its rows commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub tenant_id: Uuid,
    pub channel: Channel,
    /// The addressee, for [`Channel::Notifications`] (an event without one reaches nobody).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Uuid>,
    pub data: serde_json::Value,
}

/// The frame a client receives, serialized once per event and shared by every subscriber.
#[derive(Serialize)]
struct Frame<'a> {
    r#type: &'static str,
    channel: Channel,
    epoch: &'a str,
    offset: u64,
    data: &'a serde_json::Value,
}

/// A kept event: what the resume filter needs, and the frame.
struct Kept {
    offset: u64,
    channel: Channel,
    user_id: Option<Uuid>,
    at: Instant,
    frame: Utf8Bytes,
}

/// Where a resumed connection stands.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Resume {
    pub epoch: String,
    pub offset: u64,
}

struct Subscriber {
    id: u64,
    user_id: Uuid,
    channels: Vec<Channel>,
    queue: mpsc::Sender<Utf8Bytes>,
    slow: Arc<AtomicBool>,
}

impl Subscriber {
    fn wants(&self, channel: Channel, user_id: Option<Uuid>) -> bool {
        self.channels.contains(&channel)
            && (channel != Channel::Notifications || user_id == Some(self.user_id))
    }

    /// Queues `frame`; false when the subscriber must go (its queue is full: marked slow;
    /// or its connection is gone).
    fn offer(&self, frame: &Utf8Bytes) -> bool {
        match self.queue.try_send(frame.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.slow.store(true, Ordering::Relaxed);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// One tenant's stream on this instance.
struct Stream {
    epoch: String,
    last_offset: u64,
    kept: VecDeque<Kept>,
    kept_bytes: usize,
    subscribers: Vec<Subscriber>,
    /// The last event or departure, for dropping streams nobody follows.
    touched: Instant,
}

fn new_epoch() -> String {
    Uuid::now_v7().simple().to_string()
}

impl Stream {
    fn new() -> Self {
        Self {
            epoch: new_epoch(),
            last_offset: 0,
            kept: VecDeque::new(),
            kept_bytes: 0,
            subscribers: Vec::new(),
            touched: Instant::now(),
        }
    }

    fn trim(&mut self) {
        while let Some(front) = self.kept.front() {
            let expendable = self.kept.len() > KEEP_EVENTS && front.at.elapsed() > KEEP_FOR;
            if !(expendable || self.kept_bytes > MAX_KEPT_BYTES) {
                break;
            }
            self.kept_bytes -= front.frame.len();
            self.kept.pop_front();
        }
    }

    /// The kept frames after `resume` that `subscriber` carries, or `None` when some of them
    /// are no longer kept (or the resume point is not of this stream).
    fn replay(&self, resume: &Resume, subscriber: &Subscriber) -> Option<Vec<Utf8Bytes>> {
        if resume.epoch != self.epoch || resume.offset > self.last_offset {
            return None;
        }
        let first_kept = self
            .kept
            .front()
            .map_or(self.last_offset + 1, |kept| kept.offset);
        if resume.offset + 1 < first_kept {
            return None;
        }
        Some(
            self.kept
                .iter()
                .filter(|k| k.offset > resume.offset && subscriber.wants(k.channel, k.user_id))
                .map(|k| k.frame.clone())
                .collect(),
        )
    }
}

/// What a connection gets on subscribing.
pub struct Subscription {
    pub epoch: String,
    /// The stream's last offset when the connection joined.
    pub offset: u64,
    pub channels: Vec<Channel>,
    pub replay: Replay,
    /// Live frames, after the replay; closed when the hub dropped the connection.
    pub frames: mpsc::Receiver<Utf8Bytes>,
    /// Set when the hub dropped the connection for falling behind.
    pub slow: Arc<AtomicBool>,
    _leave: Leave,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Replay {
    /// No resume was asked for.
    None,
    /// The missed frames, in order (possibly none).
    Frames(Vec<Utf8Bytes>),
    /// The missed events are not kept: the client refetches over REST.
    Reset,
}

/// Takes a subscriber out of its stream when its connection ends.
struct Leave {
    stream: Arc<Mutex<Stream>>,
    id: u64,
}

impl Drop for Leave {
    fn drop(&mut self) {
        let mut stream = lock(&self.stream);
        stream.subscribers.retain(|s| s.id != self.id);
        stream.touched = Instant::now();
    }
}

/// A place under the instance-wide WebSocket cap, held for a connection's life.
pub struct Admission(Arc<AtomicUsize>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("the tenant has its maximum of WebSocket connections")]
pub struct TenantFull;

/// The hub of one instance.
pub struct Hub {
    streams: Mutex<HashMap<Uuid, Arc<Mutex<Stream>>>>,
    next_id: AtomicU64,
    open: Arc<AtomicUsize>,
    pub limits: WebSocketLimits,
    metrics: Arc<Metrics>,
    /// Cancelled when the server shuts down: every connection closes with 1001.
    pub shutdown: CancellationToken,
    /// The connections' tasks, awaited by the server's drain.
    pub tasks: TaskTracker,
}

/// A std mutex: held for a few instructions (a fan-out of `try_send`s), never across an await.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Hub {
    pub fn new(
        limits: WebSocketLimits,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            streams: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            open: Arc::new(AtomicUsize::new(0)),
            limits,
            metrics,
            shutdown,
            tasks: TaskTracker::new(),
        }
    }

    fn stream(&self, tenant: Uuid) -> Arc<Mutex<Stream>> {
        lock(&self.streams)
            .entry(tenant)
            .or_insert_with(|| Arc::new(Mutex::new(Stream::new())))
            .clone()
    }

    /// A place under the instance-wide cap, or `None` when it is reached.
    pub fn admit(&self) -> Option<Admission> {
        let previous = self.open.fetch_add(1, Ordering::Relaxed);
        let admission = Admission(self.open.clone());
        (previous < self.limits.total).then_some(admission)
    }

    /// Joins `tenant`'s stream; with `resume`, the missed frames come first. The replay and
    /// the joining happen under the stream's lock, so no event falls between them or is seen
    /// twice.
    pub fn subscribe(
        &self,
        tenant: Uuid,
        user_id: Uuid,
        channels: Vec<Channel>,
        resume: Option<&Resume>,
    ) -> Result<Subscription, TenantFull> {
        let shared = self.stream(tenant);
        let mut stream = lock(&shared);
        if stream.subscribers.len() >= self.limits.per_tenant {
            return Err(TenantFull);
        }
        let (queue, frames) = mpsc::channel(self.limits.send_queue);
        let slow = Arc::new(AtomicBool::new(false));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let subscriber = Subscriber {
            id,
            user_id,
            channels: channels.clone(),
            queue,
            slow: slow.clone(),
        };
        let replay = match resume {
            None => Replay::None,
            Some(resume) => stream
                .replay(resume, &subscriber)
                .map_or(Replay::Reset, Replay::Frames),
        };
        stream.subscribers.push(subscriber);
        let subscription = Subscription {
            epoch: stream.epoch.clone(),
            offset: stream.last_offset,
            channels,
            replay,
            frames,
            slow,
            _leave: Leave {
                stream: shared.clone(),
                id,
            },
        };
        Ok(subscription)
    }

    /// Gives `event` the tenant's next offset, keeps it, and queues it to every subscriber
    /// whose channels carry it. Returns how many got it.
    pub fn deliver(&self, event: &Event) -> usize {
        let shared = self.stream(event.tenant_id);
        let mut stream = lock(&shared);
        stream.last_offset += 1;
        let frame = serde_json::to_string(&Frame {
            r#type: "event",
            channel: event.channel,
            epoch: &stream.epoch,
            offset: stream.last_offset,
            data: &event.data,
        })
        .expect("a JSON value serializes");
        let frame = Utf8Bytes::from(frame);
        let mut delivered = 0;
        stream.subscribers.retain(|s| {
            if !s.wants(event.channel, event.user_id) {
                return true;
            }
            let kept = s.offer(&frame);
            if kept {
                delivered += 1;
            } else if s.slow.load(Ordering::Relaxed) {
                self.metrics.ws.closed("slow_consumer");
            }
            kept
        });
        stream.kept_bytes += frame.len();
        let offset = stream.last_offset;
        stream.kept.push_back(Kept {
            offset,
            channel: event.channel,
            user_id: event.user_id,
            at: Instant::now(),
            frame,
        });
        stream.trim();
        stream.touched = Instant::now();
        self.metrics.ws.delivered(delivered as u64);
        delivered
    }

    /// Events of `tenant` (or of every tenant) were missed, by a lost fan-out connection: the
    /// stream starts a new epoch (so a resume gets `reset`) and its connections get `reset`.
    pub fn reset(&self, tenant: Option<Uuid>) {
        let streams: Vec<_> = {
            let map = lock(&self.streams);
            match tenant {
                Some(id) => map.get(&id).cloned().into_iter().collect(),
                None => map.values().cloned().collect(),
            }
        };
        let frame = Utf8Bytes::from(r#"{"type":"reset"}"#);
        for shared in streams {
            let mut stream = lock(&shared);
            stream.epoch = new_epoch();
            stream.kept.clear();
            stream.kept_bytes = 0;
            stream.subscribers.retain(|s| s.offer(&frame));
        }
    }

    /// Trims old events and drops the streams nobody has followed for [`KEEP_FOR`].
    pub fn sweep(&self) {
        let mut map = lock(&self.streams);
        map.retain(|_, shared| {
            // Nobody else holds the stream while the map is locked and the count is one.
            let held = Arc::strong_count(shared) > 1;
            let mut stream = lock(shared);
            stream.trim();
            held || !stream.subscribers.is_empty() || stream.touched.elapsed() < KEEP_FOR
        });
    }

    /// The streams this instance keeps (for tests of the sweep).
    pub fn streams(&self) -> usize {
        lock(&self.streams).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(queue: usize) -> Hub {
        Hub::new(
            WebSocketLimits {
                per_tenant: 2,
                total: 3,
                send_queue: queue,
                auth_timeout: Duration::from_secs(1),
                ping_interval: Duration::from_secs(1),
            },
            Arc::new(Metrics::default()),
            CancellationToken::new(),
        )
    }

    fn event(tenant: Uuid, channel: Channel, user: Option<Uuid>, n: u64) -> Event {
        Event {
            tenant_id: tenant,
            channel,
            user_id: user,
            data: serde_json::json!({ "n": n }),
        }
    }

    fn offsets(frames: &[Utf8Bytes]) -> Vec<u64> {
        frames
            .iter()
            .map(|f| {
                serde_json::from_str::<serde_json::Value>(f).unwrap()["offset"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn resume_replays_what_the_channels_carry_and_resets_when_not_kept() {
        let hub = hub(16);
        let tenant = Uuid::now_v7();
        let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
        let first = hub
            .subscribe(tenant, alice, Channel::for_role(false), None)
            .unwrap();
        let epoch = first.epoch.clone();
        drop(first);
        hub.deliver(&event(tenant, Channel::Activity, None, 1));
        hub.deliver(&event(tenant, Channel::Notifications, Some(bob), 2));
        hub.deliver(&event(tenant, Channel::Notifications, Some(alice), 3));
        let resume = Resume {
            epoch: epoch.clone(),
            offset: 0,
        };
        let back = hub
            .subscribe(tenant, alice, Channel::for_role(false), Some(&resume))
            .unwrap();
        let Replay::Frames(frames) = &back.replay else {
            panic!("{:?}", back.replay)
        };
        assert_eq!(offsets(frames), vec![3], "only alice's own notification");
        assert_eq!(back.offset, 3);
        let other = Resume {
            epoch: "another".into(),
            offset: 0,
        };
        let reset = hub.subscribe(tenant, alice, Channel::for_role(true), Some(&other));
        assert_eq!(reset.unwrap().replay, Replay::Reset);
        let future = Resume { epoch, offset: 99 };
        let reset = hub.subscribe(tenant, alice, Channel::for_role(true), Some(&future));
        assert_eq!(reset.unwrap().replay, Replay::Reset);
    }

    #[test]
    fn events_no_longer_kept_give_reset() {
        let hub = hub(16);
        let tenant = Uuid::now_v7();
        let user = Uuid::now_v7();
        let epoch = hub.subscribe(tenant, user, vec![], None).unwrap().epoch;
        for n in 0..(KEEP_EVENTS as u64 + 10) {
            hub.deliver(&event(tenant, Channel::Activity, None, n));
        }
        // Events younger than KEEP_FOR stay, even past the thousand.
        let resume = Resume {
            epoch: epoch.clone(),
            offset: 0,
        };
        let all = hub
            .subscribe(tenant, user, Channel::for_role(true), Some(&resume))
            .unwrap();
        let Replay::Frames(frames) = &all.replay else {
            panic!()
        };
        assert_eq!(frames.len(), KEEP_EVENTS + 10);
        drop(all);
        // The byte cap wins over age: the oldest go.
        let big = "x".repeat(1024);
        for _ in 0..(MAX_KEPT_BYTES / 1024 + 10) {
            hub.deliver(&Event {
                data: serde_json::json!(big),
                ..event(tenant, Channel::Activity, None, 0)
            });
        }
        let late = hub
            .subscribe(tenant, user, Channel::for_role(true), Some(&resume))
            .unwrap();
        assert_eq!(late.replay, Replay::Reset);
        let last = Resume {
            epoch: late.epoch.clone(),
            offset: late.offset,
        };
        drop(late);
        let current = hub
            .subscribe(tenant, user, Channel::for_role(true), Some(&last))
            .unwrap();
        assert_eq!(current.replay, Replay::Frames(vec![]));
        drop(current);
        hub.reset(Some(tenant));
        let after = hub
            .subscribe(tenant, user, Channel::for_role(true), Some(&last))
            .unwrap();
        assert_eq!(after.replay, Replay::Reset, "a new epoch after a reset");
    }

    #[test]
    fn a_full_queue_drops_the_subscriber_as_slow() {
        let hub = hub(2);
        let tenant = Uuid::now_v7();
        let mut sub = hub
            .subscribe(tenant, Uuid::now_v7(), Channel::for_role(true), None)
            .unwrap();
        for n in 0..3 {
            hub.deliver(&event(tenant, Channel::Alerts, None, n));
        }
        assert!(sub.slow.load(Ordering::Relaxed));
        assert!(sub.frames.try_recv().is_ok());
        assert!(sub.frames.try_recv().is_ok());
        assert!(sub.frames.try_recv().is_err(), "the sender is gone");
    }

    #[test]
    fn caps_and_the_sweep() {
        let hub = hub(2);
        let admissions: Vec<_> = (0..3).map(|_| hub.admit().unwrap()).collect();
        assert!(hub.admit().is_none(), "the instance-wide cap");
        drop(admissions);
        assert!(hub.admit().is_some());
        let tenant = Uuid::now_v7();
        let a = hub.subscribe(tenant, Uuid::now_v7(), vec![], None).unwrap();
        let _b = hub.subscribe(tenant, Uuid::now_v7(), vec![], None).unwrap();
        assert!(hub.subscribe(tenant, Uuid::now_v7(), vec![], None).is_err());
        drop(a);
        assert!(hub.subscribe(tenant, Uuid::now_v7(), vec![], None).is_ok());
        hub.sweep();
        assert_eq!(hub.streams(), 1, "a followed stream stays");
    }
}
