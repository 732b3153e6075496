//! The AWS Lambda Runtime API, served on loopback to one function process.
//!
//! The process long-polls `GET …/invocation/next`, runs the handler and answers with
//! `POST …/invocation/{id}/response` or `…/error`; a handler that cannot even be loaded
//! reports `POST …/init/error`. Each process gets its own listener, so the fixed Lambda paths
//! need no per-process routing. When the process has a uid of its own, the listener only
//! accepts connections from sockets of that uid: any local process can connect to a loopback
//! port, and one that took another function's invocations would see its events and answer
//! for it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::Listener;
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, mpsc, oneshot};

/// Largest response or error body a function may post, as Lambda's synchronous limit.
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;

/// One invocation handed to the process.
pub struct Invocation {
    pub request_id: String,
    pub event: Bytes,
    pub deadline_epoch_ms: i64,
    pub reply: oneshot::Sender<Reply>,
    /// Set once the process has taken the invocation with `next`.
    pub picked_up: Arc<AtomicBool>,
}

/// What the process answered for an invocation.
#[derive(Debug)]
pub enum Reply {
    Response(Bytes),
    Error { error_type: String, message: String },
}

/// What the process reported while loading its handler.
#[derive(Debug, Clone)]
pub struct InitError {
    pub error_type: String,
    pub message: String,
}

struct ApiState {
    function_arn: String,
    invocations: Mutex<mpsc::Receiver<Invocation>>,
    in_flight: std::sync::Mutex<HashMap<String, oneshot::Sender<Reply>>>,
    init_error: std::sync::Mutex<Option<oneshot::Sender<InitError>>>,
}

/// Handle of a running Runtime API server.
pub struct RuntimeApi {
    pub address: SocketAddr,
    pub invocations: mpsc::Sender<Invocation>,
    /// Resolves when the process reports an init error.
    pub init_error: oneshot::Receiver<InitError>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl RuntimeApi {
    /// Serves on a free loopback port; with `owner`, only to sockets of that uid. With `mark`,
    /// the listening socket carries the mark the sandbox's network filter lets through.
    pub async fn start(
        function_name: &str,
        owner: Option<u32>,
        mark: Option<u32>,
    ) -> std::io::Result<RuntimeApi> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        if let Some(mark) = mark {
            super::sandbox::egress::mark_socket(&listener, mark)?;
        }
        let address = listener.local_addr()?;
        let listener = OwnerOnly {
            inner: listener,
            address,
            owner,
            warned: false,
        };
        let (invocations, receiver) = mpsc::channel(1);
        let (init_sender, init_error) = oneshot::channel();
        let state = Arc::new(ApiState {
            function_arn: format!("arn:aws:lambda:local:000000000000:function:{function_name}"),
            invocations: Mutex::new(receiver),
            in_flight: std::sync::Mutex::new(HashMap::new()),
            init_error: std::sync::Mutex::new(Some(init_sender)),
        });
        let router = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error_route))
            .layer(DefaultBodyLimit::max(MAX_PAYLOAD_BYTES))
            .with_state(state);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(RuntimeApi {
            address,
            invocations,
            init_error,
            server,
        })
    }
}

/// A listener that drops connections from sockets of any uid but `owner`.
struct OwnerOnly {
    inner: TcpListener,
    address: SocketAddr,
    owner: Option<u32>,
    /// Refusals are logged once per server, so a process cannot flood the worker's log.
    warned: bool,
}

impl OwnerOnly {
    async fn admits(&mut self, peer: SocketAddr) -> bool {
        let Some(owner) = self.owner else {
            return true;
        };
        let local = self.address;
        let found = tokio::task::spawn_blocking(move || super::peer::peer_uid(peer, local)).await;
        let uid = match found {
            Ok(Ok(uid)) => uid,
            Ok(Err(error)) => {
                tracing::error!(%error, "could not read the socket tables; Runtime API connection refused");
                return false;
            }
            Err(_) => return false,
        };
        if uid == Some(owner) {
            return true;
        }
        if !self.warned {
            self.warned = true;
            tracing::warn!(%peer, ?uid, owner, "refused a Runtime API connection from another user's process");
        }
        false
    }
}

impl Listener for OwnerOnly {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            let (stream, peer) = Listener::accept(&mut self.inner).await;
            if self.admits(peer).await {
                // Replies go out as soon as they are written: Nagle's delay would add tens of ms.
                let _ = stream.set_nodelay(true);
                return (stream, peer);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.address)
    }
}

async fn next(State(state): State<Arc<ApiState>>) -> Response {
    // One poller at a time: a process runs one invocation at a time.
    let invocation = state.invocations.lock().await.recv().await;
    let Some(invocation) = invocation else {
        return StatusCode::GONE.into_response();
    };
    invocation.picked_up.store(true, Ordering::Release);
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set("lambda-runtime-aws-request-id", &invocation.request_id);
    set(
        "lambda-runtime-deadline-ms",
        &invocation.deadline_epoch_ms.to_string(),
    );
    set("lambda-runtime-invoked-function-arn", &state.function_arn);
    set(
        "lambda-runtime-trace-id",
        &format!("Root=1-00000000-{}", invocation.request_id.replace('-', "")),
    );
    set("content-type", "application/json");
    if let Ok(mut in_flight) = state.in_flight.lock() {
        in_flight.insert(invocation.request_id.clone(), invocation.reply);
    }
    (headers, invocation.event).into_response()
}

fn take_reply(state: &ApiState, id: &str) -> Option<oneshot::Sender<Reply>> {
    state.in_flight.lock().ok()?.remove(id)
}

async fn response(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> StatusCode {
    let Some(reply) = take_reply(&state, &id) else {
        return StatusCode::NOT_FOUND;
    };
    match body {
        Ok(body) => {
            let _ = reply.send(Reply::Response(body));
            StatusCode::ACCEPTED
        }
        // The invocation fails now, with the reason, rather than running into its time limit.
        Err(rejection) => {
            let _ = reply.send(Reply::Error {
                error_type: "Runtime.ResponseTooLarge".to_owned(),
                message: format!(
                    "The function's response could not be read (at most {MAX_PAYLOAD_BYTES} bytes): {}",
                    rejection.body_text()
                ),
            });
            StatusCode::PAYLOAD_TOO_LARGE
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ErrorBody {
    error_message: Option<serde_json::Value>,
    error_type: Option<String>,
}

/// Lambda clients send `{errorMessage, errorType}`; anything else still yields a usable error.
fn parse_error(headers: &HeaderMap, body: &[u8]) -> (String, String) {
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    let error_type = parsed
        .error_type
        .or_else(|| {
            headers
                .get("lambda-runtime-function-error-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "Runtime.UnknownError".to_owned());
    let message = match parsed.error_message {
        Some(serde_json::Value::String(text)) => text,
        Some(other) => other.to_string(),
        None => String::from_utf8_lossy(body).chars().take(4096).collect(),
    };
    (truncate(&error_type, 256), truncate(&message, 8192))
}

fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

async fn error(
    State(state): State<Arc<ApiState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let (error_type, message) = parse_error(&headers, &body);
    match take_reply(&state, &id) {
        Some(reply) => {
            let _ = reply.send(Reply::Error {
                error_type,
                message,
            });
            StatusCode::ACCEPTED
        }
        None => StatusCode::NOT_FOUND,
    }
}

async fn init_error_route(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let (error_type, message) = parse_error(&headers, &body);
    if let Some(sender) = state.init_error.lock().ok().and_then(|mut s| s.take()) {
        let _ = sender.send(InitError {
            error_type,
            message,
        });
    }
    StatusCode::ACCEPTED
}
