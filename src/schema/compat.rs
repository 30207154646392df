//! The compatibility check: whether the readers of each version of a message type can
//! read what the writers of the others write, in the modes of a schema registry
//! (`backward`, `forward`, `full` and their transitive forms).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde_json::Value;

use super::Schemas;
use super::readable::{Rule, findings};

/// Which readers must read which writers, as Confluent Schema Registry's compatibility
/// types define them. "Earlier" and "later" are the versions of one message type, and a
/// version's schema in the old snapshot is earlier than its schema in the new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// Readers of each new or changed schema read what the schema just before it wrote:
    /// consumers can be upgraded first.
    #[default]
    Backward,
    /// As `Backward`, against every earlier schema.
    BackwardTransitive,
    /// Readers of the schema just before each new or changed one read what it writes:
    /// producers can be upgraded first.
    Forward,
    /// As `Forward`, for the readers of every earlier schema.
    ForwardTransitive,
    /// Both `Backward` and `Forward`.
    Full,
    /// Both `BackwardTransitive` and `ForwardTransitive`.
    FullTransitive,
}

impl Mode {
    /// Every mode, in the order of their names' documentation.
    pub const ALL: [Mode; 6] = [
        Mode::Backward,
        Mode::BackwardTransitive,
        Mode::Forward,
        Mode::ForwardTransitive,
        Mode::Full,
        Mode::FullTransitive,
    ];

    /// The mode's name: `backward`, `full-transitive`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Backward => "backward",
            Self::BackwardTransitive => "backward-transitive",
            Self::Forward => "forward",
            Self::ForwardTransitive => "forward-transitive",
            Self::Full => "full",
            Self::FullTransitive => "full-transitive",
        }
    }

    fn backward(self) -> bool {
        !matches!(self, Self::Forward | Self::ForwardTransitive)
    }

    fn forward(self) -> bool {
        !matches!(self, Self::Backward | Self::BackwardTransitive)
    }

    fn transitive(self) -> bool {
        matches!(
            self,
            Self::BackwardTransitive | Self::ForwardTransitive | Self::FullTransitive
        )
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not one of a [`Mode`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown compatibility mode {0:?} (expected backward, forward, full, or one of them with -transitive)"
)]
pub struct UnknownMode(pub String);

impl FromStr for Mode {
    type Err = UnknownMode;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .into_iter()
            .find(|mode| mode.name() == name)
            .ok_or_else(|| UnknownMode(name.to_owned()))
    }
}

/// How to check: the [`Mode`], and whether by Confluent's strict rule for open objects.
///
/// ```
/// use logpipe::schema::{Compatibility, Mode, Schemas};
/// use serde_json::json;
///
/// let mut old = Schemas::new();
/// old.insert("person", 1, json!({"type": "object", "properties": {"name": {"type": "string"}}}));
/// let mut new = old.clone();
/// new.insert("person", 2, json!({
///     "type": "object",
///     "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
///     "required": ["age"],
/// }));
///
/// let report = Compatibility::new(Mode::Backward).check(&old, &new);
/// assert!(!report.is_compatible());
/// assert_eq!(report.incompatibilities()[0].path, "#/properties/age");
/// assert!(Compatibility::new(Mode::Forward).check(&old, &new).is_compatible());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Compatibility {
    mode: Mode,
    strict: bool,
}

impl From<Mode> for Compatibility {
    fn from(mode: Mode) -> Self {
        Self::new(mode)
    }
}

impl Compatibility {
    /// Checks in `mode`, by the rule that writers write the properties their schema
    /// lists and no others (as serde does).
    pub fn new(mode: Mode) -> Self {
        Self {
            mode,
            strict: false,
        }
    }

