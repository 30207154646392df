//! The URLs of the embedded log and the SQLite offset store.

use std::path::PathBuf;

/// Where an embedded log (or a SQLite offset store) lives: `sqlite://PATH`, a file, or
/// `memory://`, memory that the process's handles share.
///
/// ```
/// use logpipe_sqlite::SqliteUrl;
///
/// assert_eq!(SqliteUrl::parse("sqlite://data/log.db").unwrap(), SqliteUrl::File("data/log.db".into()));
/// assert_eq!(SqliteUrl::parse("memory://").unwrap(), SqliteUrl::Memory);
/// assert!(SqliteUrl::parse("sqlite://").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SqliteUrl {
    /// `sqlite://PATH`.
    File(PathBuf),
    /// `memory://`.
    Memory,
}

impl SqliteUrl {
    /// Reads a `sqlite://` or `memory://` URL.
    ///
    /// # Errors
    ///
    /// What is wrong with it, as text to show beside the configuration key.
    pub fn parse(url: &str) -> Result<Self, String> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err("sqlite:// needs a file path, such as sqlite://logpipe.db".to_owned());
            }
            return Ok(Self::File(PathBuf::from(path)));
        }
        match url {
            "memory://" => Ok(Self::Memory),
            _ if url.starts_with("memory://") => {
                Err("memory:// takes nothing after the scheme".to_owned())
            }
            _ => Err(format!("{url:?} is neither sqlite://PATH nor memory://")),
        }
    }
}
