//! MultiConsumer: many consumers in one process, taking turns.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use logpipe::embedded::EmbeddedLog;
use logpipe::offsets::MemoryOffsetStore;
use logpipe::{
    BoxError, Consumer, Context, Error, Message, MultiConsumer, Producer, Registry, handler_fn,
};
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::support::wait_until;

const WAIT: Duration = Duration::from_secs(30);
const BUSY_RECORDS: usize = 50_000;

#[derive(Debug, Serialize, Deserialize, Message)]
#[logpipe(type = "tick", version = 1)]
struct Tick {
    n: usize,
}

fn counting_registry(count: impl Fn() + Send + Sync + 'static) -> Registry {
    Registry::builder()
        .handle(handler_fn(move |_: Tick, _: Context| {
            count();
            async { Ok::<_, BoxError>(()) }
        }))
        .build()
        .unwrap()
}

async fn flood(log: &EmbeddedLog, stream: &str, count: usize) {
    let producer = Producer::new(log.clone(), stream.to_owned());
    let mut sends = JoinSet::new();
    for n in 0..count {
        let producer = producer.clone();
        sends.spawn(async move { producer.send(&Tick { n }).await });
        if sends.len() >= 500 {
            sends.join_next().await.unwrap().unwrap().unwrap();
        }
    }
    while let Some(sent) = sends.join_next().await {
        sent.unwrap().unwrap();
    }
}

/// On a single thread, so that only turn-taking (not a second core) lets the idle
/// consumer run while the busy one has work queued.
#[test]
fn an_idle_stream_is_served_promptly_while_a_busy_stream_is_flooded() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let log = EmbeddedLog::open_in_memory().unwrap();
        log.ensure_stream("busy", 1).await.unwrap();
        log.ensure_stream("idle", 1).await.unwrap();
        flood(&log, "busy", BUSY_RECORDS).await;

        let busy = Arc::new(AtomicUsize::new(0));
        let idle_handled_after = Arc::new(Mutex::new(None));
        let busy_registry = counting_registry({
            let busy = Arc::clone(&busy);
            move || {
                busy.fetch_add(1, Ordering::SeqCst);
            }
        });
        let idle_registry = counting_registry({
            let (busy, idle) = (Arc::clone(&busy), Arc::clone(&idle_handled_after));
            move || *idle.lock().unwrap() = Some(busy.load(Ordering::SeqCst))
        });
        let store = MemoryOffsetStore::new();
        let mut multi = MultiConsumer::new();
        multi.push(Consumer::new(
            log.consumer(["busy"]),
            store.clone(),
            busy_registry,
            "busy",
        ));
        multi.push(Consumer::new(
            log.consumer(["idle"]),
            store.clone(),
            idle_registry,
            "idle",
        ));
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(multi.run(shutdown.clone()));

        wait_until("the busy consumer is under way", WAIT, || {
            busy.load(Ordering::SeqCst) >= 1_000
        })
        .await;
        Producer::new(log.clone(), "idle")
            .send(&Tick { n: 0 })
            .await
            .unwrap();
        let sent_after = busy.load(Ordering::SeqCst);
        wait_until("the idle record is handled", WAIT, || {
            idle_handled_after.lock().unwrap().is_some()
        })
        .await;
        let handled_after = idle_handled_after.lock().unwrap().unwrap();

        assert!(
            handled_after < BUSY_RECORDS,
            "the idle record waited for the whole busy backlog"
        );
        assert!(
            handled_after - sent_after <= 5_000,
            "{} busy records were handled between sending and handling the idle record",
            handled_after - sent_after
        );
        shutdown.cancel();
        running.await.unwrap().unwrap();
        // Both consumers stored their positions on shutdown.
        assert_eq!(store.positions("idle").len(), 1);
        assert_eq!(store.positions("busy").len(), 1);
    });
}

#[tokio::test]
async fn one_consumer_failing_stops_the_others_cleanly_and_returns_its_error() {
    let log = EmbeddedLog::open_in_memory().unwrap();
    let failing = Registry::builder()
        .handle(handler_fn(|_: Tick, _: Context| async {
            Err::<(), BoxError>("broken".into())
        }))
        .build()
        .unwrap();
    let steady_handled = Arc::new(AtomicUsize::new(0));
    let steady = counting_registry({
        let handled = Arc::clone(&steady_handled);
        move || {
            handled.fetch_add(1, Ordering::SeqCst);
        }
    });
    Producer::new(log.clone(), "steady")
        .send(&Tick { n: 1 })
        .await
        .unwrap();
    let store = MemoryOffsetStore::new();
    let options = logpipe::ConsumerOptions {
        max_retries: 0,
        ..Default::default()
    };
    let mut multi = MultiConsumer::new();
    multi.push(Consumer::new(
        log.consumer(["steady"]),
        store.clone(),
        steady,
        "steady",
    ));
    multi.push(
        Consumer::new(log.consumer(["failing"]), store.clone(), failing, "failing")
            .with_options(options),
    );
    let running = tokio::spawn(multi.run(CancellationToken::new()));
    wait_until("the steady record is handled", WAIT, || {
        steady_handled.load(Ordering::SeqCst) == 1
    })
    .await;
    Producer::new(log.clone(), "failing")
        .send(&Tick { n: 2 })
        .await
        .unwrap();
    let outcome = tokio::time::timeout(WAIT, running)
        .await
        .expect("all consumers stop")
        .unwrap();
    assert!(matches!(outcome, Err(Error::Handler { .. })), "{outcome:?}");
    assert_eq!(
        store.positions("steady").len(),
        1,
        "the steady consumer stored its position"
    );
    assert!(store.positions("failing").is_empty());
}
