//! The HTTP API over hyper:
//!
//! | route                     | answer                                   |
//! |---------------------------|------------------------------------------|
//! | `POST /v1/transfer/check` | 200 decision, 400/413 bad input          |
//! | `POST /v1/audit/events`   | 201 `{seq, hash}` once the record is on disk |
//! | `GET /healthz`            | 200 while the process serves             |
//! | `GET /readyz`             | 200 while it takes traffic; 503 draining, or before the state store first answered |
//! | `GET /metrics`            | Prometheus (OpenMetrics) text            |
//!
//! Every error is `{"error":{"code","message","field"}}`. Heads over
//! [`MAX_HEAD`] bytes or [`MAX_HEADERS`] fields get 431; a client slower
//! than [`Limits::client_timeout`] loses its connection (headers) or gets
//! 408 (body).

use crate::service::{Caller, CheckResponse, Teller};
use crate::workers::Workers;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use teller_contract::ErrorCode;
use teller_contract::{Error, Kind};
use tokio::net::TcpListener;

/// Largest request body accepted; larger ones get 413.
pub use teller_contract::MAX_BODY;

/// Largest request line plus headers accepted; larger ones get 431.
pub const MAX_HEAD: usize = 16 * 1024;

/// Most header fields in one request; more get 431.
pub const MAX_HEADERS: usize = 64;

/// How long in-flight requests may take to finish after a shutdown signal.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// Bounds on the work in flight: past them a request gets 503 with
/// `Retry-After` at once, instead of memory growing without bound.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Decisions and events being worked on at once.
    pub max_concurrency: usize,
    /// Requests waiting for one of those slots.
    pub max_queue: usize,
    /// How long a client may take to send a request's headers (or to start
    /// its next one on a kept-alive connection), and then its body.
    pub client_timeout: Duration,
    /// After a shutdown signal, how long to go on serving (new connections
    /// too) while `/readyz` says draining, so that a load balancer's health
    /// check takes the instance out of rotation before it stops accepting.
    pub drain_delay: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_concurrency: 256,
            max_queue: 1024,
            client_timeout: Duration::from_secs(10),
            drain_delay: Duration::ZERO,
        }
    }
}

struct Shared {
    teller: Arc<Teller>,
    ready: AtomicBool,
    slots: Arc<tokio::sync::Semaphore>,
    waiting: std::sync::atomic::AtomicUsize,
    limits: Limits,
    /// Where decisions run when no audit log is kept.
    workers: Workers,
}

/// Serves `teller` on `listener` until `shutdown` completes; then reports
/// not-ready, goes on serving for the drain delay, stops accepting and
/// drains in-flight requests.
pub async fn serve(
    listener: TcpListener,
    teller: Arc<Teller>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared {
        teller,
        ready: AtomicBool::new(true),
        slots: Arc::new(tokio::sync::Semaphore::new(limits.max_concurrency.max(1))),
        waiting: std::sync::atomic::AtomicUsize::new(0),
        limits,
        workers: Workers::per_core().map_err(|e| std::io::Error::other(e.to_string()))?,
    });
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    // Set to the end of the drain delay when the shutdown signal comes.
    let drained = tokio::time::sleep(Duration::from_secs(365 * 86_400));
    tokio::pin!(drained);
    let mut draining = false;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of descriptors and the like: back off, go on.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                let service = service_fn(move |req| {
                    let id = request_id(&req);
                    let span = tracing::info_span!(
                        "request",
                        request_id = %id,
                        decision_id = tracing::field::Empty
                    );
                    tracing::Instrument::instrument(handle(shared.clone(), peer, req, id), span)
                });
                // A slow or silent client is cut off after the timeout, so
                // it cannot hold a connection (and its memory) open.
                let conn = http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(limits.client_timeout)
                    .max_buf_size(MAX_HEAD)
                    .max_headers(MAX_HEADERS)
                    .serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            () = &mut shutdown, if !draining => {
                shared.ready.store(false, Ordering::SeqCst);
                if limits.drain_delay.is_zero() {
                    break;
                }
                tracing::info!(
                    ms = limits.drain_delay.as_millis() as u64,
                    "not ready: serving on while load balancers take this instance out"
                );
                draining = true;
                drained.as_mut().reset(tokio::time::Instant::now() + limits.drain_delay);
            }
            () = &mut drained, if draining => break,
        }
    }
    shared.ready.store(false, Ordering::SeqCst);
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN_DEADLINE) => {
            tracing::warn!("in-flight requests did not finish within {DRAIN_DEADLINE:?}");
        }
    }
    Ok(())
}