    /// With `strict`, an object schema without `additionalProperties` is taken as one
    /// whose writers may have written any other property with any value, as Confluent
    /// Schema Registry takes it: then a property a reader adds to such an object breaks
    /// backward compatibility even when optional. Use it for schemas that other
    /// writers share.
    #[must_use]
    pub fn strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }

    /// The mode checked.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Checks the schemas of `new` against those of `old` (such as the committed
    /// snapshot) and against each other.
    ///
    /// For each message type, these pairs of schemas are checked, in the directions the
    /// mode asks for (backward: the later schema reads the earlier one's messages;
    /// forward: the other way round):
    ///
    /// - a version whose schema differs in `old`: its old schema and its new one;
    /// - a version new or changed in `new`: its schema and those of the versions next
    ///   to it (before and after), or in a transitive mode of every other version;
    /// - two versions that became neighbours, as the one between them was dropped.
    ///
    /// Backward, the records of a version with an [upcaster](Schemas::upcast) that makes
    /// a later version (directly or through further upcasters) are read as that
    /// version's: a pair of versions the upcasters join is not checked backward.
    ///
    /// Versions and types only in `old` are dropped, which this check does not judge
    /// (`logpipe lag` and `logpipe tail --type T --version V` show whether their records
    /// still arrive).
    pub fn check(&self, old: &Schemas, new: &Schemas) -> Report {
        let mut report = Report {
            mode: self.mode,
            incompatibilities: Vec::new(),
            pairs: 0,
            joined: 0,
        };
        let types: Vec<&str> = {
            let mut types: Vec<&str> = new
                .iter()
                .map(|((message_type, _), _)| message_type)
                .collect();
            types.dedup();
            types
        };
        for message_type in types {
            let versions: Vec<(u64, &Value)> = new
                .iter()
                .filter(|((t, _), _)| *t == message_type)
                .map(|((_, version), schema)| (version, schema))
                .collect();
            let changed =
                |version: u64, schema: &Value| old.get(message_type, version) != Some(schema);
            for &(version, schema) in &versions {
                if let Some(before) = old
                    .get(message_type, version)
                    .filter(|before| *before != schema)
                {
                    let earlier = (SchemaVersion::old(version), before);
                    let later = (SchemaVersion::new(version), schema);
                    self.check_pair(message_type, earlier, later, false, &mut report);
                }
            }
            // Versions that were not neighbours in `old` (one between them dropped) are
            // a new pair.
            let apart_before = |earlier: u64, later: u64| {
                old.iter().any(|((t, version), _)| {
                    t == message_type && earlier < version && version < later
                })
            };
            for (j, &(later_version, later_schema)) in versions.iter().enumerate() {
                for (i, &(earlier_version, earlier_schema)) in versions[..j].iter().enumerate() {
                    let neighbours = i + 1 == j;
                    let new_pair = changed(earlier_version, earlier_schema)
                        || changed(later_version, later_schema)
                        || (neighbours && apart_before(earlier_version, later_version));
                    if (neighbours || self.mode.transitive()) && new_pair {
                        let upcast =
                            upcasts_reach(new, message_type, earlier_version, later_version);
                        self.check_pair(
                            message_type,
                            (SchemaVersion::new(earlier_version), earlier_schema),
                            (SchemaVersion::new(later_version), later_schema),
                            upcast,
                            &mut report,
                        );
                    }
                }
            }
        }
        report
    }

    /// Checks one pair of schemas in the directions the mode asks for.
    fn check_pair(
        &self,
        message_type: &str,
        earlier: (SchemaVersion, &Value),
        later: (SchemaVersion, &Value),
        upcast: bool,
        report: &mut Report,
    ) {
        let mut direction = |writer: (SchemaVersion, &Value), reader: (SchemaVersion, &Value)| {
            report.pairs += 1;
            for finding in findings(writer.1, reader.1, self.strict) {
                report.incompatibilities.push(Incompatibility {
                    message_type: message_type.to_owned(),
                    writer: writer.0,
                    reader: reader.0,
                    path: finding.path,
                    rule: finding.rule,
                    detail: finding.detail,
                });
            }
        };
        if self.mode.backward() && !upcast {
            direction(earlier, later);
        }
        if self.mode.forward() {
            direction(later, earlier);
        }
        if self.mode.backward() && upcast {
            report.joined += 1;
        }
    }
}

/// Whether the upcasters from `from` lead to `to` or beyond it.
fn upcasts_reach(schemas: &Schemas, message_type: &str, from: u64, to: u64) -> bool {
    let mut version = from;
    // Each upcaster makes a later version (`upcast` and `read_dir` see to it), so the
    // chain ends.
    while let Some(next) = schemas
        .upcast_from(message_type, version)
        .filter(|&next| next > version)
    {
        if next >= to {
            return true;
        }
        version = next;
    }
    false
}

/// Which snapshot a schema comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Snapshot {
    /// The schemas checked against (`--old`, the committed snapshot).
    Old,
    /// The schemas checked (`--new`, the code's).
    New,
}

/// One schema of a message type: its version, and which snapshot it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SchemaVersion {
    /// The message version.
    pub version: u64,
    /// The snapshot.
    pub snapshot: Snapshot,
}

impl SchemaVersion {
    fn old(version: u64) -> Self {
        Self {
            version,
            snapshot: Snapshot::Old,
        }
    }

    fn new(version: u64) -> Self {
        Self {
            version,
            snapshot: Snapshot::New,
        }
    }
}

