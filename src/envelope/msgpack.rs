//! MessagePack envelopes, as django-logpipe writes them with `msgpack.packb`.

use std::borrow::Cow;
use std::io::Write;

use serde::{Deserialize, Serialize};

use super::{Body, DecodeError, Envelope, Format, MalformedError};

/// Serializes `value` with structs as maps and strings for human-readable types (UUIDs,
/// dates), as a Python producer would write them.
pub(super) fn to_writer<W: Write, T: Serialize + ?Sized>(
    writer: W,
    value: &T,
) -> Result<(), rmp_serde::encode::Error> {
    let mut ser = rmp_serde::Serializer::new(writer)
        .with_struct_map()
        .with_human_readable();
    value.serialize(&mut ser)
}

type MsgpackDeserializer<'a> = rmp_serde::Deserializer<
    rmp_serde::decode::ReadRefReader<'a, [u8]>,
    rmp_serde::config::HumanReadableConfig<rmp_serde::config::DefaultConfig>,
>;

/// A deserializer matching [`to_writer`].
pub(super) fn deserializer(bytes: &[u8]) -> MsgpackDeserializer<'_> {
    rmp_serde::Deserializer::from_read_ref(bytes).with_human_readable()
}

pub(super) fn from_slice<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
) -> Result<T, rmp_serde::decode::Error> {
    T::deserialize(&mut deserializer(bytes))
}

pub(super) fn decode_envelope(body: &[u8]) -> Result<Envelope<'_>, DecodeError> {
    let malformed = |reason| DecodeError::Malformed(MalformedError::Msgpack(reason));
    let mut reader = Reader { buf: body, pos: 0 };
    if body.is_empty() {
        return Err(malformed("empty body"));
    }
    let Some(entries) = reader.map_len().map_err(malformed)? else {
        reader.skip_value().map_err(malformed)?;
        reader.expect_end().map_err(malformed)?;
        return Err(DecodeError::Invalid(
            "the envelope is not a MessagePack map",
        ));
    };
    let mut message_type = None;
    let mut type_is_string = true;
    let mut version = None;
    let mut message = None;
    let mut producer = None;
    for _ in 0..entries {
        let key = reader.value().map_err(malformed)?;
        let value = reader.value().map_err(malformed)?;
        match str_value(key).map_err(malformed)? {
            Some("type") => {
                message_type = str_value(value).map_err(malformed)?;
                type_is_string = message_type.is_some();
            }
            Some("version") => version = Some(value),
            Some("message") => message = Some(value),
            Some("producer") => producer = str_value(value).map_err(malformed)?,
            _ => {}
        }
    }
    reader.expect_end().map_err(malformed)?;
    if !type_is_string {
        return Err(DecodeError::Invalid("\"type\" is not a string"));
    }
    let message_type = message_type.ok_or(DecodeError::Invalid("no \"type\""))?;
    let version = version.ok_or(DecodeError::Invalid("no \"version\""))?;
    let message = message.ok_or(DecodeError::Invalid("no \"message\""))?;
    let version = uint_value(version).ok_or_else(|| DecodeError::InvalidVersion {
        message_type: message_type.to_owned(),
        version: describe(version),
    })?;
    Ok(Envelope {
        format: Format::Msgpack,
        message_type: Cow::Borrowed(message_type),
        version,
        producer: producer.map(Cow::Borrowed),
        body: Body::Msgpack(message),
    })
}

/// A value as JSON text, for error messages.
fn describe(value: &[u8]) -> String {
    let mut out = Vec::new();
    match Body::Msgpack(value).write_json(&mut out) {
        Ok(()) => String::from_utf8_lossy(&out).into_owned(),
        Err(_) => format!("<MessagePack {value:02x?}>"),
    }
}

/// The string in a complete str value, `None` for any other value.
fn str_value(value: &[u8]) -> Result<Option<&str>, &'static str> {
    let (len, header) = match value[0] {
        m @ 0xa0..=0xbf => (usize::from(m & 0x1f), 1),
        0xd9 => (usize::from(value[1]), 2),
        0xda => (usize::from(u16::from_be_bytes([value[1], value[2]])), 3),
        0xdb => (be_u32(&value[1..5]) as usize, 5),
        _ => return Ok(None),
    };
    let text =
        std::str::from_utf8(&value[header..header + len]).map_err(|_| "a string is not UTF-8")?;
    Ok(Some(text))
}

