//! The `bcci-gateway admin …` actions: the admin API's, working on the store
//! directly. The SQLite store serves one process, so with SQLite they run
//! while the gateway is stopped; while it runs, use the admin API.
//!
//! Output is JSON, one document per line (the statistics also as CSV).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;
use jiff::civil::Date;
use serde_json::{Value, json};

use super::wire;
use crate::config::Settings;
use crate::domain::{Handoff, HandoffId, Status};
use crate::store::admin::{AdminOutcome, CallbackReplay, CallbackState, Resolution};
use crate::store::{HandoffFilter, SharedStore};

/// The arguments of `admin`.
#[derive(clap::Args)]
pub struct Args {
    /// The configuration naming the store (else the environment alone).
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub action: Action,
}

/// One admin action, as the command line gives it.
#[derive(Subcommand)]
pub enum Action {
    /// Tokens for intake clients and operators.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    #[command(flatten)]
    Store(StoreAction),
}

/// The admin actions that work on the store.
#[derive(Subcommand)]
pub enum StoreAction {
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

/// `admin handoffs …`.
#[derive(Subcommand)]
pub enum HandoffsAction {
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

/// `admin callbacks …`.
#[derive(Subcommand)]
pub enum CallbacksAction {
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

/// `admin token …`.
#[derive(Subcommand)]
pub enum TokenAction {
    /// Print a random 32-byte token and its SHA-256 (for *.token_sha256s).
    New,
}

/// Carries out `admin …` and prints its output. `token new` needs no
/// configuration; the others open the store it names.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.action {
        Action::Token {
            action: TokenAction::New,
        } => {
            let bytes: [u8; 32] = rand::random();
            let token = hex::encode(bytes);
            let hash = crate::http::auth::token_sha256_hex(&token);
            println!("token:  {token}\nsha256: {hash}");
        }
        Action::Store(action) => {
            let settings = Settings::load(args.config.as_deref())?;
            print!("{}", on_store(&settings, action).await?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Opens the store, carries out the action and returns what to print.
async fn on_store(settings: &Settings, action: StoreAction) -> anyhow::Result<String> {
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
    action: StoreAction,
) -> anyhow::Result<String> {
    let now = jiff::Timestamp::now();
    match action {
        StoreAction::Handoffs { action } => handoffs(store, formats, action, now).await,
        StoreAction::Callbacks { action } => callbacks(store, action, now).await,
        StoreAction::Stats { from, to, csv } => {
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

async fn handoffs(
    store: &SharedStore,
    formats: &std::collections::HashMap<String, crate::domain::callback::BodyFormat>,
    action: HandoffsAction,
    now: jiff::Timestamp,
) -> anyhow::Result<String> {
    match action {
        HandoffsAction::List {
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
                phone: None,
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
        HandoffsAction::Show { id } => {
            let id = handoff_id(&id)?;
            match store.handoff(None, &id).await? {
                Some(handoff) => full(store, &handoff).await,
                None => bail!("no handoff {id}"),
            }
        }
        HandoffsAction::Replay { id, operator: name } => {
            let id = handoff_id(&id)?;
            let outcome = store
                .replay_failed_handoff(&id, &operator(&name)?, now, formats)
                .await?;
            acted(store, &id, outcome).await
        }
        HandoffsAction::Resolve {
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
        HandoffsAction::Erase { id, operator: name } => {
            let id = handoff_id(&id)?;
            let outcome = store
                .erase_personal_data(&id, &operator(&name)?, now)
                .await?;
            acted(store, &id, outcome).await
        }
    }
}

async fn callbacks(
    store: &SharedStore,
    action: CallbacksAction,
    now: jiff::Timestamp,
) -> anyhow::Result<String> {
    match action {
        CallbacksAction::List { state, limit } => {
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
        CallbacksAction::Replay {
            id: Some(id),
            operator: name,
            ..
        } => match store.replay_callback(&id, &operator(&name)?, now).await? {
            CallbackReplay::Replayed(c) => Ok(line(&wire::callback(&c))),
            CallbackReplay::NotFound => bail!("no callback {id}"),
            CallbackReplay::NotDead(s) => bail!(
                "callback {id} is {}; only a dead callback can be replayed",
                s.as_str()
            ),
        },
        CallbacksAction::Replay { operator: name, .. } => {
            let n = store
                .replay_dead_callbacks_by(&operator(&name)?, now)
                .await?;
            Ok(line(&json!({"replayed": n})))
        }
    }
}
