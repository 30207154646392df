//! `logpipe produce`: sends each JSON line of stdin as an envelope of one type and
//! version.

use std::sync::Arc;

use clap::Args;
use logpipe_core::{OutgoingRecord, ProducerBackend, send_all};

use super::envelope::encode_json_message;
use super::failure::Failure;
use super::message_type;
use super::ops::{connect, reach};
use crate::config::Config;
use crate::envelope::Header;

/// Records sent at once, at most.
const SEND_WINDOW: usize = 500;

#[derive(Debug, Args)]
pub(super) struct ProduceArgs {
    /// The stream to write to.
    stream: String,
    /// The message type.
    #[arg(long = "type", value_parser = message_type)]
    message_type: String,
    /// The message version.
    #[arg(long)]
    version: u64,
    /// The key of every record (default: none, records spread over partitions).
    #[arg(long, conflicts_with = "key_field")]
    key: Option<String>,
    /// Takes each record's key from this field of its message, a string or an integer
    /// (django-logpipe's `KEY_FIELD`); a line without it is refused.
    #[arg(long, value_name = "FIELD")]
    key_field: Option<String>,
    /// With `--key-field`, sends a line whose message lacks the field (or has it null or
    /// empty) without a key instead of refusing it.
    #[arg(long, requires = "key_field")]
    allow_keyless: bool,
}

impl ProduceArgs {
    /// The key of the record of the message `line`.
    fn key_of(&self, line: &str) -> Result<Option<Vec<u8>>, String> {
        let Some(field) = &self.key_field else {
            return Ok(self.key.as_ref().map(|key| key.as_bytes().to_vec()));
        };
        match key_from_field(line, field)? {
            Some(key) => Ok(Some(key.into_bytes())),
            None if self.allow_keyless => Ok(None),
            None => Err(format!(
                "the message has no key in its field {field:?} (--allow-keyless sends it without one)"
            )),
        }
    }
}

/// The key a message's `field` holds, as text, as django-logpipe's `str(message[field])`
/// writes strings and integers; `None` when the field is missing, null or empty.
fn key_from_field(line: &str, field: &str) -> Result<Option<String>, String> {
    use serde_json::Value;
    let message: serde_json::Map<String, Value> = serde_json::from_str(line)
        .map_err(|err| format!("the message is not a JSON object with a key field: {err}"))?;
    let kind = match message.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(text)) => return Ok((!text.is_empty()).then(|| text.clone())),
        Some(Value::Number(number)) if number.is_i64() || number.is_u64() => {
            return Ok(Some(number.to_string()));
        }
        Some(Value::Number(_)) => "a fraction",
        Some(Value::Bool(_)) => "a boolean",
        Some(Value::Array(_)) => "an array",
        Some(Value::Object(_)) => "an object",
    };
    Err(format!(
        "the key field {field:?} is {kind}; a key is a string or an integer"
    ))
}

pub(super) async fn produce(config: Config, args: ProduceArgs) -> Result<(), Failure> {
    let backend = connect(&config)?;
    reach(&backend, &args.stream, "cannot write to").await?;
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
    // A line that cannot be sent ends the input; the lines before it are sent.
    let mut refused = None;
    loop {
        let line = lines.recv().await.transpose()?;
        let last = match &line {
            Some(line) if line.trim().is_empty() => {
                line_number += 1;
                continue;
            }
            Some(line) => {
                line_number += 1;
                match record_of(&config, &args, &header, &stream, line) {
                    Ok(record) => window.push(record),
                    Err(reason) => {
                        refused = Some(Failure::Data(format!("line {line_number}: {reason}")))
                    }
                }
                refused.is_some()
            }
            None => true,
        };
        if window.len() == SEND_WINDOW || (last && !window.is_empty()) {
            let records = std::mem::take(&mut window);
            let count = records.len() as u64;
            send_all(&backend, records)
                .await
                .map_err(|err| Failure::backend(&format!("cannot write to {stream:?}"), &err))?;
            sent += count;
        }
        if last {
            break;
        }
    }
    backend
        .flush()
        .await
        .map_err(|err| Failure::backend("cannot flush", &err))?;
    eprintln!("logpipe: sent {sent} records to {stream}");
    refused.map_or(Ok(()), Err)
}

/// The record of the JSON message `line`.
fn record_of(
    config: &Config,
    args: &ProduceArgs,
    header: &Header<'_>,
    stream: &Arc<str>,
    line: &str,
) -> Result<OutgoingRecord, String> {
    Ok(OutgoingRecord {
        stream: Arc::clone(stream),
        value: encode_json_message(config.format, header, line.as_bytes())?,
        key: args.key_of(line)?,
        headers: Vec::new(),
    })
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

#[cfg(test)]
mod tests {
    use super::key_from_field;

    #[test]
    fn a_key_field_gives_strings_and_integers_as_text_and_refuses_the_rest() {
        let key = |line: &str| key_from_field(line, "id");
        assert_eq!(key(r#"{"id":"6f1c"}"#), Ok(Some("6f1c".to_owned())));
        assert_eq!(key(r#"{"id":42}"#), Ok(Some("42".to_owned())));
        assert_eq!(key(r#"{"id":-7}"#), Ok(Some("-7".to_owned())));
        assert_eq!(
            key(r#"{"id":18446744073709551615}"#),
            Ok(Some("18446744073709551615".to_owned()))
        );
        for keyless in [r#"{"name":"x"}"#, r#"{"id":null}"#, r#"{"id":""}"#] {
            assert_eq!(key(keyless), Ok(None), "{keyless}");
        }
        for (line, kind) in [
            (r#"{"id":1.5}"#, "a fraction"),
            (r#"{"id":true}"#, "a boolean"),
            (r#"{"id":[1]}"#, "an array"),
            (r#"{"id":{"a":1}}"#, "an object"),
        ] {
            let refused = key(line).unwrap_err();
            assert!(refused.contains(kind), "{line}: {refused}");
        }
        assert!(key("[1]").unwrap_err().contains("not a JSON object"));
    }
}
