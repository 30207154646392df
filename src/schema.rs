//! Published schemas: the JSON Schema of the message of each (type, version) a service
//! writes or reads, derived with schemars from the same serde attributes that shape the
//! wire (feature `schemas`, on by default).
//!
//! A message type derives [`JsonSchema`] beside [`Message`]; a service's own binary or
//! test lists its types in [`Schemas`] and [exports](Schemas::export) them, one file per
//! (type, version): `DIR/person/2.json`. Committed beside the code, the files show every
//! change to a message in review.
//!
//! ```
//! use logpipe::Message;
//! use logpipe::schema::{JsonSchema, Schemas};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, Message, JsonSchema)]
//! #[logpipe(type = "person", version = 2, key = "uuid")]
//! #[serde(rename_all = "camelCase")]
//! #[schemars(crate = "logpipe::schema::schemars")]
//! struct PersonV2 {
//!     uuid: String,
//!     first_name: String,
//!     nickname: Option<String>,
//! }
//!
//! let schemas = Schemas::new().with::<PersonV2>();
//! let schema = schemas.get("person", 2).unwrap();
//! assert!(schema["properties"]["firstName"].is_object());
//! assert_eq!(schema["required"], serde_json::json!(["uuid", "firstName"]));
//!
//! let dir = std::env::temp_dir().join(format!("logpipe-schemas-{}", std::process::id()));
//! let written = schemas.export(&dir)?;
//! assert_eq!(written, [dir.join("person").join("2.json")]);
//! assert_eq!(Schemas::read_dir(&dir)?, schemas);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

pub use schemars::{self, JsonSchema};
use serde_json::Value;

use crate::Message;

mod compat;
mod readable;

pub use compat::{
    Compatibility, Incompatibility, Mode, Report, SchemaVersion, Snapshot, UnknownMode,
    assert_compatible,
};
pub use readable::Rule;

/// The file of a type's folder that lists its upcasters.
const UPCASTS_FILE: &str = "upcasts.json";

/// The JSON Schemas of some message types, one per (type, version), and the upcasters
/// between their versions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Schemas {
    schemas: BTreeMap<(String, u64), Value>,
    /// (type, version) → the version its upcaster makes.
    upcasts: BTreeMap<(String, u64), u64>,
}

impl Schemas {
    /// No schemas yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// With the schema of `M`'s message, as schemars derives it (replacing one of the
    /// same (type, version) given before).
    #[must_use]
    pub fn with<M: Message + JsonSchema>(mut self) -> Self {
        let schema = schemars::schema_for!(M);
        self.schemas
            .insert((M::TYPE.to_owned(), M::VERSION), schema.as_value().clone());
        self
    }

    /// With an upcaster from `Old` to `New`, as the consumer's registry has one
    /// ([`RegistryBuilder::upcast`](crate::registry::RegistryBuilder::upcast)): the
    /// [compatibility check](Compatibility) then takes `Old`'s records as read by the
    /// reader `New`'s records go to.
    ///
    /// # Panics
    ///
    /// When `New` is not a later version of `Old`'s message type.
    #[must_use]
    pub fn upcast<Old: Message, New: Message>(mut self) -> Self {
        assert!(
            Old::TYPE == New::TYPE && Old::VERSION < New::VERSION,
            "an upcaster makes a later version of the same message type, not {:?} version {} from {:?} version {}",
            New::TYPE,
            New::VERSION,
            Old::TYPE,
            Old::VERSION,
        );
        self.upcasts
            .insert((Old::TYPE.to_owned(), Old::VERSION), New::VERSION);
        self
    }

    /// Sets the schema of (`message_type`, `version`), such as one made by hand or read
    /// from elsewhere.
    pub fn insert(&mut self, message_type: impl Into<String>, version: u64, schema: Value) {
        self.schemas.insert((message_type.into(), version), schema);
    }

    /// The schema of (`message_type`, `version`), if there is one.
    pub fn get(&self, message_type: &str, version: u64) -> Option<&Value> {
        self.schemas.get(&(message_type.to_owned(), version))
    }

    /// Every (type, version) and its schema, in type then version order.
    pub fn iter(&self) -> impl Iterator<Item = ((&str, u64), &Value)> {
        self.schemas
            .iter()
            .map(|((message_type, version), schema)| ((message_type.as_str(), *version), schema))
    }

