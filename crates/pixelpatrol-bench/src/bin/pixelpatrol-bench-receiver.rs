//! The benchmark's webhook receiver: a separate process (so that its work is
//! not billed to the server), hyper with keep-alive, answering `/e/{index}`
//! for endpoint `index`. It verifies every signature (PixelPatrol's scheme,
//! or in `--peer` runs the peer's `svix-*` headers), counts duplicates,
//! measures end-to-end latency from the submission time the benchmark put in
//! the media metadata, and checks delivery order. Its behaviour per endpoint
//! is set through `POST /control`; `GET /stats` reports, `POST /reset` clears.
//!
//! Prints `listening <port>` on its first line of output.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use pixelpatrol_bench::{Control, Mode, ReceiverStats, secret_for, svix_secret_for};
use serde_json::Value;

#[derive(Default)]
struct Lane {
    in_flight: bool,
    /// The event whose last attempt failed: in an ordered lane, the next
    /// request must be that event again.
    failed: Option<String>,
    created_acknowledged: bool,
}

struct Inner {
    control: Control,
    requests: u64,
    delivered: u64,
    duplicates: u64,
    bad_signatures: u64,
    injected_failures: u64,
    order_violations: u64,
    violation_examples: Vec<String>,
    acknowledged: HashSet<u64>,
    latency_us: Histogram<u64>,
    first_receipt_us: Option<u64>,
    last_receipt_us: Option<u64>,
    lanes: HashMap<(u32, String), Lane>,
}

impl Inner {
    fn new(control: Control) -> Self {
        Inner {
            control,
            requests: 0,
            delivered: 0,
            duplicates: 0,
            bad_signatures: 0,
            injected_failures: 0,
            order_violations: 0,
            violation_examples: Vec::new(),
            acknowledged: HashSet::new(),
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap(),
            first_receipt_us: None,
            last_receipt_us: None,
            lanes: HashMap::new(),
        }
    }

    fn violation(&mut self, what: String) {
        self.order_violations += 1;
        if self.violation_examples.len() < 10 {
            self.violation_examples.push(what);
        }
    }

    fn stats(&self) -> ReceiverStats {
        let percentile = |q: f64| {
            if self.latency_us.is_empty() {
                0
            } else {
                self.latency_us.value_at_quantile(q)
            }
        };
        ReceiverStats {
            requests: self.requests,
            delivered: self.delivered,
            duplicates: self.duplicates,
            bad_signatures: self.bad_signatures,
            injected_failures: self.injected_failures,
            order_violations: self.order_violations,
            violation_examples: self.violation_examples.clone(),
            latency_count: self.latency_us.len(),
            latency_p50_us: percentile(0.50),
            latency_p90_us: percentile(0.90),
            latency_p99_us: percentile(0.99),
            latency_p999_us: percentile(0.999),
            latency_max_us: self.latency_us.max(),
            first_receipt_us: self.first_receipt_us,
            last_receipt_us: self.last_receipt_us,
        }
    }
}

type Shared = Arc<Mutex<Inner>>;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

fn delivery_key(event_id: &str, endpoint: u32) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    event_id.hash(&mut hasher);
    endpoint.hash(&mut hasher);
    hasher.finish()
}

