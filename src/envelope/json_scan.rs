//! Fast paths for reading JSON envelopes of the usual shape.
//!
//! Producers write `{"type":"..","version":N,"message":..,"producer":".."}`.
//! - [`scan_prefix`] reads that exact key order up to the message and [`split_suffix`]
//!   the end after it, backwards, so that the handler's type parses the message straight
//!   from the body: one pass over it in all. Written without whitespace, as producers
//!   write it, the prefix is compared byte for byte with what it must be; with
//!   whitespace it is scanned.
//! - [`scan`] reads the same keys in any order, finding the bounds of `message` by its
//!   quotes and brackets, without parsing it.
//!
//! Anything else (escapes in these strings, other keys, repeated keys, a version that is
//! not plain digits, bad syntax) returns `None`, and the full parser decides.

/// The fields of an envelope of the usual shape. `message` is not validated.
pub(super) struct Fields<'a> {
    pub(super) message_type: &'a str,
    pub(super) version: u64,
    pub(super) message: &'a [u8],
    pub(super) producer: Option<&'a str>,
}

pub(super) fn scan(body: &[u8]) -> Option<Fields<'_>> {
    let mut scanner = Scanner { bytes: body, at: 0 };
    let (mut message_type, mut version, mut message, mut producer) = (None, None, None, None);
    scanner.whitespace();
    scanner.expect(b'{')?;
    loop {
        scanner.whitespace();
        let key = scanner.plain_string()?;
        scanner.whitespace();
        scanner.expect(b':')?;
        scanner.whitespace();
        let slot_taken = match key {
            "type" => message_type.replace(scanner.plain_string()?).is_some(),
            "version" => version.replace(scanner.version()?).is_some(),
            "message" => message.replace(scanner.value()?).is_some(),
            "producer" => producer.replace(scanner.plain_string()?).is_some(),
            _ => return None,
        };
        if slot_taken {
            return None;
        }
        scanner.whitespace();
        match scanner.next()? {
            b',' => {}
            b'}' => break,
            _ => return None,
        }
    }
    scanner.whitespace();
    if scanner.at != body.len() {
        return None;
    }
    Some(Fields {
        message_type: message_type?,
        version: version?,
        message: message?,
        producer,
    })
}

/// The start of an envelope in the order producers write it, up to its message:
/// `{"type":"..","version":N,"message":`.
pub(crate) struct Prefix<'a> {
    pub(crate) message_type: &'a str,
    pub(crate) version: u64,
    /// Where the message starts in the body.
    pub(crate) message_start: usize,
}

/// Reads the start of an envelope written in the usual key order.
pub(crate) fn scan_prefix(body: &[u8]) -> Option<Prefix<'_>> {
    compact_prefix(body).or_else(|| spaced_prefix(body))
}

/// The start of an envelope exactly as producers write it, with no whitespace: a few
/// comparisons of known bytes.
fn compact_prefix(body: &[u8]) -> Option<Prefix<'_>> {
    let rest = body.strip_prefix(b"{\"type\":\"")?;
    let (message_type, rest) = plain_then_quote(rest)?;
    let rest = rest.strip_prefix(b",\"version\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let version = version_of(&rest[..digits])?;
    let rest = rest[digits..].strip_prefix(b",\"message\":")?;
    Some(Prefix {
        message_type,
        version,
        message_start: body.len() - rest.len(),
    })
}

/// The start of an envelope in the usual key order, with any whitespace.
fn spaced_prefix(body: &[u8]) -> Option<Prefix<'_>> {
    let mut scanner = Scanner { bytes: body, at: 0 };
    scanner.whitespace();
    scanner.expect(b'{')?;
    scanner.key("type")?;
    let message_type = scanner.plain_string()?;
    scanner.whitespace();
    scanner.expect(b',')?;
    scanner.key("version")?;
    let version = scanner.version()?;
    scanner.whitespace();
    scanner.expect(b',')?;
    scanner.key("message")?;
    Some(Prefix {
        message_type,
        version,
        message_start: scanner.at,
    })
}

/// Splits what follows `"message":` into the message and the producer, reading the end
/// of the envelope backwards: `}` or `,"producer":".."}`, with any whitespace.
///
/// The message is not checked: when it is one JSON value, this is the only reading of
/// the envelope (a `,"producer":".."` inside a message is either escaped or leaves more
/// than one value). `None` when the envelope does not end with `}`.
pub(crate) fn split_suffix(rest: &[u8]) -> Option<(&[u8], Option<&str>)> {
    let inside = match rest.strip_suffix(b"}") {
        Some(inside) => inside,
        None => trim_end(rest).strip_suffix(b"}")?,
    };
    Some(split_producer(inside).unwrap_or((inside, None)))
}