/// The value of a complete integer value when it is non-negative.
fn uint_value(value: &[u8]) -> Option<u64> {
    let be = |bytes: &[u8]| bytes.iter().fold(0u64, |acc, b| acc << 8 | u64::from(*b));
    match value[0] {
        m @ 0x00..=0x7f => Some(u64::from(m)),
        0xcc..=0xcf => Some(be(&value[1..])),
        0xd0..=0xd3 => {
            // Signed encodings: accept them when the value is not negative.
            let negative = value[1] & 0x80 != 0;
            (!negative).then(|| be(&value[1..]))
        }
        _ => None,
    }
}

fn be_u32(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// A bounds-checked cursor over MessagePack bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.buf.len())
            .ok_or("truncated value")?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn byte(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }

    fn uint(&mut self, width: usize) -> Result<u64, &'static str> {
        Ok(self
            .take(width)?
            .iter()
            .fold(0u64, |acc, b| acc << 8 | u64::from(*b)))
    }

    fn expect_end(&self) -> Result<(), &'static str> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err("extra bytes after the envelope")
        }
    }

    /// Reads a map header, or returns `None` (consuming nothing) when the next value is
    /// not a map.
    fn map_len(&mut self) -> Result<Option<u64>, &'static str> {
        let len = match self.buf[self.pos] {
            m @ 0x80..=0x8f => {
                self.pos += 1;
                u64::from(m & 0x0f)
            }
            0xde => {
                self.pos += 1;
                self.uint(2)?
            }
            0xdf => {
                self.pos += 1;
                self.uint(4)?
            }
            _ => return Ok(None),
        };
        Ok(Some(len))
    }

    /// Reads one complete value and returns its bytes.
    fn value(&mut self) -> Result<&'a [u8], &'static str> {
        let start = self.pos;
        self.skip_value()?;
        Ok(&self.buf[start..self.pos])
    }

    /// Skips one complete value without recursion, so deep nesting cannot overflow the
    /// stack; every declared length is checked against the bytes that are there.
    fn skip_value(&mut self) -> Result<(), &'static str> {
        let mut pending: u64 = 1;
        while pending > 0 {
            pending -= 1;
            let marker = self.byte()?;
            let skip = match marker {
                0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => 0,
                0x80..=0x8f => {
                    pending += 2 * u64::from(marker & 0x0f);
                    0
                }
                0x90..=0x9f => {
                    pending += u64::from(marker & 0x0f);
                    0
                }
                0xa0..=0xbf => u64::from(marker & 0x1f),
                0xc1 => return Err("reserved marker 0xc1"),
                0xc4 | 0xd9 => self.uint(1)?,
                0xc5 | 0xda => self.uint(2)?,
                0xc6 | 0xdb => self.uint(4)?,
                0xc7 => self.uint(1)? + 1,
                0xc8 => self.uint(2)? + 1,
                0xc9 => self.uint(4)? + 1,
                0xca => 4,
                0xcb => 8,
                0xcc | 0xd0 => 1,
                0xcd | 0xd1 => 2,
                0xce | 0xd2 => 4,
                0xcf | 0xd3 => 8,
                0xd4 => 2,
                0xd5 => 3,
                0xd6 => 5,
                0xd7 => 9,
                0xd8 => 17,
                0xdc => {
                    pending += self.uint(2)?;
                    0
                }
                0xdd => {
                    pending += self.uint(4)?;
                    0
                }
                0xde => {
                    pending += 2 * self.uint(2)?;
                    0
                }
                0xdf => {
                    pending += 2 * self.uint(4)?;
                    0
                }
            };
            self.take(usize::try_from(skip).map_err(|_| "truncated value")?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_nesting_does_not_overflow_the_stack() {
        let mut value = b"msgpack:".to_vec();
        value.extend(std::iter::repeat_n(0x91, 1_000_000));
        value.push(0xc0);
        assert!(matches!(
            super::super::decode(&value),
            Err(DecodeError::Invalid(_))
        ));
    }

    #[test]
    fn huge_declared_lengths_are_truncation_errors() {
        for body in [
            &[0xdb, 0xff, 0xff, 0xff, 0xff, b'a'][..],
            &[0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0],
        ] {
            let mut value = b"msgpack:".to_vec();
            value.extend_from_slice(body);
            assert!(matches!(
                super::super::decode(&value),
                Err(DecodeError::Malformed(MalformedError::Msgpack(_)))
            ));
        }
    }

    #[test]
    fn signed_encodings_of_non_negative_versions_are_accepted() {
        assert_eq!(uint_value(&[0xd0, 0x05]), Some(5));
        assert_eq!(uint_value(&[0xd0, 0xff]), None);
        assert_eq!(uint_value(&[0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(uint_value(&[0xc3]), None);
    }
}