async fn handle(shared: Shared, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    match (request.method().as_str(), path.as_str()) {
        ("GET", "/stats") => {
            let stats = shared.lock().unwrap().stats();
            return reply(StatusCode::OK, serde_json::to_vec(&stats).unwrap());
        }
        ("POST", "/reset") => {
            let mut inner = shared.lock().unwrap();
            let control = inner.control.clone();
            *inner = Inner::new(control);
            return reply(StatusCode::OK, "reset");
        }
        ("POST", "/control") => {
            let body = request.into_body().collect().await.unwrap().to_bytes();
            return match serde_json::from_slice::<Control>(&body) {
                Ok(control) => {
                    shared.lock().unwrap().control = control;
                    reply(StatusCode::OK, "ok")
                }
                Err(error) => reply(StatusCode::BAD_REQUEST, error.to_string()),
            };
        }
        _ => {}
    }
    let Some(endpoint) = path
        .strip_prefix("/e/")
        .and_then(|index| index.parse::<u32>().ok())
    else {
        return reply(StatusCode::NOT_FOUND, "unknown path");
    };
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string)
    };
    let signature = header(pixelpatrol_webhooks::SIGNATURE_HEADER);
    let svix = (
        header("svix-id"),
        header("svix-timestamp"),
        header("svix-signature"),
    );
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return reply(StatusCode::BAD_REQUEST, "body"),
    };
    let arrived_us = now_us();
    let signed = match (signature, svix) {
        (Some(signature), _) => {
            pixelpatrol_webhooks::verify_pixelpatrol(&secret_for(endpoint), &body, &signature)
                .is_ok()
        }
        (None, (Some(id), Some(timestamp), Some(signature))) => {
            timestamp.parse::<i64>().ok().is_some_and(|timestamp| {
                pixelpatrol_webhooks::verify_standard_signature(
                    &svix_secret_for(endpoint),
                    &id,
                    timestamp,
                    &body,
                    &signature,
                )
                .is_ok()
            })
        }
        _ => false,
    };
    let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let event_id = event["id"].as_str().unwrap_or_default().to_string();
    let event_name = event["event"].as_str().unwrap_or_default().to_string();
    let media_id = event["data"]["media_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let submitted_us = event["data"]["metadata"]["t"].as_u64();

    let (mode, hold, check_order, strict, lane_key) = {
        let mut inner = shared.lock().unwrap();
        inner.requests += 1;
        if !signed {
            inner.bad_signatures += 1;
            return reply(StatusCode::UNAUTHORIZED, "bad signature");
        }
        let control = &inner.control;
        let mode = control.mode_of(endpoint);
        let hold = Duration::from_millis(control.hold_ms);
        let check_order = control.check_order;
        let strict = control.strict.contains(&endpoint);
        // A strict endpoint is one lane; otherwise each media item is.
        let lane_key = (
            endpoint,
            if strict {
                String::new()
            } else {
                media_id.clone()
            },
        );
        if check_order {
            let lane = inner.lanes.entry(lane_key.clone()).or_default();
            let mut problems = Vec::new();
            if lane.in_flight {
                problems.push(format!(
                    "endpoint {endpoint}: two requests in flight in one lane ({event_id})"
                ));
            }
            if let Some(failed) = &lane.failed
                && *failed != event_id
            {
                problems.push(format!(
                    "endpoint {endpoint}: {event_id} sent while {failed} had not succeeded"
                ));
            }
            lane.in_flight = true;
            for problem in problems {
                inner.violation(problem);
            }
        }
        (mode, hold, check_order, strict, lane_key)
    };

    let status = match mode {
        Mode::Ok => StatusCode::OK,
        Mode::Fail => StatusCode::INTERNAL_SERVER_ERROR,
        Mode::Down => StatusCode::SERVICE_UNAVAILABLE,
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK
        }
        Mode::Flaky(rate) => {
            if rand::random::<f64>() < rate {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::OK
            }
        }
    };
    if !hold.is_zero() {
        tokio::time::sleep(hold).await;
    }

    let mut inner = shared.lock().unwrap();
    let success = status.is_success();
    if matches!(mode, Mode::Flaky(_)) && !success {
        inner.injected_failures += 1;
    }
    if check_order {
        let lane = inner.lanes.entry(lane_key).or_default();
        lane.in_flight = false;
        let mut problem = None;
        if success {
            lane.failed = None;
            if event_name == "media.created" {
                lane.created_acknowledged = true;
            } else if event_name == "media.moderated" && !strict && !lane.created_acknowledged {
                problem = Some(format!(
                    "endpoint {endpoint}: media.moderated of {media_id} acknowledged before media.created"
                ));
            }
        } else {
            lane.failed = Some(event_id.clone());
        }
        if let Some(problem) = problem {
            inner.violation(problem);
        }
    }
    if success {
        if inner.acknowledged.insert(delivery_key(&event_id, endpoint)) {
            inner.delivered += 1;
            if let Some(submitted) = submitted_us {
                let latency = arrived_us.saturating_sub(submitted).max(1);
                let _ = inner.latency_us.record(latency);
            }
        } else {
            inner.duplicates += 1;
        }
        inner.first_receipt_us.get_or_insert(arrived_us);
        inner.last_receipt_us = Some(arrived_us);
    }
    reply(status, "ok")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .map(|port| port.parse())
        .transpose()?
        .unwrap_or(0);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening {}", listener.local_addr()?.port());
    let shared: Shared = Arc::new(Mutex::new(Inner::new(Control::default())));
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(shared, request).await) }
            });
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
