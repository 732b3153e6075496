//! The API's HTTP/1 server: hyper's connection handling with the limits that keep anonymous
//! clients from exhausting the process's descriptors (slowloris).
//!
//! - A request head must arrive within `http.header_read_timeout_ms`, or hyper closes the
//!   connection; the same clock closes a keep-alive connection left idle that long.
//! - At most `http.max_connections` connections are served at once. A connection beyond
//!   the cap is closed at once, unless what it already sent is a complete `GET` or `HEAD` of
//!   `/healthz` or `/readyz`: that one request is answered and the connection closed, so
//!   probes keep answering while slow clients hold every slot. Such requests are looked at
//!   before the cap's own accounting rather than given reserved slots, because slow clients
//!   would fill reserved slots as surely as the others.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt;

use super::parser_errors::WithErrorBodies;
use crate::config::HttpConfig;

/// Header fields hyper's parser makes room for. At its default (100) it answers more with a
/// bare 431 before any handler runs; with this room, requests up to it reach
/// [`crate::api::check_request_size`], which refuses more than 100 in the Extra Horizon format.
pub const PARSED_HEADERS: usize = 1_000;
/// Beyond the cap, connections whose health request is already complete answered at once.
const HEALTH_SLOTS: usize = 32;
/// Beyond the cap, connections that sent nothing yet (a probe a moment after its handshake)
/// waiting at most [`HEALTH_WAIT`] for a health request.
const WAITING_SLOTS: usize = 32;
const HEALTH_WAIT: Duration = Duration::from_secs(1);
/// Enough for a probe's whole request head; a longer one beyond the cap is refused.
const HEALTH_HEAD_BYTES: usize = 2048;
/// The cap is at most the open-files limit divided by this: the rest stays for the pools,
/// the broker, files, and the connections refused or answered beyond the cap.
const OPEN_FILES_PER_CONNECTION: u64 = 2;
/// Refused connections are logged at most this often.
const REFUSAL_REPORT_INTERVAL: Duration = Duration::from_secs(10);

/// The cap and timeout in effect.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
}

impl Limits {
    /// Raises the process's open-files limit as far as it may go, and keeps the cap within
    /// half of it: a cap above the limit would fail `accept` again.
    pub fn from_config(config: &HttpConfig) -> Limits {
        let descriptors = raise_open_files_limit();
        let room = usize::try_from(descriptors / OPEN_FILES_PER_CONNECTION)
            .unwrap_or(usize::MAX)
            .max(1);
        let max_connections = config.max_connections.clamp(1, room);
        if max_connections < config.max_connections {
            tracing::warn!(
                configured = config.max_connections,
                open_files_limit = descriptors,
                max_connections,
                "http.max_connections lowered to half the process's open-files limit; raise \
                 the limit (ulimit -n, LimitNOFILE) to serve more connections"
            );
        }
        Limits {
            max_connections,
            header_read_timeout: config.header_read_timeout(),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then lets the requests in flight
/// finish.
pub async fn serve<S>(
    listener: TcpListener,
    app: S,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) where
    S: tower::Service<
            Request,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let service = TowerToHyperService::new(
        app.map_request(|request: hyper::Request<Incoming>| request.map(Body::new)),
    );
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(PARSED_HEADERS);
    let mut overflow = Overflow {
        health: builder.clone(),
        ready: Arc::new(Semaphore::new(HEALTH_SLOTS)),
        waiting: Arc::new(Semaphore::new(WAITING_SLOTS)),
        refused: 0,
        reported: None,
    };
    overflow
        .health
        .keep_alive(false)
        .header_read_timeout(HEALTH_WAIT);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        match connections.clone().try_acquire_owned() {
            Ok(slot) => {
                let stream = TokioIo::new(WithErrorBodies::new(stream));
                let connection = graceful.watch(builder.serve_connection(stream, service.clone()));
                tokio::spawn(async move {
                    // Errors are the client's (a reset, a malformed or late request head).
                    let _ = connection.await;
                    drop(slot);
                });
            }
            Err(_) => overflow.admit(stream, &service),
        }
    }
    graceful.shutdown().await;
}

/// What becomes of connections beyond the cap.
struct Overflow {
    /// One request, then the connection closes; a late head is dropped sooner.
    health: http1::Builder,
    ready: Arc<Semaphore>,
    waiting: Arc<Semaphore>,
    refused: u64,
    reported: Option<Instant>,
}

impl Overflow {
    fn admit<S>(&mut self, stream: TcpStream, service: &S)
    where
        S: hyper::service::Service<hyper::Request<Incoming>, Response = axum::response::Response>
            + Clone
            + Send
            + 'static,
        S::Future: Send,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        // The tokio stream only learns of arrived bytes from the reactor; the socket itself
        // says at once.
        let Ok(socket) = stream.into_std() else {
            return;
        };
        let mut head = [0u8; HEALTH_HEAD_BYTES];
        let slots = match socket.peek(&mut head) {
            Ok(read) if is_health_request(&head[..read]) => &self.ready,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => &self.waiting,
            _ => return self.refuse(),
        };
        let (Ok(slot), Ok(stream)) = (
            slots.clone().try_acquire_owned(),
            TcpStream::from_std(socket),
        ) else {
            return self.refuse();
        };
        let builder = self.health.clone();
        let service = service.clone();
        tokio::spawn(async move {
            let mut head = [0u8; HEALTH_HEAD_BYTES];
            if let Ok(Ok(read)) = tokio::time::timeout(HEALTH_WAIT, stream.peek(&mut head)).await
                && is_health_request(&head[..read])
            {
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }
            drop(slot);
        });
    }

