//! The record of a message: its envelope under its key, as producers and the outbox
//! write it.

use crate::envelope::{self, Format, Header};

/// The record of `message` for `stream`: its envelope in `format` with `producer_id`,
/// under its key (none when the key is empty), as [`Producer`](crate::Producer) and
/// [`Outbox`](crate::outbox::Outbox) write it.
pub(crate) fn record_of<M: crate::message::Message>(
    format: Format,
    producer_id: Option<&str>,
    stream: std::sync::Arc<str>,
    message: &M,
) -> Result<crate::backend::OutgoingRecord, crate::error::Error> {
    let header = Header {
        message_type: M::TYPE,
        version: M::VERSION,
        producer: producer_id,
    };
    let value = envelope::encode(format, &header, message).map_err(|source| {
        crate::error::Error::Encode {
            message_type: M::TYPE,
            version: M::VERSION,
            source,
        }
    })?;
    let key = message
        .key()
        .filter(|key| !key.is_empty())
        .map(String::into_bytes);
    Ok(crate::backend::OutgoingRecord {
        stream,
        key,
        value,
        headers: Vec::new(),
    })
}
