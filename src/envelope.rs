//! The wire format: `<format>:<body>`, byte-compatible with django-logpipe.
//!
//! A record value is a format code, a colon, and an envelope object with the keys `type`,
//! `version`, `message` and, when the producer has an id, `producer`, in that order:
//!
//! ```text
//! json:{"type":"person","version":2,"message":{"uuid":"6f1c"},"producer":"crm"}
//! ```
//!
//! [`encode`] writes exactly the bytes django-logpipe 1.6 writes. [`decode`] reads the
//! envelope but leaves `message` undecoded ([`Body`]), so that it is only decoded once a
//! handler for its (type, version) has been found.
//!
//! ```
//! use logpipe::envelope::{self, Format, Header};
//!
//! let header = Header { message_type: "us-state", version: 1, producer: None };
//! let bytes = envelope::encode(Format::Json, &header, &serde_json::json!({"code": "NY"}))?;
//! assert_eq!(bytes, br#"json:{"type":"us-state","version":1,"message":{"code":"NY"}}"#);
//!
//! let envelope = envelope::decode(&bytes)?;
//! assert_eq!((envelope.message_type.as_ref(), envelope.version), ("us-state", 1));
//! let message: serde_json::Value = envelope.body.deserialize()?;
//! assert_eq!(message["code"], "NY");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::str::FromStr;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

pub(crate) mod json_scan;
mod msgpack;
mod python_json;

/// The serialization format of an envelope, written before the colon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Format {
    /// `json:` — compact JSON, the default.
    #[default]
    Json,
    /// `msgpack:` — MessagePack.
    Msgpack,
}

impl Format {
    /// The format code as written on the wire (`json` or `msgpack`).
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Msgpack => "msgpack",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error returned when parsing an unknown format name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown format {0:?} (expected \"json\" or \"msgpack\")")]
pub struct UnknownFormat(pub String);

impl FromStr for Format {
    type Err = UnknownFormat;

    /// Parses a format code. Codes are case-sensitive, as on the wire.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(Format::Json),
            "msgpack" => Ok(Format::Msgpack),
            other => Err(UnknownFormat(other.to_owned())),
        }
    }
}

impl<'de> Deserialize<'de> for Format {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = Cow::<str>::deserialize(deserializer)?;
        name.parse().map_err(de::Error::custom)
    }
}

/// The envelope fields other than the message itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// The message type, such as `person`.
    pub message_type: &'a str,
    /// The schema version of the message.
    pub version: u64,
    /// The producer id; `None` writes no `producer` key at all.
    pub producer: Option<&'a str>,
}

/// The error returned when a message cannot be encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The message could not be serialized as JSON (for example a map with non-string
    /// keys). Floats that are NaN or infinite are written as `null`, as `serde_json` does.
    #[error("cannot encode the message as JSON")]
    Json(#[source] serde_json::Error),
    /// The message could not be serialized as MessagePack.
    #[error("cannot encode the message as MessagePack")]
    Msgpack(#[source] rmp_serde::encode::Error),
}

#[derive(Serialize)]
struct EnvelopeOut<'a, T: ?Sized> {
    #[serde(rename = "type")]
    message_type: &'a str,
    version: u64,
    message: &'a T,
    #[serde(skip_serializing_if = "Option::is_none")]
    producer: Option<&'a str>,
}

/// Encodes `message` in an envelope, producing the exact record value django-logpipe
/// writes for the same input.
///
/// JSON is compact, raw UTF-8 (U+2028 and U+2029 escaped), with floats written as Python
/// writes them; MessagePack uses maps for structs, the smallest integer encodings, str
/// strings and float64 (float32 for `f32` fields).
///
/// # Errors
///
/// [`EncodeError`] when the message cannot be serialized in `format` (a map with
/// non-string keys in JSON, or a failing `Serialize` implementation).
pub fn encode<T: Serialize + ?Sized>(
    format: Format,
    header: &Header<'_>,
    message: &T,
) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(512);
    encode_into(&mut out, format, header, message)?;
    Ok(out)
}

/// Like [`encode`], appending the record value to `out`.
///
/// # Errors
///
/// As [`encode`]; on error `out` may hold a partial value.
pub fn encode_into<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    format: Format,
    header: &Header<'_>,
    message: &T,
) -> Result<(), EncodeError> {
    let envelope = EnvelopeOut {
        message_type: header.message_type,
        version: header.version,
        message,
        producer: header.producer,
    };
    out.extend_from_slice(format.as_str().as_bytes());
    out.push(b':');
    match format {
        Format::Json => python_json::to_writer(out, &envelope).map_err(EncodeError::Json),
        Format::Msgpack => msgpack::to_writer(out, &envelope).map_err(EncodeError::Msgpack),
    }
}

