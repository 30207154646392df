//! The Kafka backend (the crate `logpipe-kafka`, over rdkafka).
//!
//! `backend = "kafka://h1:9092,h2:9092"` selects it; the `[kafka]` table
//! ([`KafkaSettings`]) sets topic names, topic creation and librdkafka properties.
//! Positions are committed to the consumer group by default (`offset_store =
//! "kafka://"`, [`GroupOffsets`]); a SQLite store works too.
//!
//! ```no_run
//! use logpipe::backend::{Backend, StartFrom};
//! use logpipe::kafka::{KafkaClient, KafkaSettings};
//! use logpipe::{Consumer, Producer, Registry};
//! use tokio_util::sync::CancellationToken;
//!
//! # async fn example(registry: Registry) -> Result<(), Box<dyn std::error::Error>> {
//! let kafka = KafkaClient::connect(KafkaSettings::new("127.0.0.1:9092"))?;
//! let producer = Producer::new(kafka.clone(), "people");
//! // Positions committed to the group "billing", through its consumers.
//! let consumer = kafka.open_consumer("billing", &["people".to_owned()], StartFrom::Configured)?;
//! Consumer::new(consumer, kafka.offsets(), registry, "billing")
//!     .run(CancellationToken::new())
//!     .await?;
//! # Ok(())
//! # }
//! ```

pub use logpipe_kafka::*;
