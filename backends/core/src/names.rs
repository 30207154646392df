//! The names every backend takes: one rule for streams and one for message types, so that
//! a setup tried on the embedded log works on Kafka and Kinesis, and with django-logpipe.

use crate::{BackendError, BackendErrorKind};

/// The rule for stream names, as errors state it: the names both a Kafka topic and a
/// Kinesis stream may have.
pub const STREAM_NAME_RULE: &str =
    "1 to 128 characters of A-Z, a-z, 0-9, '.', '_' and '-', and not \".\" or \"..\"";

/// The rule for message types, as errors state it.
pub const MESSAGE_TYPE_RULE: &str =
    "1 to 255 characters, none of them a control character, not only spaces";

/// The bytes a stream name may have, by value: one lookup for each byte of the name
/// instead of several comparisons, which every record sent pays.
const STREAM_NAME_BYTES: [bool; 256] = {
    let mut allowed = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        allowed[byte] = b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
        byte += 1;
    }
    allowed
};

/// Whether `stream` follows [`STREAM_NAME_RULE`].
///
/// # Errors
///
/// [`BackendError`] of kind `Rejected`, naming the stream and the rule, when it does not.
///
/// ```
/// use logpipe_core::check_stream_name;
/// assert!(check_stream_name("people.v2_eu-1").is_ok());
/// let refused = check_stream_name("a/b c").unwrap_err();
/// assert!(refused.to_string().contains("1 to 128 characters"));
/// ```
pub fn check_stream_name(stream: &str) -> Result<(), BackendError> {
    if (1..=128).contains(&stream.len())
        && stream
            .bytes()
            .all(|byte| STREAM_NAME_BYTES[usize::from(byte)])
        && stream != "."
        && stream != ".."
    {
        return Ok(());
    }
    Err(BackendError::new(
        BackendErrorKind::Rejected,
        format!("{stream:?} is not a valid stream name: a stream name is {STREAM_NAME_RULE}"),
    ))
}

/// Whether `message_type` follows [`MESSAGE_TYPE_RULE`]: the reason when it does not.
///
/// # Errors
///
/// The reason, naming the type and the rule.
///
/// ```
/// use logpipe_core::check_message_type;
/// assert!(check_message_type("us-state").is_ok());
/// assert!(check_message_type("").is_err());
/// ```
pub fn check_message_type(message_type: &str) -> Result<(), String> {
    if (1..=255).contains(&message_type.chars().count())
        && !message_type.chars().any(char::is_control)
        && !message_type.chars().all(|c| c == ' ')
    {
        return Ok(());
    }
    Err(format!(
        "{message_type:?} is not a valid message type: a type is {MESSAGE_TYPE_RULE}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_follow_the_rule_of_kafka_and_kinesis() {
        for good in ["people", "People.v2", "a_b-c", "x", &"s".repeat(128), "..."] {
            assert!(check_stream_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "a/b",
            "a b",
            "é",
            ".",
            "..",
            &"s".repeat(129),
            "^people",
        ] {
            let error = check_stream_name(bad).unwrap_err();
            assert_eq!(error.kind(), BackendErrorKind::Rejected);
            assert!(error.to_string().contains(STREAM_NAME_RULE), "{error}");
        }
    }

    #[test]
    fn message_types_are_not_empty_blank_or_control_characters() {
        for good in ["person", "us state", "Person.v2/é"] {
            assert!(check_message_type(good).is_ok(), "{good}");
        }
        for bad in ["", "   ", "a\nb", &"t".repeat(256)] {
            assert!(
                check_message_type(bad)
                    .unwrap_err()
                    .contains(MESSAGE_TYPE_RULE)
            );
        }
    }
}
