//! `logpipe tail`: prints records of a stream as they arrive, decoded.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use logpipe_core::time::{format_time, millis};
use logpipe_core::{Backend, BackendError, ConsumerBackend, ConsumerEvent, Record, StartFrom};

use super::envelope::decode_to_json_line;
use super::failure::Failure;
use super::ops::{connect, reach};
use super::validate::{PublishedSchemas, Verdict};
use crate::config::Config;
use crate::envelope;
use crate::error_chain;

#[derive(Debug, Args)]
pub(super) struct TailArgs {
    /// The stream to read.
    stream: String,
    /// Start at the oldest record kept (default: only records written from now on).
    #[arg(long)]
    from_beginning: bool,
    /// Show only messages of this type (malformed records are always shown).
    #[arg(long = "type")]
    message_type: Option<String>,
    /// Show only messages of this version (malformed records are always shown).
    #[arg(long)]
    version: Option<u64>,
    /// Mark each message that does not match the published schema of its (type,
    /// version) in DIR (as `logpipe::schema::Schemas::export` wrote it), or that has none
    /// there.
    #[arg(long, value_name = "DIR")]
    validate: Option<PathBuf>,
    /// One JSON object a line.
    #[arg(long)]
    json: bool,
    /// Stop after this many records shown.
    #[arg(long)]
    max: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    timeout: Option<f64>,
}

pub(super) async fn tail(config: Config, args: TailArgs) -> Result<(), Failure> {
    let schemas = args
        .validate
        .as_deref()
        .map(PublishedSchemas::read)
        .transpose()?;
    let backend = connect(&config)?;
    reach(&backend, &args.stream, "cannot read").await?;
    // Where the reader starts: the oldest record, or only new ones.
    let start = if args.from_beginning {
        StartFrom::Earliest
    } else {
        StartFrom::Latest
    };
    // A consumer of its own: no group's partitions or leases are touched.
    let group = "";
    let mut consumer = backend
        .open_consumer(group, std::slice::from_ref(&args.stream), start)
        .map_err(|err| Failure::backend(&format!("cannot read {:?}", args.stream), &err))?;
    let deadline = args
        .timeout
        .map(|seconds| tokio::time::Instant::now() + Duration::from_secs_f64(seconds.max(0.0)));
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let mut shown = 0_u64;
    let mut stdout = std::io::stdout().lock();
    while args.max.is_none_or(|max| shown < max) {
        let next = async {
            match deadline {
                Some(deadline) => tokio::time::timeout_at(deadline, consumer.next_event())
                    .await
                    .ok(),
                None => Some(consumer.next_event().await),
            }
        };
        let event = tokio::select! {
            event = next => event,
            _ = &mut interrupted => None,
        };
        let Some(event) = event else { break };
        let event = match event {
            Ok(event) => event,
            Err(err) => {
                pause_if_retriable(&args.stream, err).await?;
                continue;
            }
        };
        match event {
            ConsumerEvent::Assigned(partitions) => {
                for partition in partitions {
                    consumer.seek(&partition, None).await.map_err(|err| {
                        Failure::backend(&format!("cannot read {partition}"), &err)
                    })?;
                }
            }
            ConsumerEvent::Records(records) => {
                for record in records {
                    if args.max.is_some_and(|max| shown >= max) {
                        break;
                    }
                    if let Some(line) = show_record(&record, &args, schemas.as_ref()) {
                        stdout.write_all(line.as_bytes())?;
                        stdout.flush()?;
                        shown += 1;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Waits a little after a read error that may pass; any other is the command's failure.
async fn pause_if_retriable(stream: &str, err: BackendError) -> Result<(), Failure> {
    if !err.is_retriable() {
        return Err(Failure::backend(&format!("cannot read {stream:?}"), &err));
    }
    tracing::warn!(error = %error_chain(&err), "reading failed; trying again");
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

/// A record as a line of text, or `None` when `--type` or `--version` filters it out. A
/// record that is not an envelope is shown with the reason; with `schemas`, a message
/// that does not match its published schema, or has none, is marked.
fn show_record(
    record: &Record,
    args: &TailArgs,
    schemas: Option<&PublishedSchemas>,
) -> Option<String> {
    let json = args.json;
    let key = record
        .key
        .as_deref()
        .map(|key| String::from_utf8_lossy(key).into_owned());
    let timestamp = record.timestamp.map(millis);
    let (stream, partition) = (&record.partition.stream, &record.partition.partition);
    let position = record.position.to_string();
    let text = |value: &str| serde_json::to_string(value).expect("strings serialize");
    let json_prefix = || {
        format!(
            "{{\"stream\":{},\"partition\":{},\"position\":{},\"timestamp_ms\":{},\"key\":{},",
            text(stream),
            text(partition),
            text(&position),
            timestamp.map_or_else(|| "null".to_owned(), |t| t.to_string()),
            key.as_deref().map_or_else(|| "null".to_owned(), text),
        )
    };
    let human_prefix = || {
        format!(
            "{stream}/{partition}@{position} {} key={}",
            timestamp.map_or_else(|| "-".to_owned(), format_time),
            key.as_deref().unwrap_or("-"),
        )
    };
    let malformed = |reason: String| {
        Some(if json {
            format!(
                "{}\"malformed\":{},\"value\":{}}}\n",
                json_prefix(),
                text(&reason),
                text(&String::from_utf8_lossy(&record.value)),
            )
        } else {
            format!(
                "{} MALFORMED ({reason}): {}\n",
                human_prefix(),
                String::from_utf8_lossy(&record.value).escape_debug(),
            )
        })
    };
    let envelope = match envelope::decode(&record.value) {
        Ok(envelope) => envelope,
        Err(err) => return malformed(error_chain(&err)),
    };
    if args
        .message_type
        .as_deref()
        .is_some_and(|t| t != envelope.message_type)
        || args.version.is_some_and(|v| v != envelope.version)
    {
        return None;
    }
    let verdict = match schemas {
        None => None,
        Some(schemas) => match envelope.body.deserialize::<serde_json::Value>() {
            Ok(value) => Some(schemas.judge(&envelope.message_type, envelope.version, &value)),
            Err(err) => return malformed(format!("the message cannot be shown as JSON: {err}")),
        },
    };
    if json {
        let judged = match &verdict {
            None => String::new(),
            Some(Verdict::Valid) => "\"valid\":true,".to_owned(),
            Some(Verdict::Invalid(violations)) => format!(
                "\"valid\":false,\"violations\":{},",
                serde_json::to_string(violations).expect("strings serialize")
            ),
            Some(Verdict::Unpublished) => {
                "\"valid\":null,\"violations\":[\"no published schema\"],".to_owned()
            }
        };
        // The envelope's own JSON line, after the record's fields.
        return match decode_to_json_line(&record.value) {
            Ok(line) => Some(json_prefix() + &judged + &String::from_utf8_lossy(&line[1..])),
            Err(reason) => malformed(reason),
        };
    }
    let mut message = Vec::new();
    if let Err(err) = envelope.body.write_json(&mut message) {
        return malformed(format!("the message cannot be shown as JSON: {err}"));
    }
    let mark = match verdict {
        None | Some(Verdict::Valid) => String::new(),
        Some(Verdict::Invalid(violations)) => format!(" INVALID ({})", violations.join("; ")),
        Some(Verdict::Unpublished) => " UNPUBLISHED (no published schema)".to_owned(),
    };
    Some(format!(
        "{} {} v{}{mark}: {}\n",
        human_prefix(),
        envelope.message_type,
        envelope.version,
        String::from_utf8_lossy(&message),
    ))
}
