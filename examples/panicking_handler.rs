//! A service with a bug in its handler: it unwraps an order's `sku`, which nearly every
//! order has, and panics on the one without it.
//!
//! logpipe takes the panic for a failure of that record, as if the handler had returned
//! an error: it is logged with the panic's message and the record's place, counted
//! (`logpipe_handler_panics_total`) and retried (`consumer.max_retries`). Then, by
//! default, the consumer stores the positions of every record before it and stops with
//! an error naming the record, and the process exits 1; a restart goes on from that
//! record, without handling the ones before it again. With `on_handler_error =
//! "dead-letter"` and a `dead_letter_stream`, the order goes to the dead-letter stream
//! (header `logpipe.reason: panic`) and the other orders are handled.
//!
//! Each order shipped is counted in the table `shipped` of the SQLite file `ORDERS_DB`
//! (default `orders.db`); the stream is `orders` unless `ORDERS_STREAM` names another.
//!
//! ```text
//! export LOGPIPE_BACKEND=sqlite://log.db
//! printf '{"id":1,"sku":"A-1"}\n{"id":2}\n{"id":3,"sku":"C-3"}\n' | logpipe produce orders --type order --version 1
//! cargo run --example panicking_handler                 # ships 1, then exits 1 on 2
//! LOGPIPE_CONSUMER__ON_HANDLER_ERROR=dead-letter LOGPIPE_DEAD_LETTER_STREAM=orders-dead \
//!     cargo run --example panicking_handler             # dead-letters 2, ships 3
//! ```

use std::sync::{Arc, Mutex, PoisonError};

use logpipe::config::Config;
use logpipe::run::ConsumerSpec;
use logpipe::{BoxError, Context, Message, Registry, handler_fn};
use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};

/// An order; `sku` is missing only from orders written by an old client.
#[derive(Debug, Serialize, Deserialize, Message)]
#[logpipe(type = "order", version = 1)]
struct Order {
    id: u64,
    sku: Option<String>,
}

async fn ship(db: Arc<Mutex<Connection>>, order: Order) -> Result<(), BoxError> {
    // The bug: an order without a sku panics here.
    let sku = order.sku.expect("every order has a sku");
    let id = i64::try_from(order.id)?;
    tokio::task::spawn_blocking(move || {
        let db = db.lock().unwrap_or_else(PoisonError::into_inner);
        db.execute(
            "INSERT INTO shipped (id, sku, times) VALUES (?1, ?2, 1)
             ON CONFLICT (id) DO UPDATE SET times = times + 1",
            params![id, sku],
        )
    })
    .await??;
    Ok(())
}

fn orders(_config: &Config) -> Result<ConsumerSpec, BoxError> {
    let path = std::env::var("ORDERS_DB").unwrap_or_else(|_| "orders.db".to_owned());
    let db = Connection::open(path)?;
    db.execute_batch(
        "CREATE TABLE IF NOT EXISTS shipped (
             id INTEGER PRIMARY KEY, sku TEXT NOT NULL, times INTEGER NOT NULL
         )",
    )?;
    let db = Arc::new(Mutex::new(db));
    let registry = Registry::builder()
        .handle(handler_fn(move |order: Order, _: Context| {
            ship(Arc::clone(&db), order)
        }))
        .build()?;
    let stream = std::env::var("ORDERS_STREAM").unwrap_or_else(|_| "orders".to_owned());
    Ok(ConsumerSpec::new([stream], registry))
}

logpipe::register_consumer!(orders);

fn main() -> std::process::ExitCode {
    logpipe::cli::run_consumers_main()
}
