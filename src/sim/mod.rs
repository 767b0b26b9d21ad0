//! A Vietnam Post simulator: MyVNPost's side of vnpost-api.md, in memory,
//! with status walks, status webhooks and injected faults. Used by tests, the
//! demo and `bcci-gateway postal-sim`.
//!
//! It answers at the root of its address (`http://ADDR/CreateOrder`), so its
//! base URL is `postal.base_url`. Personal data from orders is only ever
//! answered masked (getOrder) and never logged. Everything random comes from
//! one RNG seeded from [`SimConfig::seed`].

pub mod cli;
mod faults;
mod orders;
mod routes;
mod sequences;
mod server;
mod state;
mod validate;
mod walker;
mod webhooks;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use self::faults::{Faults, SimStats};
pub use self::orders::{OrderSnapshot, StatusStep};
pub use self::sequences::{
    SEQUENCES, Sequence, expected_final_status, sequence, sequence_names, status_name,
};
use self::state::Shared;

/// The login the simulator accepts.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// How the simulator behaves.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Where to listen; port 0 picks a free one. Default `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// The only login accepted; `None` (default) accepts any.
    pub credentials: Option<Credentials>,
    /// The only `customerCode` accepted; `None` (default) accepts any.
    pub customer_code: Option<String>,
    /// Accepted `serviceCode`s. Default `CTN009`, `ETN011`, `ETN013`.
    pub service_codes: Vec<String>,
    /// Where status webhooks are posted; `None` (default) posts none.
    pub webhook_url: Option<String>,
    /// Time between two status steps of an order. Default 1 s.
    pub step_interval: Duration,
    /// How long after creation an order appears in GetListOrder. Default 0.
    pub list_lag: Duration,
    /// Relative weights of the status walks for orders without a
    /// `[sim:<walk>]` marker. Default: mostly `delivered`, some of each other.
    pub sequence_weights: Vec<(String, u32)>,
    /// Share of orders whose cancellation needs approval ("02"); the marker
    /// `[sim:cancel_approval]` asks for it too. Default 0.
    pub cancel_approval_rate: f64,
    /// First wait before a failed webhook POST is sent again; doubles up to
    /// `webhook_retry_max`. Default 500 ms and 30 s.
    pub webhook_retry_initial: Duration,
    pub webhook_retry_max: Duration,
    /// Seed of the RNG. Default 1.
    pub seed: u64,
    /// Faults at start (see [`SimHandle::set_faults`]). Default none.
    pub faults: Faults,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            credentials: None,
            customer_code: None,
            service_codes: ["CTN009", "ETN011", "ETN013"].map(String::from).to_vec(),
            webhook_url: None,
            step_interval: Duration::from_secs(1),
            list_lag: Duration::ZERO,
            sequence_weights: [
                ("delivered", 70),
                ("pickup_retry", 8),
                ("pickup_failed", 4),
                ("return_to_sender", 8),
                ("partial", 4),
                ("cancelled_by_carrier", 6),
            ]
            .map(|(name, weight)| (name.to_owned(), weight))
            .to_vec(),
            cancel_approval_rate: 0.0,
            webhook_retry_initial: Duration::from_millis(500),
            webhook_retry_max: Duration::from_secs(30),
            seed: 1,
            faults: Faults::default(),
        }
    }
}

impl SimConfig {
    fn check(&self) -> anyhow::Result<()> {
        if let Some((name, _)) = self
            .sequence_weights
            .iter()
            .find(|(name, _)| sequence(name).is_none())
        {
            anyhow::bail!(
                "no simulated status walk is named {name:?} (known: {})",
                sequence_names().join(", ")
            );
        }
        if self.step_interval.is_zero() {
            anyhow::bail!("the step interval must be above zero");
        }
        if !(0.0..=1.0).contains(&self.cancel_approval_rate) {
            anyhow::bail!("cancel_approval_rate must be between 0.0 and 1.0");
        }
        self.faults.check().map_err(anyhow::Error::msg)
    }
}

/// The Vietnam Post simulator.
pub struct Simulator;

impl Simulator {
    /// Binds `config.listen` and starts the server, the status walker and,
    /// when a webhook URL is set, the webhook sender.
    #[tracing::instrument(skip_all)]
    pub async fn start(config: SimConfig) -> anyhow::Result<SimHandle> {
        config.check()?;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding the postal simulator to {}", config.listen))?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let (webhook_tx, webhook_rx) = match &config.webhook_url {
            Some(_) => {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let shared = Arc::new(Shared::new(config, webhook_tx));
        let mut tasks = Vec::new();
        let app = routes::router(shared.clone());
        let server_stop = stop.clone();
        tasks.push(tokio::spawn(server::serve(listener, app, server_stop)));
        tasks.push(tokio::spawn(walker::run(shared.clone(), stop.clone())));
        if let Some(rx) = webhook_rx {
            tasks.push(tokio::spawn(webhooks::run(
                shared.clone(),
                rx,
                stop.clone(),
            )));
        }
        tracing::debug!(%addr, "postal simulator started");
        Ok(SimHandle {
            addr,
            shared,
            stop,
            tasks,
        })
    }
}

/// A running simulator. Dropping it stops it; [`SimHandle::shutdown`] also
/// waits for it to stop.
pub struct SimHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl SimHandle {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL (`http://ADDR`, no trailing slash), for `postal.base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every order, in creation order.
    pub fn orders(&self) -> Vec<OrderSnapshot> {
        self.shared.book().snapshots(|_| true)
    }

    /// The orders created with this `saleOrderCode` (more than one when it
    /// was created twice).
    pub fn orders_for(&self, sale_order_code: &str) -> Vec<OrderSnapshot> {
        self.shared
            .book()
            .snapshots(|o| o.sale_order_code == sale_order_code)
    }

    /// Replaces the faults; out-of-range values are brought into range.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.set_faults(faults);
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        self.shared.faults()
    }

    /// What it has done so far.
    pub fn stats(&self) -> SimStats {
        self.shared.stats()
    }

    /// Stops serving, walking and sending, and waits for it.
    #[tracing::instrument(skip_all)]
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
