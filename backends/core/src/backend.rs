//! A whole backend: what a crate such as `logpipe-kafka` gives the rest of logpipe.

use crate::{Admin, BackendError, ConsumerBackend, ProducerBackend, StartFrom};

/// A backend: it writes records ([`ProducerBackend`]), makes consumers of its streams,
/// and answers the operators' tools ([`Admin`]). Clones share connections.
///
/// A backend crate implements this for its client type, and runs the conformance suites
/// of this crate (feature `conformance`) from its tests.
pub trait Backend: ProducerBackend + Admin + Clone {
    /// A consumer of this backend.
    type Consumer: ConsumerBackend;

    /// A consumer of `streams` for consumer group `group`, starting partitions without a
    /// stored position at `start`. The consumer shares the partitions with the other
    /// members of `group`: through the brokers' group (Kafka), or through leases (the
    /// embedded log; Kinesis with a lease store); a backend that cannot share them reads
    /// every partition. The group `""` is a consumer of its own, sharing nothing and
    /// leaving no trace of a group (as `logpipe tail` reads).
    ///
    /// # Errors
    ///
    /// [`BackendError`] when the consumer cannot be created. A missing stream is reported
    /// by the consumer's first [`next_event`](ConsumerBackend::next_event) or by this
    /// call, as the backend can tell.
    fn open_consumer(
        &self,
        group: &str,
        streams: &[String],
        start: StartFrom,
    ) -> Result<Self::Consumer, BackendError>;

    /// The consumer group under which `group`'s positions are kept: `group` itself by
    /// default; Kinesis qualifies it by region (`GROUP@REGION`), so that one stream name
    /// in two regions keeps two sets of positions.
    fn position_group(&self, group: &str) -> String {
        group.to_owned()
    }
}
