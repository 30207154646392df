//! `logpipe outbox`: run the relay of the configured outbox, or show what waits in it.

use clap::Subcommand;
use logpipe_core::outbox::OutboxStore;

use super::failure::Failure;
use super::ops::connect;
use crate::config::Config;
use crate::error_chain;
use crate::outbox::{AnyOutbox, Relay};
use crate::run::shutdown_on_signals;

#[derive(Debug, Subcommand)]
pub(super) enum OutboxCommand {
    /// Send the committed rows of the outbox (`outbox.url`) through the backend until
    /// SIGINT or SIGTERM; with several relays running, one sends and the others stand
    /// by.
    Relay,
    /// The rows waiting in the outbox and the age of the oldest.
    Status {
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
}

pub(super) async fn outbox(config: Config, command: OutboxCommand) -> Result<(), Failure> {
    let outbox = open(&config).await?;
    match command {
        OutboxCommand::Relay => {
            let backend = connect(&config)?;
            let shutdown = shutdown_on_signals()
                .map_err(|err| Failure::Failed(format!("cannot handle signals: {err}")))?;
            Relay::new(outbox, backend)
                .with_options(config.outbox.relay_options())
                .run(shutdown)
                .await;
            Ok(())
        }
        OutboxCommand::Status { json } => {
            let status = outbox.status().await.map_err(|err| {
                Failure::Failed(format!("cannot read the outbox: {}", error_chain(&err)))
            })?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"waiting": status.waiting, "oldest_age_ms": status.oldest_age_ms})
                );
            } else {
                let age = status.oldest_age_ms.map_or_else(
                    || "-".to_owned(),
                    |age| format!("{:.1} s", age as f64 / 1000.0),
                );
                println!("waiting: {}\noldest: {age}", status.waiting);
            }
            Ok(())
        }
    }
}

/// The configured outbox, or a configuration failure naming `outbox.url`.
async fn open(config: &Config) -> Result<AnyOutbox, Failure> {
    match config.open_outbox().await {
        Ok(Some(outbox)) => Ok(outbox),
        Ok(None) => Err(Failure::Config(
            "outbox.url: not set (LOGPIPE_OUTBOX__URL, or url in [outbox])".to_owned(),
        )),
        Err(err) => Err(Failure::Config(error_chain(&err))),
    }
}