/// A decoded envelope whose message is still undecoded.
#[derive(Debug, Clone)]
pub struct Envelope<'a> {
    /// The format the record was written in.
    pub format: Format,
    /// The message type.
    pub message_type: Cow<'a, str>,
    /// The schema version.
    pub version: u64,
    /// The producer id, when the envelope names one.
    pub producer: Option<Cow<'a, str>>,
    /// The message, not decoded yet.
    pub body: Body<'a>,
}

/// The undecoded `message` of an envelope.
///
/// Its bounds are known but its contents are checked only when it is deserialized, so
/// that a message is parsed once, into the handler's type.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    /// The message's JSON text.
    Json(&'a [u8]),
    /// The message's MessagePack bytes (one complete value).
    Msgpack(&'a [u8]),
}

/// The error returned when a message body does not deserialize into the requested type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The JSON message does not fit the type.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// The MessagePack message does not fit the type.
    #[error(transparent)]
    Msgpack(#[from] rmp_serde::decode::Error),
    /// An upcaster refused the message (see
    /// [`RegistryBuilder::try_upcast`](crate::registry::RegistryBuilder::try_upcast)).
    #[error("the upcaster refused it")]
    Upcast(#[source] crate::BoxError),
}

impl<'a> Body<'a> {
    /// Deserializes the message into `T`.
    ///
    /// # Errors
    ///
    /// [`BodyError`] when the message does not fit `T` (a missing field, a wrong type).
    pub fn deserialize<T: Deserialize<'a>>(&self) -> Result<T, BodyError> {
        match *self {
            Body::Json(text) => Ok(serde_json::from_slice(text)?),
            Body::Msgpack(bytes) => Ok(msgpack::from_slice(bytes)?),
        }
    }

    /// Writes the message as compact JSON, keeping the order of its keys.
    ///
    /// # Errors
    ///
    /// An I/O error from `writer`, or a MessagePack message that JSON cannot represent
    /// (a map with non-string keys).
    pub fn write_json<W: io::Write>(&self, writer: W) -> io::Result<()> {
        match *self {
            Body::Json(text) => {
                let mut de = serde_json::Deserializer::from_slice(text);
                transcode_to_json(&mut de, writer)?;
                de.end().map_err(io::Error::other)
            }
            Body::Msgpack(bytes) => {
                let mut de = msgpack::deserializer(bytes);
                transcode_to_json(&mut de, writer)
            }
        }
    }
}

impl Body<'_> {
    /// Checks that a JSON message parses, telling a malformed record from a message that
    /// does not fit its type. MessagePack bodies were checked when they were read.
    pub(crate) fn check_syntax(&self) -> Result<(), MalformedError> {
        match *self {
            Body::Json(text) => serde_json::from_slice::<IgnoredAny>(text)
                .map(drop)
                .map_err(MalformedError::Json),
            Body::Msgpack(_) => Ok(()),
        }
    }
}

fn transcode_to_json<'de, D: Deserializer<'de>, W: io::Write>(
    deserializer: D,
    writer: W,
) -> io::Result<()> {
    let mut ser = serde_json::Serializer::new(writer);
    serde_transcode::transcode(deserializer, &mut ser).map_err(io::Error::other)
}

