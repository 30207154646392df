//! Whether a reader's JSON Schema accepts every message a writer's schema allows: the
//! rules of the compatibility check, applied to one pair of schemas.
//!
//! The walk follows both schemas down together (through `$ref`s, into properties, array
//! items and the branches of `anyOf`/`oneOf`/`allOf`) and notes each place where a
//! message the writer may write is one the reader refuses.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashSet};
use std::fmt;

use serde_json::{Map, Value};

/// Why a reader cannot read what a writer writes, at one place in the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Rule {
    /// The reader takes fewer JSON types than the writer writes there (`integer` to
    /// `string`, `number` to `integer`, a nullable field no longer nullable).
    TypeNarrowed,
    /// The reader takes fewer values than the writer's `enum` or `const` allows, or
    /// takes only listed values where the writer wrote any.
    EnumNarrowed,
    /// The reader requires a property that the writer may leave out.
    RequiredPropertyAdded,
    /// The writer writes a property that the reader's closed object
    /// (`additionalProperties: false`) does not list.
    PropertyRemovedFromClosedModel,
    /// (Strict rules only.) The reader constrains a property that the writer's open
    /// object did not list, so that the writer may have written it with any value.
    PropertyAddedToOpenModel,
    /// The reader constrains the properties it does not list more than the writer did.
    AdditionalPropertiesNarrowed,
    /// A bound is tighter for the reader: `minimum`, `maximum`, `minLength`,
    /// `maxLength`, `minItems`, `maxItems`, `minProperties`, `maxProperties`,
    /// `multipleOf`, or the range of an integer `format` such as `int32`.
    BoundTightened,
    /// The reader's `pattern` differs from the writer's.
    PatternChanged,
    /// The reader's `format` (such as `uuid` or `date-time`) differs from the writer's.
    FormatChanged,
    /// The reader requires unique array items; the writer did not.
    UniqueItemsAdded,
    /// The writer's value matches none of the branches of the reader's `anyOf` or
    /// `oneOf`.
    NoMatchingBranch,
    /// The reader accepts nothing (`false`).
    ReaderAcceptsNothing,
    /// The reader uses a keyword the check does not understand, with a value other than
    /// the writer's.
    UncheckedKeyword,
}

impl Rule {
    /// The rule's name, as printed: `required-property-added`.
    pub fn name(self) -> &'static str {
        match self {
            Self::TypeNarrowed => "type-narrowed",
            Self::EnumNarrowed => "enum-narrowed",
            Self::RequiredPropertyAdded => "required-property-added",
            Self::PropertyRemovedFromClosedModel => "property-removed-from-closed-model",
            Self::PropertyAddedToOpenModel => "property-added-to-open-model",
            Self::AdditionalPropertiesNarrowed => "additional-properties-narrowed",
            Self::BoundTightened => "bound-tightened",
            Self::PatternChanged => "pattern-changed",
            Self::FormatChanged => "format-changed",
            Self::UniqueItemsAdded => "unique-items-added",
            Self::NoMatchingBranch => "no-matching-branch",
            Self::ReaderAcceptsNothing => "reader-accepts-nothing",
            Self::UncheckedKeyword => "unchecked-keyword",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One place where the reader refuses what the writer may write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Finding {
    /// Where, as a path through the reader's schema: `#/properties/address/properties/city`.
    pub(super) path: String,
    pub(super) rule: Rule,
    /// What differs, in words.
    pub(super) detail: String,
}

/// Keywords that only annotate: they never make a reader refuse a message.
const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "$defs",
    "definitions",
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "contentEncoding",
    "contentMediaType",
];

/// Keywords the walk compares itself.
const CHECKED: &[&str] = &[
    "type",
    "enum",
    "const",
    "anyOf",
    "oneOf",
    "allOf",
    "properties",
    "required",
    "additionalProperties",
    "minProperties",
    "maxProperties",
    "items",
    "prefixItems",
    "additionalItems",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
];

const TYPES: [&str; 7] = [
    "null", "boolean", "object", "array", "number", "integer", "string",
];

/// The places where a reader with schema `reader` (a whole document, whose `$ref`s
/// point into itself) refuses messages that a writer with schema `writer` may write.
///
/// `strict` takes an object schema without `additionalProperties` as one whose writers
/// may write any other property with any value (Confluent's rule); otherwise its
/// writers write the properties it lists and no others, as serde does.
pub(super) fn findings(writer: &Value, reader: &Value, strict: bool) -> Vec<Finding> {
    let mut walk = Walk {
        writer_root: writer,
        reader_root: reader,
        strict,
        in_progress: HashSet::new(),
        steps: 0,
    };
    let mut found = Vec::new();
    walk.compare(writer, reader, "#", &mut found);
    found
}

/// The most pairs of schemas one check compares: beyond it (schemas whose alternatives
/// multiply), the check stops and says so rather than run on.
const MOST_STEPS: usize = 100_000;

struct Walk<'a> {
    writer_root: &'a Value,
    reader_root: &'a Value,
    strict: bool,
    /// The pairs of schemas being compared further up: a recursive type reads itself
    /// where it recurs, as far as the rest of the walk shows.
    in_progress: HashSet<(*const Value, *const Value)>,
    /// Pairs compared so far.
    steps: usize,
}

