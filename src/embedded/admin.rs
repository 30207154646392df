//! Operator calls of the embedded log: its streams, their partitions and offsets.

use rusqlite::params;

use super::{EmbeddedLog, storage_error};
use crate::backend::BackendError;

/// A partition of an embedded stream: its number, the offset of its first record and the
/// offset the next record will get.
pub(crate) struct PartitionSpan {
    pub(crate) partition: u32,
    pub(crate) first: i64,
    pub(crate) next: i64,
}

impl EmbeddedLog {
    /// The streams of the log, sorted.
    pub(crate) async fn list_streams(&self) -> Result<Vec<String>, BackendError> {
        self.inner
            .db
            .call(|conn| {
                let mut statement =
                    conn.prepare_cached("SELECT name FROM logpipe_streams ORDER BY name")?;
                let names = statement.query_map([], |row| row.get(0))?;
                names.collect::<rusqlite::Result<Vec<String>>>()
            })
            .await
            .map_err(storage_error)
    }

    /// The partitions of `stream` with their offsets, or `None` when it does not exist.
    pub(crate) async fn partition_spans(
        &self,
        stream: &str,
    ) -> Result<Option<Vec<PartitionSpan>>, BackendError> {
        let stream = stream.to_owned();
        self.inner
            .db
            .call(move |conn| {
                let count: Option<u32> = conn
                    .query_row(
                        "SELECT partitions FROM logpipe_streams WHERE name = ?1",
                        [&stream],
                        |row| row.get(0),
                    )
                    .map(Some)
                    .or_else(|err| match err {
                        rusqlite::Error::QueryReturnedNoRows => Ok(None),
                        other => Err(other),
                    })?;
                let Some(count) = count else {
                    return Ok(None);
                };
                let mut statement = conn.prepare_cached(
                    "SELECT MIN(record_offset), MAX(record_offset) FROM logpipe_records
                     WHERE stream = ?1 AND partition = ?2",
                )?;
                let mut spans = Vec::new();
                for partition in 0..count {
                    let (first, last): (Option<i64>, Option<i64>) = statement
                        .query_row(params![&stream, partition], |row| {
                            Ok((row.get(0)?, row.get(1)?))
                        })?;
                    let next = last.map_or(0, |last| last + 1);
                    spans.push(PartitionSpan {
                        partition,
                        first: first.unwrap_or(next),
                        next,
                    });
                }
                Ok(Some(spans))
            })
            .await
            .map_err(storage_error)
    }

    /// The offset of the first record of `partition` of `stream` written at or after
    /// `timestamp_ms`, or `None` when there is none.
    pub(crate) async fn offset_at(
        &self,
        stream: &str,
        partition: u32,
        timestamp_ms: i64,
    ) -> Result<Option<i64>, BackendError> {
        let stream = stream.to_owned();
        self.inner
            .db
            .call(move |conn| {
                conn.query_row(
                    "SELECT MIN(record_offset) FROM logpipe_records
                     WHERE stream = ?1 AND partition = ?2 AND timestamp_ms >= ?3",
                    params![&stream, partition, timestamp_ms],
                    |row| row.get(0),
                )
            })
            .await
            .map_err(storage_error)
    }
}
