//! `postgres://` URLs: where the store connects, and the store's own settings.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use logpipe_core::redact_url;
use sqlx::postgres::PgConnectOptions;

/// The query parameters of the store itself, taken out of the URL before the rest goes
/// to the PostgreSQL driver.
const STORE_PARAMETERS: &[&str] = &[
    "schema",
    "pool_size",
    "statement_timeout_ms",
    "connect_timeout_ms",
];

/// The parameters passed on to the PostgreSQL driver (sqlx), as libpq names them.
const DRIVER_PARAMETERS: &[&str] = &[
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "application_name",
    "options",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
];

/// Where a [`PgOffsetStore`](crate::PgOffsetStore) connects and how: a URL
/// `postgres://USER:PASSWORD@HOST:PORT/DATABASE?schema=logpipe&sslmode=require`
/// (`postgresql://` too).
///
/// Besides libpq's parameters (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`,
/// `application_name`, `options`, `host`, `port`, `dbname`, `user`, `password`) it takes:
///
/// | parameter | default | meaning |
/// |---|---|---|
/// | `schema` | `public` | the schema of the store's tables, created if missing |
/// | `pool_size` | `10` | connections at most |
/// | `statement_timeout_ms` | `30000` | PostgreSQL's `statement_timeout` (0: none; it wins over one in `options`) |
/// | `connect_timeout_ms` | `10000` | how long to wait for a connection |
///
/// Its [`Display`](fmt::Display) and [`Debug`] show the password as `***`; so do its
/// errors, which never repeat the URL.
///
/// ```
/// use logpipe_postgres::PgStoreOptions;
///
/// let options: PgStoreOptions = "postgres://app:s3cret@db:5432/people?schema=logpipe".parse()?;
/// assert_eq!(options.schema(), "logpipe");
/// assert_eq!(options.to_string(), "postgres://app:***@db:5432/people?schema=logpipe");
/// # Ok::<(), String>(())
/// ```
#[derive(Clone)]
pub struct PgStoreOptions {
    pub(crate) connect: PgConnectOptions,
    pub(crate) schema: String,
    pub(crate) pool_size: u32,
    pub(crate) connect_timeout: Duration,
    redacted: String,
}

impl PgStoreOptions {
    /// The schema of the store's tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The most connections the store opens.
    pub fn pool_size(&self) -> u32 {
        self.pool_size
    }

    /// Whether `other` names the same tables: the same server (host and port), database
    /// and schema, whoever logs in and however the pool is set.
    pub fn same_tables(&self, other: &Self) -> bool {
        let (a, b) = (&self.connect, &other.connect);
        a.get_host() == b.get_host()
            && a.get_port() == b.get_port()
            && a.get_database() == b.get_database()
            && self.schema == other.schema
    }
}

impl fmt::Display for PgStoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl fmt::Debug for PgStoreOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PgStoreOptions")
            .field(&self.redacted)
            .finish()
    }
}

fn number<T: FromStr>(name: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{name} = {value:?} is not a whole number"))
}

/// A schema name the store can put in its statements unquoted-safe: letters, digits
/// and `_`, not starting with a digit, at most 63 bytes (PostgreSQL's limit).
fn check_schema(schema: &str) -> Result<(), String> {
    let valid = !schema.is_empty()
        && schema.len() <= 63
        && !schema.starts_with(|c: char| c.is_ascii_digit())
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "schema = {schema:?}: use lower-case letters, digits and _ (at most 63, not starting with a digit)"
        ))
    }
}

impl FromStr for PgStoreOptions {
    type Err = String;

