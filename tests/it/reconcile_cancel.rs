//! Reconciliation when webhooks go missing, and every branch of cancel.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bcci_gateway::domain::{HandoffId, Status};
use bcci_gateway::sim::{Faults, SimConfig, SimHandle, Simulator};
use bcci_gateway::store::SharedStore;
use serde_json::{Value, json};

use crate::common::config::{KEY, TestConfig};
use crate::common::{Backend, TestStore, build_app, create_handoff, free_port, valid_request};

on_both_backends!(
    with_webhooks_off_reconciliation_alone_brings_fifty_handoffs_to_their_final_statuses,
    cancelling_a_handoff_that_never_reached_vietnam_post_cancels_it_at_once,
    an_order_created_is_cancelled_at_vietnam_post_and_relayed,
    a_cancel_pending_approval_keeps_its_case_id_and_completes_with_status_9,
    a_refused_cancel_is_relayed_as_cancel_refused_and_the_status_stays,
    cancelling_after_an_ambiguous_create_looks_the_order_up_and_cancels_it,
    a_handoff_past_pickup_cannot_be_cancelled,
);

const TOKEN: &str = "cancel-test-token";
const OTHER: &str = "other-client-token";

struct Gateway {
    store: SharedStore,
    intake: SocketAddr,
    sim: SimHandle,
    lifecycle: bcci_gateway::lifecycle::Lifecycle,
    _store: TestStore,
}

/// Starts the simulator and a gateway on it; `postal_extra` goes in `[postal]`.
async fn start(
    backend: Backend,
    sim_config: SimConfig,
    postal_extra: &str,
    run_workers: bool,
) -> Option<Gateway> {
    let port = free_port();
    let sim = Simulator::start(SimConfig {
        webhook_url: sim_config
            .webhook_url
            .clone()
            .map(|_| format!("http://127.0.0.1:{port}/v1/postal/vnpost/events/{KEY}")),
        ..sim_config
    })
    .await
    .unwrap();
    let place = TestStore::new(backend).await?;
    let settings = TestConfig::new(&place.url, &sim.base_url(), "http://127.0.0.1:9/cb")
        .listen(&format!("127.0.0.1:{port}"), "127.0.0.1:0")
        .postal(&format!(
            "timeout_ms = 2000\nlookup_delay_s = 1\nmax_requests_per_second = 100000\n{postal_extra}"
        ))
        .intake("timeout_ms = 2000")
        .client("motcua", &[TOKEN])
        .rate(100000)
        .client("other", &[OTHER])
        .admin(&[TOKEN])
        .extra("[retry]\ninitial_ms = 20\nmax_ms = 200")
        .settings();
    let app = build_app(settings, run_workers).await;
    let g = Gateway {
        store: app.store(),
        intake: app.intake_addr(),
        lifecycle: app.lifecycle(),
        sim,
        _store: place,
    };
    tokio::spawn(app.run_until_stopped());
    Some(g)
}

impl Gateway {
    async fn submit(&self, request_id: &str, procedure_name: &str) -> HandoffId {
        let mut body = valid_request(request_id);
        body["procedure"]["name"] = json!(procedure_name);
        create_handoff(&reqwest::Client::new(), self.intake, TOKEN, &body).await
    }

