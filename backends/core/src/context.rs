//! Where a message came from: what a handler is told, and what a store that writes a
//! position in the handler's own transaction needs.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use crate::{PartitionRef, Position};

/// Where a message came from, passed to its handler (and by the handler to a store that
/// writes the record's position in the handler's transaction).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Context {
    /// The consumer group reading the record.
    pub group: Arc<str>,
    /// The stream and partition (or shard) it was read from.
    pub partition: PartitionRef,
    /// Its position there.
    pub position: Position,
    /// The record key, if any: it shares the buffer of its record (see
    /// [`Record`](crate::Record)), so copy it to keep it beyond the call.
    pub key: Option<Bytes>,
    /// When the record was written, if the backend knows.
    pub timestamp: Option<SystemTime>,
    /// The envelope's message type (empty until a handler matched).
    pub message_type: &'static str,
    /// The envelope's version: the version the message was written in, also when
    /// upcasters turned it into a later one for its handler.
    pub version: u64,
    /// The envelope's producer id, if any.
    pub producer: Option<Arc<str>>,
}

impl Context {
    /// A context for the record at `position` of `partition`, read by `group`; the other
    /// fields are empty. Useful to call handlers in tests.
    pub fn new(group: impl Into<Arc<str>>, partition: PartitionRef, position: Position) -> Self {
        Self {
            group: group.into(),
            partition,
            position,
            key: None,
            timestamp: None,
            message_type: "",
            version: 0,
            producer: None,
        }
    }

    /// The stream the record was read from.
    pub fn stream(&self) -> &str {
        &self.partition.stream
    }

    /// The record key as text, when it is UTF-8.
    pub fn key_str(&self) -> Option<&str> {
        self.key
            .as_deref()
            .and_then(|key| std::str::from_utf8(key).ok())
    }
}