impl fmt::Display for SchemaVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let snapshot = match self.snapshot {
            Snapshot::Old => "old",
            Snapshot::New => "new",
        };
        write!(f, "v{} ({snapshot})", self.version)
    }
}

/// A breaking change: a place where the readers of one schema cannot read what the
/// writers of another write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incompatibility {
    /// The message type.
    pub message_type: String,
    /// The schema of the writers.
    pub writer: SchemaVersion,
    /// The schema of the readers.
    pub reader: SchemaVersion,
    /// Where, as a path through the reader's schema that follows the message (into
    /// properties, items and alternatives, and through `$ref`s):
    /// `#/properties/address/properties/city`.
    pub path: String,
    /// Which rule it breaks.
    pub rule: Rule,
    /// What differs, in words.
    pub detail: String,
}

impl fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} readers cannot read {} writers at {}: {} [{}]",
            self.message_type, self.reader, self.writer, self.path, self.detail, self.rule
        )
    }
}

/// What [`Compatibility::check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    mode: Mode,
    incompatibilities: Vec<Incompatibility>,
    pairs: usize,
    /// Pairs not checked backward, as upcasters join them.
    joined: usize,
}

impl Report {
    /// Whether nothing breaks the mode.
    pub fn is_compatible(&self) -> bool {
        self.incompatibilities.is_empty()
    }

    /// Every breaking change, by type, then pair, then place.
    pub fn incompatibilities(&self) -> &[Incompatibility] {
        &self.incompatibilities
    }

    /// How many (writer, reader) pairs of schemas were checked.
    pub fn pairs_checked(&self) -> usize {
        self.pairs
    }

    /// How many pairs of versions were not checked backward, as upcasters join them.
    pub fn pairs_joined_by_upcasters(&self) -> usize {
        self.joined
    }
}

impl fmt::Display for Report {
    /// One line for each breaking change, then one that sums up.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for incompatibility in &self.incompatibilities {
            writeln!(f, "{incompatibility}")?;
        }
        let count =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let pairs = count(self.pairs, "pair", "pairs");
        match self.incompatibilities.len() {
            0 => write!(f, "compatible ({}): {pairs} of schemas checked", self.mode)?,
            breaks => write!(
                f,
                "not compatible ({}): {} in {pairs} of schemas checked",
                self.mode,
                count(breaks, "breaking change", "breaking changes"),
            )?,
        }
        if self.joined > 0 {
            write!(f, ", {} joined by upcasters", self.joined)?;
        }
        Ok(())
    }
}

/// The environment variable that lets [`assert_compatible`] write the snapshot.
const UPDATE_VARIABLE: &str = "LOGPIPE_UPDATE_SCHEMAS";

/// Checks a service's schemas against the snapshot committed at `snapshot` (a folder
/// [`Schemas::export`] wrote), for the service's own tests: a breaking change fails the
/// test, naming each path, before it ships.
///
/// A compatible change also fails while the snapshot is out of date, so that the
/// committed files show each change in review: run the test once with
/// `LOGPIPE_UPDATE_SCHEMAS=1` to export the schemas into the snapshot (and create it),
/// then commit it. Breaking changes fail either way.
///
/// ```no_run
/// # use logpipe::schema::{Mode, Schemas, assert_compatible};
/// # let schemas = Schemas::new();
/// // In tests/schemas.rs of a service:
/// assert_compatible(&schemas, "schemas", Mode::Backward);
/// ```
///
/// # Panics
///
/// When the schemas break `compatibility`'s mode against the snapshot, when the snapshot
/// is missing or out of date (without `LOGPIPE_UPDATE_SCHEMAS=1`), or when it cannot be
/// read or written.
#[track_caller]
pub fn assert_compatible(
    schemas: &Schemas,
    snapshot: impl AsRef<Path>,
    compatibility: impl Into<Compatibility>,
) {
    let update = std::env::var_os(UPDATE_VARIABLE).is_some_and(|value| value == "1");
    check_snapshot(schemas, snapshot.as_ref(), compatibility.into(), update);
}