    async fn cancel(&self, id: &HandoffId, token: &str) -> (u16, Value) {
        let r = reqwest::Client::new()
            .post(format!("http://{}/v1/handoffs/{id}/cancel", self.intake))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn status(&self, id: &HandoffId) -> Status {
        self.store.handoff(None, id).await.unwrap().unwrap().status
    }

    async fn wait_for(&self, id: &HandoffId, want: Status) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.status(id).await != want {
            assert!(
                Instant::now() < deadline,
                "{id} stuck at {:?}, wanted {want:?}",
                self.status(id).await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn callback_types(&self, id: &HandoffId) -> Vec<(String, String)> {
        self.store
            .callbacks_of(id)
            .await
            .unwrap()
            .iter()
            .map(|(_, t, body)| {
                let b: Value = serde_json::from_slice(body).unwrap();
                (t.clone(), b["status"].as_str().unwrap().to_owned())
            })
            .collect()
    }
}

fn quiet_sim(step_ms: u64) -> SimConfig {
    SimConfig {
        step_interval: Duration::from_millis(step_ms),
        faults: Faults {
            webhooks_enabled: false,
            ..Faults::default()
        },
        ..SimConfig::default()
    }
}

async fn with_webhooks_off_reconciliation_alone_brings_fifty_handoffs_to_their_final_statuses(
    backend: Backend,
) {
    let Some(g) = start(backend, quiet_sim(20), "reconcile_after_s = 1", true).await else {
        return;
    };
    let mut ids = Vec::new();
    for i in 0..50 {
        ids.push(g.submit(&format!("R-{i}"), "Đăng ký hộ kinh doanh").await);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut done = 0;
        for id in &ids {
            let orders = g.sim.orders_for(id.as_str());
            if orders.len() == 1
                && orders[0].finished
                && g.status(id).await.as_str()
                    == bcci_gateway::sim::expected_final_status(orders[0].sequence)
            {
                done += 1;
            }
        }
        if done == ids.len() {
            break;
        }
        assert!(Instant::now() < deadline, "only {done} of 50 reconciled");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(g.sim.stats().webhook_posts, 0, "no webhook was ever sent");
    let timeline = g.store.timeline(&ids[0]).await.unwrap();
    assert!(
        timeline
            .iter()
            .any(|e| e.source.as_str() == "poll" && e.sequence.is_some())
    );
    g.lifecycle.drain();
}

async fn cancelling_a_handoff_that_never_reached_vietnam_post_cancels_it_at_once(backend: Backend) {
    let Some(g) = start(backend, quiet_sim(1000), "", false).await else {
        return;
    };
    let id = g.submit("C-1", "Thủ tục").await;
    let (status, doc) = g.cancel(&id, TOKEN).await;
    assert_eq!(status, 202);
    assert_eq!(doc["status"], "cancelled");
    assert_eq!(
        g.callback_types(&id).await,
        [("handoff.status_changed".to_owned(), "cancelled".to_owned())]
    );
    // Repeated: 202 with the handoff as it is; another client: 404.
    let (again, doc) = g.cancel(&id, TOKEN).await;
    assert_eq!((again, doc["status"].as_str()), (202, Some("cancelled")));
    assert_eq!(g.cancel(&id, OTHER).await.0, 404);
    assert!(g.sim.orders().is_empty(), "no order was created");
    assert_eq!(g.store.count_pending_postal_jobs().await.unwrap(), 0);
}

async fn an_order_created_is_cancelled_at_vietnam_post_and_relayed(backend: Backend) {
    let Some(g) = start(backend, quiet_sim(60_000), "", true).await else {
        return;
    };
    let id = g.submit("C-2", "Thủ tục").await;
    g.wait_for(&id, Status::OrderCreated).await;
    let (status, doc) = g.cancel(&id, TOKEN).await;
    assert_eq!(
        (status, doc["status"].as_str()),
        (202, Some("order_created"))
    );
    g.wait_for(&id, Status::Cancelled).await;
    assert!(g.sim.orders_for(id.as_str())[0].cancelled);
    let types = g.callback_types(&id).await;
    assert_eq!(
        types.last().unwrap(),
        &("handoff.status_changed".to_owned(), "cancelled".to_owned())
    );
    // Cancelled is terminal: a new cancel of another terminal handoff is 409.
    assert_eq!(
        g.cancel(&id, TOKEN).await.0,
        202,
        "a repeated cancel answers 202"
    );
}

async fn a_cancel_pending_approval_keeps_its_case_id_and_completes_with_status_9(backend: Backend) {
    // Slow steps: the cancel must reach Vietnam Post before the pickup (status 6).
    let mut sim = quiet_sim(2000);
    sim.faults.webhooks_enabled = true;
    sim.webhook_url = Some(String::new());
    sim.sequence_weights = vec![("delivered".into(), 1)];
    let Some(g) = start(backend, sim, "", true).await else {
        return;
    };
    let id = g.submit("C-3", "Thủ tục [sim:cancel_approval]").await;
    g.wait_for(&id, Status::OrderCreated).await;
    assert_eq!(g.cancel(&id, TOKEN).await.0, 202);
    g.wait_for(&id, Status::Cancelled).await;
    let timeline = g.store.timeline(&id).await.unwrap();
    assert!(
        timeline
            .iter()
            .any(|e| e.reason.as_deref().is_some_and(|r| r.contains("CaseId"))),
        "{timeline:?}"
    );
    let cancelled = timeline
        .iter()
        .find(|e| e.status == Some(Status::Cancelled))
        .unwrap();
    assert_eq!(
        cancelled.carrier.as_ref().map(|c| c.code),
        Some(9),
        "completed by status 9"
    );
}

async fn a_refused_cancel_is_relayed_as_cancel_refused_and_the_status_stays(backend: Backend) {
    // Webhooks off: the gateway still believes order_created while Vietnam
    // Post has picked the item up and refuses the cancel.
    let mut sim = quiet_sim(20);
    sim.sequence_weights = vec![("delivered".into(), 1)];
    let Some(g) = start(backend, sim, "", true).await else {
        return;
    };
    let id = g.submit("C-4", "Thủ tục").await;
    g.wait_for(&id, Status::OrderCreated).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !g.sim.orders_for(id.as_str())[0].finished {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(g.cancel(&id, TOKEN).await.0, 202);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let types = g.callback_types(&id).await;
        if let Some((t, status)) = types.last()
            && t == "handoff.cancel_refused"
        {
            assert_eq!(status, "order_created");
            break;
        }
        assert!(Instant::now() < deadline, "{types:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(g.status(&id).await, Status::OrderCreated);
}

async fn cancelling_after_an_ambiguous_create_looks_the_order_up_and_cancels_it(backend: Backend) {
    let mut sim = quiet_sim(60_000);
    sim.faults.lost_answer_rate = 1.0;
    let Some(g) = start(backend, sim, "", true).await else {
        return;
    };
    let id = g.submit("C-5", "Thủ tục").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while g.sim.orders_for(id.as_str()).is_empty() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(g.status(&id).await, Status::Received, "the answer was lost");
    assert_eq!(g.cancel(&id, TOKEN).await.0, 202);
    g.sim.set_faults(Faults {
        webhooks_enabled: false,
        ..Faults::default()
    });
    g.wait_for(&id, Status::Cancelled).await;
    let orders = g.sim.orders_for(id.as_str());
    assert_eq!(orders.len(), 1, "no second order");
    assert!(orders[0].cancelled);
    let h = g.store.handoff(None, &id).await.unwrap().unwrap();
    assert_eq!(
        h.tracking_number.as_deref(),
        Some(orders[0].item_code.as_str())
    );
}

async fn a_handoff_past_pickup_cannot_be_cancelled(backend: Backend) {
    let mut sim = quiet_sim(20);
    sim.faults.webhooks_enabled = true;
    sim.webhook_url = Some(String::new());
    sim.sequence_weights = vec![("delivered".into(), 1)];
    let Some(g) = start(backend, sim, "", true).await else {
        return;
    };
    let id = g.submit("C-6", "Thủ tục").await;
    g.wait_for(&id, Status::Delivered).await;
    let (status, _) = g.cancel(&id, TOKEN).await;
    assert_eq!(status, 409);
    assert!(!g.sim.orders_for(id.as_str())[0].cancelled);
}
