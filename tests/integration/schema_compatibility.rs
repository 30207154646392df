//! The compatibility check (`logpipe::schema::Compatibility`) on a table of schema
//! changes, each with its verdicts; and which pairs of versions each mode checks.
//!
//! The verdicts follow Confluent Schema Registry's documented JSON Schema rules: a
//! reader reads a writer when every message the writer's schema allows is one the
//! reader's allows (backward: the new schema reads the old one's messages; forward: the
//! old reads the new; full: both). Under the strict rules an object without
//! `additionalProperties` is open: its writers may have written any unlisted property
//! with any value, so a reader that constrains a property the writer did not list
//! refuses some of them (Confluent's `PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL`). Under the
//! default rules writers write the properties they list and no others, as serde does;
//! the two differ only where an open object gains or loses a property.

use logpipe::schema::{Compatibility, Mode, Rule, Schemas, Snapshot};
use serde_json::{Value, json};

/// Verdicts, in the order backward, forward, full.
type Verdicts = [bool; 3];

struct Case {
    name: &'static str,
    before: Value,
    after: Value,
    /// By the default rules.
    verdicts: Verdicts,
    /// By Confluent's strict rules.
    strict: Verdicts,
    /// The paths the full check names, by the default rules.
    paths: &'static [&'static str],
}

fn object(properties: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": properties, "required": required})
}

fn closed(properties: Value, required: &[&str]) -> Value {
    let mut schema = object(properties, required);
    schema["additionalProperties"] = json!(false);
    schema
}

const OK: Verdicts = [true, true, true];
const BACKWARD_ONLY: Verdicts = [true, false, false];
const FORWARD_ONLY: Verdicts = [false, true, false];
const NEITHER: Verdicts = [false, false, false];