/// The client's `X-Request-Id` when it is a sensible token, else a new one:
/// every log line of the request carries it, and so does the answer.
fn request_id(req: &Request<Incoming>) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
                // An id is not a place for an account number.
                && v.bytes().filter(u8::is_ascii_digit).count() < 12
        })
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), str::to_string)
}

async fn handle(
    shared: Arc<Shared>,
    peer: SocketAddr,
    req: Request<Incoming>,
    id: String,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let started = std::time::Instant::now();
    let route = (req.method().clone(), req.uri().path().to_string());
    let metrics_shared = shared.clone();
    let response = match (&route.0, route.1.as_str()) {
        (&Method::GET, "/healthz") => json(StatusCode::OK, r#"{"status":"ok"}"#.into()),
        (&Method::GET, "/metrics") => {
            let mut r = Response::new(Full::new(Bytes::from(shared.teller.metrics_text())));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        (&Method::GET, "/readyz") => {
            if !shared.ready.load(Ordering::SeqCst) {
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    r#"{"status":"draining"}"#.into(),
                )
            } else if !shared.teller.state_ready() {
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    r#"{"status":"waiting for the state store"}"#.into(),
                )
            } else {
                json(StatusCode::OK, r#"{"status":"ready"}"#.into())
            }
        }
        (&Method::POST, "/v1/transfer/check") => match check(shared, peer, req).await {
            Ok(decision) => to_json(StatusCode::OK, &decision),
            Err(e) => error(&e),
        },
        (&Method::POST, "/v1/audit/events") => {
            match run(shared, peer, req, |t, body, caller| {
                t.record_event(body, caller)
            })
            .await
            {
                Ok(record) => to_json(StatusCode::CREATED, &record),
                Err(e) => error(&e),
            }
        }
        (_, "/healthz" | "/readyz" | "/metrics" | "/v1/transfer/check" | "/v1/audit/events") => {
            let mut r = error(&Error::new(
                Kind::MethodNotAllowed,
                ErrorCode::MethodNotAllowed,
                format!("{} is not allowed on {}", route.0, route.1),
            ));
            let allow = if route.1.starts_with("/v1/") {
                "POST"
            } else {
                "GET"
            };
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
            r
        }
        _ => error(&Error::new(
            Kind::NotFound,
            ErrorCode::NotFound,
            format!("no route {}", route.1),
        )),
    };
    // Routes by their fixed names only: a path is client input.
    let name = match route.1.as_str() {
        "/v1/transfer/check" => "/v1/transfer/check",
        "/v1/audit/events" => "/v1/audit/events",
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        "/metrics" => "/metrics",
        _ => "other",
    };
    metrics_shared.teller.metrics().observe_http(
        name,
        response.status().as_u16(),
        started.elapsed(),
    );
    let mut response = response;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    Ok(response)
}

/// Decides a transfer: the decision on a worker thread, then the wait for
/// its audit record's group `fsync` here, holding no thread, so that a slow
/// disk never leaves more threads running guests than there are cores.
async fn check(
    shared: Arc<Shared>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<CheckResponse, Error> {
    let (body, slot) = admitted(&shared, req).await?;
    let caller = Caller {
        client: peer.to_string(),
    };
    let span = tracing::Span::current();
    // A task of its own, so that a client that goes away (hyper then drops
    // this future) cannot cut it short: its admission slot stays taken
    // until the decision is done, and what an allowed decision reserved is
    // given back if its record fails.
    let decided = tokio::spawn(async move {
        let answer = decide_and_record(&shared, body, caller, span).await;
        drop(slot);
        answer
    });
    decided
        .await
        .map_err(|e| Error::internal(ErrorCode::Internal, format!("request task failed: {e}")))?
}

async fn decide_and_record(
    shared: &Shared,
    body: Bytes,
    caller: Caller,
    span: tracing::Span,
) -> Result<CheckResponse, Error> {
    let teller = shared.teller.clone();
    let in_span = span.clone();
    let pending = shared
        .workers
        .run(move || {
            let _in_span = in_span.enter();
            teller.begin_check(&body, &caller)
        })
        .await??;
    match pending.durable().await {
        Ok(response) => Ok(response),
        Err(unrecorded) => {
            let teller = shared.teller.clone();
            // If the workers have stopped, the process is ending and the
            // reservations stay counted: too high, never too low.
            let failure = shared
                .workers
                .run(move || {
                    let _in_span = span.enter();
                    teller.give_back(unrecorded)
                })
                .await;
            Err(failure.unwrap_or_else(|e| e))
        }
    }
}

/// The request's body, read within [`MAX_BODY`] and the client timeout,
/// and a slot to work in.
async fn admitted(
    shared: &Shared,
    req: Request<Incoming>,
) -> Result<(Bytes, tokio::sync::OwnedSemaphorePermit), Error> {
    let body = tokio::time::timeout(shared.limits.client_timeout, read_body(req))
        .await
        .map_err(|_| {
            Error::new(
                Kind::Timeout,
                ErrorCode::BodyTimeout,
                format!(
                    "the request body did not arrive within {} ms",
                    shared.limits.client_timeout.as_millis()
                ),
            )
        })??;
    Ok((body, admit(shared).await?))
}

/// Reads the body and runs `op` off the async workers, so that a guest
/// running up to its deadline never delays `/healthz`.
async fn run<T: Send + 'static>(
    shared: Arc<Shared>,
    peer: SocketAddr,
    req: Request<Incoming>,
    op: fn(&Teller, &[u8], &Caller) -> Result<T, Error>,
) -> Result<T, Error> {
    let (body, slot) = admitted(&shared, req).await?;
    let caller = Caller {
        client: peer.to_string(),
    };
    // The slot is held until the work is done; the work stays in the
    // request's log span.
    let span = tracing::Span::current();
    let teller = shared.teller.clone();
    let work = move || {
        let _slot = slot;
        let _in_span = span.enter();
        op(&teller, &body, &caller)
    };
    if !shared.teller.audit_enabled() {
        // CPU-bound: one worker per core.
        return shared.workers.run(work).await?;
    }
    // An audit event is mostly a wait for its group's fsync: tokio's
    // blocking pool, bounded by admission, not one thread per core.
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::internal(ErrorCode::Internal, format!("request task failed: {e}")))?
}

