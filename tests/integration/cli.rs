//! The `logpipe envelope` commands, run as the real binary.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::support::{decode_vectors, encode_vectors, program};

fn logpipe(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(program("logpipe"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn envelope_encode_writes_every_vector_byte_for_byte() {
    for vector in encode_vectors() {
        let version = vector.version.to_string();
        let mut args = vec![
            "envelope",
            "encode",
            "--type",
            &vector.message_type,
            "--version",
            &version,
            "--format",
            &vector.format,
        ];
        if !vector.producer_id.is_empty() {
            args.extend(["--producer", &vector.producer_id]);
        }
        let output = logpipe(&args, vector.message.get().as_bytes());
        assert!(
            output.status.success(),
            "{}: {}",
            vector.name,
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            hex::encode(&output.stdout),
            vector.value_hex,
            "vector {}",
            vector.name
        );
    }
}

#[test]
fn envelope_encode_rejects_input_that_is_not_json() {
    let output = logpipe(
        &["envelope", "encode", "--type", "t", "--version", "1"],
        b"{not json",
    );
    assert_eq!(output.status.code(), Some(65));
    assert!(!output.stderr.is_empty());
}

/// Whether django-logpipe's envelope is readable with an integer version, which is when
/// `decode` prints it (it has no registry, so unknown and ignored types print too).
fn is_readable_envelope(value: &[u8]) -> bool {
    let Some(body) = value.strip_prefix(b"json:") else {
        return value.starts_with(b"msgpack:");
    };
    let Ok(Value::Object(envelope)) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    envelope.get("type").is_some_and(Value::is_string)
        && envelope.get("version").is_some_and(|v| v.is_u64())
        && envelope.contains_key("message")
}

#[test]
fn envelope_decode_prints_each_vector_or_exits_65_with_the_reason() {
    for vector in decode_vectors() {
        let value = vector.value();
        let output = logpipe(&["envelope", "decode"], &value);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !is_readable_envelope(&value) {
            assert_eq!(output.status.code(), Some(65), "vector {}", vector.name);
            assert!(
                output.stdout.is_empty() && !stderr.trim().is_empty(),
                "vector {}: {stderr}",
                vector.name
            );
            continue;
        }
        assert!(output.status.success(), "vector {}: {stderr}", vector.name);
        let line: Value = serde_json::from_slice(&output.stdout).unwrap();
        let keys: Vec<_> = line.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys.len(), 5, "vector {}: {line}", vector.name);
        if vector.expect.outcome == "ok" {
            assert_eq!(line["type"], vector.expect.message_type.clone().unwrap());
            assert_eq!(line["version"], vector.expect.version.unwrap());
            assert_eq!(
                line["producer"],
                vector
                    .expect
                    .producer
                    .clone()
                    .map_or(Value::Null, Value::String)
            );
            assert_eq!(
                line["message"],
                vector.expect.message.clone().unwrap(),
                "vector {}",
                vector.name
            );
            let format = if value.starts_with(b"msgpack:") {
                "msgpack"
            } else {
                "json"
            };
            assert_eq!(line["format"], format);
        }
    }
}
