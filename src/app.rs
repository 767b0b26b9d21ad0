//! Wiring: builds the gateway from its settings, serves, drains.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use tokio::net::TcpListener;

use crate::admin;
use crate::carrier::Carrier;
use crate::carrier::guard::{BreakerSettings, PostalGuard};
use crate::carrier::vnpost::VnPostClient;
use crate::clock::{Clock, SystemClock};
use crate::config::Settings;
use crate::dispatch::Dispatcher;
use crate::domain::RequestRules;
use crate::events::poller::Poller;
use crate::events::{self, EventsState};
use crate::http::{self, auth::ClientGate, auth::client_table};
use crate::intake::{self, IntakeState};
use crate::lifecycle::Lifecycle;
use crate::probes::{self, ProbeState};
use crate::relay::Relay;
use crate::store::{self, SharedStore, StoreHealth};
use crate::telemetry::Metrics;
use crate::web;

/// How to build the application; tests replace the clock, the carrier or
/// run the workers themselves.
pub struct Options {
    pub clock: Arc<dyn Clock>,
    /// `None`: the MyVNPost client of `[postal]`.
    pub carrier: Option<Arc<dyn Carrier>>,
    /// False: no background workers; tests call `dispatcher().run_until_idle()`.
    pub run_workers: bool,
    /// `None`: `postal.breaker_failures` and `postal.breaker_open_s`.
    pub breaker: Option<BreakerSettings>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            carrier: None,
            run_workers: true,
            breaker: None,
        }
    }
}

/// How often idle workers look for due jobs.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// A built gateway: listeners bound, store open, not yet serving.
pub struct Application {
    calendar: crate::domain::sla::Calendar,
    /// `postal.cod_settle_days`.
    cod_settle: Duration,
    /// `retention.personal_data_days`.
    retention: Duration,
    poller: Arc<Poller>,
    /// How often the poller looks for quiet handoffs: half the quiet period,
    /// between 200 ms and 30 s.
    reconcile_interval: Duration,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    dispatcher: Arc<Dispatcher>,
    relay: Arc<Relay>,
    run_workers: bool,
    intake_listener: TcpListener,
    admin_listener: TcpListener,
    intake: Router,
    admin: Router,
    store: SharedStore,
    /// The store's last known health (intake answers 503 first while down).
    health: StoreHealth,
    lifecycle: Lifecycle,
    grace: Duration,
}