/// An object schema's stance on the properties it does not list.
#[derive(Clone, Copy)]
enum Others<'v> {
    /// No `additionalProperties`: a record of the listed properties.
    Unsaid,
    /// `additionalProperties: false`.
    Closed,
    /// Values of this schema (`true` for any value): a map.
    Schema(&'v Value),
}

static ANYTHING: Value = Value::Bool(true);

impl<'a> Walk<'a> {
    fn compare<'v>(
        &mut self,
        writer: &'v Value,
        reader: &'v Value,
        path: &str,
        out: &mut Vec<Finding>,
    ) where
        'a: 'v,
    {
        self.steps += 1;
        if self.steps == MOST_STEPS {
            note(
                out,
                path,
                Rule::UncheckedKeyword,
                format!("the schemas are too entangled to check past {MOST_STEPS} comparisons"),
            );
        }
        if self.steps >= MOST_STEPS {
            return;
        }
        let writer = resolve(self.writer_root, writer);
        let reader = resolve(self.reader_root, reader);
        let pair = (std::ptr::from_ref(&*writer), std::ptr::from_ref(&*reader));
        if !self.in_progress.insert(pair) {
            return;
        }
        self.compare_resolved(&writer, &reader, path, out);
        self.in_progress.remove(&pair);
    }

    fn compare_resolved(
        &mut self,
        writer: &Value,
        reader: &Value,
        path: &str,
        out: &mut Vec<Finding>,
    ) {
        // `true` and `{}` accept anything; `false` accepts nothing.
        let empty = Map::new();
        let writer_map = match writer {
            Value::Bool(false) => return,
            Value::Object(map) => map,
            _ => &empty,
        };
        let reader_map = match reader {
            Value::Bool(false) => {
                return note(
                    out,
                    path,
                    Rule::ReaderAcceptsNothing,
                    "the reader's schema is `false`".to_owned(),
                );
            }
            Value::Object(map) => map,
            _ => &empty,
        };
        // A writer's alternatives must each be readable, each with the keywords beside
        // them.
        for keyword in ["anyOf", "oneOf"] {
            if let Some(branches) = writer_map.get(keyword).and_then(Value::as_array) {
                let mut beside = writer_map.clone();
                beside.remove(keyword);
                for branch in branches {
                    let branch = resolve(self.writer_root, branch);
                    let merged = Value::Object(conjoin(&beside, &as_map(&branch)));
                    self.compare(&merged, reader, path, out);
                }
                return;
            }
        }
        // A writer's conjunction: its parts together.
        if let Some(parts) = writer_map.get("allOf").and_then(Value::as_array) {
            let mut merged = writer_map.clone();
            merged.remove("allOf");
            for part in parts {
                merged = conjoin(&merged, &as_map(&resolve(self.writer_root, part)));
            }
            return self.compare(&Value::Object(merged), reader, path, out);
        }
        let reader_branches: Vec<(&str, &Vec<Value>)> = ["anyOf", "oneOf"]
            .into_iter()
            .filter_map(|keyword| Some((keyword, reader_map.get(keyword)?.as_array()?)))
            .collect();
        // A writer of several types or values, read by alternatives: each type and each
        // value may match another alternative.
        if !reader_branches.is_empty()
            && let Some(pieces) = pieces(writer_map)
        {
            for piece in pieces {
                self.compare(&Value::Object(piece), reader, path, out);
            }
            return;
        }
        // A reader's conjunction: every part must read the writer's value.
        if let Some(parts) = reader_map.get("allOf").and_then(Value::as_array) {
            for (index, part) in parts.iter().enumerate() {
                self.compare(writer, part, &format!("{path}/allOf/{index}"), out);
            }
        }
        // A reader's alternatives: one of them must read the writer's value.
        for (keyword, branches) in reader_branches {
            let mut closest: Option<Vec<Finding>> = None;
            for (index, branch) in branches.iter().enumerate() {
                let mut found = Vec::new();
                self.compare(
                    writer,
                    branch,
                    &format!("{path}/{keyword}/{index}"),
                    &mut found,
                );
                let empty = found.is_empty();
                if closest
                    .as_ref()
                    .is_none_or(|closest| found.len() < closest.len())
                {
                    closest = Some(found);
                }
                if empty {
                    break;
                }
            }
            match closest {
                Some(found) if found.is_empty() => {}
                Some(found) => {
                    note(
                        out,
                        path,
                        Rule::NoMatchingBranch,
                        format!(
                            "what the writer writes matches no branch of the reader's {keyword}; the closest branch differs as follows"
                        ),
                    );
                    out.extend(found);
                }
                None => note(
                    out,
                    path,
                    Rule::NoMatchingBranch,
                    format!("the reader's {keyword} has no branches"),
                ),
            }
        }
        self.compare_keywords(writer_map, reader_map, path, out);
    }

    /// Compares the keywords other than `$ref` and the combinators.
    fn compare_keywords<'v>(
        &mut self,
        writer: &'v Map<String, Value>,
        reader: &'v Map<String, Value>,
        path: &str,
        out: &mut Vec<Finding>,
    ) where
        'a: 'v,
    {
        for (keyword, value) in reader {
            let known =
                ANNOTATIONS.contains(&keyword.as_str()) || CHECKED.contains(&keyword.as_str());
            if !known && writer.get(keyword) != Some(value) {
                note(
                    out,
                    path,
                    Rule::UncheckedKeyword,
                    format!(
                        "the reader's {keyword:?} is not one the check understands, and the writer's differs"
                    ),
                );
            }
        }
        compare_enums(writer, reader, path, out);
        let writer_types = types_of(writer);
        let reader_types = declared_types(reader);
        if let Some(reader_types) = &reader_types {
            let missing: Vec<&str> = writer_types
                .clone()
                .unwrap_or_else(|| TYPES.into_iter().collect())
                .into_iter()
                .filter(|&kind| !takes(reader_types, kind))
                .collect();
            if !missing.is_empty() {
                note(
                    out,
                    path,
                    Rule::TypeNarrowed,
                    format!(
                        "the writer may write {} ({}); the reader takes {}",
                        missing.join(", "),
                        writer_types
                            .as_ref()
                            .map_or_else(|| "any type".to_owned(), list),
                        list(reader_types),
                    ),
                );
            }
        }
        let shared = |kind: &str| {
            writer_types.as_ref().is_none_or(|types| takes(types, kind))
                && reader_types.as_ref().is_none_or(|types| takes(types, kind))
        };
        if shared("string") {
            compare_strings(writer, reader, path, out);
        }
        if shared("number") || shared("integer") {
            compare_numbers(writer, reader, path, out);
        }
        if shared("object") {
            self.compare_objects(writer, reader, path, out);
        }
        if shared("array") {
            self.compare_arrays(writer, reader, path, out);
        }
    }

    fn compare_objects<'v>(
        &mut self,
        writer: &'v Map<String, Value>,
        reader: &'v Map<String, Value>,
        path: &str,
        out: &mut Vec<Finding>,
    ) where
        'a: 'v,
    {
        let properties =
            |schema: &'v Map<String, Value>| schema.get("properties").and_then(Value::as_object);
        let (writer_properties, reader_properties) = (properties(writer), properties(reader));
        let listed = |properties: Option<&'v Map<String, Value>>, name: &str| properties?.get(name);
        let all = |properties: Option<&'v Map<String, Value>>| properties.into_iter().flatten();
        let writer_required = required(writer);
        for name in required(reader) {
            let defaulted = listed(reader_properties, name)
                .and_then(Value::as_object)
                .is_some_and(|schema| schema.contains_key("default"));
            if !writer_required.contains(name) && !defaulted {
                note(
                    out,
                    &property_path(path, name),
                    Rule::RequiredPropertyAdded,
                    format!("the reader requires {name:?}, which the writer may leave out"),
                );
            }
        }
        let writer_others = others(writer);
        for (name, reader_schema) in all(reader_properties) {
            let at = property_path(path, name);
            match (listed(writer_properties, name), writer_others) {
                (Some(writer_schema), _) => self.compare(writer_schema, reader_schema, &at, out),
                (None, Others::Closed) => {}
                (None, Others::Unsaid) => {
                    if self.strict && !accepts_anything(reader_schema) {
                        note(
                            out,
                            &at,
                            Rule::PropertyAddedToOpenModel,
                            format!(
                                "the writer's object is open, so it may have written {name:?} with any value; the reader constrains it"
                            ),
                        );
                    }
                }
                (None, Others::Schema(values)) => self.compare(values, reader_schema, &at, out),
            }
        }
        let reader_others = others(reader);
        for (name, writer_schema) in all(writer_properties) {
            if listed(reader_properties, name).is_some() {
                continue;
            }
            match reader_others {
                Others::Unsaid => {}
                Others::Closed => {
                    if writer_schema != &Value::Bool(false) {
                        note(
                            out,
                            &property_path(path, name),
                            Rule::PropertyRemovedFromClosedModel,
                            format!(
                                "the writer writes {name:?}, which the reader's closed object does not list"
                            ),
                        );
                    }
                }
                Others::Schema(values) => {
                    self.compare(writer_schema, values, &property_path(path, name), out)
                }
            }
        }
        let at = format!("{path}/additionalProperties");
        match (writer_others, reader_others) {
            (Others::Closed, _) | (_, Others::Unsaid) => {}
            (Others::Unsaid, Others::Closed | Others::Schema(_)) => {
                if self.strict && !matches!(reader_others, Others::Schema(values) if accepts_anything(values)) {
                    note(
                        out,
                        &at,
                        Rule::AdditionalPropertiesNarrowed,
                        "the writer's object is open, so it may have written other properties; the reader constrains them".to_owned(),
                    );
                }
            }
            (Others::Schema(_), Others::Closed) => note(
                out,
                &at,
                Rule::AdditionalPropertiesNarrowed,
                "the writer writes properties it does not list (a map); the reader's object is closed".to_owned(),
            ),
            (Others::Schema(writer_values), Others::Schema(reader_values)) => {
                self.compare(writer_values, reader_values, &at, out);
            }
        }
        compare_bound(writer, reader, "minProperties", "maxProperties", path, out);
    }

    fn compare_arrays<'v>(
        &mut self,
        writer: &'v Map<String, Value>,
        reader: &'v Map<String, Value>,
        path: &str,
        out: &mut Vec<Finding>,
    ) where
        'a: 'v,
    {
        // Tuples: `prefixItems` then `items` (2020-12), or `items: [..]` then
        // `additionalItems` (drafts before it).
        let prefix = |schema: &'v Map<String, Value>| {
            let listed = schema
                .get("prefixItems")
                .or_else(|| schema.get("items").filter(|items| items.is_array()));
            listed
                .and_then(Value::as_array)
                .map_or(&[][..], Vec::as_slice)
        };
        let rest = |schema: &'v Map<String, Value>| match schema.get("items") {
            Some(Value::Array(_)) => schema
                .get("additionalItems")
                .map(|items| ("additionalItems", items)),
            Some(items) => Some(("items", items)),
            None => None,
        };
        let prefix_keyword = |schema: &Map<String, Value>| {
            if schema.contains_key("prefixItems") {
                "prefixItems"
            } else {
                "items"
            }
        };
        let (writer_prefix, reader_prefix) = (prefix(writer), prefix(reader));
        for index in 0..writer_prefix.len().max(reader_prefix.len()) {
            let writer_item = writer_prefix
                .get(index)
                .or(rest(writer).map(|(_, items)| items))
                .unwrap_or(&ANYTHING);
            let (at, reader_item) = match (reader_prefix.get(index), rest(reader)) {
                (Some(item), _) => (format!("{path}/{}/{index}", prefix_keyword(reader)), item),
                (None, Some((keyword, items))) => (format!("{path}/{keyword}"), items),
                (None, None) => continue,
            };
            self.compare(writer_item, reader_item, &at, out);
        }
        if let Some((keyword, reader_items)) = rest(reader) {
            let writer_items = rest(writer).map_or(&ANYTHING, |(_, items)| items);
            self.compare(
                writer_items,
                reader_items,
                &format!("{path}/{keyword}"),
                out,
            );
        }
        compare_bound(writer, reader, "minItems", "maxItems", path, out);
        let unique =
            |schema: &Map<String, Value>| schema.get("uniqueItems") == Some(&Value::Bool(true));
        if unique(reader) && !unique(writer) {
            note(
                out,
                path,
                Rule::UniqueItemsAdded,
                "the reader requires unique items; the writer may repeat them".to_owned(),
            );
        }
    }
}

