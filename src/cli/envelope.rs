//! `logpipe envelope`: encode a message as a record value, or decode one.

use std::io::{Read, Write};
use std::process::ExitCode;

use clap::Subcommand;

use super::{EXIT_DATA, message_type};
use crate::envelope::{self, Format, Header};
use crate::error_chain;

#[derive(Debug, Subcommand)]
pub(super) enum EnvelopeCommand {
    /// Read a message as JSON on stdin and write the record value to stdout.
    Encode {
        /// The message type.
        #[arg(long = "type", value_parser = message_type)]
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

pub(super) fn envelope_command(command: EnvelopeCommand) -> ExitCode {
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
pub(super) fn encode_json_message(
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
pub(super) fn decode_to_json_line(input: &[u8]) -> Result<Vec<u8>, String> {
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
