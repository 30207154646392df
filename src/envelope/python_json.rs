//! JSON written the way django-logpipe (Django REST framework's `JSONRenderer`) writes it:
//! compact, raw UTF-8 except U+2028/U+2029, floats in Python's `repr` style.

use std::io::{self, Write};

use serde::Serialize;
use serde_json::ser::Formatter;

/// Serializes `value` as Python-compatible compact JSON.
pub(super) fn to_writer<W: Write, T: Serialize + ?Sized>(
    writer: W,
    value: &T,
) -> Result<(), serde_json::Error> {
    let mut ser = serde_json::Serializer::with_formatter(writer, PythonFormatter);
    value.serialize(&mut ser)
}

/// A `serde_json` formatter matching Python's `json.dumps(ensure_ascii=False,
/// separators=(",", ":"))` as used by Django REST framework.
struct PythonFormatter;

impl Formatter for PythonFormatter {
    #[inline]
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        // U+2028 and U+2029 are not ASCII; most text is.
        if fragment.is_ascii() {
            writer.write_all(fragment.as_bytes())
        } else {
            write_escaping_line_separators(writer, fragment)
        }
    }

    fn write_f64<W: ?Sized + Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        write_python_float(writer, format!("{value:e}"))
    }

    fn write_f32<W: ?Sized + Write>(&mut self, writer: &mut W, value: f32) -> io::Result<()> {
        write_python_float(writer, format!("{value:e}"))
    }
}

/// Writes `text` with U+2028 and U+2029 escaped, as Python's `json` does.
#[cold]
fn write_escaping_line_separators<W: ?Sized + Write>(writer: &mut W, text: &str) -> io::Result<()> {
    let mut start = 0;
    for (index, ch) in text.char_indices() {
        if ch == '\u{2028}' || ch == '\u{2029}' {
            writer.write_all(&text.as_bytes()[start..index])?;
            write!(writer, "\\u{:04x}", u32::from(ch))?;
            start = index + ch.len_utf8();
        }
    }
    writer.write_all(&text.as_bytes()[start..])
}

/// Writes a float as Python's `repr` does, from its shortest round-trip digits in
/// scientific notation (`scientific`, as Rust's `{:e}` prints them).
///
/// Python uses fixed notation when the decimal exponent is in -4..16 (always with a
/// fractional part: `1.0`), and otherwise `d.ddde+XX` with at least two exponent digits.
/// (`serde_json` writes NaN and infinities as `null` before this is reached.)
fn write_python_float<W: ?Sized + Write>(writer: &mut W, scientific: String) -> io::Result<()> {
    let (mantissa, exponent) = scientific
        .split_once('e')
        .expect("{:e} always writes an exponent");
    let exponent: i32 = exponent.parse().expect("{:e} writes a decimal exponent");
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    writer.write_all(sign.as_bytes())?;
    if (-4..16).contains(&exponent) {
        let point = exponent + 1; // digits before the decimal point
        if point <= 0 {
            let zeros = "0".repeat(point.unsigned_abs() as usize);
            write!(writer, "0.{zeros}{digits}")
        } else {
            let point = point as usize;
            if digits.len() <= point {
                let zeros = "0".repeat(point - digits.len());
                write!(writer, "{digits}{zeros}.0")
            } else {
                write!(writer, "{}.{}", &digits[..point], &digits[point..])
            }
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let point = if rest.is_empty() { "" } else { "." };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        write!(
            writer,
            "{first}{point}{rest}e{exp_sign}{:02}",
            exponent.unsigned_abs()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn py(value: f64) -> String {
        let mut out = Vec::new();
        to_writer(&mut out, &value).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn floats_match_python_repr() {
        // Each pair is (value, Python's repr(value)).
        let cases: [(f64, &str); 16] = [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (3.5, "3.5"),
            (-17.25, "-17.25"),
            (123.456, "123.456"),
            (0.1, "0.1"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.2345e20, "1.2345e+20"),
            (9007199254740993.0, "9007199254740992.0"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
        ];
        for (value, expected) in cases {
            assert_eq!(py(value), expected, "{value:e}");
        }
    }

    #[test]
    fn non_finite_floats_are_written_as_null() {
        for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(py(value), "null");
        }
    }

    #[test]
    fn line_separators_are_escaped_and_other_text_is_raw() {
        let mut out = Vec::new();
        to_writer(&mut out, "a\u{2028}b\u{2029}c é 東京 🚀 \u{7f} \n \u{1}").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"a\\u2028b\\u2029c é 東京 🚀 \u{7f} \\n \\u0001\""
        );
    }
}