    /// Writes each schema to `DIR/TYPE/VERSION.json` (pretty-printed, ending in a
    /// newline), and each type's upcasters to `DIR/TYPE/upcasts.json` (`{"1": 2}`: from
    /// version 1 to 2), creating the folders, and returns the files written, in order.
    /// An `upcasts.json` the type no longer needs is removed; files already there
    /// for other versions are left: export into an empty folder to
    /// see a version dropped.
    ///
    /// # Errors
    ///
    /// [`io::Error`] when a file cannot be written, or (kind `InvalidInput`) when a
    /// message type cannot name a folder (empty, starting with `.`, or with `/`, `\\`
    /// or `:`).
    pub fn export(&self, dir: impl AsRef<Path>) -> io::Result<Vec<PathBuf>> {
        let mut written = Vec::with_capacity(self.schemas.len());
        let write = |file: PathBuf, json: &Value, written: &mut Vec<PathBuf>| {
            let mut text = serde_json::to_string_pretty(json).map_err(io::Error::other)?;
            text.push('\n');
            std::fs::write(&file, text)?;
            written.push(file);
            io::Result::Ok(())
        };
        let mut types: Vec<&str> = self
            .iter()
            .map(|((message_type, _), _)| message_type)
            .collect();
        types.dedup();
        for message_type in types {
            if message_type.is_empty()
                || message_type.starts_with('.')
                || message_type.contains(['/', '\\', ':'])
            {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("message type {message_type:?} cannot name a folder of schemas"),
                ));
            }
            let folder = dir.as_ref().join(message_type);
            std::fs::create_dir_all(&folder)?;
            for ((_, version), schema) in self.iter().filter(|((t, _), _)| *t == message_type) {
                write(folder.join(format!("{version}.json")), schema, &mut written)?;
            }
            let upcasts: serde_json::Map<String, Value> = self
                .upcasts
                .iter()
                .filter(|((t, _), _)| t == message_type)
                .map(|((_, from), to)| (from.to_string(), Value::from(*to)))
                .collect();
            let upcasts_file = folder.join(UPCASTS_FILE);
            if !upcasts.is_empty() {
                write(upcasts_file, &Value::Object(upcasts), &mut written)?;
            } else if upcasts_file.exists() {
                std::fs::remove_file(upcasts_file)?;
            }
        }
        Ok(written)
    }

    /// The version the upcaster from (`message_type`, `version`) makes, if there is one.
    fn upcast_from(&self, message_type: &str, version: u64) -> Option<u64> {
        self.upcasts
            .get(&(message_type.to_owned(), version))
            .copied()
    }

    /// Reads the schemas and upcasters [`export`](Self::export) wrote to `dir`; entries whose names
    /// start with `.` (such as `.git` or `.gitkeep`) are passed over.
    ///
    /// # Errors
    ///
    /// [`io::Error`] when `dir` cannot be read, or (kind `InvalidData`) when a folder's
    /// name is not UTF-8 or a file in a type's folder is not `VERSION.json` holding JSON
    /// or `upcasts.json` holding an object of version numbers.
    pub fn read_dir(dir: impl AsRef<Path>) -> io::Result<Self> {
        let invalid = |file: &Path, why: String| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {why}", file.display()),
            )
        };
        let mut schemas = BTreeMap::new();
        let mut upcasts = BTreeMap::new();
        let hidden = |path: &Path| {
            path.file_name()
                .is_some_and(|name| name.as_encoded_bytes().starts_with(b"."))
        };
        for folder in std::fs::read_dir(dir)? {
            let folder = folder?.path();
            if hidden(&folder) || !folder.is_dir() {
                continue;
            }
            let message_type = folder
                .file_name()
                .and_then(|name| name.to_str())
                .ok_or_else(|| invalid(&folder, "not a UTF-8 message type".to_owned()))?
                .to_owned();
            for file in std::fs::read_dir(&folder)? {
                let path = file?.path();
                if hidden(&path) {
                    continue;
                }
                if path.file_name().is_some_and(|name| name == UPCASTS_FILE) {
                    let text = std::fs::read_to_string(&path)?;
                    let listed: BTreeMap<u64, u64> =
                        serde_json::from_str(&text).map_err(|err| {
                            invalid(&path, format!("not an object of version numbers: {err}"))
                        })?;
                    for (from, to) in listed {
                        if to <= from {
                            let why = format!(
                                "the upcaster from version {from} makes {to}, not a later version"
                            );
                            return Err(invalid(&path, why));
                        }
                        upcasts.insert((message_type.clone(), from), to);
                    }
                    continue;
                }
                // Only the name export writes: `2.json`, not `02.json` or `+2.json`.
                let version = path
                    .file_name()
                    .and_then(|name| name.to_str())
                    .and_then(|name| name.strip_suffix(".json"))
                    .and_then(|stem| stem.parse::<u64>().ok().filter(|v| v.to_string() == stem))
                    .ok_or_else(|| invalid(&path, "not VERSION.json".to_owned()))?;
                let text = std::fs::read_to_string(&path)?;
                let schema: Value = serde_json::from_str(&text)
                    .map_err(|err| invalid(&path, format!("not JSON: {err}")))?;
                schemas.insert((message_type.clone(), version), schema);
            }
        }
        Ok(Self { schemas, upcasts })
    }
}