impl Application {
    /// Builds the gateway as `serve` runs it.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with(settings, Options::default()).await
    }

    /// Builds the gateway with test seams.
    pub async fn build_with(settings: Settings, options: Options) -> anyhow::Result<Self> {
        let clock = options.clock;
        let store = store::open(&settings.store.url, &settings.store)
            .await
            .context("opening the store")?;
        let metrics = Arc::new(Metrics::for_clients(
            settings.intake.clients.iter().map(|c| c.name.as_str()),
        ));
        let lifecycle = Lifecycle::new();
        let rules = RequestRules {
            service_codes: settings.postal.service_codes.clone(),
            pickup_fees_allowed: !settings.postal.pickup_fee_addon.is_empty(),
        };
        let carrier: Arc<dyn Carrier> = match options.carrier {
            Some(c) => c,
            None => Arc::new(VnPostClient::new(&settings.postal, metrics.clone())?),
        };
        let guard = Arc::new(PostalGuard::new(
            settings.postal.max_requests_per_second,
            options.breaker.unwrap_or(BreakerSettings {
                failures_to_open: settings.postal.breaker_failures.max(1),
                open_for: Duration::from_secs(settings.postal.breaker_open_s),
            }),
            metrics.clone(),
        ));
        let dispatcher = Arc::new(Dispatcher::new(
            &settings,
            store.clone(),
            carrier.clone(),
            clock.clone(),
            guard.clone(),
            metrics.clone(),
            lifecycle.clone(),
        ));
        let relay = Arc::new(Relay::new(
            &settings,
            store.clone(),
            clock.clone(),
            metrics.clone(),
        )?);
        let health = StoreHealth::default();
        let intake_state = IntakeState {
            store: store.clone(),
            gate: ClientGate {
                clients: client_table(&settings.intake.clients),
                lifecycle: lifecycle.clone(),
                health: health.clone(),
            },
            rules: Arc::new(rules),
            max_body_bytes: settings.server.max_body_bytes,
            metrics: metrics.clone(),
            clock: clock.clone(),
            formats: Arc::new(events::callback_formats(&settings)),
        };
        let probe_state = ProbeState {
            store: store.clone(),
            health: health.clone(),
            lifecycle: lifecycle.clone(),
            metrics: metrics.clone(),
        };
        let events_state =
            EventsState::new(&settings, store.clone(), clock.clone(), metrics.clone());
        let poller = Arc::new(Poller::new(
            events_state.clone(),
            carrier,
            guard.clone(),
            Duration::from_secs(settings.postal.reconcile_after_s),
            cod_settle(&settings),
        ));
        // Who may call the admin listener: its API's gate and the console's
        // sign-in read one table.
        let admin_tokens = Arc::new(http::auth::admin_table(&settings.admin));
        let console = web::console::ConsoleState::new(
            &settings,
            store.clone(),
            clock.clone(),
            guard.clone(),
            relay.clone(),
            lifecycle.clone(),
            admin_tokens.clone(),
        );
        let mut main_routes = intake::router(intake_state)
            .merge(events::router(events_state))
            .merge(probes::router(probe_state.clone()));
        if settings.board.enabled {
            main_routes = main_routes.merge(web::board::router(web::board::BoardState::new(
                &settings,
                store.clone(),
                clock.clone(),
            )));
        }
        let intake = http::with_layers(
            "main",
            metrics.clone(),
            main_routes.fallback(http::not_found),
        );
        let admin_state = admin::AdminState::new(
            &settings,
            store.clone(),
            clock.clone(),
            lifecycle.clone(),
            admin_tokens,
        );
        let admin = http::with_layers(
            "admin",
            metrics.clone(),
            probes::admin_router(probe_state)
                .merge(admin::router(admin_state))
                .merge(web::console::router(console))
                .fallback(http::not_found),
        );
        let intake_listener = TcpListener::bind(settings.server.listen)
            .await
            .with_context(|| format!("binding server.listen {}", settings.server.listen))?;
        let admin_listener = TcpListener::bind(settings.server.admin_listen)
            .await
            .with_context(|| {
                format!(
                    "binding server.admin_listen {}",
                    settings.server.admin_listen
                )
            })?;
        Ok(Self {
            calendar: events::sla_rules(&settings).calendar,
            cod_settle: cod_settle(&settings),
            retention: Duration::from_secs(
                u64::from(settings.retention.personal_data_days) * 86_400,
            ),
            poller,
            reconcile_interval: (Duration::from_secs(settings.postal.reconcile_after_s) / 2)
                .clamp(Duration::from_millis(200), Duration::from_secs(30)),
            metrics,
            clock,
            dispatcher,
            relay,
            run_workers: options.run_workers,
            intake_listener,
            admin_listener,
            intake,
            admin,
            store,
            health,
            lifecycle,
            grace: Duration::from_secs(settings.server.shutdown_grace_s),
        })
    }

    /// Where the intake API listens (port 0 resolved).
    pub fn intake_addr(&self) -> SocketAddr {
        self.intake_listener.local_addr().expect("bound listener")
    }

    /// Where the admin API and `/metrics` listen.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_listener.local_addr().expect("bound listener")
    }

    /// The drain switch: `drain()` stops the application gracefully.
    pub fn lifecycle(&self) -> Lifecycle {
        self.lifecycle.clone()
    }

    pub fn store(&self) -> SharedStore {
        self.store.clone()
    }

    /// The reconciliation poller, for tests that drive it step by step.
    pub fn poller(&self) -> Arc<Poller> {
        self.poller.clone()
    }

    /// The callback worker, for tests that drive it step by step.
    pub fn relay(&self) -> Arc<Relay> {
        self.relay.clone()
    }

    /// The postal worker, for tests that drive it step by step.
    pub fn dispatcher(&self) -> Arc<Dispatcher> {
        self.dispatcher.clone()
    }

    /// Serves until the lifecycle drains, then lets in-flight requests finish
    /// within `server.shutdown_grace_s` and closes the store.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let lc = self.lifecycle.clone();
        tracing::info!(
            intake = %self.intake_addr(),
            admin = %self.admin_addr(),
            "bcci-gateway serving"
        );
        crate::lifecycle::notify_service_manager("READY=1");
        // Listeners keep answering through the drain (intake 503, webhooks
        // still stored) and close once the drain window has passed.
        let window = self.grace.min(DRAIN_WINDOW);
        let intake = axum::serve(
            self.intake_listener,
            self.intake
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stop_serving(lc.clone(), window));
        let admin = axum::serve(
            self.admin_listener,
            self.admin
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stop_serving(lc.clone(), window));
        tokio::spawn(watch_store(
            self.store.clone(),
            self.health.clone(),
            lc.clone(),
        ));
        let workers = if self.run_workers {
            let dispatch =
                self.dispatcher
                    .clone()
                    .run(lc.clone(), crate::dispatch::WORKERS, POLL_INTERVAL);
            let relay = self
                .relay
                .clone()
                .run(lc.clone(), crate::relay::WORKERS, POLL_INTERVAL);
            let gauges = export_store_gauges(
                self.store.clone(),
                self.metrics.clone(),
                self.clock.clone(),
                self.calendar.clone(),
                self.cod_settle,
                lc.clone(),
            );
            let poll = self.poller.clone().run(lc.clone(), self.reconcile_interval);
            let purge = purge_personal_data(
                self.store.clone(),
                self.clock.clone(),
                self.retention,
                lc.clone(),
            );
            Some(tokio::spawn(async move {
                tokio::join!(dispatch, relay, gauges, poll, purge);
            }))
        } else {
            None
        };
        let servers = async {
            tokio::try_join!(intake.into_future(), admin.into_future())?;
            // In-flight postal calls finish and their outcomes are committed
            // before the store closes.
            if let Some(w) = workers {
                w.await?;
            }
            Ok::<_, anyhow::Error>(())
        };
        tokio::pin!(servers);
        tokio::select! {
            result = &mut servers => { result?; }
            () = lc.drained() => {
                crate::lifecycle::notify_service_manager("STOPPING=1");
                tracing::info!(grace_s = self.grace.as_secs(), "draining");
                match tokio::time::timeout(self.grace, &mut servers).await {
                    Ok(result) => { result?; }
                    Err(_) => tracing::warn!("grace period over; abandoning in-flight requests"),
                }
            }
        }
        let owners = [self.dispatcher.owner(), self.relay.owner()];
        match self.store.release_leases(&owners).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(released = n, "leases of abandoned work released"),
            Err(e) => tracing::warn!(error = %e, "could not release leases; they will expire"),
        }
        self.store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// How often the gauges that describe the whole store are refreshed.
