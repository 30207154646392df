//! Published schemas (`logpipe::schema`): derived from the serde attributes of message
//! types, exported one file per (type, version), read back.

use std::io;

use logpipe::Message;
use logpipe::schema::{JsonSchema, Schemas};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Message, JsonSchema)]
#[logpipe(type = "us-state", version = 1, key = "code")]
#[schemars(crate = "logpipe::schema::schemars")]
struct StateV1 {
    code: String,
    #[serde(rename = "fullName")]
    name: String,
    #[serde(default)]
    counties: Vec<String>,
}

#[derive(Serialize, Deserialize, Message, JsonSchema)]
#[logpipe(type = "us-state", version = 2, key = "code")]
#[schemars(crate = "logpipe::schema::schemars")]
struct StateV2 {
    code: String,
    name: String,
    admitted: Option<u16>,
}

#[test]
fn schemas_follow_serde_and_export_one_file_per_type_and_version() {
    let schemas = Schemas::new().with::<StateV1>().with::<StateV2>();
    let v1 = schemas.get("us-state", 1).unwrap();
    assert!(v1["properties"]["fullName"].is_object(), "{v1}");
    assert!(v1["properties"].get("name").is_none(), "{v1}");
    // A defaulted field is not required.
    assert_eq!(v1["required"], serde_json::json!(["code", "fullName"]));
    let v2 = schemas.get("us-state", 2).unwrap();
    assert_eq!(v2["required"], serde_json::json!(["code", "name"]));
    assert!(schemas.get("us-state", 3).is_none());

    let dir = tempfile::tempdir().unwrap();
    let written = schemas.export(dir.path()).unwrap();
    let folder = dir.path().join("us-state");
    assert_eq!(written, [folder.join("1.json"), folder.join("2.json")]);
    let text = std::fs::read_to_string(&written[0]).unwrap();
    assert!(text.ends_with("}\n"), "{text}");
    assert_eq!(Schemas::read_dir(dir.path()).unwrap(), schemas);

    // Hidden entries are passed over; a version not written as export writes it is not.
    std::fs::write(folder.join(".gitkeep"), "").unwrap();
    std::fs::create_dir(dir.path().join(".git")).unwrap();
    assert_eq!(Schemas::read_dir(dir.path()).unwrap(), schemas);
    std::fs::write(folder.join("02.json"), "{}").unwrap();
    let err = Schemas::read_dir(dir.path()).unwrap_err();
    assert!(err.to_string().contains("02.json"), "{err}");
    std::fs::remove_file(folder.join("02.json")).unwrap();

    std::fs::write(folder.join("notes.txt"), "hello").unwrap();
    let err = Schemas::read_dir(dir.path()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("notes.txt"), "{err}");
    std::fs::remove_file(folder.join("notes.txt")).unwrap();

    // An upcaster must make a later version: a loop or a step back is refused.
    for bad in [r#"{"1": 1}"#, r#"{"2": 1}"#, r#"{"1": "two"}"#] {
        std::fs::write(folder.join("upcasts.json"), bad).unwrap();
        let err = Schemas::read_dir(dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{bad}");
        assert!(err.to_string().contains("upcasts.json"), "{err}");
    }
    std::fs::write(folder.join("upcasts.json"), r#"{"1": 2}"#).unwrap();
    assert_eq!(
        Schemas::read_dir(dir.path()).unwrap(),
        schemas.clone().upcast::<StateV1, StateV2>()
    );

    for bad in ["", ".hidden", "a/b", "c:d"] {
        let mut named = Schemas::new();
        named.insert(bad, 1, serde_json::json!({}));
        let err = named.export(dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
    }
}
