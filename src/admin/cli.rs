//! The `bcci-gateway admin …` actions: the admin API's, working on the store
//! directly. The SQLite store serves one process, so with SQLite they run
//! while the gateway is stopped; while it runs, use the admin API.
//!
//! Output is JSON, one document per line (the statistics also as CSV).

use anyhow::{Context, bail};
use jiff::civil::Date;
use serde_json::{Value, json};

use super::wire;
use crate::config::Settings;
use crate::domain::{Handoff, HandoffId, Status};
use crate::store::admin::{AdminOutcome, CallbackReplay, CallbackState, Resolution};
use crate::store::{HandoffFilter, SharedStore};

/// One admin action, as the command line gives it.
#[derive(Debug, Clone)]
pub enum Action {
    ListHandoffs {
        status: Option<String>,
        dossier_code: Option<String>,
        tracking_number: Option<String>,
        client: Option<String>,
        limit: u32,
    },
    ShowHandoff {
        id: String,
    },
    ReplayHandoff {
        id: String,
        operator: String,
    },
    ResolveHandoff {
        id: String,
        status: String,
        note: Option<String>,
        operator: String,
    },
    EraseHandoff {
        id: String,
        operator: String,
    },
    ListCallbacks {
        state: String,
        limit: u32,
    },
    ReplayCallback {
        id: String,
        operator: String,
    },
    ReplayDeadCallbacks {
        operator: String,
    },
    Stats {
        from: String,
        to: String,
        csv: bool,
    },
}

/// Opens the store, carries out the action and returns what to print.
pub async fn run(settings: &Settings, action: Action) -> anyhow::Result<String> {
    let store = crate::store::open(&settings.store.url, &settings.store)
        .await
        .context(
            "opening the store (with SQLite, stop the gateway first: the store serves one \
             process; while the gateway runs, use the admin API)",
        )?;
    let formats = crate::events::callback_formats(settings);
    let result = execute(&store, &formats, action).await;
    store.close().await;
    result
}

fn handoff_id(raw: &str) -> anyhow::Result<HandoffId> {
    HandoffId::parse(raw).with_context(|| format!("{raw:?} is not a handoff id (h_ + ULID)"))
}

fn operator(raw: &str) -> anyhow::Result<String> {
    let name = crate::domain::text::normalize(raw);
    if name.is_empty() {
        bail!("--operator must name the operator");
    }
    Ok(name)
}

fn line(doc: &Value) -> String {
    format!("{doc}\n")
}

/// The handoff with its timeline, or the reason the action was refused.
async fn acted(
    store: &SharedStore,
    id: &HandoffId,
    outcome: AdminOutcome,
) -> anyhow::Result<String> {
    match outcome {
        AdminOutcome::Done(handoff) => full(store, &handoff).await,
        AdminOutcome::NotFound => bail!("no handoff {id}"),
        AdminOutcome::Conflict(detail) => bail!("{id}: {detail}"),
    }
}

async fn full(store: &SharedStore, handoff: &Handoff) -> anyhow::Result<String> {
    let timeline = store.timeline(&handoff.id).await?;
    Ok(line(&wire::handoff(handoff, Some(&timeline))))
}

async fn execute(
    store: &SharedStore,
    formats: &std::collections::HashMap<String, crate::domain::callback::BodyFormat>,
    action: Action,
) -> anyhow::Result<String> {
    let now = jiff::Timestamp::now();
    match action {
        Action::ListHandoffs {
            status,
            dossier_code,
            tracking_number,
            client,
            limit,
        } => {
            let status = status
                .map(|s| {
                    s.parse::<Status>()
                        .map_err(|()| anyhow::anyhow!("--status {s:?} is not a handoff status"))
                })
                .transpose()?;
            let filter = HandoffFilter {
                client,
                dossier_code,
                request_id: None,
                status,
                tracking_number,
            };
            let page = store.list_handoffs(&filter, limit.max(1), None).await?;
            let out: String = page
                .items
                .iter()
                .map(|h| line(&wire::handoff(h, None)))
                .collect();
            if page.next_cursor.is_some() {
                eprintln!("more handoffs match; raise --limit to see them");
            }
            if out.is_empty() {
                eprintln!("no handoff matches");
            }
            Ok(out)
        }
        Action::ShowHandoff { id } => {
            let id = handoff_id(&id)?;
            match store.handoff(None, &id).await? {
                Some(handoff) => full(store, &handoff).await,
                None => bail!("no handoff {id}"),
            }
        }
        Action::ReplayHandoff { id, operator: name } => {
            let id = handoff_id(&id)?;
            let outcome = store
                .replay_failed_handoff(&id, &operator(&name)?, now, formats)
                .await?;
            acted(store, &id, outcome).await
        }
        Action::ResolveHandoff {
            id,
            status,
            note,
            operator: name,
        } => {
            let id = handoff_id(&id)?;
            let Some(resolution) = Resolution::parse(&status) else {
                bail!("--status must be delivered or returned");
            };
            let note = note
                .map(|n| crate::domain::text::normalize(&n))
                .filter(|n| !n.is_empty());
            let outcome = store
                .resolve_partial(
                    &id,
                    resolution,
                    note.as_deref(),
                    &operator(&name)?,
                    now,
                    formats,
                )
                .await?;
            acted(store, &id, outcome).await
        }
        Action::EraseHandoff { id, operator: name } => {
            let id = handoff_id(&id)?;
            let outcome = store
                .erase_personal_data(&id, &operator(&name)?, now)
                .await?;
            acted(store, &id, outcome).await
        }
        Action::ListCallbacks { state, limit } => {
            let state = match CallbackState::parse(&state) {
                Some(s @ (CallbackState::Dead | CallbackState::Held)) => s,
                _ => bail!("--state must be dead or held"),
            };
            let page = store.list_callbacks(state, limit.max(1), None).await?;
            if page.next_cursor.is_some() {
                eprintln!("more callbacks match; raise --limit to see them");
            }
            Ok(page
                .items
                .iter()
                .map(|c| line(&wire::callback(c)))
                .collect())
        }
        Action::ReplayCallback { id, operator: name } => {
            match store.replay_callback(&id, &operator(&name)?, now).await? {
                CallbackReplay::Replayed(c) => Ok(line(&wire::callback(&c))),
                CallbackReplay::NotFound => bail!("no callback {id}"),
                CallbackReplay::NotDead(s) => bail!(
                    "callback {id} is {}; only a dead callback can be replayed",
                    s.as_str()
                ),
            }
        }
        Action::ReplayDeadCallbacks { operator: name } => {
            let n = store
                .replay_dead_callbacks_by(&operator(&name)?, now)
                .await?;
            Ok(line(&json!({"replayed": n})))
        }
        Action::Stats { from, to, csv } => {
            let parse = |flag: &str, raw: &str| {
                raw.parse::<Date>()
                    .with_context(|| format!("--{flag} {raw:?} is not a date YYYY-MM-DD"))
            };
            let (from, to) = (parse("from", &from)?, parse("to", &to)?);
            if to < from {
                bail!("--to {to} is before --from {from}");
            }
            let rows = store.stats(from, to).await?;
            if csv {
                return Ok(wire::stats_csv(&rows));
            }
            Ok(rows.iter().map(|r| line(&wire::stats_row(r))).collect())
        }
    }
}
