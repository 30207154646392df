//! Produces person v1 and v2 messages to the embedded log and consumes them with one
//! handler per version. Needs no servers: `cargo run --example quickstart`.

mod people;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use logpipe::embedded::EmbeddedLog;
use logpipe::offsets::SqliteOffsetStore;
use logpipe::{Consumer, Context, Producer, Registry, handler_fn};
use people::{PersonV1, PersonV2};
use tokio_util::sync::CancellationToken;

const MESSAGES: usize = 4;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("quickstart.db");

    // Produce: two services on different schema versions write to one stream.
    let log = EmbeddedLog::open(&path)?;
    let producer = Producer::new(log.clone(), "people").with_producer_id("quickstart");
    producer
        .send(&PersonV1 {
            uuid: "a1".into(),
            name: "Ada Lovelace".into(),
        })
        .await?;
    producer
        .send(&PersonV1 {
            uuid: "b2".into(),
            name: "Alan Turing".into(),
        })
        .await?;
    let v2 = |uuid: &str, first: &str, last: &str| PersonV2 {
        uuid: uuid.into(),
        first_name: first.into(),
        last_name: last.into(),
    };
    producer.send(&v2("a1", "Ada", "Lovelace")).await?;
    producer.send(&v2("c3", "Grace", "Hopper")).await?;
    producer.flush().await?;
    println!("produced {MESSAGES} messages to {}", path.display());

    // Consume: one handler per (type, version); stop once every message was handled.
    let shutdown = CancellationToken::new();
    let handled = Arc::new(AtomicUsize::new(0));
    let done = {
        let (shutdown, handled) = (shutdown.clone(), Arc::clone(&handled));
        move || {
            if handled.fetch_add(1, Ordering::SeqCst) + 1 == MESSAGES {
                shutdown.cancel();
            }
        }
    };
    let done_v2 = done.clone();
    let registry = Registry::builder()
        .handle(handler_fn(move |person: PersonV1, context: Context| {
            println!(
                "v1 {} ({}) from {} at {}",
                person.name, person.uuid, context.partition, context.position
            );
            done();
            async { Ok::<_, Infallible>(()) }
        }))
        .handle(handler_fn(move |person: PersonV2, context: Context| {
            println!(
                "v2 {} {} ({}) from {} at {}",
                person.first_name,
                person.last_name,
                person.uuid,
                context.partition,
                context.position
            );
            done_v2();
            async { Ok::<_, Infallible>(()) }
        }))
        .build()?;
    let store = SqliteOffsetStore::open(&path)?;
    Consumer::new(log.consumer(["people"]), store, registry, "quickstart")
        .run(shutdown)
        .await?;
    println!(
        "handled {} messages; positions stored",
        handled.load(Ordering::SeqCst)
    );
    Ok(())
}
