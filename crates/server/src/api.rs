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

use crate::service::{Caller, CheckResponse, PendingCheck, Teller};
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
    /// Where decisions run when the engine's calls may not run on an async
    /// worker (wasmtime's).
    workers: Option<Workers>,
}

/// Serves `teller` on `listener` until `shutdown` completes; then reports
/// not-ready, goes on serving for the drain delay, stops accepting and
/// drains in-flight requests.
///
/// Two kinds of thread serve. Decisions run where their requests are
/// parsed, on the async workers of the runtime `serve` is called on (one
/// per core), as a native handler would: a guest call is microseconds of
/// CPU, and handing each to a thread of its own cost more than the call.
/// A guest may run up to its deadline, though, and then every async worker
/// can be inside one; so the listener is served by a thread of its own,
/// `teller-front`, which accepts every connection, answers those that come
/// for `/healthz`, `/readyz` or `/metrics` (a kubelet's probe and a
/// scraper open one per request) and hands the rest to the async workers.
/// Probes therefore answer while guests run. (An engine whose calls may not
/// run on an async worker, wasmtime, gets [`Workers`], one per core.)
pub async fn serve(
    listener: TcpListener,
    teller: Arc<Teller>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared {
        ready: AtomicBool::new(true),
        slots: Arc::new(tokio::sync::Semaphore::new(limits.max_concurrency.max(1))),
        waiting: std::sync::atomic::AtomicUsize::new(0),
        limits,
        workers: match teller.decides_on_async_workers() {
            true => None,
            false => Some(Workers::per_core().map_err(|e| std::io::Error::other(e.to_string()))?),
        },
        teller,
    });
    let listener = listener.into_std()?;
    let workers = tokio::runtime::Handle::current();
    let (signal, signalled) = tokio::sync::oneshot::channel();
    let (finished, done) = tokio::sync::oneshot::channel();
    let front = {
        let shared = shared.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("teller-front".into())
            .spawn(move || {
                let served = runtime.block_on(front(listener, shared, workers, signalled));
                let _ = finished.send(served);
            })?
    };
    tokio::pin!(done);
    let served = tokio::select! {
        () = shutdown => {
            let _ = signal.send(());
            (&mut done).await
        }
        served = &mut done => served,
    };
    let _ = tokio::task::spawn_blocking(move || front.join()).await;
    served.unwrap_or_else(|_| Err(std::io::Error::other("the front thread stopped")))
}