/// [`assert_compatible`], told whether to update the snapshot.
#[track_caller]
fn check_snapshot(schemas: &Schemas, dir: &Path, compatibility: Compatibility, update: bool) {
    let old = if dir.exists() {
        Schemas::read_dir(dir).unwrap_or_else(|err| {
            panic!("cannot read the schema snapshot {}: {err}", dir.display())
        })
    } else if update {
        Schemas::new()
    } else {
        panic!(
            "there is no schema snapshot at {}: run with {UPDATE_VARIABLE}=1 to export one, and commit it",
            dir.display()
        );
    };
    let report = compatibility.check(&old, schemas);
    assert!(
        report.is_compatible(),
        "the schemas break the snapshot at {}:\n{report}",
        dir.display()
    );
    if old == *schemas {
        return;
    }
    assert!(
        update,
        "the schema snapshot at {} is out of date (the changes are compatible): run with {UPDATE_VARIABLE}=1 to export the schemas again, and commit the change",
        dir.display()
    );
    schemas
        .export(dir)
        .unwrap_or_else(|err| panic!("cannot export the schemas to {}: {err}", dir.display()));
    let remove = |file: PathBuf| {
        if file.exists() {
            std::fs::remove_file(&file)
                .unwrap_or_else(|err| panic!("cannot remove {}: {err}", file.display()));
        }
    };
    for ((message_type, version), _) in old.iter() {
        if schemas.get(message_type, version).is_none() {
            remove(dir.join(message_type).join(format!("{version}.json")));
        }
        // A type dropped altogether: its upcasters too.
        if !schemas.iter().any(|((t, _), _)| t == message_type) {
            remove(dir.join(message_type).join(super::UPCASTS_FILE));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::panic::{AssertUnwindSafe, catch_unwind};

    use serde_json::json;

    use super::*;

    fn person(properties: Value, required: &[&str]) -> Value {
        json!({"type": "object", "properties": properties, "required": required})
    }

    /// The panic message of `check_snapshot`, if it panics.
    fn outcome(schemas: &Schemas, dir: &Path, update: bool) -> Option<String> {
        let run = || check_snapshot(schemas, dir, Mode::Backward.into(), update);
        catch_unwind(AssertUnwindSafe(run)).err().map(|payload| {
            payload
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_default()
        })
    }

    #[test]
    fn a_snapshot_is_made_kept_up_to_date_and_guards_against_breaking_changes() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("schemas");
        let mut v1 = Schemas::new();
        v1.insert(
            "person",
            1,
            person(json!({"uuid": {"type": "string"}}), &["uuid"]),
        );

        let missing = outcome(&v1, &dir, false).unwrap();
        assert!(
            missing.contains("no schema snapshot") && missing.contains(UPDATE_VARIABLE),
            "{missing}"
        );
        assert_eq!(outcome(&v1, &dir, true), None);
        assert_eq!(Schemas::read_dir(&dir).unwrap(), v1);
        assert_eq!(outcome(&v1, &dir, false), None);

        // A compatible v2: the snapshot is out of date until it is updated.
        let mut v2 = v1.clone();
        let with_nickname = json!({"uuid": {"type": "string"}, "nickname": {"type": "string"}});
        v2.insert("person", 2, person(with_nickname, &["uuid"]));
        let stale = outcome(&v2, &dir, false).unwrap();
        assert!(stale.contains("out of date"), "{stale}");
        assert_eq!(outcome(&v2, &dir, true), None);
        assert_eq!(Schemas::read_dir(&dir).unwrap(), v2);

        // A breaking v3 fails, updating or not, and the snapshot stays as it was.
        let mut v3 = v2.clone();
        let with_email = json!({"uuid": {"type": "string"}, "email": {"type": "string"}});
        v3.insert("person", 3, person(with_email, &["uuid", "email"]));
        for update in [false, true] {
            let breaking = outcome(&v3, &dir, update).unwrap();
            assert!(breaking.contains("#/properties/email"), "{breaking}");
        }
        assert_eq!(Schemas::read_dir(&dir).unwrap(), v2);

        // Dropping a whole type that had upcasters removes its upcasters' file too.
        let mut with_pet = v2.clone();
        with_pet.insert("pet", 1, person(json!({"name": {"type": "string"}}), &[]));
        with_pet.insert("pet", 2, person(json!({"name": {"type": "string"}}), &[]));
        with_pet.upcasts.insert(("pet".to_owned(), 1), 2);
        assert_eq!(outcome(&with_pet, &dir, true), None);
        assert!(dir.join("pet").join("upcasts.json").exists());
        assert_eq!(outcome(&v2, &dir, true), None);
        assert!(!dir.join("pet").join("upcasts.json").exists());
        assert_eq!(Schemas::read_dir(&dir).unwrap(), v2);
        assert_eq!(outcome(&v2, &dir, false), None);

        // Dropping v1 and updating removes its file.
        let mut only_v2 = Schemas::new();
        only_v2.insert("person", 2, v2.get("person", 2).unwrap().clone());
        assert_eq!(outcome(&only_v2, &dir, true), None);
        assert!(!dir.join("person").join("1.json").exists());
        assert_eq!(Schemas::read_dir(&dir).unwrap(), only_v2);
    }
}
