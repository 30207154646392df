//! A service that counts up keys in its own database and publishes each new count
//! through the transactional outbox, in the same transaction: COUNT changes over seven
//! keys, every tenth transaction rolled back. It prints how many changes of each key
//! committed, as one JSON object.
//!
//! The outbox is `outbox.url` (a SQLite file or a PostgreSQL database); the relay of
//! `run_consumers` or `logpipe outbox relay` sends the changes to the `counters` stream
//! (or the one `COUNTERS_STREAM` names). The counts are kept in the table `counters` (or
//! the one `COUNTERS_TABLE` names, such as `"myschema".counters`).
//!
//! ```text
//! LOGPIPE_OUTBOX__URL=sqlite://app.db cargo run --example outbox_service -- 1000
//! LOGPIPE_OUTBOX__URL=sqlite://app.db LOGPIPE_BACKEND=sqlite://log.db cargo run --bin logpipe -- outbox relay
//! ```

use std::collections::BTreeMap;

use logpipe::Message;
use logpipe::config::Config;
use logpipe::outbox::{AnyOutbox, Outbox};
use serde::{Deserialize, Serialize};

/// A key's new count.
#[derive(Debug, Serialize, Deserialize, Message)]
#[logpipe(type = "counter", version = 1, key = "key")]
struct Counted {
    key: String,
    n: i64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let count: usize = match std::env::args().nth(1) {
        Some(arg) => arg
            .parse()
            .map_err(|_| format!("COUNT must be a number, not {arg:?}"))?,
        None => return Err("usage: outbox_service COUNT".into()),
    };
    let config = Config::load(None)?;
    let stream = std::env::var("COUNTERS_STREAM").unwrap_or_else(|_| "counters".to_owned());
    let table_name = std::env::var("COUNTERS_TABLE").unwrap_or_else(|_| "counters".to_owned());
    let outbox = config
        .open_outbox()
        .await?
        .ok_or("outbox.url is not set (LOGPIPE_OUTBOX__URL)")?;
    let mut committed = BTreeMap::<String, u64>::new();
    match outbox {
        AnyOutbox::Sqlite(table) => {
            let path = config.outbox.url.as_ref().expect("set").rest().to_owned();
            let outbox = stamped(Outbox::new(table), &config);
            let mut conn = rusqlite::Connection::open(path)?;
            conn.busy_timeout(std::time::Duration::from_secs(10))?;
            conn.execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS {table_name} (key TEXT PRIMARY KEY, n INTEGER NOT NULL)"
            ))?;
            let upsert = format!(
                "INSERT INTO {table_name} AS c VALUES (?1, 1)
                 ON CONFLICT (key) DO UPDATE SET n = c.n + 1 RETURNING n"
            );
            for change in 0..count {
                let key = format!("k{}", change % 7);
                let tx = conn.transaction()?;
                let n: i64 = tx.query_row(&upsert, [&key], |row| row.get(0))?;
                outbox.send(
                    &tx,
                    &stream,
                    &Counted {
                        key: key.clone(),
                        n,
                    },
                )?;
                if change % 10 == 9 {
                    tx.rollback()?;
                } else {
                    tx.commit()?;
                    *committed.entry(key).or_default() += 1;
                }
            }
        }
        AnyOutbox::Postgres(table) => {
            use logpipe::postgres::sqlx;
            let outbox = stamped(Outbox::new(table), &config);
            let pool = outbox.table().pool().clone();
            let create = format!(
                "CREATE TABLE IF NOT EXISTS {table_name} (key text PRIMARY KEY, n bigint NOT NULL)"
            );
            sqlx::raw_sql(sqlx::AssertSqlSafe(create))
                .execute(&pool)
                .await?;
            let upsert = format!(
                "INSERT INTO {table_name} AS c VALUES ($1, 1)
                 ON CONFLICT (key) DO UPDATE SET n = c.n + 1 RETURNING n"
            );
            for change in 0..count {
                let key = format!("k{}", change % 7);
                let mut tx = pool.begin().await?;
                let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(upsert.clone()))
                    .bind(&key)
                    .fetch_one(&mut *tx)
                    .await?;
                outbox
                    .send(
                        &mut tx,
                        &stream,
                        &Counted {
                            key: key.clone(),
                            n,
                        },
                    )
                    .await?;
                if change % 10 == 9 {
                    tx.rollback().await?;
                } else {
                    tx.commit().await?;
                    *committed.entry(key).or_default() += 1;
                }
            }
        }
        _ => return Err("this outbox is not supported by the example".into()),
    }
    println!("{}", serde_json::to_string(&committed)?);
    Ok(())
}

/// The outbox writing in the configured format, with the configured producer id.
fn stamped<T>(outbox: Outbox<T>, config: &Config) -> Outbox<T> {
    let outbox = outbox.with_format(config.format);
    match &config.producer_id {
        Some(id) => outbox.with_producer_id(id.clone()),
        None => outbox,
    }
}
