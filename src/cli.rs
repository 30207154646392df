//! The command-line programs, as library code: `run_consumers` and `logpipe`.
//!
//! A service that registers consumers gets its own `run_consumers` from one call:
//!
//! ```no_run
//! fn main() -> std::process::ExitCode {
//!     logpipe::cli::run_consumers_main()
//! }
//! ```

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::config::ConfigError;
use crate::envelope::{self, Format, Header};
use crate::error::Error;
use crate::error_chain;
use crate::health::Health;
use crate::run::{registered, run_registered_with_health, shutdown_on_signals};
use crate::serve::Endpoints;
use tokio_util::sync::CancellationToken;

mod ops;
mod replay;

/// Exit status for a configuration error (`EX_CONFIG` of sysexits.h).
pub const EXIT_CONFIG: u8 = 78;
/// Exit status for input that cannot be decoded (`EX_DATAERR` of sysexits.h).
pub const EXIT_DATA: u8 = 65;

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
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Encode or decode record values.
    #[command(subcommand)]
    Envelope(EnvelopeCommand),
    #[command(flatten)]
    Ops(ops::OpsCommand),
}

#[derive(Debug, Subcommand)]
enum EnvelopeCommand {
    /// Read a message as JSON on stdin and write the record value to stdout.
    Encode {
        /// The message type.
        #[arg(long = "type")]
        message_type: String,
        /// The message version.
        #[arg(long)]
        version: u64,
        /// The producer id to write into the envelope.
        #[arg(long)]
        producer: Option<String>,
        /// The envelope format.
        #[arg(long, default_value = "json")]
        format: Format,
    },
    /// Read one record value on stdin and print it as a JSON line: format, type, version,
    /// producer and message. Exits 65 when it cannot be decoded.
    Decode,
}

/// The `logpipe` program.
pub fn logpipe_main() -> ExitCode {
    let args = LogpipeArgs::parse();
    match args.command {
        Command::Envelope(command) => envelope_command(command),
        Command::Ops(command) => {
            // Warnings only, so that the output stays clean.
            init_tracing_at("warn");
            ops::run(command, args.config.as_deref())
        }
    }
}

fn envelope_command(command: EnvelopeCommand) -> ExitCode {
    let mut input = Vec::new();
    if let Err(err) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("logpipe: cannot read stdin: {err}");
        return ExitCode::FAILURE;
    }
    let output = match command {
        EnvelopeCommand::Encode {
            message_type,
            version,
            producer,
            format,
        } => {
            let header = Header {
                message_type: &message_type,
                version,
                producer: producer.as_deref(),
            };
            encode_json_message(format, &header, &input)
        }
        EnvelopeCommand::Decode => decode_to_json_line(&input),
    };
    match output {
        Ok(bytes) => match std::io::stdout().lock().write_all(&bytes) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("logpipe: cannot write stdout: {err}");
                ExitCode::FAILURE
            }
        },
        Err(reason) => {
            eprintln!("logpipe: {reason}");
            ExitCode::from(EXIT_DATA)
        }
    }
}

/// Encodes the JSON message `input`, keeping the order of its keys.
fn encode_json_message(
    format: Format,
    header: &Header<'_>,
    input: &[u8],
) -> Result<Vec<u8>, String> {
    let mut deserializer = serde_json::Deserializer::from_slice(input);
    let message = serde_transcode::Transcoder::new(&mut deserializer);
    let encoded = envelope::encode(format, header, &message).map_err(|err| {
        format!(
            "the message on stdin cannot be encoded: {}",
            error_chain(&err)
        )
    })?;
    deserializer
        .end()
        .map_err(|err| format!("the message on stdin is followed by more input: {err}"))?;
    Ok(encoded)
}

/// Decodes a record value into one JSON line.
fn decode_to_json_line(input: &[u8]) -> Result<Vec<u8>, String> {
    let envelope = envelope::decode(input).map_err(|err| error_chain(&err))?;
    let text = |value: &str| serde_json::to_string(value).expect("strings serialize");
    let mut line = format!(
        "{{\"format\":{},\"type\":{},\"version\":{},\"producer\":{},\"message\":",
        text(envelope.format.as_str()),
        text(&envelope.message_type),
        envelope.version,
        envelope
            .producer
            .as_deref()
            .map_or_else(|| "null".to_owned(), text),
    )
    .into_bytes();
    envelope
        .body
        .write_json(&mut line)
        .map_err(|err| format!("the message cannot be shown as JSON: {err}"))?;
    line.extend_from_slice(b"}\n");
    Ok(line)
}
