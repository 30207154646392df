//! The message types the examples share: a person, in two schema versions.

use logpipe::Message;
use serde::{Deserialize, Serialize};

/// Version 1: one name field.
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[logpipe(type = "person", version = 1, key = "uuid")]
pub struct PersonV1 {
    pub uuid: String,
    pub name: String,
}

/// Version 2 splits the name. Both versions are handled while producers migrate.
#[derive(Debug, Clone, Serialize, Deserialize, Message)]
#[logpipe(type = "person", version = 2, key = "uuid")]
pub struct PersonV2 {
    pub uuid: String,
    pub first_name: String,
    pub last_name: String,
}
