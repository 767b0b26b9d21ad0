//! `bcci-gateway postal-sim`: the simulator alone, its faults from flags.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use super::{Credentials, Faults, SimConfig, Simulator};
use crate::config::LogSettings;
use crate::telemetry::logging;

/// The arguments of `postal-sim`.
#[derive(clap::Args)]
pub struct Args {
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Where status webhooks are posted (none when absent).
    #[arg(long, value_name = "URL")]
    pub webhook_url: Option<String>,
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    pub error_rate: f64,
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    pub rate_limit_rate: f64,
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    pub lost_answer_rate: f64,
    /// Reset the connection once a request is read, before any answer byte.
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    pub reset_rate: f64,
    /// Write an answer's status line and headers, then close.
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    pub half_answer_rate: f64,
    /// Answer normally but `--slow-answer-ms` late.
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    pub slow_answer_rate: f64,
    #[arg(long, value_name = "N", default_value_t = 3000)]
    pub slow_answer_ms: u64,
    /// Answer 200 with an HTML page instead of JSON.
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    pub garbage_answer_rate: f64,
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub latency_ms: u64,
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub latency_jitter_ms: u64,
    #[arg(long, value_name = "N", default_value_t = 3600)]
    pub token_ttl_s: u64,
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    pub duplicate_webhook_rate: f64,
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    pub reorder_webhook_rate: f64,
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    pub key_variant_rate: f64,
    /// Most records in one webhook POST.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub batch_size: usize,
    #[arg(long)]
    pub no_webhooks: bool,
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub step_interval_ms: u64,
    /// How long a new order stays out of GetListOrder.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub list_lag_ms: u64,
    /// Most of a random extra delay, per order, on top of `--list-lag-ms`.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub listing_delay_ms: u64,
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,
    /// The only login accepted (any when absent).
    #[arg(long, value_name = "U", requires = "password")]
    pub username: Option<String>,
    #[arg(long, value_name = "P", requires = "username")]
    pub password: Option<String>,
}

impl Args {
    /// The simulator's configuration these flags describe.
    fn config(self) -> SimConfig {
        let faults = Faults {
            error_rate: self.error_rate,
            rate_limit_rate: self.rate_limit_rate,
            latency_ms: self.latency_ms,
            latency_jitter_ms: self.latency_jitter_ms,
            lost_answer_rate: self.lost_answer_rate,
            reset_rate: self.reset_rate,
            half_answer_rate: self.half_answer_rate,
            slow_answer_rate: self.slow_answer_rate,
            slow_answer_ms: self.slow_answer_ms,
            garbage_answer_rate: self.garbage_answer_rate,
            listing_delay_ms: self.listing_delay_ms,
            token_ttl_ms: self.token_ttl_s.saturating_mul(1000),
            duplicate_webhook_rate: self.duplicate_webhook_rate,
            reorder_webhook_rate: self.reorder_webhook_rate,
            key_variant_rate: self.key_variant_rate,
            batch_size: self.batch_size,
            webhooks_enabled: !self.no_webhooks,
        };
        SimConfig {
            listen: self.listen,
            credentials: self
                .username
                .zip(self.password)
                .map(|(username, password)| Credentials { username, password }),
            webhook_url: self.webhook_url,
            step_interval: Duration::from_millis(self.step_interval_ms),
            list_lag: Duration::from_millis(self.list_lag_ms),
            seed: self.seed,
            faults,
            ..SimConfig::default()
        }
    }
}

/// Runs the simulator until SIGTERM or Ctrl-C; prints its base URL first.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    logging::init(&LogSettings::default());
    let sim = Simulator::start(args.config()).await?;
    // Tests read the base URL from the first line.
    println!("{}", sim.base_url());
    crate::lifecycle::shutdown_signal().await;
    sim.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