fn note(out: &mut Vec<Finding>, path: &str, rule: Rule, detail: String) {
    out.push(Finding {
        path: path.to_owned(),
        rule,
        detail,
    });
}

/// The schema a `$ref` into the same document points at, followed to the end, together
/// with the keywords beside each `$ref` (which apply as well). A `$ref` that does not
/// resolve is left in place.
fn resolve<'v>(root: &'v Value, schema: &'v Value) -> Cow<'v, Value> {
    let mut schema = Cow::Borrowed(schema);
    // A bounded number of steps: a loop of references resolves to where it stops.
    for _ in 0..64 {
        let Some(target) = schema
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|reference| reference.strip_prefix('#'))
            .and_then(|pointer| root.pointer(pointer))
        else {
            break;
        };
        let mut beside = as_map(&schema).into_owned();
        beside.remove("$ref");
        schema = if beside
            .keys()
            .all(|keyword| ANNOTATIONS.contains(&keyword.as_str()))
        {
            Cow::Borrowed(target)
        } else {
            Cow::Owned(Value::Object(conjoin(&beside, &as_map(target))))
        };
    }
    schema
}

/// A schema's keywords: an object's own, none for `true`, and `{"not": {}}` for `false`.
fn as_map(schema: &Value) -> Cow<'_, Map<String, Value>> {
    match schema {
        Value::Object(map) => Cow::Borrowed(map),
        Value::Bool(false) => {
            let mut map = Map::new();
            map.insert("not".to_owned(), Value::Object(Map::new()));
            Cow::Owned(map)
        }
        _ => Cow::Owned(Map::new()),
    }
}

