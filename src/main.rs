//! The `bcci-gateway` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};

use bcci_gateway::app::Application;
use bcci_gateway::config::{LogSettings, Settings};
use bcci_gateway::sim::{Credentials, Faults, SimConfig, Simulator};
use bcci_gateway::telemetry::logging;

#[derive(Parser)]
#[command(
    name = "bcci-gateway",
    version,
    about = "Dossier handoffs between one-stop-shop intake systems and Vietnam Post (BCCI)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway with a simulated Vietnam Post and intake system, no setup.
    Demo {
        /// Exit after this long (e.g. `90s`, `5m`): 0 if every sample ended as expected.
        #[arg(long = "for", value_name = "DURATION")]
        run_for: Option<jiff::SignedDuration>,
    },
    /// Run the gateway: intake API, webhook receiver, workers, admin API, metrics.
    Serve {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Apply the store's migrations and exit.
    Migrate {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Validate the configuration and print it with secrets redacted.
    CheckConfig {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Exit 0 when /readyz answers 200 (for container HEALTHCHECK). Without
    /// --url, asks the admin listener the configuration names
    /// (`server.admin_listen`, from --config and `BCCI_SERVER__ADMIN_LISTEN`).
    Healthcheck {
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        #[arg(long, value_name = "FILE", conflicts_with = "url")]
        config: Option<PathBuf>,
    },
    /// Run the Vietnam Post simulator alone, with fault injection; prints its
    /// base URL as the first line.
    PostalSim {
        #[arg(long, value_name = "ADDR")]
        listen: SocketAddr,
        /// Where status webhooks are posted (none when absent).
        #[arg(long, value_name = "URL")]
        webhook_url: Option<String>,
        #[arg(long, value_name = "F", default_value_t = 0.0)]
        error_rate: f64,
        #[arg(long, value_name = "F", default_value_t = 0.0)]
        rate_limit_rate: f64,
        #[arg(long, value_name = "F", default_value_t = 0.0)]
        lost_answer_rate: f64,
        /// Reset the connection once a request is read, before any answer byte.
        #[arg(long, value_name = "F", default_value_t = 0.0)]
        reset_rate: f64,
        /// Write an answer's status line and headers, then close.
        #[arg(long, value_name = "F", default_value_t = 0.0)]
        half_answer_rate: f64,
        /// Answer normally but `--slow-answer-ms` late.
        #[arg(long, value_name = "F", default_value_t = 0.0)]
        slow_answer_rate: f64,
        #[arg(long, value_name = "N", default_value_t = 3000)]
        slow_answer_ms: u64,
        /// Answer 200 with an HTML page instead of JSON.
        #[arg(long, value_name = "F", default_value_t = 0.0)]
        garbage_answer_rate: f64,
        #[arg(long, value_name = "N", default_value_t = 0)]
        latency_ms: u64,
        #[arg(long, value_name = "N", default_value_t = 0)]
        latency_jitter_ms: u64,
        #[arg(long, value_name = "N", default_value_t = 3600)]
        token_ttl_s: u64,
        #[arg(long, value_name = "F", default_value_t = 0.0)]
        duplicate_webhook_rate: f64,
        #[arg(long, value_name = "F", default_value_t = 0.0)]
        reorder_webhook_rate: f64,
        #[arg(long, value_name = "F", default_value_t = 0.0)]
        key_variant_rate: f64,
        /// Most records in one webhook POST.
        #[arg(long, value_name = "N", default_value_t = 1)]
        batch_size: usize,
        #[arg(long)]
        no_webhooks: bool,
        #[arg(long, value_name = "N", default_value_t = 1000)]
        step_interval_ms: u64,
        /// How long a new order stays out of GetListOrder.
        #[arg(long, value_name = "N", default_value_t = 0)]
        list_lag_ms: u64,
        /// Most of a random extra delay, per order, on top of `--list-lag-ms`.
        #[arg(long, value_name = "N", default_value_t = 0)]
        listing_delay_ms: u64,
        #[arg(long, value_name = "N", default_value_t = 1)]
        seed: u64,
        /// The only login accepted (any when absent).
        #[arg(long, value_name = "U", requires = "password")]
        username: Option<String>,
        #[arg(long, value_name = "P", requires = "username")]
        password: Option<String>,
    },
    /// Operator actions. `handoffs`, `callbacks` and `stats` work on the store
    /// directly: with SQLite (one process only) run them while the gateway is
    /// stopped; while it runs, use the admin API.
    Admin {
        /// The configuration naming the store (else the environment alone).
        #[arg(long, value_name = "FILE", global = true)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        action: AdminAction,
    },
}

#[derive(Subcommand)]
enum AdminAction {
    /// Tokens for intake clients and operators.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Search, show, replay, resolve and erase handoffs (gateway stopped, with SQLite).
    Handoffs {
        #[command(subcommand)]
        action: HandoffsAction,
    },
    /// Dead and held callbacks and their replay (gateway stopped, with SQLite).
    Callbacks {
        #[command(subcommand)]
        action: CallbacksAction,
    },
    /// Statistics per client, agency and kind over Vietnam dates of creation
    /// (gateway stopped, with SQLite).
    Stats {
        #[arg(long, value_name = "YYYY-MM-DD")]
        from: String,
        #[arg(long, value_name = "YYYY-MM-DD")]
        to: String,
        /// CSV with the contract's header instead of JSON lines.
        #[arg(long)]
        csv: bool,
    },
}

#[derive(Subcommand)]
enum HandoffsAction {
    /// Handoffs across clients, newest first, as JSON lines.
    List {
        #[arg(long, value_name = "S")]
        status: Option<String>,
        #[arg(long, value_name = "D")]
        dossier_code: Option<String>,
        #[arg(long, value_name = "T")]
        tracking_number: Option<String>,
        #[arg(long, value_name = "C")]
        client: Option<String>,
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: u32,
    },
    /// One handoff with its timeline.
    Show { id: String },
    /// Send a failed handoff back to received; its create job begins with a lookup.
    Replay {
        id: String,
        #[arg(long, value_name = "NAME")]
        operator: String,
    },
    /// Close a partially_delivered handoff as delivered or returned.
    Resolve {
        id: String,
        #[arg(long, value_name = "delivered|returned")]
        status: String,
        #[arg(long, value_name = "TEXT")]
        note: Option<String>,
        #[arg(long, value_name = "NAME")]
        operator: String,
    },
    /// Erase the handoff's personal data now.
    Erase {
        id: String,
        #[arg(long, value_name = "NAME")]
        operator: String,
    },
}

#[derive(Subcommand)]
enum CallbacksAction {
    /// Dead callbacks, or those held behind one, as JSON lines.
    List {
        #[arg(long, value_name = "dead|held")]
        state: String,
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: u32,
    },
    /// Replay one dead callback, or all of them.
    Replay {
        /// The callback's id (its `webhook-id`).
        #[arg(required_unless_present = "all_dead", conflicts_with = "all_dead")]
        id: Option<String>,
        /// Replay every dead callback.
        #[arg(long)]
        all_dead: bool,
        #[arg(long, value_name = "NAME")]
        operator: String,
    },
}

#[derive(Subcommand)]
enum TokenAction {
    /// Print a random 32-byte token and its SHA-256 (for *.token_sha256s).
    New,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bcci-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config } => {
            let settings = Settings::load(config.as_deref())?;
            logging::init(&settings.log);
            let app = Application::build(settings).await?;
            let lifecycle = app.lifecycle();
            tokio::spawn(async move {
                shutdown_signal().await;
                lifecycle.drain();
            });
            app.run_until_stopped().await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { config } => {
            let settings = Settings::load(config.as_deref())?;
            logging::init(&settings.log);
            let store = bcci_gateway::store::open(&settings.store.url, &settings.store).await?;
            store.close().await;
            println!("migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { config } => {
            let settings = Settings::load(config.as_deref())?;
            print!("{}", settings.redacted_toml());
            if let Some(path) = &config {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                for key in Settings::secrets_in_file(&text) {
                    eprintln!(
                        "warning: {key} is kept in the file; prefer the environment (BCCI_…__…)"
                    );
                }
            }
            let calendar = bcci_gateway::events::sla_rules(&settings).calendar;
            let today = jiff::Zoned::now()
                .with_time_zone(bcci_gateway::domain::time::vietnam())
                .date();
            // The statutory holidays are computed for every year; only the
            // decreed swaps can run out.
            if let Some(last) = calendar.last_day()
                && (last - today).get_days() < 60
            {
                eprintln!(
                    "warning: the decreed days in [calendar] end on {last}, within 60 days: add next year's decreed days off and make-up days, if any, to [calendar]"
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { run_for } => {
            let run_for = run_for
                .map(|d| std::time::Duration::try_from(d).context("--for must be positive"))
                .transpose()?;
            let ok = bcci_gateway::demo::run(run_for).await?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Healthcheck { url, config } => {
            let url = match url {
                Some(url) => url,
                None => {
                    let admin = bcci_gateway::config::admin_address(config.as_deref())?;
                    format!("http://{admin}/readyz")
                }
            };
            let client = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(3))
                .build()?;
            match client.get(&url).send().await {
                Ok(r) if r.status().is_success() => Ok(ExitCode::SUCCESS),
                Ok(r) => {
                    eprintln!("{url}: {}", r.status());
                    Ok(ExitCode::FAILURE)
                }
                Err(e) => {
                    eprintln!("{url}: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::PostalSim {
            listen,
            webhook_url,
            error_rate,
            rate_limit_rate,
            lost_answer_rate,
            reset_rate,
            half_answer_rate,
            slow_answer_rate,
            slow_answer_ms,
            garbage_answer_rate,
            latency_ms,
            latency_jitter_ms,
            token_ttl_s,
            duplicate_webhook_rate,
            reorder_webhook_rate,
            key_variant_rate,
            batch_size,
            no_webhooks,
            step_interval_ms,
            list_lag_ms,
            listing_delay_ms,
            seed,
            username,
            password,
        } => {
            logging::init(&LogSettings::default());
            let faults = Faults {
                error_rate,
                rate_limit_rate,
                latency_ms,
                latency_jitter_ms,
                lost_answer_rate,
                reset_rate,
                half_answer_rate,
                slow_answer_rate,
                slow_answer_ms,
                garbage_answer_rate,
                listing_delay_ms,
                token_ttl_ms: token_ttl_s.saturating_mul(1000),
                duplicate_webhook_rate,
                reorder_webhook_rate,
                key_variant_rate,
                batch_size,
                webhooks_enabled: !no_webhooks,
            };
            let config = SimConfig {
                listen,
                credentials: username
                    .zip(password)
                    .map(|(username, password)| Credentials { username, password }),
                webhook_url,
                step_interval: Duration::from_millis(step_interval_ms),
                list_lag: Duration::from_millis(list_lag_ms),
                seed,
                faults,
                ..SimConfig::default()
            };
            let sim = Simulator::start(config).await?;
            // Tests read the base URL from the first line.
            println!("{}", sim.base_url());
            shutdown_signal().await;
            sim.shutdown().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Admin { config, action } => {
            use bcci_gateway::admin::cli::Action;
            let action = match action {
                AdminAction::Token {
                    action: TokenAction::New,
                } => {
                    let bytes: [u8; 32] = rand::random();
                    let token = hex::encode(bytes);
                    let hash = bcci_gateway::intake::auth::token_sha256_hex(&token);
                    println!("token:  {token}\nsha256: {hash}");
                    return Ok(ExitCode::SUCCESS);
                }
                AdminAction::Handoffs { action } => match action {
                    HandoffsAction::List {
                        status,
                        dossier_code,
                        tracking_number,
                        client,
                        limit,
                    } => Action::ListHandoffs {
                        status,
                        dossier_code,
                        tracking_number,
                        client,
                        limit,
                    },
                    HandoffsAction::Show { id } => Action::ShowHandoff { id },
                    HandoffsAction::Replay { id, operator } => {
                        Action::ReplayHandoff { id, operator }
                    }
                    HandoffsAction::Resolve {
                        id,
                        status,
                        note,
                        operator,
                    } => Action::ResolveHandoff {
                        id,
                        status,
                        note,
                        operator,
                    },
                    HandoffsAction::Erase { id, operator } => Action::EraseHandoff { id, operator },
                },
                AdminAction::Callbacks { action } => match action {
                    CallbacksAction::List { state, limit } => {
                        Action::ListCallbacks { state, limit }
                    }
                    CallbacksAction::Replay {
                        id: Some(id),
                        operator,
                        ..
                    } => Action::ReplayCallback { id, operator },
                    CallbacksAction::Replay { operator, .. } => {
                        Action::ReplayDeadCallbacks { operator }
                    }
                },
                AdminAction::Stats { from, to, csv } => Action::Stats { from, to, csv },
            };
            let settings = Settings::load(config.as_deref())?;
            print!(
                "{}",
                bcci_gateway::admin::cli::run(&settings, action).await?
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
