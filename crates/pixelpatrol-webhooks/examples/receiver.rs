//! A PixelPatrol webhook receiver: what the documentation's express handler
//! does, plus replay protection and idempotent handling by event id.
//!
//! ```sh
//! WEBHOOK_SECRET=whsec_... cargo run -p pixelpatrol-webhooks --example receiver
//! ```
//! then point an endpoint at `http://127.0.0.1:3000/webhooks/pixel-patrol`
//! (plain http and loopback need `pixelpatrol serve --dev`).

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use pixelpatrol_webhooks::{EventType, MediaModerated, Verifier, WebhookHeaders};

/// Remembers the most recent event ids, so a redelivered event (delivery is
/// at-least-once) is acknowledged without being handled twice. A real
/// application would keep this in its database, in the same transaction as
/// the event's effect.
struct SeenEvents {
    ids: HashSet<String>,
    order: VecDeque<String>,
    capacity: usize,
}

impl SeenEvents {
    /// True the first time an id is seen.
    fn first_time(&mut self, id: &str) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.ids.remove(&oldest);
        }
        self.ids.insert(id.to_string());
        self.order.push_back(id.to_string());
        true
    }
}

struct Receiver {
    verifier: Verifier,
    seen: Mutex<SeenEvents>,
}

async fn handle(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let headers = WebhookHeaders::from_fn(|name| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_string)
    });
    let event = match receiver.verifier.verify_event(&headers, &body) {
        Ok(event) => event,
        Err(error) => {
            eprintln!("rejected: {error}");
            return (StatusCode::UNAUTHORIZED, "Invalid signature");
        }
    };
    if !receiver.seen.lock().unwrap().first_time(&event.id) {
        return (StatusCode::OK, "OK (duplicate)");
    }
    // Acknowledge quickly; heavy work belongs in a queue of your own.
    match event.event_type() {
        Ok(EventType::MediaModerated) => match event.data_as::<MediaModerated>() {
            Ok(data) => println!("media {} is {}", data.media_id, data.status),
            Err(error) => eprintln!("unexpected media.moderated data: {error}"),
        },
        Ok(EventType::MediaCreated) => println!("media submitted: {}", event.data["media_id"]),
        Ok(EventType::TestWebhook) => println!("Test webhook received"),
        Ok(alert) => println!("operator alert {alert}: {}", event.data),
        Err(unknown) => println!("ignoring {unknown}"),
    }
    (StatusCode::OK, "OK")
}

#[tokio::main]
async fn main() {
    let secret = std::env::var("WEBHOOK_SECRET").expect("set WEBHOOK_SECRET");
    let receiver = Arc::new(Receiver {
        verifier: Verifier::new(secret),
        seen: Mutex::new(SeenEvents {
            ids: HashSet::new(),
            order: VecDeque::new(),
            capacity: 100_000,
        }),
    });
    let app = Router::new()
        .route("/webhooks/pixel-patrol", post(handle))
        .with_state(receiver);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000")
        .await
        .unwrap();
    println!("listening on http://127.0.0.1:3000/webhooks/pixel-patrol");
    axum::serve(listener, app).await.unwrap();
}
