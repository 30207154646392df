//! Sends COUNT person messages (uuids 000000, 000001, ...; even ones as version 1, odd
//! ones as version 2) to the `people` stream of the configured backend.
//!
//! ```text
//! LOGPIPE_BACKEND=sqlite://people.db cargo run --example people_producer -- 1000
//! ```

mod people;

use logpipe::Producer;
use logpipe::config::Config;
use people::{PersonV1, PersonV2};
use tokio::task::JoinSet;

/// Messages sent at once; the embedded log writes each such group in one transaction.
const IN_FLIGHT: usize = 100;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let count: usize = match std::env::args().nth(1) {
        Some(arg) => arg
            .parse()
            .map_err(|_| format!("COUNT must be a number, not {arg:?}"))?,
        None => return Err("usage: people_producer COUNT".into()),
    };
    let config = Config::load(None)?;
    // The stream is `people` unless PEOPLE_STREAM names another.
    let stream = std::env::var("PEOPLE_STREAM").unwrap_or_else(|_| "people".to_owned());
    let mut producer = Producer::new(config.open_backend()?, stream).with_format(config.format);
    if let Some(id) = &config.producer_id {
        producer = producer.with_producer_id(id);
    }
    let ids: Vec<usize> = (0..count).collect();
    for chunk in ids.chunks(IN_FLIGHT) {
        let mut sends = JoinSet::new();
        for &id in chunk {
            let producer = producer.clone();
            let uuid = format!("{id:06}");
            sends.spawn(async move {
                if id % 2 == 0 {
                    producer
                        .send(&PersonV1 {
                            uuid,
                            name: format!("Person {id}"),
                        })
                        .await
                } else {
                    let (first_name, last_name) = ("Person".to_owned(), id.to_string());
                    producer
                        .send(&PersonV2 {
                            uuid,
                            first_name,
                            last_name,
                        })
                        .await
                }
            });
        }
        while let Some(sent) = sends.join_next().await {
            sent??;
        }
    }
    producer.flush().await?;
    println!("sent {count}");
    Ok(())
}
