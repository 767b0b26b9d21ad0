//! `TestReceiver`: the intake system's callback endpoint in a test (svix's
//! `tests/it/utils` model). A tiny axum server on port 0 that answers with a
//! status the test can switch, keeps every callback it got and forwards each
//! over a channel.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use tokio::sync::mpsc;

/// One callback as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub webhook_id: String,
    /// The body as JSON (`Null` when it is not JSON).
    pub body: Value,
    /// What the receiver answered.
    pub status: StatusCode,
}

impl Received {
    pub fn accepted(&self) -> bool {
        self.status.is_success()
    }
}

/// How a receiver verifies and fails callbacks; the default accepts all.
#[derive(Debug, Clone, Default)]
pub struct ReceiverOptions {
    /// Secrets each signature is checked against, with the reference
    /// Standard Webhooks implementation; every failed check is counted.
    pub secrets: Vec<String>,
    /// A callback failing a check is answered 401, neither kept nor counted.
    pub reject_bad_signatures: bool,
    /// `(n, status)`: every n-th callback is answered `status`.
    pub fail_every: Option<(u64, StatusCode)>,
}

#[derive(Clone)]
pub struct TestReceiver {
    pub addr: SocketAddr,
    options: Arc<ReceiverOptions>,
    status: Arc<AtomicU16>,
    count: Arc<AtomicU64>,
    bad_signatures: Arc<AtomicU64>,
    seen: Arc<Mutex<Vec<Received>>>,
    tx: mpsc::UnboundedSender<Received>,
    rx: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Received>>>,
}

async fn receive(State(r): State<TestReceiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut verified = true;
    for secret in &r.options.secrets {
        let wh = standardwebhooks::Webhook::new(secret).unwrap();
        if wh.verify(&body, &headers).is_err() {
            r.bad_signatures.fetch_add(1, Ordering::SeqCst);
            verified = false;
        }
    }
    if !verified && r.options.reject_bad_signatures {
        return StatusCode::UNAUTHORIZED;
    }
    let n = r.count.fetch_add(1, Ordering::SeqCst) + 1;
    let mut status = StatusCode::from_u16(r.status.load(Ordering::SeqCst)).unwrap();
    if let Some((every, failure)) = r.options.fail_every
        && status.is_success()
        && n % every == 0
    {
        status = failure;
    }
    let received = Received {
        webhook_id: headers["webhook-id"].to_str().unwrap().to_owned(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        status,
    };
    r.seen.lock().unwrap().push(received.clone());
    let _ = r.tx.send(received);
    status
}

impl TestReceiver {
    /// A receiver that accepts every callback (204).
    pub async fn start() -> Self {
        Self::start_with(ReceiverOptions::default()).await
    }

    pub async fn start_with(options: ReceiverOptions) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let r = TestReceiver {
            addr: listener.local_addr().unwrap(),
            options: Arc::new(options),
            status: Arc::new(AtomicU16::new(StatusCode::NO_CONTENT.as_u16())),
            count: Arc::default(),
            bad_signatures: Arc::default(),
            seen: Arc::default(),
            tx,
            rx: Arc::new(tokio::sync::Mutex::new(rx)),
        };
        let app = axum::Router::new()
            .route("/callback", axum::routing::post(receive))
            .with_state(r.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        r
    }

    /// The callback URL to configure.
    pub fn url(&self) -> String {
        format!("http://{}/callback", self.addr)
    }

    /// What every callback from now on is answered (204 to start with).
    pub fn set_status(&self, status: StatusCode) {
        self.status.store(status.as_u16(), Ordering::SeqCst);
    }

    /// Callbacks received with a signature that any secret failed to verify.
    pub fn bad_signatures(&self) -> u64 {
        self.bad_signatures.load(Ordering::SeqCst)
    }

    /// Callbacks received and checked (rejected signatures aside).
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }

    /// Every callback received, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }

    /// The accepted callbacks, in arrival order.
    pub fn accepted(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.accepted())
            .collect()
    }

    /// The next callback not yet taken from the channel, if one comes
    /// `within`.
    pub async fn next(&self, within: Duration) -> Option<Received> {
        let mut rx = self.rx.lock().await;
        tokio::time::timeout(within, rx.recv()).await.ok().flatten()
    }
}
