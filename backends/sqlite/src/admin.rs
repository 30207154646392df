//! Operator calls of the embedded log: its streams, their partitions and offsets.

use std::time::SystemTime;

use logpipe_core::admin::offset_log::{self, OffsetRange};
use logpipe_core::time::millis;
use logpipe_core::{
    Admin, Backend, BackendError, BackendErrorKind, Extent, PartitionInfo, PartitionRef,
    RangeBound, StartFrom,
};
use rusqlite::params;

use crate::log::storage_error;
use crate::{EmbeddedConsumer, EmbeddedLog};

/// A partition of an embedded stream: its number, the offset of its first record and the
/// offset the next record will get.
struct PartitionSpan {
    partition: u32,
    first: i64,
    next: i64,
}

fn not_found(stream: &str) -> BackendError {
    BackendError::new(
        BackendErrorKind::NotFound,
        format!("stream {stream:?} does not exist"),
    )
}

impl Admin for EmbeddedLog {
    type Range = OffsetRange<EmbeddedConsumer>;

    async fn list_streams(&self) -> Result<Vec<String>, BackendError> {
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

    async fn create_stream(&self, stream: &str, partitions: u32) -> Result<(), BackendError> {
        logpipe_core::check_stream_name(stream)?;
        if self.partition_spans(stream).await?.is_some() {
            return Err(BackendError::new(
                BackendErrorKind::Rejected,
                format!("stream {stream:?} exists already"),
            ));
        }
        self.ensure_stream(stream, partitions).await.map(drop)
    }

    async fn describe_stream(&self, stream: &str) -> Result<Vec<PartitionInfo>, BackendError> {
        let spans = self
            .partition_spans(stream)
            .await?
            .ok_or_else(|| not_found(stream))?;
        Ok(spans
            .into_iter()
            .map(|span| PartitionInfo {
                partition: PartitionRef::new(stream, span.partition.to_string()),
                extent: Extent::Offsets {
                    first: span.first,
                    next: span.next,
                },
            })
            .collect())
    }

    async fn offsets_at(
        &self,
        stream: &str,
        partitions: &[PartitionRef],
        time: SystemTime,
    ) -> Result<Vec<Option<i64>>, BackendError> {
        let mut found = Vec::with_capacity(partitions.len());
        for partition in partitions {
            let number = partition.partition.parse().unwrap_or(u32::MAX);
            found.push(self.offset_at(stream, number, millis(time)).await?);
        }
        Ok(found)
    }

    async fn read_range(
        &self,
        stream: &str,
        from: &RangeBound,
        until: &RangeBound,
    ) -> Result<Self::Range, BackendError> {
        let partitions = self.describe_stream(stream).await?;
        let consumer = self.open_consumer("", &[stream.to_owned()], StartFrom::Earliest)?;
        offset_log::read_range(self, stream, partitions, from, until, consumer).await
    }
}

impl EmbeddedLog {
    /// The partitions of `stream` with their offsets, or `None` when it does not exist.
    async fn partition_spans(
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
    async fn offset_at(
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
