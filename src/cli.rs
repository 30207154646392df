//! The command-line programs, as library code: `run_consumers` and `logpipe`.
//!
//! A service that registers consumers gets its own `run_consumers` from one call:
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     logpipe::cli::run_consumers_main()
//! }
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError};
use crate::error::Error;
use crate::error_chain;
use crate::health::Health;
use crate::run::{registered, run_registered_with_health, shutdown_on_signals};
use crate::serve::Endpoints;
use tokio_util::sync::CancellationToken;

mod envelope;
mod failure;
mod lag;
mod leases;
mod offsets;
mod ops;
mod outbox;
mod produce;
mod replay;
mod schemas;
mod streams;
mod table;
mod tail;
mod validate;

use envelope::{EnvelopeCommand, envelope_command};

/// Exit status for a configuration error (`EX_CONFIG` of sysexits.h).
pub const EXIT_CONFIG: u8 = 78;
/// Exit status for input that cannot be decoded (`EX_DATAERR` of sysexits.h).
pub const EXIT_DATA: u8 = 65;
/// Exit status of an operator command whose backend cannot be reached or did not answer
/// in time (`EX_UNAVAILABLE` of sysexits.h).
pub const EXIT_UNAVAILABLE: u8 = 69;

#[derive(Debug, Parser)]
#[command(
    name = "run_consumers",
    version,
    about = "Runs every registered logpipe consumer until SIGINT or SIGTERM"
)]
struct RunConsumersArgs {
    /// Configuration file (default: $LOGPIPE_CONFIG, else ./logpipe.toml if it exists).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Print the registered consumers and exit.
    #[arg(long)]
    list: bool,
    /// Serve /metrics, /healthz and /readyz on this IP:port (config key `metrics_addr`).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// How log lines are written to stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A `--type` argument: a message type that [`logpipe_core::MESSAGE_TYPE_RULE`] allows.
fn message_type(text: &str) -> Result<String, String> {
    logpipe_core::check_message_type(text).map(|()| text.to_owned())
}

/// Logs to stderr as text, filtered by `RUST_LOG` (default `level`).
fn init_tracing_at(level: &str) {
    init_tracing(LogFormat::Text, level);
}

/// Logs to stderr in `format`, filtered by `RUST_LOG` (default `level`). Panics are
/// logged there too, as one error line with where they happened, so that JSON logs stay
/// one object per line; a handler's panic is then also a failure of its record (see
/// [`HandlerPanic`](crate::HandlerPanic)).
fn init_tracing(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    std::panic::set_hook(Box::new(|info| {
        let message = crate::catch_panic::panic_message(info.payload());
        let location = info
            .location()
            .map_or_else(String::new, |at| format!("{}:{}", at.file(), at.line()));
        tracing::error!(%location, "panicked: {message}");
    }));
}

/// The `run_consumers` program: loads the configuration (`--config`, `LOGPIPE_CONFIG`,
/// `logpipe.toml`, `LOGPIPE_*` variables), runs every registered consumer until SIGINT or
/// SIGTERM, stores their positions and exits 0.
///
/// Exits 78 on a configuration error (naming the key) and 1 when a consumer stopped on
/// an error.
pub fn run_consumers_main() -> ExitCode {
    let args = RunConsumersArgs::parse();
    init_tracing(args.log_format, "info");
    let mut config = match Config::load(args.config.as_deref()) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("run_consumers: {}", error_chain(&err));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if args.metrics_addr.is_some() {
        config.metrics_addr = args.metrics_addr;
    }
    if args.list {
        for registration in registered() {
            println!("{}", registration.name());
        }
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("run_consumers: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        let shutdown = shutdown_on_signals().map_err(|err| Error::Build {
            consumer: String::new(),
            source: err.into(),
        })?;
        let health = Health::new();
        let endpoints = match config.metrics_addr {
            Some(addr) => Some(Endpoints::bind(addr, health.clone()).await.map_err(|err| {
                Error::Config(ConfigError::invalid("metrics_addr", error_chain(&err)))
            })?),
            None => None,
        };
        let stop_serving = CancellationToken::new();
        let server = endpoints.map(|endpoints| {
            if let Ok(addr) = endpoints.local_addr() {
                tracing::info!("serving /metrics, /healthz and /readyz on http://{addr}");
            }
            tokio::spawn(endpoints.serve(stop_serving.clone()))
        });
        let outcome = run_registered_with_health(&config, shutdown, &health).await;
        stop_serving.cancel();
        if let Some(server) = server {
            let _ = server.await;
        }
        outcome
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("run_consumers: {}", error_chain(&err));
            match err {
                Error::Config(_) => ExitCode::from(EXIT_CONFIG),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

#[derive(Debug, Parser)]
#[command(name = "logpipe", version, about = "Inspect and steer logpipe streams")]
struct LogpipeArgs {
    /// Configuration file (default: $LOGPIPE_CONFIG, else ./logpipe.toml if it exists).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// How long a request to the Kafka brokers waits before the command fails with status
    /// 69 (`kafka.request_timeout_ms`; default 10 s).
    #[arg(long, global = true, value_name = "SECONDS", value_parser = request_timeout)]
    request_timeout: Option<Duration>,
    #[command(subcommand)]
    command: Command,
}

/// A `--request-timeout` argument: a positive number of seconds.
fn request_timeout(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(seconds) if seconds > 0.0 && seconds.is_finite() => Ok(Duration::from_secs_f64(seconds)),
        _ => Err(format!("{text:?} is not a positive number of seconds")),
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Encode or decode record values.
    #[command(subcommand)]
    Envelope(EnvelopeCommand),
    /// Check published message schemas for breaking changes.
    #[command(subcommand)]
    Schemas(schemas::SchemasCommand),
    #[command(flatten)]
    Ops(ops::OpsCommand),
}

/// The `logpipe` program.
pub fn logpipe_main() -> ExitCode {
    let args = LogpipeArgs::parse();
    match args.command {
        Command::Envelope(command) => envelope_command(command),
        Command::Schemas(command) => schemas::schemas_command(command),
        Command::Ops(command) => {
            // Warnings only, so that the output stays clean; a command that cannot reach
            // Kafka says why in its error, so the connection's own warnings are quiet.
            #[cfg(feature = "kafka")]
            init_tracing_at(&format!(
                "warn,{}=error",
                crate::kafka::CONNECTION_LOG_TARGET
            ));
            #[cfg(not(feature = "kafka"))]
            init_tracing_at("warn");
            ops::run(command, args.config.as_deref(), args.request_timeout)
        }
    }
}
