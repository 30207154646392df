//! A service that keeps a `people` table up to date from the `people` stream, with a
//! handler for each schema version, registered with `register_consumer!` and run by
//! logpipe's `run_consumers` main until SIGINT or SIGTERM.
//!
//! With a SQLite offset store, each handler writes its row and the record's position in
//! one SQLite transaction, so every message takes effect exactly once, even if the
//! process is killed. With positions committed to a Kafka consumer group
//! (`offset_store = "kafka://"`), the table is the SQLite file `PEOPLE_DB` (default
//! `people.db`) and a message takes effect at least once: after a crash, the records
//! handled since the last commit that reached the broker are applied again (the `applied`
//! column counts how often).
//!
//! ```text
//! LOGPIPE_BACKEND=sqlite://people.db cargo run --example people_service -- --metrics-addr 127.0.0.1:9898
//! ```

mod people;

use std::sync::{Arc, Mutex};

use logpipe::config::{Config, OffsetStoreUrl};
use logpipe::offsets::SqliteOffsetStore;
use logpipe::run::ConsumerSpec;
use logpipe::{BoxError, Context, Registry, handler_fn};
use people::{PersonV1, PersonV2};
use rusqlite::{Connection, params};

/// Inserts or updates a person, counting how many times it was applied.
const UPSERT: &str = "INSERT INTO people (uuid, name, version, applied) VALUES (?1, ?2, ?3, 1)
    ON CONFLICT (uuid) DO UPDATE SET name = excluded.name, version = excluded.version, applied = applied + 1";

/// Where the handlers write their rows.
#[derive(Clone)]
enum Table {
    /// In the transaction that also stores the record's position.
    WithPositions(SqliteOffsetStore),
    /// On a connection of its own; the positions are stored elsewhere.
    Alone(Arc<Mutex<Connection>>),
}

async fn save(table: Table, context: Context, uuid: String, name: String) -> Result<(), BoxError> {
    // Refused: the handler fails, is retried, then (by default) stops the consumer.
    if name.trim().is_empty() {
        return Err(format!("person {uuid} has no name").into());
    }
    let version = i64::try_from(context.version)?;
    match table {
        Table::WithPositions(store) => {
            store
                .transaction(&context, move |tx| {
                    tx.execute(UPSERT, params![uuid, name, version]).map(drop)
                })
                .await?;
        }
        Table::Alone(conn) => {
            tokio::task::spawn_blocking(move || {
                let conn = conn
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                conn.execute(UPSERT, params![uuid, name, version])
            })
            .await??;
        }
    }
    Ok(())
}

fn people_table(config: &Config) -> Result<ConsumerSpec, BoxError> {
    let path = match config.offset_store_url() {
        OffsetStoreUrl::Sqlite(path) => path,
        OffsetStoreUrl::Kafka => std::env::var_os("PEOPLE_DB")
            .map_or_else(|| "people.db".into(), std::path::PathBuf::from),
        OffsetStoreUrl::Memory | _ => {
            return Err(
                "people_service keeps its table in SQLite: use a sqlite:// or kafka:// offset store"
                    .into(),
            );
        }
    };
    let conn = Connection::open(&path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS people (
             uuid TEXT PRIMARY KEY, name TEXT NOT NULL, version INTEGER NOT NULL, applied INTEGER NOT NULL
         )",
    )?;
    let table = match config.offset_store_url() {
        OffsetStoreUrl::Sqlite(_) => Table::WithPositions(SqliteOffsetStore::open(&path)?),
        _ => Table::Alone(Arc::new(Mutex::new(conn))),
    };
    let table_v2 = table.clone();
    let registry = Registry::builder()
        .handle(handler_fn(move |person: PersonV1, context: Context| {
            save(table.clone(), context, person.uuid, person.name)
        }))
        .handle(handler_fn(move |person: PersonV2, context: Context| {
            let name = format!("{} {}", person.first_name, person.last_name);
            save(table_v2.clone(), context, person.uuid, name)
        }))
        .ignore("audit")
        .build()?;
    // The stream is `people` unless PEOPLE_STREAM names another.
    let stream = std::env::var("PEOPLE_STREAM").unwrap_or_else(|_| "people".to_owned());
    Ok(ConsumerSpec::new([stream], registry))
}

logpipe::register_consumer!(people_table);

fn main() -> std::process::ExitCode {
    logpipe::cli::run_consumers_main()
}