fn cases() -> Vec<Case> {
    let name = json!({"type": "string"});
    vec![
        Case {
            name: "unchanged",
            before: object(json!({"name": name}), &["name"]),
            after: object(json!({"name": name}), &["name"]),
            verdicts: OK,
            strict: OK,
            paths: &[],
        },
        Case {
            // Confluent: PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL breaks backward.
            name: "optional property added to an open object",
            before: object(json!({"name": name}), &["name"]),
            after: object(json!({"name": name, "nickname": name}), &["name"]),
            verdicts: OK,
            strict: FORWARD_ONLY,
            paths: &[],
        },
        Case {
            // Confluent: OPTIONAL_PROPERTY_ADDED_TO_UNOPEN_CONTENT_MODEL is backward
            // compatible; forward, the old closed reader refuses the new property
            // (PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL seen from the old reader).
            name: "optional property added to a closed object",
            before: closed(json!({"name": name}), &["name"]),
            after: closed(json!({"name": name, "nickname": name}), &["name"]),
            verdicts: BACKWARD_ONLY,
            strict: BACKWARD_ONLY,
            paths: &["#/properties/nickname"],
        },
        Case {
            // Confluent: REQUIRED_ATTRIBUTE_ADDED breaks backward.
            name: "required property added",
            before: object(json!({"name": name}), &["name"]),
            after: object(
                json!({"name": name, "age": {"type": "integer"}}),
                &["name", "age"],
            ),
            verdicts: FORWARD_ONLY,
            strict: FORWARD_ONLY,
            paths: &["#/properties/age"],
        },
        Case {
            // Confluent: REQUIRED_ATTRIBUTE_WITH_DEFAULT_ADDED is compatible, but the
            // property is still added to an open object.
            name: "required property with a default added",
            before: object(json!({"name": name}), &["name"]),
            after: object(
                json!({"name": name, "age": {"type": "integer", "default": 0}}),
                &["name", "age"],
            ),
            verdicts: OK,
            strict: FORWARD_ONLY,
            paths: &[],
        },
        Case {
            // Confluent: PROPERTY_REMOVED_FROM_OPEN_CONTENT_MODEL is backward
            // compatible; forward it is a property added to the new writer's open object.
            name: "optional property removed from an open object",
            before: object(json!({"name": name, "nickname": name}), &["name"]),
            after: object(json!({"name": name}), &["name"]),
            verdicts: OK,
            strict: BACKWARD_ONLY,
            paths: &[],
        },
        Case {
            // Forward, the old reader requires what new writers leave out.
            name: "required property removed",
            before: object(
                json!({"name": name, "age": {"type": "integer"}}),
                &["name", "age"],
            ),
            after: object(json!({"name": name}), &["name"]),
            verdicts: BACKWARD_ONLY,
            strict: BACKWARD_ONLY,
            paths: &["#/properties/age"],
        },
        Case {
            // Confluent: PROPERTY_REMOVED_FROM_CLOSED_CONTENT_MODEL breaks backward.
            name: "optional property removed from a closed object",
            before: closed(json!({"name": name, "nickname": name}), &["name"]),
            after: closed(json!({"name": name}), &["name"]),
            verdicts: FORWARD_ONLY,
            strict: FORWARD_ONLY,
            paths: &["#/properties/nickname"],
        },
        Case {
            // A rename is a required property removed and another added.
            name: "required property renamed",
            before: object(json!({"name": name}), &["name"]),
            after: object(json!({"fullName": name}), &["fullName"]),
            verdicts: NEITHER,
            strict: NEITHER,
            paths: &["#/properties/fullName", "#/properties/name"],
        },
        Case {
            // Confluent: TYPE_EXTENDED is backward compatible only.
            name: "integer widened to number",
            before: object(json!({"score": {"type": "integer"}}), &["score"]),
            after: object(json!({"score": {"type": "number"}}), &["score"]),
            verdicts: BACKWARD_ONLY,
            strict: BACKWARD_ONLY,
            paths: &["#/properties/score"],
        },
        Case {
            // Confluent: TYPE_NARROWED is forward compatible only.
            name: "number narrowed to integer",
            before: object(json!({"score": {"type": "number"}}), &["score"]),
            after: object(json!({"score": {"type": "integer"}}), &["score"]),
            verdicts: FORWARD_ONLY,
            strict: FORWARD_ONLY,
            paths: &["#/properties/score"],
        },
        Case {
            // Confluent: TYPE_CHANGED breaks both.
            name: "string changed to integer",
            before: object(json!({"zip": {"type": "string"}}), &["zip"]),
            after: object(json!({"zip": {"type": "integer"}}), &["zip"]),
            verdicts: NEITHER,
            strict: NEITHER,
            paths: &["#/properties/zip", "#/properties/zip"],
        },
        Case {
            // schemars writes i64 and i32 as integers of format int64 and int32.
            name: "int64 narrowed to int32",
            before: object(
                json!({"count": {"type": "integer", "format": "int64"}}),
                &["count"],
            ),
            after: object(
                json!({"count": {"type": "integer", "format": "int32"}}),
                &["count"],
            ),
            verdicts: FORWARD_ONLY,
            strict: FORWARD_ONLY,
            paths: &["#/properties/count", "#/properties/count"],
        },
        Case {
            // Confluent: ENUM_ARRAY_EXTENDED is backward compatible only.
            name: "enum value added",
            before: object(
                json!({"status": {"type": "string", "enum": ["active", "gone"]}}),
                &["status"],
            ),
            after: object(
                json!({"status": {"type": "string", "enum": ["active", "gone", "paused"]}}),
                &["status"],
            ),
            verdicts: BACKWARD_ONLY,
            strict: BACKWARD_ONLY,
            paths: &["#/properties/status"],
        },
        Case {
            // Confluent: ENUM_ARRAY_NARROWED is forward compatible only.
            name: "enum value removed",
            before: object(
                json!({"status": {"type": "string", "enum": ["active", "gone", "paused"]}}),
                &["status"],
            ),
            after: object(
                json!({"status": {"type": "string", "enum": ["active", "gone"]}}),
                &["status"],
            ),
            verdicts: FORWARD_ONLY,
            strict: FORWARD_ONLY,
            paths: &["#/properties/status"],
        },
        Case {
            // schemars writes a unit enum with documented variants as a oneOf of consts.
            name: "enum value removed from a oneOf of consts",
            before: json!({"oneOf": [{"type": "string", "const": "a"}, {"type": "string", "const": "b"}]}),
            after: json!({"oneOf": [{"type": "string", "const": "a"}]}),
            verdicts: FORWARD_ONLY,
            strict: FORWARD_ONLY,
            paths: &["#", "#/oneOf/0"],
        },
        Case {
            // schemars writes `Option<String>` as ["string", "null"]: a nullable
            // field is a type extended by null.
            name: "field made nullable",
            before: object(json!({"nickname": {"type": "string"}}), &["nickname"]),
            after: object(
                json!({"nickname": {"type": ["string", "null"]}}),
                &["nickname"],
            ),
            verdicts: BACKWARD_ONLY,
            strict: BACKWARD_ONLY,
            paths: &["#/properties/nickname"],
        },
        Case {
            name: "field no longer nullable",
            before: object(json!({"nickname": {"type": ["string", "null"]}}), &[]),
            after: object(json!({"nickname": {"type": "string"}}), &[]),
            verdicts: FORWARD_ONLY,
            strict: FORWARD_ONLY,
            paths: &["#/properties/nickname"],
        },
        Case {
            // The path follows the message through `$ref`s into nested objects.
            name: "required property added to a nested object",
            before: json!({
                "type": "object",
                "properties": {"address": {"$ref": "#/$defs/Address"}},
                "required": ["address"],
                "$defs": {"Address": object(json!({"city": name}), &["city"])},
            }),
            after: json!({
                "type": "object",
                "properties": {"address": {"$ref": "#/$defs/Address"}},
                "required": ["address"],
                "$defs": {"Address": object(json!({"city": name, "zip": name}), &["city", "zip"])},
            }),
            verdicts: FORWARD_ONLY,
            strict: FORWARD_ONLY,
            paths: &["#/properties/address/properties/zip"],
        },
        Case {
            // schemars writes `Option<Address>` as an anyOf of the address and null.
            name: "nested optional object's field changed type",
            before: json!({
                "type": "object",
                "properties": {"address": {"anyOf": [{"$ref": "#/$defs/Address"}, {"type": "null"}]}},
                "$defs": {"Address": object(json!({"city": name}), &["city"])},
            }),
            after: json!({
                "type": "object",
                "properties": {"address": {"anyOf": [{"$ref": "#/$defs/Address"}, {"type": "null"}]}},
                "$defs": {"Address": object(json!({"city": {"type": "integer"}}), &["city"])},
            }),
            verdicts: NEITHER,
            strict: NEITHER,
            paths: &[
                "#/properties/address",
                "#/properties/address/anyOf/0/properties/city",
                "#/properties/address",
                "#/properties/address/anyOf/0/properties/city",
            ],
        },
        Case {
            name: "array items narrowed",
            before: object(
                json!({"scores": {"type": "array", "items": {"type": "number"}}}),
                &["scores"],
            ),
            after: object(
                json!({"scores": {"type": "array", "items": {"type": "integer"}}}),
                &["scores"],
            ),
            verdicts: FORWARD_ONLY,
            strict: FORWARD_ONLY,
            paths: &["#/properties/scores/items"],
        },
        Case {
            // Confluent: MAX_ITEMS_ADDED is forward compatible only.
            name: "array maxItems added",
            before: object(json!({"tags": {"type": "array", "items": name}}), &["tags"]),
            after: object(
                json!({"tags": {"type": "array", "items": name, "maxItems": 10}}),
                &["tags"],
            ),
            verdicts: FORWARD_ONLY,
            strict: FORWARD_ONLY,
            paths: &["#/properties/tags"],
        },
        Case {
            // Confluent: closing an open object breaks backward; writers that wrote only
            // the listed properties are still read.
            name: "additionalProperties: false added",
            before: object(json!({"name": name}), &["name"]),
            after: closed(json!({"name": name}), &["name"]),
            verdicts: OK,
            strict: FORWARD_ONLY,
            paths: &[],
        },
        Case {
            // Confluent: opening a closed object breaks forward.
            name: "additionalProperties: false removed",
            before: closed(json!({"name": name}), &["name"]),
            after: object(json!({"name": name}), &["name"]),
            verdicts: OK,
            strict: BACKWARD_ONLY,
            paths: &[],
        },
        Case {
            // A map (`HashMap<String, f64>` to `HashMap<String, i64>`): its values are
            // those of additionalProperties, by either rules.
            name: "map values narrowed",
            before: json!({"type": "object", "additionalProperties": {"type": "number"}}),
            after: json!({"type": "object", "additionalProperties": {"type": "integer"}}),
            verdicts: FORWARD_ONLY,
            strict: FORWARD_ONLY,
            paths: &["#/additionalProperties"],
        },
        Case {
            // Confluent: MAX_LENGTH_DECREASED is forward compatible only.
            name: "maxLength tightened",
            before: object(
                json!({"code": {"type": "string", "maxLength": 8}}),
                &["code"],
            ),
            after: object(
                json!({"code": {"type": "string", "maxLength": 4}}),
                &["code"],
            ),
            verdicts: FORWARD_ONLY,
            strict: FORWARD_ONLY,
            paths: &["#/properties/code"],
        },
        Case {
            // schemars writes a struct with a flattened enum as its properties beside a
            // oneOf of the enum's variants; each variant is read with them.
            name: "unchanged struct with a flattened enum",
            before: json!({
                "type": "object",
                "properties": {"id": name},
                "required": ["id"],
                "oneOf": [
                    {"properties": {"email": name}, "required": ["email"]},
                    {"properties": {"phone": name}, "required": ["phone"]},
                ],
            }),
            after: json!({
                "type": "object",
                "properties": {"id": name},
                "required": ["id"],
                "oneOf": [
                    {"properties": {"email": name}, "required": ["email"]},
                    {"properties": {"phone": name}, "required": ["phone"]},
                ],
            }),
            verdicts: OK,
            strict: OK,
            paths: &[],
        },
        Case {
            // `Option<String>` to `Option<Email>` (a newtype of a string): each type the
            // writer writes finds its branch.
            name: "nullable string to an optional newtype",
            before: object(json!({"email": {"type": ["string", "null"]}}), &[]),
            after: json!({
                "type": "object",
                "properties": {"email": {"anyOf": [{"$ref": "#/$defs/Email"}, {"type": "null"}]}},
                "$defs": {"Email": {"type": "string"}},
            }),
            verdicts: OK,
            strict: OK,
            paths: &[],
        },
        Case {
            name: "unchanged allOf of parts",
            before: json!({"allOf": [{"type": "object", "properties": {"a": name}}, {"required": ["a"]}]}),
            after: json!({"allOf": [{"type": "object", "properties": {"a": name}}, {"required": ["a"]}]}),
            verdicts: OK,
            strict: OK,
            paths: &[],
        },
        Case {
            // Keywords beside a `$ref` apply too.
            name: "maxLength added beside a $ref",
            before: json!({
                "type": "object",
                "properties": {"code": {"$ref": "#/$defs/Code"}},
                "$defs": {"Code": {"type": "string"}},
            }),
            after: json!({
                "type": "object",
                "properties": {"code": {"$ref": "#/$defs/Code", "maxLength": 4}},
                "$defs": {"Code": {"type": "string"}},
            }),
            verdicts: FORWARD_ONLY,
            strict: FORWARD_ONLY,
            paths: &["#/properties/code"],
        },
        Case {
            // A tuple as drafts before 2020-12 write it (`items` as an array).
            name: "tuple item narrowed",
            before: object(
                json!({"pair": {"type": "array", "items": [{"type": "number"}, name]}}),
                &["pair"],
            ),
            after: object(
                json!({"pair": {"type": "array", "items": [{"type": "integer"}, name]}}),
                &["pair"],
            ),
            verdicts: FORWARD_ONLY,
            strict: FORWARD_ONLY,
            paths: &["#/properties/pair/items/0"],
        },
        Case {
            // Adding a pattern breaks backward; removing one breaks forward.
            name: "pattern added",
            before: object(json!({"code": {"type": "string"}}), &["code"]),
            after: object(
                json!({"code": {"type": "string", "pattern": "^[A-Z]+$"}}),
                &["code"],
            ),
            verdicts: FORWARD_ONLY,
            strict: FORWARD_ONLY,
            paths: &["#/properties/code"],
        },
        Case {
            // A recursive type compares with itself where it recurs, and the walk ends.
            name: "recursive type gains a required field",
            before: json!({
                "$ref": "#/$defs/Node",
                "$defs": {"Node": object(json!({"children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}}), &["children"])},
            }),
            after: json!({
                "$ref": "#/$defs/Node",
                "$defs": {"Node": object(json!({
                    "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
                    "label": name,
                }), &["children", "label"])},
            }),
            verdicts: FORWARD_ONLY,
            strict: FORWARD_ONLY,
            paths: &["#/properties/label"],
        },
    ]
}

/// The verdicts for backward, forward and full, and the paths the full check names.
fn verdicts(case: &Case, strict: bool) -> (Verdicts, Vec<String>) {
    let mut old = Schemas::new();
    old.insert("thing", 1, case.before.clone());
    let mut new = old.clone();
    new.insert("thing", 2, case.after.clone());
    let check = |mode| Compatibility::new(mode).strict(strict).check(&old, &new);
    let full = check(Mode::Full);
    let paths = full
        .incompatibilities()
        .iter()
        .map(|incompatibility| incompatibility.path.clone())
        .collect();
    let verdicts = [
        check(Mode::Backward).is_compatible(),
        check(Mode::Forward).is_compatible(),
        full.is_compatible(),
    ];
    (verdicts, paths)
}

#[test]
fn each_schema_change_has_the_verdicts_of_confluents_rules() {
    let cases = cases();
    assert!(cases.len() >= 15);
    let mut wrong = Vec::new();
    for case in &cases {
        let (found, paths) = verdicts(case, false);
        if found != case.verdicts {
            wrong.push(format!(
                "{}: {found:?}, expected {:?}",
                case.name, case.verdicts
            ));
        }
        let mut sorted = paths.clone();
        sorted.sort();
        let mut expected: Vec<String> = case.paths.iter().map(|path| (*path).to_owned()).collect();
        expected.sort();
        if sorted != expected {
            wrong.push(format!(
                "{}: paths {paths:?}, expected {:?}",
                case.name, case.paths
            ));
        }
        let (strict, _) = verdicts(case, true);
        if strict != case.strict {
            wrong.push(format!(
                "{} (strict): {strict:?}, expected {:?}",
                case.name, case.strict
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// person v1, v2 and v3, each adding a required property to the one before.
fn three_versions() -> Schemas {
    let mut schemas = Schemas::new();
    let mut properties = serde_json::Map::new();
    let mut required = Vec::new();
    for (version, field) in [(1, "uuid"), (2, "name"), (3, "email")] {
        properties.insert(field.to_owned(), json!({"type": "string"}));
        required.push(field);
        schemas.insert(
            "person",
            version,
            object(Value::Object(properties.clone()), &required),
        );
    }
    schemas
}

#[test]
fn modes_check_neighbours_or_every_earlier_version_and_name_the_pair() {
    let new = three_versions();
    let empty = Schemas::new();
    let backward = Compatibility::new(Mode::Backward).check(&empty, &new);
    // v1 → v2 and v2 → v3, each a required property added.
    assert_eq!(backward.pairs_checked(), 2);
    let pairs: Vec<(u64, u64, &str)> = backward
        .incompatibilities()
        .iter()
        .map(|found| {
            (
                found.writer.version,
                found.reader.version,
                found.path.as_str(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        [(1, 2, "#/properties/name"), (2, 3, "#/properties/email")]
    );
    assert_eq!(
        backward.incompatibilities()[0].rule,
        Rule::RequiredPropertyAdded
    );
    let line = backward.incompatibilities()[0].to_string();
    assert_eq!(
        line,
        "person: v2 (new) readers cannot read v1 (new) writers at #/properties/name: \
         the reader requires \"name\", which the writer may leave out [required-property-added]"
    );
    // Transitive: v1 → v3 too, with both properties v1 lacks.
    let transitive = Compatibility::new(Mode::BackwardTransitive).check(&empty, &new);
    assert_eq!(transitive.pairs_checked(), 3);
    assert_eq!(transitive.incompatibilities().len(), 4);
    assert!(
        Compatibility::new(Mode::ForwardTransitive)
            .check(&empty, &new)
            .is_compatible()
    );
    assert_eq!(
        Compatibility::new(Mode::FullTransitive)
            .check(&empty, &new)
            .pairs_checked(),
        6
    );

    // Against a snapshot that already has v1 and v2, only pairs with v3 are checked.
    let mut snapshot = Schemas::new();
    for ((message_type, version), schema) in new.iter().filter(|((_, v), _)| *v < 3) {
        snapshot.insert(message_type, version, schema.clone());
    }
    let report = Compatibility::new(Mode::Backward).check(&snapshot, &new);
    assert_eq!(report.pairs_checked(), 1);
    assert_eq!(report.incompatibilities().len(), 1);
    assert_eq!(report.incompatibilities()[0].writer.version, 2);
    assert!(
        Compatibility::new(Mode::Backward)
            .check(&new, &new)
            .is_compatible()
    );
    assert_eq!(
        Compatibility::new(Mode::Backward)
            .check(&new, &new)
            .pairs_checked(),
        0
    );

    // Dropping v2 makes v1 and v3 neighbours: that pair is checked.
    let mut without_v2 = Schemas::new();
    for ((message_type, version), schema) in new.iter().filter(|((_, v), _)| *v != 2) {
        without_v2.insert(message_type, version, schema.clone());
    }
    let report = Compatibility::new(Mode::Backward).check(&new, &without_v2);
    let pairs: Vec<(u64, u64)> = report
        .incompatibilities()
        .iter()
        .map(|found| (found.writer.version, found.reader.version))
        .collect();
    assert_eq!(pairs, [(1, 3), (1, 3)], "{report}");

    for mode in Mode::ALL {
        assert_eq!(mode.name().parse::<Mode>(), Ok(mode));
    }
    let err = "sideways".parse::<Mode>().unwrap_err();
    assert!(err.to_string().contains("sideways"), "{err}");
}

#[test]
fn a_version_changed_in_place_is_checked_against_its_old_schema() {
    let old = three_versions();
    let mut new = old.clone();
    // v2 drops its required "name" in place: old v2 readers still require it.
    new.insert(
        "person",
        2,
        object(json!({"uuid": {"type": "string"}}), &["uuid"]),
    );
    let report = Compatibility::new(Mode::Forward).check(&old, &new);
    let found: Vec<_> = report
        .incompatibilities()
        .iter()
        .map(|found| (found.writer, found.reader, found.path.as_str()))
        .collect();
    let (old_v2, new_v2) = (found[0].1, found[0].0);
    assert_eq!((old_v2.version, old_v2.snapshot), (2, Snapshot::Old));
    assert_eq!((new_v2.version, new_v2.snapshot), (2, Snapshot::New));
    assert_eq!(found[0].2, "#/properties/name");
    // Its neighbours are checked too (v1 readers read the new v2, the new v2 reads v3),
    // and pass.
    assert_eq!(found.len(), 1, "{report}");
    assert_eq!(report.pairs_checked(), 3);
    assert!(
        report
            .to_string()
            .ends_with("in 3 pairs of schemas checked"),
        "{report}"
    );
}

#[test]
fn upcasters_join_versions_backward_but_not_forward() {
    use logpipe::Message;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Message)]
    #[logpipe(type = "person", version = 1, key = "uuid")]
    struct PersonV1 {
        uuid: String,
    }
    #[derive(Serialize, Deserialize, Message)]
    #[logpipe(type = "person", version = 3, key = "uuid")]
    struct PersonV3 {
        uuid: String,
    }

    let new = three_versions().upcast::<PersonV1, PersonV3>();
    let empty = Schemas::new();
    // v1's records go to the v3 reader: v1 → v2 and v1 → v3 are joined backward.
    let report = Compatibility::new(Mode::BackwardTransitive).check(&empty, &new);
    let pairs: Vec<(u64, u64)> = report
        .incompatibilities()
        .iter()
        .map(|found| (found.writer.version, found.reader.version))
        .collect();
    assert_eq!(pairs, [(2, 3)], "{report}");
    assert_eq!(report.pairs_checked(), 1);
    assert_eq!(report.pairs_joined_by_upcasters(), 2);
    assert!(
        report.to_string().ends_with(", 2 joined by upcasters"),
        "{report}"
    );
    // Forward, upcasters do not count: all three pairs are checked (and pass, as v2 and
    // v3 only add properties, which an open v1 reader passes over).
    let forward = Compatibility::new(Mode::ForwardTransitive).check(&empty, &new);
    assert_eq!(forward.pairs_checked(), 3);
    assert!(forward.is_compatible(), "{forward}");

    // Upcasters go into the export and come back.
    let dir = tempfile::tempdir().unwrap();
    let written = new.export(dir.path()).unwrap();
    assert!(written.contains(&dir.path().join("person").join("upcasts.json")));
    let text = std::fs::read_to_string(dir.path().join("person").join("upcasts.json")).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&text).unwrap(),
        json!({"1": 3})
    );
    assert_eq!(Schemas::read_dir(dir.path()).unwrap(), new);
}

mod people {
    //! person v1 to v3 as a service writes them, with serde and schemars.
    use logpipe::Message;
    use logpipe::schema::JsonSchema;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Message, JsonSchema)]
    #[logpipe(type = "person", version = 1, key = "uuid")]
    #[serde(rename_all = "camelCase")]
    #[schemars(crate = "logpipe::schema::schemars")]
    pub struct PersonV1 {
        pub uuid: String,
        pub first_name: String,
        pub visits: u32,
    }

    /// v1 with an optional nickname and a wider count: compatible both ways.
    #[derive(Serialize, Deserialize, Message, JsonSchema)]
    #[logpipe(type = "person", version = 2, key = "uuid")]
    #[serde(rename_all = "camelCase")]
    #[schemars(crate = "logpipe::schema::schemars")]
    pub struct PersonV2 {
        pub uuid: String,
        pub first_name: String,
        pub nickname: Option<String>,
        pub visits: u64,
    }

    /// v2 with a required email: v2 records lack it.
    #[derive(Serialize, Deserialize, Message, JsonSchema)]
    #[logpipe(type = "person", version = 3, key = "uuid")]
    #[serde(rename_all = "camelCase")]
    #[schemars(crate = "logpipe::schema::schemars")]
    pub struct PersonV3 {
        pub uuid: String,
        pub first_name: String,
        pub nickname: Option<String>,
        pub visits: u64,
        pub email: String,
    }
}

#[test]
fn derived_schemas_are_checked_as_serde_reads_them() {
    use people::{PersonV1, PersonV2, PersonV3};

    let v1 = Schemas::new().with::<PersonV1>();
    let v2 = v1.clone().with::<PersonV2>();
    let report = Compatibility::new(Mode::Backward).check(&v1, &v2);
    assert!(report.is_compatible(), "{report}");
    // u64 back to u32 in v3 would not be forward compatible; a required email is not
    // backward compatible.
    let v3 = v2.clone().with::<PersonV3>();
    let report = Compatibility::new(Mode::Full).check(&v2, &v3);
    let found: Vec<_> = report
        .incompatibilities()
        .iter()
        .map(|found| {
            (
                found.writer.version,
                found.reader.version,
                found.path.as_str(),
                found.rule,
            )
        })
        .collect();
    assert_eq!(
        found,
        [(2, 3, "#/properties/email", Rule::RequiredPropertyAdded)],
        "{report}"
    );
    // Forward, v2 readers read a v1 writer's u32 count; v1 readers refuse v2's u64.
    let report = Compatibility::new(Mode::Forward).check(&v1, &v2);
    let found: Vec<_> = report
        .incompatibilities()
        .iter()
        .map(|found| (found.path.as_str(), found.rule))
        .collect();
    assert_eq!(
        found,
        [("#/properties/visits", Rule::BoundTightened)],
        "{report}"
    );
    // An upcaster from v2 does not make v2 writers' records readable for v3 readers
    // unless the consumer has it; with it, backward passes.
    let upcast = v3.clone().upcast::<PersonV2, PersonV3>();
    assert!(
        Compatibility::new(Mode::Backward)
            .check(&v2, &upcast)
            .is_compatible()
    );
}

fn logpipe_schemas_check(
    old: &std::path::Path,
    new: &std::path::Path,
    extra: &[&str],
) -> (i32, String) {
    let output = std::process::Command::new(crate::support::program("logpipe"))
        .args(["schemas", "check", "--old"])
        .arg(old)
        .arg("--new")
        .arg(new)
        .args(extra)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.code().unwrap(), text)
}

#[test]
fn logpipe_schemas_check_exits_1_naming_each_breaking_path() {
    use people::{PersonV1, PersonV2, PersonV3};

    let root = tempfile::tempdir().unwrap();
    let (old, new) = (root.path().join("old"), root.path().join("new"));
    Schemas::new()
        .with::<PersonV1>()
        .with::<PersonV2>()
        .export(&old)
        .unwrap();
    let v3 = Schemas::new()
        .with::<PersonV1>()
        .with::<PersonV2>()
        .with::<PersonV3>();
    v3.export(&new).unwrap();

    let (status, text) = logpipe_schemas_check(&old, &old, &[]);
    assert_eq!(status, 0, "{text}");
    assert!(text.contains("compatible (backward)"), "{text}");

    let (status, text) = logpipe_schemas_check(&old, &new, &[]);
    assert_eq!(status, 1, "{text}");
    assert!(
        text.contains(
            "person: v3 (new) readers cannot read v2 (new) writers at #/properties/email"
        ),
        "{text}"
    );
    assert!(
        text.contains("not compatible (backward): 1 breaking change in 1 pair of schemas checked"),
        "{text}"
    );
    // Forward, v3 only adds: compatible.
    let (status, text) = logpipe_schemas_check(&old, &new, &["--mode", "forward"]);
    assert_eq!(status, 0, "{text}");
    // Strict, v2's nickname was added to v1's open object: checked as new against an
    // empty snapshot.
    let empty = root.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let (status, text) = logpipe_schemas_check(&empty, &old, &[]);
    assert_eq!(status, 0, "{text}");
    let (status, text) = logpipe_schemas_check(&empty, &old, &["--strict"]);
    assert_eq!(status, 1, "{text}");
    assert!(
        text.contains("#/properties/nickname") && text.contains("[property-added-to-open-model]"),
        "{text}"
    );

    let (status, text) = logpipe_schemas_check(&old, &new, &["--mode", "sideways"]);
    assert_eq!(status, 2, "{text}");
    assert!(text.contains("unknown compatibility mode"), "{text}");
    let (status, text) = logpipe_schemas_check(&root.path().join("missing"), &new, &[]);
    assert_eq!(status, 65, "{text}");
    assert!(text.contains("cannot read the schemas in"), "{text}");
}
