//! The `kafka://` URL of a backend: its bootstrap brokers, and a SASL user if it has one.

use std::fmt;

/// A `kafka://[USER:PASSWORD@]HOST:PORT,HOST:PORT` URL: the bootstrap brokers and, when
/// it has them, the SASL user name and password (percent-encoded in the URL when they
/// hold `:`, `@`, `/` or `%`). [`Debug`] shows the password as `***`.
///
/// ```
/// use logpipe_kafka::KafkaUrl;
///
/// let url = KafkaUrl::parse("kafka://app:s%40cret@h1:9092,h2:9092").unwrap();
/// assert_eq!(url.brokers(), "h1:9092,h2:9092");
/// assert_eq!(url.credentials(), Some(("app", "s@cret")));
/// assert!(!format!("{url:?}").contains("cret"));
/// assert!(KafkaUrl::parse("kafka://").is_err());
/// assert!(KafkaUrl::parse("kafka://h1:9092,").is_err());
/// assert!(KafkaUrl::parse("kafka://app@h1:9092").is_err());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaUrl {
    brokers: String,
    credentials: Option<(String, String)>,
}

impl KafkaUrl {
    /// Reads a `kafka://` URL.
    ///
    /// # Errors
    ///
    /// What is wrong with the URL, as text to show beside the configuration key; it
    /// never holds the password.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("kafka://")
            .ok_or_else(|| format!("{:?} is not a kafka:// URL", logpipe_core::redact_url(url)))?;
        // The user part ends at the last `@`, so that a password holding one stays whole.
        let (credentials, brokers) = match rest.rsplit_once('@') {
            Some((user_info, brokers)) => (Some(credentials_of(user_info)?), brokers),
            None => (None, rest),
        };
        let brokers = brokers.trim_end_matches('/');
        if brokers.is_empty() || brokers.split(',').any(|b| b.trim().is_empty()) {
            return Err("kafka:// needs brokers, such as kafka://h1:9092,h2:9092".to_owned());
        }
        if brokers.contains(['/', '?', '#']) {
            return Err(format!(
                "kafka://{brokers} has a path or parameters; a kafka:// URL names brokers only (HOST:PORT,HOST:PORT)"
            ));
        }
        if let Some(bad) = brokers
            .split(',')
            .find(|broker| !has_port_or_none(broker.trim()))
        {
            return Err(format!(
                "the broker {bad:?} of the kafka:// URL has a port that is not a number from 1 to 65535 (HOST:PORT)"
            ));
        }
        Ok(Self {
            brokers: brokers.to_owned(),
            credentials,
        })
    }

    /// The bootstrap brokers, `HOST:PORT` separated by commas.
    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// The SASL user name and password, when the URL has them.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(user, password)| (user.as_str(), password.as_str()))
    }
}

impl fmt::Debug for KafkaUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaUrl")
            .field("brokers", &self.brokers)
            .field("user", &self.credentials.as_ref().map(|(user, _)| user))
            .finish_non_exhaustive()
    }
}

/// Whether `broker` (`HOST`, `HOST:PORT`, `[IPv6]:PORT`) has no port or a valid one.
fn has_port_or_none(broker: &str) -> bool {
    let port = match broker.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((_, "")) => return true,
            Some((_, rest)) => rest.strip_prefix(':'),
            None => return false,
        },
        None => broker.rsplit_once(':').map(|(_, port)| port),
    };
    port.is_none_or(|port| port.parse::<u16>().is_ok_and(|port| port > 0))
}

/// The user name and password of `USER:PASSWORD`, percent-decoded.
fn credentials_of(user_info: &str) -> Result<(String, String), String> {
    let Some((user, password)) = user_info.split_once(':') else {
        return Err(
            "the kafka:// URL has a user but no password (kafka://USER:PASSWORD@HOST:PORT)"
                .to_owned(),
        );
    };
    let user =
        percent_decoded(user).ok_or("the user name of the kafka:// URL has a bad %-escape")?;
    let password =
        percent_decoded(password).ok_or("the password of the kafka:// URL has a bad %-escape")?;
    if user.is_empty() || password.is_empty() {
        return Err("the user name and password of a kafka:// URL must not be empty".to_owned());
    }
    Ok((user, password))
}

/// `text` with its `%XX` escapes decoded, or `None` when one is not two hex digits or the
/// result is not UTF-8.
fn percent_decoded(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&byte, after)) = rest.split_first() {
        if byte == b'%' {
            let hex = std::str::from_utf8(after.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &after[2..];
        } else {
            bytes.push(byte);
            rest = after;
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_percent_decoded_and_a_bad_url_never_shows_its_password() {
        let url = KafkaUrl::parse("kafka://a%3Ab:p%25w%2Fd@h:9092/").unwrap();
        assert_eq!(url.brokers(), "h:9092");
        assert_eq!(url.credentials(), Some(("a:b", "p%w/d")));
        assert_eq!(
            KafkaUrl::parse("kafka://h1:9092,h2:9092")
                .unwrap()
                .credentials(),
            None
        );
        for bad in [
            "kafka://app:s3cret@",
            "kafka://app:s3cret%zz@h:9092",
            "kafka://:s3cret@h:9092",
            "kafka://app:s3cret@h:9092/topic",
            "kafka://app:s3cret@h:9092?x=1",
            "kafkas://app:s3cret@h:9092",
            "kafka://app:s3cret@h:notaport",
        ] {
            let err = KafkaUrl::parse(bad).unwrap_err();
            assert!(!err.contains("s3cret"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_port_is_a_number_from_1_to_65535_or_absent() {
        for good in [
            "h",
            "h:9092",
            "10.0.0.1:1",
            "[::1]:9092",
            "[::1]",
            "a:1,b:65535",
        ] {
            assert!(
                KafkaUrl::parse(&format!("kafka://{good}")).is_ok(),
                "{good}"
            );
        }
        for bad in [
            "h:notaport",
            "h:0",
            "h:65536",
            "h:",
            "a:1,b:x",
            "[::1]:x",
            "[::1",
        ] {
            let err = KafkaUrl::parse(&format!("kafka://{bad}")).unwrap_err();
            assert!(err.contains("HOST:PORT"), "{bad}: {err}");
        }
    }
}