const STORE_GAUGE_INTERVAL: Duration = Duration::from_secs(5);

/// `postal.cod_settle_days` as a duration.
fn cod_settle(settings: &Settings) -> Duration {
    Duration::from_secs(u64::from(settings.postal.cod_settle_days) * 86_400)
}

/// How often the store's health is checked while no request finds it out.
const STORE_WATCH: Duration = Duration::from_secs(1);

/// Pings the store every [`STORE_WATCH`] until the drain, so intake learns of
/// an outage (and of its end) without waiting for a request to fail.
async fn watch_store(store: SharedStore, health: StoreHealth, lifecycle: Lifecycle) {
    while !lifecycle.is_draining() {
        health.record(&store.ping().await);
        tokio::select! {
            () = tokio::time::sleep(STORE_WATCH) => {}
            () = lifecycle.drained() => {}
        }
    }
}

/// Exports the gauges that describe the whole store (every process does;
/// dashboards aggregate them with `max`).
async fn export_store_gauges(
    store: SharedStore,
    metrics: Arc<Metrics>,
    clock: Arc<dyn Clock>,
    calendar: crate::domain::sla::Calendar,
    cod_settle: Duration,
    lifecycle: Lifecycle,
) {
    use crate::telemetry::metrics::{HandoffLabels, KindLabels, QueueLabels};
    if let Some(last) = calendar.last_day()
        && let Ok(z) = last.to_zoned(crate::domain::time::vietnam())
    {
        metrics
            .calendar_last_day
            .set(z.timestamp().as_second() as f64);
    }
    // The store's write totals already exported.
    let mut written = crate::store::WriteStats::default();
    while !lifecycle.is_draining() {
        let now = clock.now();
        metrics
            .office_open
            .set(i64::from(is_office_open(&calendar, now)));
        match store.record_sla_breaches(now).await {
            Ok(kinds) => {
                for kind in kinds {
                    metrics
                        .sla_breaches
                        .get_or_create(&KindLabels {
                            kind: kind.as_str(),
                        })
                        .inc();
                }
            }
            Err(e) => tracing::warn!(error = %e, "recording SLA breaches failed"),
        }
        for (queue, stats) in [
            ("postal", store.postal_queue_stats(now).await),
            ("callback", store.callback_queue_stats(now).await),
        ] {
            if let Ok(stats) = stats {
                let labels = QueueLabels { queue };
                metrics
                    .queue_depth
                    .get_or_create(&labels)
                    .set(stats.depth as i64);
                metrics
                    .queue_oldest_age
                    .get_or_create(&labels)
                    .set(stats.oldest_age_s);
                metrics
                    .dead_letters
                    .get_or_create(&labels)
                    .set(stats.dead as i64);
            }
        }
        let cod_since = now - jiff::SignedDuration::try_from(cod_settle).unwrap_or_default();
        match store.count_cod_unsettled(cod_since).await {
            Ok(n) => {
                metrics.cod_unsettled.set(n as i64);
            }
            Err(e) => tracing::warn!(error = %e, "counting unsettled COD failed"),
        }
        if let Some(now_stats) = store.write_stats() {
            metrics
                .store_commits
                .inc_by(now_stats.commits.saturating_sub(written.commits));
            metrics
                .store_statements
                .inc_by(now_stats.statements.saturating_sub(written.statements));
            metrics
                .store_wal_bytes
                .inc_by(now_stats.wal_bytes.saturating_sub(written.wal_bytes));
            written = now_stats;
        }
        if let Ok(counts) = store.handoff_counts().await {
            // Every known label set stays exported: a status nobody holds is 0.
            for kind in crate::domain::Kind::ALL {
                for status in crate::domain::Status::ALL {
                    metrics
                        .handoffs
                        .get_or_create(&HandoffLabels {
                            kind: kind.as_str(),
                            status: status.as_str(),
                        })
                        .set(0);
                }
            }
            for (kind, status, n) in counts {
                metrics
                    .handoffs
                    .get_or_create(&HandoffLabels {
                        kind: kind.as_str(),
                        status: status.as_str(),
                    })
                    .set(n as i64);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(STORE_GAUGE_INTERVAL) => {}
            () = lifecycle.drained() => {}
        }
    }
}

/// Working hours of a one-stop desk, Vietnam time: 07:30 to 17:00 of a
/// working day (`bcci_office_open`).
pub fn is_office_open(calendar: &crate::domain::sla::Calendar, now: jiff::Timestamp) -> bool {
    let local = now.to_zoned(crate::domain::time::vietnam());
    let minutes = i32::from(local.hour()) * 60 + i32::from(local.minute());
    calendar.is_working_day(local.date()) && (7 * 60 + 30..17 * 60).contains(&minutes)
}

/// How often the retention purge runs.
const PURGE_INTERVAL: Duration = Duration::from_secs(3600);

/// Purges the personal data of handoffs terminal for longer than the
/// retention period, at start and then hourly.
async fn purge_personal_data(
    store: SharedStore,
    clock: Arc<dyn Clock>,
    retention: Duration,
    lifecycle: Lifecycle,
) {
    while !lifecycle.is_draining() {
        let now = clock.now();
        let cutoff = now
            .checked_sub(
                jiff::SignedDuration::try_from(retention).unwrap_or(jiff::SignedDuration::MAX),
            )
            .unwrap_or(jiff::Timestamp::MIN);
        if let Err(e) = store.purge_personal_data(cutoff, now).await {
            tracing::warn!(error = %e, "personal data purge failed");
        }
        tokio::select! {
            () = tokio::time::sleep(PURGE_INTERVAL) => {}
            () = lifecycle.drained() => {}
        }
    }
}

/// How long listeners keep answering after the drain starts, so load
/// balancers see readiness fail and late requests get 503 rather than a
/// refused connection.
const DRAIN_WINDOW: Duration = Duration::from_secs(2);

async fn stop_serving(lc: Lifecycle, window: Duration) {
    lc.drained().await;
    tokio::time::sleep(window).await;
}
