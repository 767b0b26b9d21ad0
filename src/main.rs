//! The `bcci-gateway` entry point: parse the command line, then run the
//! subcommand. Each subcommand's arguments and run live with its code.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use bcci_gateway::{admin, cli};

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
    #[cfg(feature = "sim")]
    Demo(bcci_gateway::demo::Args),
    /// Run the gateway: intake API, webhook receiver, workers, admin API, metrics.
    Serve(cli::ConfigArgs),
    /// Apply the store's migrations and exit.
    Migrate(cli::ConfigArgs),
    /// Validate the configuration and print it with secrets redacted.
    CheckConfig(cli::ConfigArgs),
    /// Exit 0 when /readyz answers 200 (for container HEALTHCHECK). Without
    /// --url, asks the admin listener the configuration names
    /// (`server.admin_listen`, from --config and `BCCI_SERVER__ADMIN_LISTEN`).
    Healthcheck(cli::HealthcheckArgs),
    /// Run the Vietnam Post simulator alone, with fault injection; prints its
    /// base URL as the first line.
    #[cfg(feature = "sim")]
    PostalSim(bcci_gateway::sim::cli::Args),
    /// Operator actions. `handoffs`, `callbacks` and `stats` work on the store
    /// directly: with SQLite (one process only) run them while the gateway is
    /// stopped; while it runs, use the admin API.
    Admin(admin::cli::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bcci-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Each subcommand loads the configuration and starts logging itself: not
/// all of them read a configuration (`admin token new`, `postal-sim`).
async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        #[cfg(feature = "sim")]
        Command::Demo(args) => bcci_gateway::demo::run(args).await,
        Command::Serve(args) => cli::serve(args).await,
        Command::Migrate(args) => cli::migrate(args).await,
        Command::CheckConfig(args) => cli::check_config(args),
        Command::Healthcheck(args) => cli::healthcheck(args).await,
        #[cfg(feature = "sim")]
        Command::PostalSim(args) => bcci_gateway::sim::cli::run(args).await,
        Command::Admin(args) => admin::cli::run(args).await,
    }
}
