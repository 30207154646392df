//! `logpipe produce`: sends each JSON line of stdin as an envelope of one type and
//! version.

use std::sync::Arc;

use clap::Args;
use logpipe_core::{OutgoingRecord, ProducerBackend};

use super::envelope::encode_json_message;
use super::failure::Failure;
use super::ops::connect;
use crate::config::Config;
use crate::envelope::Header;
use logpipe_core::send_all;

/// Records sent at once, at most.
const SEND_WINDOW: usize = 500;

#[derive(Debug, Args)]
pub(super) struct ProduceArgs {
    /// The stream to write to.
    stream: String,
    /// The message type.
    #[arg(long = "type")]
    message_type: String,
    /// The message version.
    #[arg(long)]
    version: u64,
    /// The key of every record (default: none, records spread over partitions).
    #[arg(long)]
    key: Option<String>,
}

pub(super) async fn produce(config: Config, args: ProduceArgs) -> Result<(), Failure> {
    let backend = connect(&config)?;
    let header = Header {
        message_type: &args.message_type,
        version: args.version,
        producer: config.producer_id.as_deref(),
    };
    let stream: Arc<str> = args.stream.as_str().into();
    let mut lines = stdin_lines();
    let mut line_number = 0_u64;
    let mut sent = 0_u64;
    let mut window = Vec::with_capacity(SEND_WINDOW);
    loop {
        let line = lines.recv().await.transpose()?;
        if let Some(line) = &line {
            line_number += 1;
            if line.trim().is_empty() {
                continue;
            }
            let value = encode_json_message(config.format, &header, line.as_bytes())
                .map_err(|reason| Failure::Data(format!("line {line_number}: {reason}")))?;
            window.push(OutgoingRecord {
                stream: Arc::clone(&stream),
                key: args.key.as_ref().map(|key| key.as_bytes().to_vec()),
                value,
                headers: Vec::new(),
            });
        }
        if window.len() == SEND_WINDOW || (line.is_none() && !window.is_empty()) {
            let records = std::mem::take(&mut window);
            let count = records.len() as u64;
            send_all(&backend, records)
                .await
                .map_err(|err| Failure::backend(&format!("cannot write to {stream:?}"), &err))?;
            sent += count;
        }
        if line.is_none() {
            break;
        }
    }
    backend
        .flush()
        .await
        .map_err(|err| Failure::backend("cannot flush", &err))?;
    eprintln!("logpipe: sent {sent} records to {stream}");
    Ok(())
}

/// The lines of stdin, read on a thread of their own (reading stdin blocks).
fn stdin_lines() -> tokio::sync::mpsc::Receiver<std::io::Result<String>> {
    let (lines, received) = tokio::sync::mpsc::channel(SEND_WINDOW);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let failed = line.is_err();
            if lines.blocking_send(line).is_err() || failed {
                break;
            }
        }
    });
    received
}