/// The keywords of two schemas that both apply (`allOf` of the two), as one schema where
/// that is plain: properties and `required` united, `type`, `enum` and bounds narrowed;
/// alternatives on both sides kept in an `allOf`.
fn conjoin(a: &Map<String, Value>, b: &Map<String, Value>) -> Map<String, Value> {
    let mut merged = a.clone();
    for (keyword, value) in b {
        let Some(mine) = merged.get(keyword).cloned() else {
            merged.insert(keyword.clone(), value.clone());
            continue;
        };
        if &mine == value {
            continue;
        }
        let combined = match keyword.as_str() {
            "properties" => {
                let mut properties = mine.as_object().cloned().unwrap_or_default();
                for (name, schema) in value.as_object().into_iter().flatten() {
                    let both = match properties.remove(name) {
                        Some(other) => serde_json::json!({"allOf": [other, schema]}),
                        None => schema.clone(),
                    };
                    properties.insert(name.clone(), both);
                }
                Value::Object(properties)
            }
            "required" => {
                let mut names: Vec<Value> = mine.as_array().cloned().unwrap_or_default();
                for name in value.as_array().into_iter().flatten() {
                    if !names.contains(name) {
                        names.push(name.clone());
                    }
                }
                Value::Array(names)
            }
            "type" => {
                let (Some(ours), Some(theirs)) = (declared_types(a), declared_types(b)) else {
                    continue;
                };
                let kept: BTreeSet<&str> = ours
                    .iter()
                    .filter(|kind| takes(&theirs, kind))
                    .chain(theirs.iter().filter(|kind| takes(&ours, kind)))
                    .copied()
                    .collect();
                Value::Array(kept.into_iter().map(Value::from).collect())
            }
            "enum" => Value::Array(
                mine.as_array()
                    .into_iter()
                    .flatten()
                    .filter(|item| value.as_array().is_some_and(|theirs| theirs.contains(item)))
                    .cloned()
                    .collect(),
            ),
            "minimum" | "exclusiveMinimum" | "minLength" | "minItems" | "minProperties" => {
                if value.as_f64() > mine.as_f64() {
                    value.clone()
                } else {
                    mine
                }
            }
            "maximum" | "exclusiveMaximum" | "maxLength" | "maxItems" | "maxProperties" => {
                if value.as_f64() < mine.as_f64() {
                    value.clone()
                } else {
                    mine
                }
            }
            "anyOf" | "oneOf" | "allOf" => {
                let mut parts = merged
                    .remove("allOf")
                    .and_then(|all| all.as_array().cloned())
                    .unwrap_or_default();
                if keyword != "allOf" {
                    parts.push(serde_json::json!({ keyword.as_str(): mine }));
                    parts.push(serde_json::json!({ keyword.as_str(): value }));
                    merged.remove(keyword);
                } else {
                    parts.extend(value.as_array().cloned().unwrap_or_default());
                }
                merged.insert("allOf".to_owned(), Value::Array(parts));
                continue;
            }
            _ => value.clone(),
        };
        merged.insert(keyword.clone(), combined);
    }
    merged
}

