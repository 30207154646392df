//! Sends COUNT person messages (uuids 000000, 000001, ..., or from FIRST on; even ones
//! as version 1, odd ones as version 2) to the `people` stream of the configured backend.
//!
//! ```text
//! LOGPIPE_BACKEND=sqlite://people.db cargo run --example people_producer -- 1000 [FIRST]
//! ```

mod people;

use logpipe::Producer;
use logpipe::config::Config;
use people::{PersonV1, PersonV2};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let count: usize = match std::env::args().nth(1) {
        Some(arg) => arg
            .parse()
            .map_err(|_| format!("COUNT must be a number, not {arg:?}"))?,
        None => return Err("usage: people_producer COUNT [FIRST]".into()),
    };
    let first: usize = match std::env::args().nth(2) {
        Some(arg) => arg
            .parse()
            .map_err(|_| format!("FIRST must be a number, not {arg:?}"))?,
        None => 0,
    };
    let config = Config::load(None)?;
    // The stream is `people` unless PEOPLE_STREAM names another.
    let stream = std::env::var("PEOPLE_STREAM").unwrap_or_else(|_| "people".to_owned());
    // The configured backend, format and producer id.
    let producer = Producer::from_config(&config, stream)?;
    // Each message is handed over at once, in order; the deliveries are awaited after.
    let mut deliveries = Vec::with_capacity(count);
    for id in first..first + count {
        let uuid = format!("{id:06}");
        let delivery = if id % 2 == 0 {
            let name = format!("Person {id}");
            producer.enqueue(&PersonV1 { uuid, name }).await?
        } else {
            let (first_name, last_name) = ("Person".to_owned(), id.to_string());
            producer
                .enqueue(&PersonV2 {
                    uuid,
                    first_name,
                    last_name,
                })
                .await?
        };
        deliveries.push(delivery);
    }
    for delivery in deliveries {
        delivery.await?;
    }
    println!("sent {count}");
    Ok(())
}