/// A slot to work in, or `overloaded` when all are taken and the queue for
/// them is full.
async fn admit(shared: &Shared) -> Result<tokio::sync::OwnedSemaphorePermit, Error> {
    let overloaded = || {
        Error::new(
            Kind::Overloaded,
            ErrorCode::Overloaded,
            format!(
                "more than {} requests in flight and {} waiting; retry shortly",
                shared.limits.max_concurrency, shared.limits.max_queue
            ),
        )
    };
    if let Ok(permit) = shared.slots.clone().try_acquire_owned() {
        return Ok(permit);
    }
    if shared.waiting.fetch_add(1, Ordering::SeqCst) >= shared.limits.max_queue {
        shared.waiting.fetch_sub(1, Ordering::SeqCst);
        return Err(overloaded());
    }
    let permit = shared.slots.clone().acquire_owned().await;
    shared.waiting.fetch_sub(1, Ordering::SeqCst);
    permit.map_err(|_| overloaded())
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Error> {
    let too_large = || {
        Error::new(
            Kind::TooLarge,
            ErrorCode::BodyTooLarge,
            format!("the request body is over {MAX_BODY} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(Error::bad_request(
            ErrorCode::BodyUnreadable,
            format!("cannot read the request body: {e}"),
        )),
    }
}

fn to_json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec(value) {
        Ok(body) => json(status, body),
        Err(e) => error(&Error::internal(
            ErrorCode::Internal,
            format!("cannot encode: {e}"),
        )),
    }
}

fn error(e: &Error) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if e.kind == Kind::Guest || e.kind == Kind::Internal {
        tracing::error!(code = e.code.as_str(), "{}", e.message);
    }
    let mut response = json(status, e.to_json().into_bytes());
    if e.kind == Kind::Overloaded {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

fn json(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