/// Why a record value is not a valid envelope.
///
/// [`Malformed`](DecodeError::Malformed) values could not be read at all (django-logpipe
/// crashes on them); the other variants are readable but not a usable envelope.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The value cannot be parsed: no colon, an unknown format code, bad JSON or
    /// MessagePack, an empty body. (Bad JSON inside `message` may only show when the
    /// message is deserialized.)
    #[error("malformed record: {0}")]
    Malformed(#[source] MalformedError),
    /// The body parsed but is not an envelope object with `type`, `version` and `message`.
    #[error("invalid envelope: {0}")]
    Invalid(&'static str),
    /// The envelope's `version` is not a non-negative integer (`"1"`, `1.0`, `true`, `-1`).
    #[error("message type {message_type:?} has an invalid version {version}")]
    InvalidVersion {
        /// The envelope's message type.
        message_type: String,
        /// The version as written, for example `"1"`.
        version: String,
    },
}

/// Why a record value could not be parsed at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MalformedError {
    /// There is no `:` between a format code and a body.
    #[error("no format prefix (expected \"json:\" or \"msgpack:\")")]
    NoColon,
    /// The format code is not `json` or `msgpack` (codes are case-sensitive).
    #[error("unknown format {0:?}")]
    UnknownFormat(String),
    /// The JSON body does not parse.
    #[error("bad JSON body")]
    Json(#[source] serde_json::Error),
    /// The MessagePack body does not parse.
    #[error("bad MessagePack body: {0}")]
    Msgpack(&'static str),
}

/// Decodes a record value into an [`Envelope`], leaving the message undecoded (and
/// unchecked: see [`Body`]).
///
/// Envelope keys other than `type`, `version`, `message` and `producer` are ignored;
/// a `producer` that is not a string counts as absent, as in django-logpipe.
///
/// # Errors
///
/// [`DecodeError`] when the value is malformed, is not an envelope, or has a `version`
/// that is not a non-negative integer.
pub fn decode(value: &[u8]) -> Result<Envelope<'_>, DecodeError> {
    let colon = value
        .iter()
        .position(|&b| b == b':')
        .ok_or(DecodeError::Malformed(MalformedError::NoColon))?;
    let (code, body) = (&value[..colon], &value[colon + 1..]);
    match code {
        b"json" => decode_json(body),
        b"msgpack" => msgpack::decode_envelope(body),
        other => Err(DecodeError::Malformed(MalformedError::UnknownFormat(
            String::from_utf8_lossy(other).into_owned(),
        ))),
    }
}

/// The envelope fields as read, before they are checked.
struct RawFields<'a> {
    message_type: Option<Cow<'a, str>>,
    type_is_string: bool,
    version: Option<&'a RawValue>,
    message: Option<&'a RawValue>,
    producer: Option<Cow<'a, str>>,
}

impl<'de> Deserialize<'de> for RawFields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawFieldsVisitor)
    }
}

/// Reads an envelope object in one pass, keeping the last value of a repeated key (as
/// Python's `json` does) and borrowing `message` as raw JSON text.
struct RawFieldsVisitor;

/// An envelope key, read without allocating.
enum FieldKey {
    Type,
    Version,
    Message,
    Producer,
    Other,
}

impl<'de> Deserialize<'de> for FieldKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = FieldKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an envelope key")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<FieldKey, E> {
                Ok(match key {
                    "type" => FieldKey::Type,
                    "version" => FieldKey::Version,
                    "message" => FieldKey::Message,
                    "producer" => FieldKey::Producer,
                    _ => FieldKey::Other,
                })
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// A JSON value that is a string (borrowed when it has no escapes), or anything else.
enum MaybeStr<'a> {
    Str(Cow<'a, str>),
    Other,
}

impl<'de> Deserialize<'de> for MaybeStr<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MaybeStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(MaybeStr::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(MaybeStr::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(MaybeStr::Other)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(MaybeStr::Other)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(MaybeStr::Other)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(MaybeStr::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(MaybeStr::Other)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(MaybeStr::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(MaybeStr::Other)
            }
        }
        deserializer.deserialize_any(V)
    }
}

impl<'de> Visitor<'de> for RawFieldsVisitor {
    type Value = RawFields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an envelope object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = RawFields {
            message_type: None,
            type_is_string: true,
            version: None,
            message: None,
            producer: None,
        };
        while let Some(key) = map.next_key::<FieldKey>()? {
            match key {
                FieldKey::Type => match map.next_value::<MaybeStr<'de>>()? {
                    MaybeStr::Str(s) => {
                        (fields.message_type, fields.type_is_string) = (Some(s), true)
                    }
                    MaybeStr::Other => (fields.message_type, fields.type_is_string) = (None, false),
                },
                FieldKey::Version => fields.version = Some(map.next_value()?),
                FieldKey::Message => fields.message = Some(map.next_value()?),
                FieldKey::Producer => {
                    fields.producer = match map.next_value::<MaybeStr<'de>>()? {
                        MaybeStr::Str(s) => Some(s),
                        MaybeStr::Other => None,
                    }
                }
                FieldKey::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(fields)
    }
}

/// Deserializing anything but an object into `RawFields` fails with this marker text, so
/// that "valid JSON, but not an object" can be told apart from bad JSON.
const NOT_AN_OBJECT: &str = "the envelope is not a JSON object";