    /// Parses a `postgres://` URL.
    ///
    /// # Errors
    ///
    /// A message naming what is wrong (never the password) when the URL is not a
    /// `postgres://` or `postgresql://` URL, names an unknown parameter, or has a bad
    /// value.
    fn from_str(url: &str) -> Result<Self, String> {
        let redacted = redact_url(url);
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(format!(
                "{redacted:?} is not a URL like postgres://USER@HOST/DATABASE"
            ));
        }
        // The query starts after the host: a password may hold a `?`.
        let scheme_end = url.find("://").map_or(0, |end| end + 3);
        let host_start = url[scheme_end..]
            .rfind('@')
            .map_or(scheme_end, |at| scheme_end + at + 1);
        let (head, query) = match url[host_start..].find('?') {
            Some(mark) => (&url[..host_start + mark], &url[host_start + mark + 1..]),
            None => (url, ""),
        };
        let mut schema = "public".to_owned();
        let mut pool_size = 10;
        let mut statement_timeout_ms: u64 = 30_000;
        let mut connect_timeout_ms: u64 = 10_000;
        let mut passed_on = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "schema" => value.clone_into(&mut schema),
                "pool_size" => pool_size = number(name, value)?,
                "statement_timeout_ms" => statement_timeout_ms = number(name, value)?,
                "connect_timeout_ms" => connect_timeout_ms = number(name, value)?,
                _ if DRIVER_PARAMETERS.contains(&name) => passed_on.push(pair),
                _ => {
                    return Err(format!(
                        "unknown parameter {name:?} (expected one of {}, {})",
                        STORE_PARAMETERS.join(", "),
                        DRIVER_PARAMETERS.join(", ")
                    ));
                }
            }
        }
        check_schema(&schema)?;
        if pool_size == 0 {
            return Err("pool_size = 0: the store needs a connection at least".to_owned());
        }
        if connect_timeout_ms == 0 {
            return Err("connect_timeout_ms = 0: no connection could ever be made".to_owned());
        }
        let driver_url = if passed_on.is_empty() {
            head.to_owned()
        } else {
            format!("{head}?{}", passed_on.join("&"))
        };
        let mut connect = PgConnectOptions::from_str(&driver_url).map_err(|err| {
            // The driver's messages say what is wrong without repeating the URL.
            format!("{redacted}: {err}")
        })?;
        // Sent on every connection, 0 (no timeout) included, over any in `options`.
        connect = connect.options([("statement_timeout", statement_timeout_ms.to_string())]);
        Ok(Self {
            connect,
            schema,
            pool_size,
            connect_timeout: Duration::from_millis(connect_timeout_ms),
            redacted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_settings_come_out_of_the_url_and_the_rest_goes_to_the_driver() {
        let options: PgStoreOptions =
            "postgresql://app@db:6543/people?schema=positions&pool_size=3&sslmode=disable"
                .parse()
                .unwrap();
        assert_eq!((options.schema(), options.pool_size()), ("positions", 3));
        assert_eq!(options.connect.get_port(), 6543);
        assert_eq!(options.connect.get_database(), Some("people"));
        let defaults: PgStoreOptions = "postgres://db/people".parse().unwrap();
        assert_eq!((defaults.schema(), defaults.pool_size()), ("public", 10));
        assert_eq!(defaults.connect_timeout, Duration::from_secs(10));
    }

    #[test]
    fn bad_urls_are_refused_naming_what_is_wrong_and_never_the_password() {
        for (url, expected) in [
            ("mysql://app:s3cret@db/x", "is not a URL like postgres://"),
            (
                "postgres://app:s3cret@db/x?pool=3",
                "unknown parameter \"pool\"",
            ),
            (
                "postgres://app:s3cret@db/x?pool_size=many",
                "pool_size = \"many\"",
            ),
            ("postgres://app:s3cret@db/x?pool_size=0", "pool_size = 0"),
            (
                "postgres://app:s3cret@db/x?schema=Logpipe;drop",
                "schema = ",
            ),
            (
                "postgres://app:s3cret@db:port/x",
                "postgres://app:***@db:port/x",
            ),
            (
                "postgres://app:s3cret@db/x?sslmode=sometimes",
                "postgres://app:***@db/x",
            ),
            (
                "postgres://app:s3cret@db/x?connect_timeout_ms=0",
                "connect_timeout_ms = 0",
            ),
            (
                "postgres://app:s3?cret@db/x?pool=1",
                "unknown parameter \"pool\"",
            ),
            ("postgres://app:s3/cret@db/x", "postgres://app:***@db/x"),
        ] {
            let err = url.parse::<PgStoreOptions>().unwrap_err();
            assert!(err.contains(expected), "{url}: {err}");
            for part in ["s3cret", "s3", "cret"] {
                assert!(!err.contains(part), "{url}: {err}");
            }
        }
    }

    #[test]
    fn the_password_is_shown_as_stars() {
        let options: PgStoreOptions = "postgres://app:s3cret@db/x?password=s3cret&sslmode=prefer"
            .parse()
            .unwrap();
        for shown in [options.to_string(), format!("{options:?}")] {
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("app:***@db"), "{shown}");
        }
    }
}
