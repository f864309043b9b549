//! The HTTP server loop. `axum::serve` bounds nothing a client can hold open, so connections
//! are served here through hyper with three bounds (SPEC §10):
//!
//! - a cap on open connections (over it a new connection is closed at once, and counted);
//! - a header-read timeout: a connection that has sent part of a request but not all its
//!   headers within `header_read` is closed;
//! - an idle keep-alive timeout: a connection with no request in flight for `idle` is closed
//!   gracefully.
//!
//! hyper's own header-read timer starts as soon as a connection waits for a request, so it
//! would close idle keep-alive connections after the header timeout too; each connection task
//! keeps its own clock instead ([`Activity`]), fed by the socket's reads and the requests.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::config::ConnectionLimits;
use crate::metrics::Metrics;

/// How often a connection checks its clock.
const TICK: Duration = Duration::from_millis(250);

/// Serves `router` on `listener` until `shutdown`, then closes idle connections, lets the
/// requests in flight finish and returns once every connection is closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            metrics.connection_refused();
            continue;
        };
        let _ = stream.set_nodelay(true);
        connections.spawn(connection(
            stream,
            peer,
            router.clone(),
            limits,
            shutdown.clone(),
            permit,
        ));
    }
    connections.close();
    connections.wait().await;
}

async fn connection(
    stream: TcpStream,
    peer: std::net::SocketAddr,
    router: Router,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: stream,
        activity: activity.clone(),
    });
    let service = hyper::service::service_fn({
        let activity = activity.clone();
        move |mut req: hyper::Request<Incoming>| {
            let router = router.clone();
            // The client's address, for the activity log.
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            let request = activity.begin();
            async move {
                let response = router.oneshot(req.map(Body::new)).await;
                drop(request);
                response
            }
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None);
    builder.http2().timer(TokioTimer::new());
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let mut tick = tokio::time::interval(TICK);
    let mut draining = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => break,
            _ = shutdown.cancelled(), if !draining => {
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
            _ = tick.tick() => match activity.expired(&limits, Instant::now()) {
                // Nothing was dispatched: dropping the connection loses no request.
                Some(Expired::HeaderRead) => break,
                Some(Expired::Idle) if !draining => {
                    conn.as_mut().graceful_shutdown();
                    draining = true;
                }
                _ => {}
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for a request since the instant.
    Idle,
    /// Part of a request arrived (at the instant) while idle; its headers are not complete.
    Reading,
    /// This many requests are being handled.
    Busy(u32),
}

#[derive(Debug, PartialEq, Eq)]
enum Expired {
    HeaderRead,
    Idle,
}

/// A connection's clock: what it is doing and since when. A std mutex: held for a few
/// instructions, never across an await.
struct Activity(Mutex<(State, Instant)>);

impl Activity {
    fn new() -> Self {
        Self(Mutex::new((State::Idle, Instant::now())))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (State, Instant)> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn bytes_read(&self) {
        let mut state = self.lock();
        if state.0 == State::Idle {
            *state = (State::Reading, Instant::now());
        }
    }

    /// A request's headers are in; the guard marks its end.
    fn begin(self: &Arc<Self>) -> InFlight {
        let mut state = self.lock();
        let busy = match state.0 {
            State::Busy(n) => n + 1,
            State::Idle | State::Reading => 1,
        };
        *state = (State::Busy(busy), Instant::now());
        InFlight(self.clone())
    }

    /// Whether, as of `now`, the connection has waited too long for what it is doing.
    fn expired(&self, limits: &ConnectionLimits, now: Instant) -> Option<Expired> {
        let (state, since) = *self.lock();
        let waited = now.saturating_duration_since(since);
        match state {
            State::Reading if waited >= limits.header_read => Some(Expired::HeaderRead),
            State::Idle if waited >= limits.idle => Some(Expired::Idle),
            _ => None,
        }
    }
}

struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        *state = match state.0 {
            State::Busy(n) if n > 1 => (State::Busy(n - 1), state.1),
            _ => (State::Idle, Instant::now()),
        };
    }
}

/// The socket, telling the connection's clock when bytes arrive.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.bytes_read();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ConnectionLimits = ConnectionLimits {
        header_read: Duration::from_millis(20),
        idle: Duration::from_millis(60),
        max_connections: 1,
    };

    /// `after` milliseconds past `start`.
    fn at(start: Instant, after: u64) -> Instant {
        start + Duration::from_millis(after)
    }

    #[test]
    fn the_clock_tells_a_slow_header_from_an_idle_connection() {
        let activity = Arc::new(Activity::new());
        let start = Instant::now();
        assert_eq!(activity.expired(&LIMITS, start), None);
        activity.bytes_read();
        let read = Instant::now();
        assert_eq!(activity.expired(&LIMITS, at(read, 10)), None);
        assert_eq!(
            activity.expired(&LIMITS, at(read, 30)),
            Some(Expired::HeaderRead)
        );
        let first = activity.begin();
        let second = activity.begin();
        let busy = Instant::now();
        assert_eq!(
            activity.expired(&LIMITS, at(busy, 70)),
            None,
            "busy connections never expire"
        );
        drop(first);
        assert_eq!(
            activity.expired(&LIMITS, at(busy, 70)),
            None,
            "one request still runs"
        );
        drop(second);
        activity.bytes_read();
        let _third = activity.begin();
        assert_eq!(activity.expired(&LIMITS, at(Instant::now(), 70)), None);
    }

    #[test]
    fn an_idle_connection_expires_after_the_idle_timeout() {
        let activity = Arc::new(Activity::new());
        drop(activity.begin());
        let idle = Instant::now();
        assert_eq!(
            activity.expired(&LIMITS, at(idle, 30)),
            None,
            "idle, not yet too long"
        );
        assert_eq!(activity.expired(&LIMITS, at(idle, 70)), Some(Expired::Idle));
    }
}
