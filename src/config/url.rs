//! The URLs that name a backend and an offset store: `scheme://rest`. Which schemes
//! exist, and what comes after them, is for the list of backends
//! ([`any`](crate::any)) and the backend crates to say.

use std::fmt;
use std::str::FromStr;

use logpipe_core::redact_url;
use serde::Deserialize;

/// A URL of the form `scheme://rest`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Url {
    text: String,
    scheme_end: usize,
}

impl Url {
    fn parse(text: &str, example: &str) -> Result<Self, String> {
        let scheme_end = text
            .find("://")
            .filter(|end| *end > 0)
            .ok_or_else(|| format!("{:?} is not a URL like {example}", redact_url(text)))?;
        Ok(Self {
            text: text.to_owned(),
            scheme_end,
        })
    }

    fn scheme(&self) -> &str {
        &self.text[..self.scheme_end]
    }

    fn rest(&self) -> &str {
        &self.text[self.scheme_end + 3..]
    }
}

macro_rules! url_type {
    ($(#[$meta:meta])* $name:ident, $example:literal) => {
        $(#[$meta])*
        ///
        /// Shown ([`Display`](fmt::Display), [`Debug`]) with its password as `***`.
        #[derive(Clone, PartialEq, Eq, Hash)]
        pub struct $name(Url);

        impl $name {
            /// The scheme, such as `sqlite` in `sqlite://logpipe.db`.
            pub fn scheme(&self) -> &str {
                self.0.scheme()
            }

            /// What follows `scheme://`.
            pub fn rest(&self) -> &str {
                self.0.rest()
            }

            /// The whole URL, password included: to open it, not to show it.
            pub fn as_str(&self) -> &str {
                &self.0.text
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_tuple(stringify!($name))
                    .field(&redact_url(&self.0.text))
                    .finish()
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(text: &str) -> Result<Self, String> {
                Url::parse(text, $example).map(Self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&redact_url(&self.0.text))
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                String::deserialize(deserializer)?
                    .parse()
                    .map_err(serde::de::Error::custom)
            }
        }
    };
}

url_type!(
    /// Where records live: `sqlite://PATH`, `memory://`, `kafka://HOST:PORT,...` or
    /// `kinesis://?region=..&endpoint=..` (the configuration's `backend`).
    ///
    /// ```
    /// use logpipe::config::BackendUrl;
    ///
    /// let url: BackendUrl = "kafka://h1:9092,h2:9092".parse().unwrap();
    /// assert_eq!((url.scheme(), url.rest()), ("kafka", "h1:9092,h2:9092"));
    /// assert!("h1:9092".parse::<BackendUrl>().is_err());
    /// ```
    BackendUrl,
    "sqlite://PATH or memory://"
);

url_type!(
    /// Where positions are stored: `sqlite://PATH`, `memory://`, `kafka://` or
    /// `postgres://USER:PASSWORD@HOST/DATABASE?schema=..` (the configuration's
    /// `offset_store`).
    ///
    /// ```
    /// use logpipe::config::OffsetStoreUrl;
    ///
    /// let url: OffsetStoreUrl = "postgres://app:s3cret@db/people".parse().unwrap();
    /// assert_eq!(url.to_string(), "postgres://app:***@db/people");
    /// ```
    OffsetStoreUrl,
    "sqlite://PATH or memory://"
);

url_type!(
    /// The database of the transactional outbox: `sqlite://PATH` or
    /// `postgres://USER:PASSWORD@HOST/DATABASE?schema=..` (the configuration's
    /// `outbox.url`).
    ///
    /// ```
    /// use logpipe::config::OutboxUrl;
    ///
    /// let url: OutboxUrl = "postgres://app:s3cret@db/people".parse().unwrap();
    /// assert_eq!(url.to_string(), "postgres://app:***@db/people");
    /// ```
    OutboxUrl,
    "sqlite://PATH or postgres://..."
);
