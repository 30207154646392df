//! A service that keeps a `people` table up to date from the `people` stream, with a
//! handler for each schema version, registered with `register_consumer!` and run by
//! logpipe's `run_consumers` main until SIGINT or SIGTERM.
//!
//! With a SQLite offset store, each handler writes its row and the record's position in
//! one SQLite transaction, so every message takes effect exactly once, even if the
//! process is killed. With a PostgreSQL offset store (`offset_store =
//! "postgres://...?schema=..."`) the same holds in PostgreSQL: the table is `people` in
//! the store's schema, written in the transaction of `PgOffsetStore::begin`, with the
//! partition and position of the record that last wrote each row. With positions
//! committed to a Kafka consumer group
//! (`offset_store = "kafka://"`), the table is the SQLite file `PEOPLE_DB` (default
//! `people.db`) and a message takes effect at least once: after a crash, the records
//! handled since the last commit that reached the broker are applied again (the `applied`
//! column counts how often).
//!
//! When `PEOPLE_WEBHOOK_URL` names an `http://HOST:PORT/PATH`, a second consumer,
//! `people_webhook`, also posts each person there as JSON, and fails (to be retried)
//! unless the answer is a 2xx.
//!
//! ```text
//! LOGPIPE_BACKEND=sqlite://people.db cargo run --example people_service -- --metrics-addr 127.0.0.1:9898
//! ```

mod people;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use logpipe::config::Config;
use logpipe::offsets::SqliteOffsetStore;
use logpipe::postgres::{PgOffsetStore, PgStoreOptions, sqlx};
use logpipe::run::ConsumerSpec;
use logpipe::{BoxError, Context, Registry, handler_fn};
use people::{PersonV1, PersonV2};
use rusqlite::{Connection, params};

/// Inserts or updates a person, counting how many times it was applied.
const UPSERT: &str = "INSERT INTO people (uuid, name, version, applied) VALUES (?1, ?2, ?3, 1)
    ON CONFLICT (uuid) DO UPDATE SET name = excluded.name, version = excluded.version, applied = applied + 1";

/// Inserts or updates a person in PostgreSQL, with the record it came from.
fn pg_upsert(schema: &str) -> String {
    format!(
        "INSERT INTO {schema}.people (uuid, name, version, applied, partition, position)
         VALUES ($1, $2, $3, 1, $4, $5)
         ON CONFLICT (uuid) DO UPDATE SET name = excluded.name, version = excluded.version,
             applied = people.applied + 1, partition = excluded.partition,
             position = excluded.position"
    )
}

