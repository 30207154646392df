//! `logpipe tail --validate DIR`: whether each message matches the published schema of
//! its (type, version).

use std::collections::HashMap;
use std::path::Path;

use jsonschema::Validator;
use serde_json::Value;

use super::failure::Failure;
use crate::schema::Schemas;

/// A validator for each (type, version) of a folder of published schemas.
pub(super) struct PublishedSchemas {
    validators: HashMap<(String, u64), Validator>,
}

/// How a message compares with its published schema.
#[derive(Debug, PartialEq)]
pub(super) enum Verdict {
    Valid,
    /// Each violation: where in the message, and what.
    Invalid(Vec<String>),
    /// The folder has no schema for the record's (type, version).
    Unpublished,
}

impl PublishedSchemas {
    /// Reads the schemas in `dir`, as `Schemas::export` wrote them.
    pub(super) fn read(dir: &Path) -> Result<Self, Failure> {
        let schemas = Schemas::read_dir(dir).map_err(|err| {
            Failure::Data(format!(
                "cannot read the schemas in {}: {err}",
                dir.display()
            ))
        })?;
        let mut validators = HashMap::new();
        for ((message_type, version), schema) in schemas.iter() {
            let validator = jsonschema::validator_for(schema).map_err(|err| {
                Failure::Data(format!(
                    "the schema of {message_type:?} version {version} in {} is not a usable JSON Schema: {err}",
                    dir.display()
                ))
            })?;
            validators.insert((message_type.to_owned(), version), validator);
        }
        Ok(Self { validators })
    }

    /// Judges the `message` of a record of (`message_type`, `version`).
    pub(super) fn judge(&self, message_type: &str, version: u64, message: &Value) -> Verdict {
        let Some(validator) = self.validators.get(&(message_type.to_owned(), version)) else {
            return Verdict::Unpublished;
        };
        let violations: Vec<String> = validator
            .iter_errors(message)
            .map(|error| {
                let at = error.instance_path().to_string();
                format!("{}: {error}", if at.is_empty() { "/" } else { &at })
            })
            .collect();
        if violations.is_empty() {
            Verdict::Valid
        } else {
            Verdict::Invalid(violations)
        }
    }
}
