//! The native floor for `bench http`: the built-in rule compiled into the
//! server, behind the same stack as `teller serve` (hyper 1 on a tokio
//! runtime with a worker per core, serde on both ends), answering the same
//! JSON. No wasm, no audit log, no worker-thread hop, no metrics or logs:
//! what an HTTP decision costs on this machine before teller adds anything.

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::io::Write;
use teller_contract::{Error, PolicyConfig};
use teller_server::service::{CheckResponse, PolicyOutcomeBody, PolicyRefBody, ReasonBody};

/// A request body's limit, as `teller serve`'s.
const MAX_BODY: usize = 64 * 1024;

/// Serves on `listen` until killed; prints `listening on http://ADDR` first,
/// as `teller serve` does.
pub fn serve(listen: &str) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| crate::run_error("tokio", e))?;
    let config = teller_server::config::Config::default().policy_config();
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| crate::run_error("the floor's listener", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| crate::run_error("the floor's listener", e))?;
        println!("listening on http://{addr} (native floor)");
        let _ = std::io::stdout().flush();
        let config = std::sync::Arc::new(config);
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let config = config.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let config = config.clone();
                    async move { Ok::<_, Infallible>(answer(&config, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

async fn answer(config: &PolicyConfig, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::POST || req.uri().path() != "/v1/transfer/check" {
        return json(
            StatusCode::NOT_FOUND,
            r#"{"error":{"code":"not_found"}}"#.into(),
        );
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return json(
                StatusCode::BAD_REQUEST,
                r#"{"error":{"code":"body_unreadable"}}"#.into(),
            );
        }
    };
    let request = match teller_contract::decode_transfer(&body) {
        Ok(request) => request,
        Err(e) => return json(StatusCode::BAD_REQUEST, e.to_json()),
    };
    let decision = teller_transfer_rule::decide(config, &request);
    let policy = PolicyRefBody {
        name: "transfer-check".into(),
        version: "native".into(),
        sha256: String::new(),
    };
    let response = CheckResponse {
        decision_id: uuid::Uuid::now_v7().to_string(),
        allow: decision.allow,
        deny: decision.deny,
        verdict: decision.verdict.as_str(),
        reasons: decision.reasons.into_iter().map(ReasonBody::from).collect(),
        policies: vec![PolicyOutcomeBody {
            name: policy.name.clone(),
            version: policy.version.clone(),
            sha256: policy.sha256.clone(),
            allow: decision.allow,
            deny: decision.deny,
            verdict: decision.verdict.as_str(),
        }],
        policy,
        engine: "native",
        audit: None,
    };
    match serde_json::to_string(&response) {
        Ok(body) => json(StatusCode::OK, body),
        Err(_) => json(StatusCode::INTERNAL_SERVER_ERROR, String::new()),
    }
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}
