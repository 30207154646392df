//! A service that keeps a `people` table up to date from the `people` stream, with a
//! handler for each schema version, registered with `register_consumer!` and run by
//! logpipe's `run_consumers` main until SIGINT or SIGTERM.
//!
//! Each handler writes its row and the record's position in one SQLite transaction, so
//! every message takes effect exactly once, even if the process is killed.
//!
//! ```text
//! LOGPIPE_BACKEND=sqlite://people.db cargo run --example people_service -- --metrics-addr 127.0.0.1:9898
//! ```

mod people;

use logpipe::config::{Config, OffsetStoreUrl};
use logpipe::offsets::SqliteOffsetStore;
use logpipe::run::ConsumerSpec;
use logpipe::{BoxError, Context, Registry, handler_fn};
use people::{PersonV1, PersonV2};
use rusqlite::params;

/// Inserts or updates a person, counting how many times it was applied.
const UPSERT: &str = "INSERT INTO people (uuid, name, version, applied) VALUES (?1, ?2, ?3, 1)
    ON CONFLICT (uuid) DO UPDATE SET name = excluded.name, version = excluded.version, applied = applied + 1";

async fn save(
    store: SqliteOffsetStore,
    context: Context,
    uuid: String,
    name: String,
) -> Result<(), BoxError> {
    // Refused: the handler fails, is retried, then (by default) stops the consumer.
    if name.trim().is_empty() {
        return Err(format!("person {uuid} has no name").into());
    }
    let version = i64::try_from(context.version)?;
    store
        .transaction(&context, move |tx| {
            tx.execute(UPSERT, params![uuid, name, version]).map(drop)
        })
        .await?;
    Ok(())
}

fn people_table(config: &Config) -> Result<ConsumerSpec, BoxError> {
    let OffsetStoreUrl::Sqlite(path) = config.offset_store_url() else {
        return Err(
            "people_service keeps its table beside the positions: use a sqlite:// offset store"
                .into(),
        );
    };
    rusqlite::Connection::open(&path)?.execute_batch(
        "CREATE TABLE IF NOT EXISTS people (
             uuid TEXT PRIMARY KEY, name TEXT NOT NULL, version INTEGER NOT NULL, applied INTEGER NOT NULL
         )",
    )?;
    let store = SqliteOffsetStore::open(&path)?;
    let store_v2 = store.clone();
    let registry = Registry::builder()
        .handle(handler_fn(move |person: PersonV1, context: Context| {
            save(store.clone(), context, person.uuid, person.name)
        }))
        .handle(handler_fn(move |person: PersonV2, context: Context| {
            let name = format!("{} {}", person.first_name, person.last_name);
            save(store_v2.clone(), context, person.uuid, name)
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
