//! Message types: a Rust type with a wire identity (type, version, key field).

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A message type with its wire identity.
///
/// Implement it with the derive macro:
///
/// ```
/// use logpipe::Message;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Serialize, Deserialize, Message)]
/// #[logpipe(type = "person", version = 2, key = "uuid")]
/// struct PersonV2 {
///     uuid: String,
///     first_name: String,
/// }
///
/// let person = PersonV2 { uuid: "6f1c".into(), first_name: "Joe".into() };
/// assert_eq!(PersonV2::TYPE, "person");
/// assert_eq!(PersonV2::VERSION, 2);
/// assert_eq!(PersonV2::KEY_FIELD, Some("uuid"));
/// assert_eq!(person.key().as_deref(), Some("6f1c"));
/// ```
///
/// Without `key`, messages are keyless and are spread over partitions.
pub trait Message: Serialize + DeserializeOwned + Send + 'static {
    /// The message type written in the envelope's `type`.
    const TYPE: &'static str;
    /// The schema version written in the envelope's `version`.
    const VERSION: u64;
    /// The field whose value is the record key, if any.
    const KEY_FIELD: Option<&'static str> = None;

    /// The record key of this message: the value of [`KEY_FIELD`](Message::KEY_FIELD).
    ///
    /// `None` (or an empty key) sends the message without a key.
    fn key(&self) -> Option<String> {
        None
    }
}

/// A field type that can serve as a record key.
///
/// Implemented for strings, integers, `char` and `Option` of those; implement it for your
/// own identifier types (for example a UUID newtype) to use them as `key` fields.
pub trait KeyValue {
    /// The key as text; `None` means the message has no key.
    fn to_key(&self) -> Option<String>;
}

macro_rules! key_value_via_to_string {
    ($($ty:ty),*) => {$(
        impl KeyValue for $ty {
            fn to_key(&self) -> Option<String> {
                Some(self.to_string())
            }
        }
    )*};
}

key_value_via_to_string!(
    String, str, char, u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize
);

impl<T: KeyValue + ?Sized> KeyValue for &T {
    fn to_key(&self) -> Option<String> {
        (**self).to_key()
    }
}

impl<T: KeyValue + ?Sized> KeyValue for Box<T> {
    fn to_key(&self) -> Option<String> {
        (**self).to_key()
    }
}

impl<T: KeyValue + ?Sized> KeyValue for std::sync::Arc<T> {
    fn to_key(&self) -> Option<String> {
        (**self).to_key()
    }
}

impl<T: KeyValue> KeyValue for Option<T> {
    fn to_key(&self) -> Option<String> {
        self.as_ref().and_then(KeyValue::to_key)
    }
}