    fn refuse(&mut self) {
        self.refused += 1;
        if self
            .reported
            .is_none_or(|at| at.elapsed() >= REFUSAL_REPORT_INTERVAL)
        {
            tracing::warn!(
                refused_since_last_report = self.refused,
                "http.max_connections reached: connections beyond it are closed (health probes \
                 excepted); slow or idle clients are dropped after http.header_read_timeout_ms"
            );
            self.reported = Some(Instant::now());
            self.refused = 0;
        }
    }
}

/// A complete request head asking for liveness or readiness.
fn is_health_request(head: &[u8]) -> bool {
    let complete = head.windows(4).any(|window| window == b"\r\n\r\n");
    let line = head.split(|&byte| byte == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&byte| byte == b' ');
    let (method, target) = (parts.next(), parts.next().unwrap_or_default());
    let path = target
        .split(|&byte| byte == b'?')
        .next()
        .unwrap_or_default();
    complete && matches!(method, Some(b"GET" | b"HEAD")) && matches!(path, b"/healthz" | b"/readyz")
}

/// Like hyper's own servers: a failed handshake is the client's business; anything else
/// (out of descriptors) is worth a pause before accepting again.
async fn accept_failed(error: io::Error) {
    if matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accepting an HTTP connection failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Raises the soft open-files limit to the hard one (a process may do so unprivileged) and
/// returns the limit in effect.
fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the limit into a value on this stack.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return u64::MAX;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads a value on this stack.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    limit.rlim_cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_complete_health_requests_pass_beyond_the_cap() {
        for passing in [
            "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n",
            "HEAD /readyz?verbose HTTP/1.1\r\n\r\n",
        ] {
            assert!(is_health_request(passing.as_bytes()), "{passing}");
        }
        for refused in [
            "GET /healthz HTTP/1.1\r\nHost: a\r\n",
            "GET /tasks/v1 HTTP/1.1\r\n\r\n",
            "POST /healthz HTTP/1.1\r\n\r\n",
            "GET /healthzz HTTP/1.1\r\n\r\n",
            "",
        ] {
            assert!(!is_health_request(refused.as_bytes()), "{refused}");
        }
    }
}