/// Where the handlers write their rows.
#[derive(Clone)]
enum Table {
    /// In the transaction that also stores the record's position.
    WithPositions(SqliteOffsetStore),
    /// In PostgreSQL, in the transaction that marks the record handled; the table is
    /// created by the first handler call.
    Postgres {
        store: PgOffsetStore,
        upsert: Arc<str>,
        created: Arc<tokio::sync::OnceCell<()>>,
        schema: Arc<str>,
    },
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
        Table::Postgres {
            store,
            upsert,
            created,
            schema,
        } => {
            created
                .get_or_try_init(|| async {
                    let create = format!(
                        "CREATE TABLE IF NOT EXISTS {schema}.people (
                             uuid text PRIMARY KEY, name text NOT NULL, version bigint NOT NULL,
                             applied bigint NOT NULL, partition text NOT NULL, position text NOT NULL
                         )"
                    );
                    sqlx::raw_sql(sqlx::AssertSqlSafe(create))
                        .execute(store.pool())
                        .await
                        .map(drop)
                })
                .await?;
            let mut tx = store.begin(&context).await?;
            sqlx::query(sqlx::AssertSqlSafe(&*upsert))
                .bind(uuid)
                .bind(name)
                .bind(version)
                .bind(&*context.partition.partition)
                .bind(context.position.to_string())
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
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
    let store = config.offset_store_url();
    if matches!(store.scheme(), "postgres" | "postgresql") {
        let options: PgStoreOptions = store.as_str().parse()?;
        let table = Table::Postgres {
            store: PgOffsetStore::connect_lazy(&options),
            upsert: pg_upsert(options.schema()).into(),
            created: Arc::default(),
            schema: options.schema().into(),
        };
        return Ok(ConsumerSpec::new([people_stream()], registry(table)?));
    }
    let path = match store.scheme() {
        "sqlite" => std::path::PathBuf::from(store.rest()),
        "kafka" => std::env::var_os("PEOPLE_DB")
            .map_or_else(|| "people.db".into(), std::path::PathBuf::from),
        _ => {
            return Err(
                "people_service keeps its table in SQLite or PostgreSQL: use a sqlite://, postgres:// or kafka:// offset store"
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
    let table = match store.scheme() {
        "sqlite" => Table::WithPositions(SqliteOffsetStore::open(&path)?),
        _ => Table::Alone(Arc::new(Mutex::new(conn))),
    };
    Ok(ConsumerSpec::new([people_stream()], registry(table)?))
}

/// A handler for each version of a person, writing to `table`.
fn registry(table: Table) -> Result<Registry, BoxError> {
    let table_v2 = table.clone();
    Ok(Registry::builder()
        .handle(handler_fn(move |person: PersonV1, context: Context| {
            save(table.clone(), context, person.uuid, person.name)
        }))
        .handle(handler_fn(move |person: PersonV2, context: Context| {
            let name = format!("{} {}", person.first_name, person.last_name);
            save(table_v2.clone(), context, person.uuid, name)
        }))
        .ignore("audit")
        .build()?)
}

/// The stream: `people` unless PEOPLE_STREAM names another.
fn people_stream() -> String {
    std::env::var("PEOPLE_STREAM").unwrap_or_else(|_| "people".to_owned())
}

/// POSTs `body` to `url` (`http://HOST:PORT/PATH`); fails unless the answer is a 2xx.
fn post(url: &str, body: &[u8]) -> Result<(), BoxError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("PEOPLE_WEBHOOK_URL {url:?} does not start with http://"))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream = TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(
        stream,
        "POST /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)?;
    let mut status = String::new();
    BufReader::new(stream).read_line(&mut status)?;
    match status.split(' ').nth(1) {
        Some(code) if code.starts_with('2') => Ok(()),
        _ => Err(format!("{url} answered {:?}", status.trim_end()).into()),
    }
}

/// Posts each person to the webhook, if PEOPLE_WEBHOOK_URL names one; else reads nothing
/// and so is not run.
fn people_webhook(_config: &Config) -> Result<ConsumerSpec, BoxError> {
    let Ok(url) = std::env::var("PEOPLE_WEBHOOK_URL") else {
        return Ok(ConsumerSpec::new(
            Vec::<String>::new(),
            Registry::builder().build()?,
        ));
    };
    let notify = move |uuid: String, name: String| {
        let url = url.clone();
        async move {
            let body = serde_json::json!({ "uuid": uuid, "name": name }).to_string();
            tokio::task::spawn_blocking(move || post(&url, body.as_bytes())).await?
        }
    };
    let notify_v2 = notify.clone();
    let registry = Registry::builder()
        .handle(handler_fn(move |person: PersonV1, _: Context| {
            notify(person.uuid, person.name)
        }))
        .handle(handler_fn(move |person: PersonV2, _: Context| {
            notify_v2(
                person.uuid,
                format!("{} {}", person.first_name, person.last_name),
            )
        }))
        .ignore("audit")
        .build()?;
    Ok(ConsumerSpec::new([people_stream()], registry))
}

logpipe::register_consumer!(people_table);
logpipe::register_consumer!(people_webhook);

fn main() -> std::process::ExitCode {
    logpipe::cli::run_consumers_main()
}