/// `inside` as the message, then `,"producer":"<plain string>"`, if it ends so.
fn split_producer(inside: &[u8]) -> Option<(&[u8], Option<&str>)> {
    let quoted = match inside.strip_suffix(b"\"") {
        Some(quoted) => quoted,
        None => trim_end(inside).strip_suffix(b"\"")?,
    };
    let open = quoted
        .iter()
        .rposition(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
    if quoted[open] != b'"' {
        return None;
    }
    let producer = std::str::from_utf8(&quoted[open + 1..]).ok()?;
    let before = &quoted[..open];
    let message = match before.strip_suffix(b",\"producer\":") {
        Some(message) => message,
        None => {
            let key = trim_end(before).strip_suffix(b":")?;
            trim_end(trim_end(key).strip_suffix(b"\"producer\"")?).strip_suffix(b",")?
        }
    };
    Some((message, Some(producer)))
}

/// `bytes` without the JSON whitespace at its end.
fn trim_end(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\n' | b'\r' | b'\t'))
        .map_or(0, |last| last + 1);
    &bytes[..end]
}

/// The plain string (no escapes, no control characters) at the start of `bytes`, up to
/// its closing quote, and what follows the quote.
fn plain_then_quote(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let length = bytes
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
    let rest = bytes[length..].strip_prefix(b"\"")?;
    Some((std::str::from_utf8(&bytes[..length]).ok()?, rest))
}

/// The value of a version's digits: no sign, no leading zero, within a `u64`.
fn version_of(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || (digits.len() > 1 && digits[0] == b'0') {
        return None;
    }
    digits.iter().try_fold(0u64, |value, digit| {
        value.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })
}

struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    fn whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.at += 1;
        }
    }

    /// `"name":` with whitespace around, then any whitespace before the value. `name`
    /// has no quotes, escapes or control characters, so the key is its exact bytes.
    fn key(&mut self, name: &str) -> Option<()> {
        self.whitespace();
        let rest = self.bytes[self.at..]
            .strip_prefix(b"\"")?
            .strip_prefix(name.as_bytes())?
            .strip_prefix(b"\"")?;
        self.at = self.bytes.len() - rest.len();
        self.whitespace();
        self.expect(b':')?;
        self.whitespace();
        Some(())
    }

    /// A string with no escapes and no control characters. These are short (keys, type
    /// names, producer ids): a plain loop beats `memchr`'s setup.
    fn plain_string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let (string, rest) = plain_then_quote(&self.bytes[self.at..])?;
        self.at = self.bytes.len() - rest.len();
        Some(string)
    }

    /// A JSON integer without sign, fraction or exponent that fits in a `u64`.
    fn version(&mut self) -> Option<u64> {
        let start = self.at;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
        version_of(&self.bytes[start..self.at])
    }

    /// The bounds of one value, found by matching quotes and brackets only.
    fn value(&mut self) -> Option<&'a [u8]> {
        let start = self.at;
        match self.peek()? {
            b'"' => self.skip_string()?,
            b'{' | b'[' => self.skip_nested()?,
            _ => {
                while self.peek().is_some_and(|b| {
                    !matches!(b, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t')
                }) {
                    self.at += 1;
                }
            }
        }
        (self.at > start).then(|| &self.bytes[start..self.at])
    }

    fn skip_nested(&mut self) -> Option<()> {
        let mut depth = 0usize;
        loop {
            let offset = self.bytes[self.at..]
                .iter()
                .position(|b| matches!(b, b'"' | b'{' | b'}' | b'[' | b']'))?;
            self.at += offset;
            match self.bytes[self.at] {
                b'"' => {
                    self.skip_string()?;
                    continue;
                }
                b'{' | b'[' => depth += 1,
                _ => {
                    depth -= 1;
                    if depth == 0 {
                        self.at += 1;
                        return Some(());
                    }
                }
            }
            self.at += 1;
        }
    }

    fn skip_string(&mut self) -> Option<()> {
        self.at += 1;
        loop {
            let offset = memchr::memchr2(b'"', b'\\', &self.bytes[self.at..])?;
            self.at += offset + 1;
            if self.bytes[self.at - 1] == b'"' {
                return Some(());
            }
            self.at += 1; // the escaped character
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_and_suffix_frame_the_message_of_the_usual_order() {
        let body = br#" { "type" : "t", "version": 3 ,"message": {"a":1} , "producer":"p" } "#;
        let prefix = scan_prefix(body).unwrap();
        assert_eq!((prefix.message_type, prefix.version), ("t", 3));
        assert_eq!(
            &body[prefix.message_start..prefix.message_start + 7],
            br#"{"a":1}"#
        );
        assert_eq!(
            split_suffix(&body[prefix.message_start..]),
            Some((&br#"{"a":1} "#[..], Some("p")))
        );
        assert_eq!(split_suffix(b"1}"), Some((&b"1"[..], None)));
        assert_eq!(
            split_suffix(b"1,\"producer\":\"p\"} "),
            Some((&b"1"[..], Some("p")))
        );
        assert_eq!(split_suffix(b""), None);
        assert_eq!(split_suffix(b"1} x"), None);
    }

    #[test]
    fn a_suffix_read_wrongly_leaves_no_single_message() {
        // Each splits into a message that is not one JSON value, which the full parser
        // then reads (and refuses).
        for rest in [
            &b"}}"[..],
            b"1,\"trace\":\"x\"}",
            b"1,\"producer\":null}",
            b"1,\"producer\":\"p\\\"q\"}",
            b"1,\"producer\":\"p\n\"}",
            b"}\x0c",
        ] {
            let message = split_suffix(rest).map(|(message, _)| message);
            assert!(
                message.is_none_or(|message| {
                    serde_json::from_slice::<serde::de::IgnoredAny>(message).is_err()
                }),
                "{}",
                String::from_utf8_lossy(rest)
            );
        }
        // A message holding the producer's key, escaped, is the message.
        for rest in [
            &br#""s,\"producer\":\"x"}"#[..],
            br#"{"a":",\"producer\":\"x"}}"#,
        ] {
            let (message, producer) = split_suffix(rest).unwrap();
            assert_eq!(
                (message, producer),
                (&rest[..rest.len() - 1], None),
                "{}",
                String::from_utf8_lossy(rest)
            );
        }
        assert!(scan_prefix(br#"{"version":1,"type":"t","message":1}"#).is_none());
    }

    #[test]
    fn the_compact_prefix_and_suffix_read_as_the_spaced_ones() {
        let body = br#"{"type":"t","version":18446744073709551615,"message":1,"producer":"p"}"#;
        let prefix = scan_prefix(body).unwrap();
        assert_eq!((prefix.message_type, prefix.version), ("t", u64::MAX));
        assert_eq!(&body[prefix.message_start..][..1], b"1");
        assert_eq!(
            split_suffix(&body[prefix.message_start..]),
            Some((&b"1"[..], Some("p")))
        );
        for unusual in [
            &br#"{"type":"t","version":18446744073709551616,"message":1}"#[..],
            br#"{"type":"t","version":07,"message":1}"#,
            br#"{"type":"t\"","version":1,"message":1}"#,
            br#"{"type":"t","version":,"message":1}"#,
        ] {
            assert!(
                scan_prefix(unusual).is_none(),
                "{}",
                String::from_utf8_lossy(unusual)
            );
        }
    }

    #[test]
    fn reads_the_usual_shape_in_any_key_order_with_whitespace() {
        let fields =
            scan(br#" { "message" : {"a":[1,"]}"]} , "version":12,"type":"t","producer":"p" } "#)
                .unwrap();
        assert_eq!(
            (fields.message_type, fields.version, fields.producer),
            ("t", 12, Some("p"))
        );
        assert_eq!(fields.message, br#"{"a":[1,"]}"]}"#);
    }

    #[test]
    fn finds_scalar_and_string_messages() {
        for (body, message) in [
            (
                &br#"{"type":"t","version":1,"message":-1.5e3}"#[..],
                &b"-1.5e3"[..],
            ),
            (
                br#"{"type":"t","version":1,"message":"a\"b"}"#,
                br#""a\"b""#,
            ),
            (
                br#"{"type":"t","version":1,"message":null,"producer":"p"}"#,
                b"null",
            ),
            (br#"{"message":[],"type":"t","version":0}"#, b"[]"),
        ] {
            assert_eq!(
                scan(body).unwrap().message,
                message,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn leaves_everything_unusual_to_the_full_parser() {
        for body in [
            &br#"{"type":"t","version":1}"#[..],
            br#"{"type":"t\u0062","version":1,"message":1}"#,
            br#"{"type":"t","version":1,"message":1,"trace":"x"}"#,
            br#"{"type":"t","type":"u","version":1,"message":1}"#,
            br#"{"type":"t","version":1.0,"message":1}"#,
            br#"{"type":"t","version":"1","message":1}"#,
            br#"{"type":"t","version":01,"message":1}"#,
            br#"{"type":"t","version":99999999999999999999,"message":1}"#,
            br#"{"type":"t","version":1,"message":1,"producer":null}"#,
            br#"{"type":"t","version":1,"message":{"a":1}"#,
            br#"{"type":"t","version":1,"message":1}x"#,
            br#"{"type":"t","version":1,"message":"unterminated}"#,
            b"[1,2]",
            b"",
            b"{}",
        ] {
            assert!(scan(body).is_none(), "{}", String::from_utf8_lossy(body));
        }
    }
}