/// A writer of several JSON types, or several listed values, as one schema per type or
/// value (with its `type` narrowed to the value's); `None` when it is one of each.
fn pieces(schema: &Map<String, Value>) -> Option<Vec<Map<String, Value>>> {
    if let Some(values) = listed_values(schema).filter(|values| values.len() > 1) {
        let pieces = values
            .into_iter()
            .map(|value| {
                let mut piece = schema.clone();
                piece.remove("const");
                piece.insert("enum".to_owned(), Value::Array(vec![value.clone()]));
                piece.insert("type".to_owned(), Value::from(type_of(value)));
                piece
            })
            .collect();
        return Some(pieces);
    }
    let types = declared_types(schema).filter(|types| types.len() > 1)?;
    Some(
        types
            .into_iter()
            .map(|kind| {
                let mut piece = schema.clone();
                piece.insert("type".to_owned(), Value::from(kind));
                piece
            })
            .collect(),
    )
}

/// `#/properties/NAME` below `path`, with `~` and `/` escaped as JSON Pointer does.
fn property_path(path: &str, name: &str) -> String {
    format!(
        "{path}/properties/{}",
        name.replace('~', "~0").replace('/', "~1")
    )
}

/// Whether a schema accepts every value: `true`, or an object of annotations only.
fn accepts_anything(schema: &Value) -> bool {
    match schema {
        Value::Bool(accepts) => *accepts,
        Value::Object(map) => map
            .keys()
            .all(|keyword| ANNOTATIONS.contains(&keyword.as_str())),
        _ => false,
    }
}

