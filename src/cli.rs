//! The gateway's own subcommands: `serve`, `migrate`, `check-config` and
//! `healthcheck`, their arguments and what each runs. `main.rs` parses and
//! dispatches; the admin, simulator and demo subcommands live with their code.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::app::Application;
use crate::config::Settings;
use crate::telemetry::logging;

/// `--config FILE`, the configuration file (else the environment alone).
#[derive(clap::Args)]
pub struct ConfigArgs {
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The arguments of `healthcheck`.
#[derive(clap::Args)]
pub struct HealthcheckArgs {
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    #[arg(long, value_name = "FILE", conflicts_with = "url")]
    pub config: Option<PathBuf>,
}

/// `serve`: runs the gateway until SIGTERM or Ctrl-C, then drains.
pub async fn serve(args: ConfigArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(args.config.as_deref())?;
    logging::init(&settings.log);
    let app = Application::build(settings).await?;
    let lifecycle = app.lifecycle();
    tokio::spawn(async move {
        crate::lifecycle::shutdown_signal().await;
        lifecycle.drain();
    });
    app.run_until_stopped().await?;
    Ok(ExitCode::SUCCESS)
}

/// `migrate`: applies the store's migrations (opening the store does) and exits.
pub async fn migrate(args: ConfigArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(args.config.as_deref())?;
    logging::init(&settings.log);
    let store = crate::store::open(&settings.store.url, &settings.store).await?;
    store.close().await;
    println!("migrations applied");
    Ok(ExitCode::SUCCESS)
}

/// `check-config`: prints the configuration with secrets redacted, and warns
/// of secrets kept in the file and of decreed calendar days running out.
pub fn check_config(args: ConfigArgs) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(args.config.as_deref())?;
    print!("{}", settings.redacted_toml());
    if let Some(path) = &args.config {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        for key in Settings::secrets_in_file(&text) {
            eprintln!("warning: {key} is kept in the file; prefer the environment (BCCI_…__…)");
        }
    }
    let calendar = crate::events::sla_rules(&settings).calendar;
    let today = jiff::Zoned::now()
        .with_time_zone(crate::domain::time::vietnam())
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

/// `healthcheck`: exit 0 when `/readyz` answers 200, 1 otherwise.
pub async fn healthcheck(args: HealthcheckArgs) -> anyhow::Result<ExitCode> {
    let url = match args.url {
        Some(url) => url,
        None => {
            let admin = crate::config::admin_address(args.config.as_deref())?;
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