/// The front thread's work: accept until `shutdown`, then drain.
async fn front(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    workers: tokio::runtime::Handle,
    shutdown: tokio::sync::oneshot::Receiver<()>,
) -> std::io::Result<()> {
    let listener = TcpListener::from_std(listener)?;
    let limits = shared.limits;
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
                let (shared, workers, watcher) = (shared.clone(), workers.clone(), graceful.watcher());
                tokio::spawn(async move {
                    match first_request(&stream, limits.client_timeout).await {
                        First::Probe => connection(stream, peer, shared, watcher).await,
                        First::Api => {
                            // Registered with the async workers' reactor, so
                            // that its reads and writes wake them directly.
                            let Ok(stream) = stream.into_std() else { return };
                            workers.spawn(async move {
                                if let Ok(stream) = tokio::net::TcpStream::from_std(stream) {
                                    connection(stream, peer, shared, watcher).await;
                                }
                            });
                        }
                        First::Nothing => {}
                    }
                });
            }
            _ = &mut shutdown, if !draining => {
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

/// What a new connection's first bytes ask for.
enum First {
    /// A probe or a metrics scrape: served on the front thread.
    Probe,
    /// Anything else, a request split before its path included: served
    /// by the async workers (which answer probes too).
    Api,
    /// Closed, or silent for the client timeout: dropped, as a silent
    /// client's connection always is.
    Nothing,
}

async fn first_request(stream: &tokio::net::TcpStream, timeout: Duration) -> First {
    const PROBES: [&[u8]; 3] = [b"GET /healthz", b"GET /readyz", b"GET /metrics"];
    let mut head = [0u8; 16];
    let n = match tokio::time::timeout(timeout, stream.peek(&mut head)).await {
        Ok(Ok(n)) if n > 0 => n,
        _ => return First::Nothing,
    };
    let head = head.get(..n).unwrap_or_default();
    let probe = PROBES.iter().any(|p| {
        head.strip_prefix(*p)
            .and_then(|rest| rest.first())
            .is_some_and(|b| *b == b' ' || *b == b'?')
    });
    if probe { First::Probe } else { First::Api }
}

/// Serves one connection with hyper on the runtime that polls it, until
/// it closes or a drain ends it. A slow or silent client is cut off after
/// the timeout, so it cannot hold a connection (and its memory) open.
async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let timeout = shared.limits.client_timeout;
    let service = service_fn(move |req| {
        let id = request_id(&req);
        let span = tracing::info_span!(
            "request",
            request_id = %id,
            decision_id = tracing::field::Empty
        );
        tracing::Instrument::instrument(handle(shared.clone(), peer, req, id), span)
    });
    let conn = http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(timeout)
        .max_buf_size(MAX_HEAD)
        .max_headers(MAX_HEADERS)
        .serve_connection(TokioIo::new(stream), service);
    let _ = watcher.watch(conn).await;
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
    // Decided here, on this async worker (see `serve`), unless the engine
    // needs threads of its own.
    let pending = match &shared.workers {
        None => contained(|| shared.teller.begin_check(&body, &caller))??,
        Some(workers) => {
            let (teller, span) = (shared.teller.clone(), tracing::Span::current());
            workers
                .run(move || {
                    let _in_span = span.enter();
                    teller.begin_check(&body, &caller)
                })
                .await??
        }
    };
    if !pending.awaits_record() {
        drop(slot);
        return finish(&shared, pending).await;
    }
    // The wait for the record in a task of its own, so that a client that
    // goes away (hyper then drops this future) cannot cut it short: its
    // admission slot stays taken until the record is durable, and what an
    // allowed decision reserved is given back if the record fails.
    let span = tracing::Span::current();
    let recorded = tokio::spawn(tracing::Instrument::instrument(
        async move {
            let answer = finish(&shared, pending).await;
            drop(slot);
            answer
        },
        span,
    ));
    recorded
        .await
        .map_err(|e| Error::internal(ErrorCode::Internal, format!("request task failed: {e}")))?
}

/// The answer once its record, if any, is durable.
async fn finish(shared: &Shared, pending: PendingCheck) -> Result<CheckResponse, Error> {
    match pending.durable().await {
        Ok(response) => Ok(response),
        Err(unrecorded) => {
            Err(contained(|| shared.teller.give_back(unrecorded)).unwrap_or_else(|e| e))
        }
    }
}

/// Runs `work` here; a panic in it is an internal error of this request,
/// and the worker goes on serving.
fn contained<T>(work: impl FnOnce() -> T) -> Result<T, Error> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
        .map_err(|_| Error::internal(ErrorCode::Internal, "a request's work panicked"))
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

/// Reads the body and runs `op`: here, as a decision runs, or, when it
/// waits for the audit log's `fsync`, on tokio's blocking pool.
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
        return contained(work)?;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Write;

    /// What the front thread makes of a connection whose client sent
    /// `sent` (and then nothing, or closed at once when `None`).
    async fn classify(sent: Option<&[u8]>) -> First {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        match sent {
            Some(bytes) => client.write_all(bytes).unwrap(),
            None => drop(client.shutdown(std::net::Shutdown::Write)),
        }
        let (server, _) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let server = tokio::net::TcpStream::from_std(server).unwrap();
        let first = first_request(&server, Duration::from_millis(200)).await;
        drop(client);
        first
    }

    #[tokio::test(flavor = "current_thread")]
    async fn probes_and_scrapes_stay_on_the_front_thread_and_the_rest_goes_to_the_workers() {
        for probe in [
            &b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"GET /readyz HTTP/1.1\r\n\r\n",
            b"GET /metrics?x=1 HTTP/1.1\r\n\r\n",
        ] {
            assert!(matches!(classify(Some(probe)).await, First::Probe));
        }
        for api in [
            &b"POST /v1/transfer/check HTTP/1.1\r\n\r\n"[..],
            b"GET /healthzz HTTP/1.1\r\n\r\n",
            b"POST /healthz HTTP/1.1\r\n\r\n",
            // Split before the path ended: the workers answer probes too.
            b"GET /heal",
        ] {
            assert!(matches!(classify(Some(api)).await, First::Api));
        }
        // Closed before a byte, or silent past the timeout: dropped.
        assert!(matches!(classify(None).await, First::Nothing));
        assert!(matches!(classify(Some(b"")).await, First::Nothing));
    }
}