fn others(schema: &Map<String, Value>) -> Others<'_> {
    match schema.get("additionalProperties") {
        None => Others::Unsaid,
        Some(Value::Bool(false)) => Others::Closed,
        Some(values) => Others::Schema(values),
    }
}

fn required(schema: &Map<String, Value>) -> BTreeSet<&str> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// The values a schema's `enum` or `const` allows, if it lists them.
fn listed_values(schema: &Map<String, Value>) -> Option<Vec<&Value>> {
    if let Some(value) = schema.get("const") {
        return Some(vec![value]);
    }
    Some(schema.get("enum")?.as_array()?.iter().collect())
}

fn compare_enums(
    writer: &Map<String, Value>,
    reader: &Map<String, Value>,
    path: &str,
    out: &mut Vec<Finding>,
) {
    let Some(reader_values) = listed_values(reader) else {
        return;
    };
    let detail = match listed_values(writer) {
        None => "the reader takes only the values it lists; the writer may write others".to_owned(),
        Some(writer_values) => {
            let missing: Vec<String> = writer_values
                .into_iter()
                .filter(|value| !reader_values.iter().any(|known| same_value(known, value)))
                .map(Value::to_string)
                .collect();
            if missing.is_empty() {
                return;
            }
            format!("the reader does not take {}", missing.join(", "))
        }
    };
    note(out, path, Rule::EnumNarrowed, detail);
}