fn decode_json(body: &[u8]) -> Result<Envelope<'_>, DecodeError> {
    if let Some(fields) = json_scan::scan(body) {
        return Ok(Envelope {
            format: Format::Json,
            message_type: Cow::Borrowed(fields.message_type),
            version: fields.version,
            producer: fields.producer.map(Cow::Borrowed),
            body: Body::Json(fields.message),
        });
    }
    let fields = match serde_json::from_slice::<RawFields<'_>>(body) {
        Ok(fields) => fields,
        Err(err) if err.is_data() => return Err(DecodeError::Invalid(NOT_AN_OBJECT)),
        Err(err) => return Err(DecodeError::Malformed(MalformedError::Json(err))),
    };
    if !fields.type_is_string {
        return Err(DecodeError::Invalid("\"type\" is not a string"));
    }
    let message_type = fields
        .message_type
        .ok_or(DecodeError::Invalid("no \"type\""))?;
    let version = fields
        .version
        .ok_or(DecodeError::Invalid("no \"version\""))?;
    let message = fields
        .message
        .ok_or(DecodeError::Invalid("no \"message\""))?;
    let version = parse_version(version.get()).ok_or_else(|| DecodeError::InvalidVersion {
        message_type: message_type.to_string(),
        version: version.get().to_owned(),
    })?;
    Ok(Envelope {
        format: Format::Json,
        message_type,
        version,
        producer: fields.producer,
        body: Body::Json(message.get().as_bytes()),
    })
}

/// A version is a JSON integer: digits only, no sign, fraction or exponent.
fn parse_version(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_case_sensitively() {
        assert_eq!("json".parse::<Format>().unwrap(), Format::Json);
        assert_eq!("msgpack".parse::<Format>().unwrap(), Format::Msgpack);
        assert!("JSON".parse::<Format>().is_err());
        assert!("pickle".parse::<Format>().is_err());
    }

    #[test]
    fn versions_must_be_plain_non_negative_integers() {
        assert_eq!(parse_version("0"), Some(0));
        assert_eq!(parse_version("18446744073709551615"), Some(u64::MAX));
        for bad in [
            "\"1\"",
            "1.0",
            "true",
            "-1",
            "1e2",
            "null",
            "18446744073709551616",
        ] {
            assert_eq!(parse_version(bad), None, "{bad}");
        }
    }

    #[test]
    fn repeated_keys_keep_the_last_value() {
        let env = decode(br#"json:{"type":"a","type":"b","version":1,"message":1}"#).unwrap();
        assert_eq!(env.message_type, "b");
    }

    #[test]
    fn non_string_type_is_invalid_and_non_string_producer_is_absent() {
        let err = decode(br#"json:{"type":5,"version":1,"message":{}}"#).unwrap_err();
        assert!(matches!(err, DecodeError::Invalid(_)), "{err:?}");
        let env = decode(br#"json:{"type":"a","version":1,"message":{},"producer":7}"#).unwrap();
        assert!(env.producer.is_none());
    }

    #[test]
    fn json_scalars_and_arrays_are_invalid_not_malformed() {
        for body in [&b"json:[1,2]"[..], b"json:5", b"json:\"x\"", b"json:null"] {
            assert!(
                matches!(decode(body), Err(DecodeError::Invalid(_))),
                "{body:?}"
            );
        }
        for body in [&b"json:"[..], b"json:{", b"json:{} trailing", b"json:\xff"] {
            assert!(
                matches!(
                    decode(body),
                    Err(DecodeError::Malformed(MalformedError::Json(_)))
                ),
                "{body:?}"
            );
        }
    }

    #[test]
    fn escaped_strings_decode() {
        let env =
            decode(br#"json:{"type":"a\u0062","version":1,"message":"\u00e9","producer":"p\n"}"#)
                .unwrap();
        assert_eq!(env.message_type, "ab");
        assert_eq!(env.producer.as_deref(), Some("p\n"));
        assert_eq!(env.body.deserialize::<String>().unwrap(), "é");
    }

    #[test]
    fn write_json_keeps_key_order_for_both_formats() {
        let header = Header {
            message_type: "t",
            version: 1,
            producer: None,
        };
        let message = serde_json::json!({"z": 1, "a": [1.5, "x", null]});
        for format in [Format::Json, Format::Msgpack] {
            let bytes = encode(format, &header, &message).unwrap();
            let mut out = Vec::new();
            decode(&bytes).unwrap().body.write_json(&mut out).unwrap();
            // serde_json::json! sorts keys, so "a" comes first here
            assert_eq!(
                String::from_utf8(out).unwrap(),
                r#"{"a":[1.5,"x",null],"z":1}"#
            );
        }
    }
}
