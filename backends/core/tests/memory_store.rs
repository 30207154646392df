//! The offset-store suite on the memory store.

use logpipe_core::conformance::StoreFeatures;
use logpipe_core::conformance::offsets::StoreSetup;
use logpipe_core::{MemoryOffsetStore, PartitionRef};

/// A store of its own; it keeps nothing across a reopen, so there is no way to open it
/// again.
async fn memory() -> Option<StoreSetup<MemoryOffsetStore>> {
    Some(StoreSetup {
        store: MemoryOffsetStore::new(),
        partitions: vec![
            PartitionRef::new("people", "0"),
            PartitionRef::new("people", "1"),
        ],
        reopen: None,
    })
}

logpipe_core::store_tests!(
    memory,
    StoreFeatures {
        sequences: true,
        fences: false,
    }
);