/// The JSON types a schema's `type` names, or `None` for any.
fn declared_types(schema: &Map<String, Value>) -> Option<BTreeSet<&str>> {
    match schema.get("type")? {
        Value::String(kind) => Some(BTreeSet::from([kind.as_str()])),
        Value::Array(kinds) => Some(kinds.iter().filter_map(Value::as_str).collect()),
        _ => None,
    }
}

/// The JSON types a writer may write: those its `type` names, else those of the values
/// its `enum` or `const` lists, else any (`None`).
fn types_of(schema: &Map<String, Value>) -> Option<BTreeSet<&'static str>> {
    let named = |kind: &str| TYPES.into_iter().find(|&known| known == kind);
    if let Some(types) = declared_types(schema) {
        return Some(types.into_iter().filter_map(named).collect());
    }
    Some(listed_values(schema)?.into_iter().map(type_of).collect())
}

/// The JSON type of a value (`integer` for a number without a fraction).
fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(number) if number.is_i64() || number.is_u64() => "integer",
        Value::Number(number) if number.as_f64().is_some_and(|n| n.fract() == 0.0) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Whether two values are the same JSON value (`1` and `1.0` are).
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        _ => a == b,
    }
}

/// Whether a schema taking `types` takes values of type `kind` (`integer` is a kind of
/// `number`).
fn takes(types: &BTreeSet<&str>, kind: &str) -> bool {
    types.contains(kind) || (kind == "integer" && types.contains("number"))
}

fn list(types: &BTreeSet<&str>) -> String {
    types.iter().copied().collect::<Vec<_>>().join(", ")
}

fn compare_strings(
    writer: &Map<String, Value>,
    reader: &Map<String, Value>,
    path: &str,
    out: &mut Vec<Finding>,
) {
    compare_bound(writer, reader, "minLength", "maxLength", path, out);
    if let Some(pattern) = reader.get("pattern")
        && writer.get("pattern") != Some(pattern)
    {
        note(
            out,
            path,
            Rule::PatternChanged,
            format!(
                "the reader's pattern is {pattern}; the writer's is {}",
                shown(writer.get("pattern"))
            ),
        );
    }
    if let Some(format) = reader.get("format").and_then(Value::as_str) {
        let numeric = integer_range(format).is_some() || matches!(format, "float" | "double");
        if !numeric && writer.get("format").and_then(Value::as_str) != Some(format) {
            note(
                out,
                path,
                Rule::FormatChanged,
                format!(
                    "the reader's format is {format:?}; the writer's is {}",
                    shown(writer.get("format"))
                ),
            );
        }
    }
}

/// The values an integer `format` (as schemars writes them) holds.
fn integer_range(format: &str) -> Option<(f64, f64)> {
    let bits = |bits: i32| 2_f64.powi(bits);
    Some(match format {
        "int8" => (-bits(7), bits(7) - 1.0),
        "int16" => (-bits(15), bits(15) - 1.0),
        "int32" => (-bits(31), bits(31) - 1.0),
        "int64" | "int" => (-bits(63), bits(63) - 1.0),
        "int128" => (-bits(127), bits(127) - 1.0),
        "uint8" => (0.0, bits(8) - 1.0),
        "uint16" => (0.0, bits(16) - 1.0),
        "uint32" => (0.0, bits(32) - 1.0),
        "uint64" | "uint" => (0.0, bits(64) - 1.0),
        "uint128" => (0.0, bits(128) - 1.0),
        _ => return None,
    })
}

/// A lower or upper bound: its value, and whether the value itself is excluded.
#[derive(Clone, Copy)]
struct Bound {
    value: f64,
    exclusive: bool,
}

impl Bound {
    fn tightest(bounds: impl IntoIterator<Item = Bound>, lower: bool) -> Option<Bound> {
        bounds.into_iter().reduce(|a, b| {
            let b_tighter = if lower {
                b.value > a.value
            } else {
                b.value < a.value
            };
            if b_tighter || (b.value == a.value && b.exclusive) {
                b
            } else {
                a
            }
        })
    }
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}",
            self.value,
            if self.exclusive { " (excluded)" } else { "" }
        )
    }
}

/// A number's bounds from `minimum`, `exclusiveMinimum` (a number, or draft 4's `true`)
/// and the range of an integer `format`.
fn number_bound(schema: &Map<String, Value>, lower: bool) -> Option<Bound> {
    let (inclusive, exclusive) = if lower {
        ("minimum", "exclusiveMinimum")
    } else {
        ("maximum", "exclusiveMaximum")
    };
    let old_exclusive = schema.get(exclusive) == Some(&Value::Bool(true));
    let mut bounds = Vec::new();
    if let Some(value) = schema.get(inclusive).and_then(Value::as_f64) {
        bounds.push(Bound {
            value,
            exclusive: old_exclusive,
        });
    }
    if let Some(value) = schema.get(exclusive).and_then(Value::as_f64) {
        bounds.push(Bound {
            value,
            exclusive: true,
        });
    }
    if let Some((low, high)) = schema
        .get("format")
        .and_then(Value::as_str)
        .and_then(integer_range)
    {
        bounds.push(Bound {
            value: if lower { low } else { high },
            exclusive: false,
        });
    }
    Bound::tightest(bounds, lower)
}

/// Whether the reader's bound refuses values within the writer's.
fn tighter(writer: Option<Bound>, reader: Option<Bound>, lower: bool) -> bool {
    match (writer, reader) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(w), Some(r)) => {
            let beyond = if lower {
                r.value > w.value
            } else {
                r.value < w.value
            };
            beyond || (r.value == w.value && r.exclusive && !w.exclusive)
        }
    }
}

fn compare_numbers(
    writer: &Map<String, Value>,
    reader: &Map<String, Value>,
    path: &str,
    out: &mut Vec<Finding>,
) {
    for (lower, name) in [(true, "lower"), (false, "upper")] {
        let (w, r) = (number_bound(writer, lower), number_bound(reader, lower));
        if tighter(w, r, lower) {
            note(
                out,
                path,
                Rule::BoundTightened,
                format!(
                    "the reader's {name} bound is {}; the writer's is {}",
                    r.map_or_else(|| "none".to_owned(), |b| b.to_string()),
                    w.map_or_else(|| "none".to_owned(), |b| b.to_string()),
                ),
            );
        }
    }
    if let Some(step) = reader.get("multipleOf").and_then(Value::as_f64) {
        let writer_step = writer.get("multipleOf").and_then(Value::as_f64);
        let multiple = |writer_step: f64| {
            let ratio = writer_step / step;
            (ratio - ratio.round()).abs() < 1e-9
        };
        if !writer_step.is_some_and(multiple) {
            note(
                out,
                path,
                Rule::BoundTightened,
                format!(
                    "the reader takes multiples of {step} only; the writer's step is {}",
                    shown(writer.get("multipleOf"))
                ),
            );
        }
    }
}

/// Compares an inclusive count bound pair such as `minLength` and `maxLength`.
fn compare_bound(
    writer: &Map<String, Value>,
    reader: &Map<String, Value>,
    minimum: &str,
    maximum: &str,
    path: &str,
    out: &mut Vec<Finding>,
) {
    for (lower, keyword) in [(true, minimum), (false, maximum)] {
        let bound = |schema: &Map<String, Value>| {
            let value = schema.get(keyword)?.as_f64()?;
            Some(Bound {
                value,
                exclusive: false,
            })
        };
        let (w, r) = (bound(writer), bound(reader));
        if tighter(w, r, lower) {
            note(
                out,
                path,
                Rule::BoundTightened,
                format!(
                    "the reader's {keyword} is {}; the writer's is {}",
                    shown(reader.get(keyword)),
                    shown(writer.get(keyword)),
                ),
            );
        }
    }
}

fn shown(value: Option<&Value>) -> String {
    value.map_or_else(|| "none".to_owned(), Value::to_string)
}
