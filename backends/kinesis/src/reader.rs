//! The shard reader: follows every shard of some streams, parents before children.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::api::{KinesisApi, StartPosition};
use crate::{KinesisError, ShardPosition, ShardRecord};

/// Kinesis serves at most five `GetRecords` calls a second per shard.
const MIN_CALL_INTERVAL: Duration = Duration::from_millis(200);
/// First wait after a throttled or failed read of a shard; it doubles up to
/// [`MAX_SHARD_BACKOFF`].
const FIRST_SHARD_BACKOFF: Duration = Duration::from_millis(500);
const MAX_SHARD_BACKOFF: Duration = Duration::from_secs(10);

/// Where a shard that has no stored position is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum InitialPosition {
    /// The oldest record kept (`TRIM_HORIZON`). The default.
    #[default]
    TrimHorizon,
    /// Only records written from now on (`LATEST`).
    Latest,
    /// Records written at or after this time (`AT_TIMESTAMP`).
    AtTimestamp(SystemTime),
}

/// How a [`ShardReader`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderOptions {
    /// Where shards without a stored position start. Children of a shard this consumer
    /// follows always start at their oldest record, so that nothing between parent and
    /// child is missed. Default [`InitialPosition::TrimHorizon`].
    pub initial_position: InitialPosition,
    /// How long to wait before reading a shard again that had nothing new. Default 1 s.
    pub poll_interval: Duration,
    /// How often the shard list is read again to find new shards (a shard that ends
    /// also triggers it). Default 10 s.
    pub shard_discovery_interval: Duration,
    /// Most records a `GetRecords` call returns, 1 to 10,000. Default 10,000.
    pub max_records_per_call: i32,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        Self {
            initial_position: InitialPosition::TrimHorizon,
            poll_interval: Duration::from_secs(1),
            shard_discovery_interval: Duration::from_secs(10),
            max_records_per_call: 10_000,
        }
    }
}

impl ReaderOptions {
    /// Checks the options.
    ///
    /// # Errors
    ///
    /// [`KinesisError::InvalidOption`] naming the first bad option.
    pub fn validate(&self) -> Result<(), KinesisError> {
        if !(1..=10_000).contains(&self.max_records_per_call) {
            return Err(KinesisError::InvalidOption {
                option: "max_records_per_call",
                message: "must be 1 to 10000".to_owned(),
            });
        }
        if self.shard_discovery_interval.is_zero() {
            return Err(KinesisError::InvalidOption {
                option: "shard_discovery_interval",
                message: "must be more than zero".to_owned(),
            });
        }
        Ok(())
    }
}

/// A shard of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardRef {
    /// The stream.
    pub stream: Arc<str>,
    /// The shard id.
    pub shard_id: Arc<str>,
}

/// What a [`ShardReader`] has to say next.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReaderEvent {
    /// New shards were found; [`seek`](ShardReader::seek) each before it is read.
    Assigned(Vec<ShardRef>),
    /// Records, in order within each shard.
    Records(Vec<ShardRecord>),
    /// Reading a shard keeps failing (throttled, unreachable) and is retried: no read of
    /// it has succeeded since `since`, the earliest such time over the shards failing
    /// now. Sent again when that changes; [`ReaderEvent::ReadsSucceed`] follows once every
    /// shard reads again.
    ReadsFailing {
        /// When the failures of the shard failing longest began.
        since: std::time::Instant,
        /// Its shard and its last error.
        reason: String,
    },
    /// Every shard reads again, after [`ReaderEvent::ReadsFailing`].
    ReadsSucceed,
    /// These shards were closed and read to their end: every record of them was handed
    /// out (in events before this one).
    Finished(Vec<ShardRef>),
}

#[derive(Debug)]
struct ShardState {
    parents: Vec<Arc<str>>,
    /// Its parents were read to their end, by this reader or another.
    follows_parent: bool,
    /// Seeked, so its start is known.
    seeked: bool,
    /// Where to start when there is no iterator and nothing was read yet.
    start: Option<StartPosition>,
    /// The sequence number of the last record handed out.
    last_sequence: Option<String>,
    /// The aggregated record to start at, and the number of its last user record
    /// handled before: those up to it are not handed out again.
    handled_through: Option<(String, u64)>,
    iterator: Option<String>,
    /// Closed and read to its end.
    finished: bool,
    /// Not read until resumed.
    paused: bool,
    ready_at: Instant,
    backoff: Option<Duration>,
    /// Since when reads of it have failed, and the last error, while they do.
    failing: Option<(Instant, String)>,
    /// Its last `MillisBehindLatest`, set again while reads fail so that the gauge does
    /// not go stale (and drop out of `/metrics`).
    behind: Option<f64>,
}

/// The result of reading one shard.
struct Read {
    shard: ShardRef,
    /// A new iterator got on the way (kept even if `GetRecords` then failed).
    iterator: Option<String>,
    /// When a `LATEST` iterator was asked for: a later iterator starts at this time, so
    /// that records written since are not skipped.
    latest_at: Option<SystemTime>,
    result: Result<aws_sdk_kinesis::operation::get_records::GetRecordsOutput, KinesisError>,
}

/// Reads every shard of some streams.
///
/// New shards are found by listing the shards of each stream (every
/// [`shard_discovery_interval`](ReaderOptions::shard_discovery_interval), and whenever
/// a shard ends). A child shard is read only after its parents are closed and read to
/// their end. Throttling and failed calls make a shard wait and try again; an expired
/// iterator is replaced by one just after the last record handed out. No shard is ever
/// given up.
pub struct ShardReader {
    api: Arc<dyn KinesisApi>,
    streams: Vec<Arc<str>>,
    options: ReaderOptions,
    shards: BTreeMap<ShardRef, ShardState>,
    next_discovery: Option<Instant>,
    stashed_error: Option<KinesisError>,
    /// The `since` of the last [`ReaderEvent::ReadsFailing`], until [`ReaderEvent::ReadsSucceed`].
    reported_failing: Option<Instant>,
    /// Shards read to their end, not reported yet by [`ReaderEvent::Finished`].
    finished_unreported: Vec<ShardRef>,
    /// Which shards may be read now ([`read_only_while`](ShardReader::read_only_while)).
    gate: Option<Gate>,
}

type Gate = Box<dyn Fn(&ShardRef) -> bool + Send + Sync>;

impl std::fmt::Debug for ShardReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardReader")
            .field("streams", &self.streams)
            .field("options", &self.options)
            .field("shards", &self.shards.len())
            .finish_non_exhaustive()
    }
}

impl ShardReader {
    /// A consumer of `streams`, making its calls through `api`.
    ///
    /// # Errors
    ///
    /// [`KinesisError::InvalidOption`] when `options` are not valid.
    pub fn new<I, S>(
        api: Arc<dyn KinesisApi>,
        streams: I,
        options: ReaderOptions,
    ) -> Result<Self, KinesisError>
    where
        I: IntoIterator<Item = S>,
        S: Into<Arc<str>>,
    {
        options.validate()?;
        Ok(Self {
            api,
            streams: streams.into_iter().map(Into::into).collect(),
            options,
            shards: BTreeMap::new(),
            next_discovery: None,
            stashed_error: None,
            reported_failing: None,
            finished_unreported: Vec::new(),
            gate: None,
        })
    }

    /// Reads `shard` from just after the stored position `after`, or from the initial
    /// position when `None`.
    ///
    /// # Errors
    ///
    /// [`KinesisError::NotAssigned`] when the shard was not assigned.
    pub fn seek(
        &mut self,
        shard: &ShardRef,
        after: Option<&ShardPosition>,
    ) -> Result<(), KinesisError> {
        if let Some(after) = after {
            self.seek_to(shard, StartPosition::from(after))?;
            if let ShardPosition::AfterUserRecord {
                sequence,
                subsequence,
            } = after
            {
                self.state_mut(shard)?.handled_through = Some((sequence.clone(), *subsequence));
            }
            return Ok(());
        }
        let followed_parent = self.shards.get(shard).is_some_and(|state| {
            state.follows_parent
                || state.parents.iter().any(|parent| {
                    self.shards.contains_key(&ShardRef {
                        stream: Arc::clone(&shard.stream),
                        shard_id: Arc::clone(parent),
                    })
                })
        });
        let start = match self.options.initial_position {
            _ if followed_parent => StartPosition::TrimHorizon,
            InitialPosition::TrimHorizon => StartPosition::TrimHorizon,
            InitialPosition::Latest => StartPosition::Latest,
            InitialPosition::AtTimestamp(at) => StartPosition::AtTimestamp(at),
        };
        self.seek_to(shard, start)
    }

    /// Reads `shard` from `start`, such as a time or the oldest record kept.
    ///
    /// # Errors
    ///
    /// [`KinesisError::NotAssigned`] when the shard was not assigned.
    pub fn seek_to(&mut self, shard: &ShardRef, start: StartPosition) -> Result<(), KinesisError> {
        let state = self.state_mut(shard)?;
        state.seeked = true;
        state.iterator = None;
        state.handled_through = None;
        state.last_sequence = match &start {
            StartPosition::AfterSequenceNumber(sequence) => Some(sequence.clone()),
            _ => None,
        };
        state.start = Some(start);
        Ok(())
    }

    /// Stops reading `shard` until [`resume`](Self::resume); its iterator is kept (and
    /// renewed after the last record handed out if it expires meanwhile).
    ///
    /// # Errors
    ///
    /// [`KinesisError::NotAssigned`] when the shard was not assigned.
    pub fn pause(&mut self, shard: &ShardRef) -> Result<(), KinesisError> {
        self.state_mut(shard)?.paused = true;
        Ok(())
    }

    /// Reads `shard` again after [`pause`](Self::pause), from just after the last record
    /// handed out.
    ///
    /// # Errors
    ///
    /// [`KinesisError::NotAssigned`] when the shard was not assigned.
    pub fn resume(&mut self, shard: &ShardRef) -> Result<(), KinesisError> {
        self.state_mut(shard)?.paused = false;
        Ok(())
    }

    fn state_mut(&mut self, shard: &ShardRef) -> Result<&mut ShardState, KinesisError> {
        self.shards
            .get_mut(shard)
            .ok_or_else(|| KinesisError::NotAssigned {
                stream: shard.stream.to_string(),
                shard: shard.shard_id.to_string(),
            })
    }

    /// Waits for the next event: new shards, or records.
    ///
    /// Cancel-safe: a call dropped before it completes hands out nothing, and the next
    /// call reads the same records again.
    ///
    /// # Errors
    ///
    /// [`KinesisError`] when a stream cannot be listed or a shard fails in a way that
    /// waiting does not fix (such as a stream that no longer exists). Throttling, expired
    /// iterators and connection errors are handled here and do not end up as errors.
    pub async fn next_event(&mut self) -> Result<ReaderEvent, KinesisError> {
        if let Some(error) = self.stashed_error.take() {
            return Err(error);
        }
        loop {
            if let Some(event) = self.failing_changed() {
                return Ok(event);
            }
            if !self.finished_unreported.is_empty() {
                return Ok(ReaderEvent::Finished(std::mem::take(
                    &mut self.finished_unreported,
                )));
            }
            let now = Instant::now();
            if self.next_discovery.is_none_or(|at| at <= now) {
                let found = self.discover().await?;
                self.next_discovery = Some(Instant::now() + self.options.shard_discovery_interval);
                if !found.is_empty() {
                    return Ok(ReaderEvent::Assigned(found));
                }
            }
            let ready: Vec<ShardRef> = self
                .readable()
                .filter(|(_, state)| state.ready_at <= now)
                .map(|(shard, _)| shard.clone())
                .collect();
            if !ready.is_empty() {
                let records = self.read(ready).await;
                match records {
                    Ok(records) if !records.is_empty() => return Ok(ReaderEvent::Records(records)),
                    Ok(_) => {}
                    Err(error) => return Err(error),
                }
                continue;
            }
            // Shards the gate refuses now are looked at again after a poll interval.
            let gated = self.gate.as_ref().and_then(|gate| {
                self.shards
                    .iter()
                    .any(|(shard, state)| state.seeked && !state.finished && !gate(shard))
                    .then(|| now + self.options.poll_interval.max(MIN_CALL_INTERVAL))
            });
            let wake = self
                .readable()
                .map(|(_, state)| state.ready_at)
                .chain(self.next_discovery)
                .chain(gated)
                .min()
                .unwrap_or_else(|| Instant::now() + self.options.shard_discovery_interval);
            tokio::time::sleep_until(wake).await;
        }
    }

    /// [`ReaderEvent::ReadsFailing`] or [`ReaderEvent::ReadsSucceed`] when the shard failing longest
    /// changed since the last one.
    fn failing_changed(&mut self) -> Option<ReaderEvent> {
        let longest = self
            .shards
            .iter()
            .filter_map(|(shard, state)| Some((shard, state.failing.as_ref()?)))
            .min_by_key(|(_, (since, _))| *since);
        let since = longest.map(|(_, (since, _))| *since);
        if since == self.reported_failing {
            return None;
        }
        let event = match longest {
            Some((shard, (since, error))) => ReaderEvent::ReadsFailing {
                since: since.into_std(),
                reason: format!("shard {} of {}: {error}", shard.shard_id, shard.stream),
            },
            None => ReaderEvent::ReadsSucceed,
        };
        self.reported_failing = since;
        Some(event)
    }

    /// Shards that may be read: seeked, not paused, not finished, with every parent
    /// finished, and let through by the gate.
    fn readable(&self) -> impl Iterator<Item = (&ShardRef, &ShardState)> {
        self.shards.iter().filter(|(shard, state)| {
            self.gate.as_ref().is_none_or(|gate| gate(shard))
                && state.seeked
                && !state.paused
                && !state.finished
                && state.parents.iter().all(|parent| {
                    self.shards
                        .get(&ShardRef {
                            stream: Arc::clone(&shard.stream),
                            shard_id: Arc::clone(parent),
                        })
                        // A parent no longer listed has aged out of the stream.
                        .is_none_or(|parent| parent.finished)
                })
        })
    }

    /// Lists the shards of every stream; returns those not seen before.
    async fn discover(&mut self) -> Result<Vec<ShardRef>, KinesisError> {
        // Every page is read before anything changes, so that a call dropped halfway
        // (`next_event` is cancel-safe) leaves no shard known but never assigned.
        let mut listed = Vec::new();
        for stream in &self.streams {
            listed.extend(list_shards(&*self.api, stream).await?);
        }
        let mut found = Vec::new();
        for (key, parents) in listed {
            if self.shards.contains_key(&key) {
                continue;
            }
            tracing::info!(stream = %key.stream, shard = %key.shard_id, ?parents, "shard found");
            self.insert(key.clone(), parents, false);
            found.push(key);
        }
        Ok(found)
    }

    fn insert(&mut self, shard: ShardRef, parents: Vec<Arc<str>>, follows_parent: bool) {
        self.shards.insert(
            shard,
            ShardState {
                parents,
                follows_parent,
                seeked: false,
                start: None,
                last_sequence: None,
                handled_through: None,
                iterator: None,
                finished: false,
                paused: false,
                ready_at: Instant::now(),
                backoff: None,
                failing: None,
                behind: None,
            },
        );
    }

    /// Follows `shard` from now on, as if found: it is to be sought before it is read.
    /// `follows_parent` says that its parents were read to their end (by this reader or
    /// another), so that it starts at its oldest record when sought to no position. A
    /// shard followed already is left as it is.
    pub fn add(&mut self, shard: ShardRef, follows_parent: bool) {
        if !self.shards.contains_key(&shard) {
            self.insert(shard, Vec::new(), follows_parent);
        }
    }

    /// Stops following `shard`: nothing more of it is read (until it is added again).
    pub fn remove(&mut self, shard: &ShardRef) {
        self.shards.remove(shard);
        self.finished_unreported.retain(|ended| ended != shard);
    }

    /// Reads only the shards for which `gate` answers yes, and hands out records of a
    /// shard only if it still does when they arrive (records it refused are read again
    /// once it answers yes). A consumer of leased shards passes whether each lease is
    /// still held.
    pub fn read_only_while(&mut self, gate: impl Fn(&ShardRef) -> bool + Send + Sync + 'static) {
        self.gate = Some(Box::new(gate));
    }

    /// Reads the `ready` shards at once and hands out what they returned.
    async fn read(&mut self, ready: Vec<ShardRef>) -> Result<Vec<ShardRecord>, KinesisError> {
        let mut calls = JoinSet::new();
        for shard in ready {
            let state = &self.shards[&shard];
            let api = Arc::clone(&self.api);
            let iterator = state.iterator.clone();
            let start = match &state.last_sequence {
                Some(sequence) => StartPosition::AfterSequenceNumber(sequence.clone()),
                None => state.start.clone().unwrap_or(StartPosition::TrimHorizon),
            };
            let limit = self.options.max_records_per_call;
            calls.spawn(async move {
                let latest_at =
                    (iterator.is_none() && start == StartPosition::Latest).then(SystemTime::now);
                let (iterator, fresh) = match iterator {
                    Some(iterator) => (iterator, None),
                    None => {
                        match api
                            .get_shard_iterator(
                                shard.stream.to_string(),
                                shard.shard_id.to_string(),
                                start,
                            )
                            .await
                        {
                            Ok(iterator) => (iterator.clone(), Some(iterator)),
                            Err(error) => {
                                return Read {
                                    shard,
                                    iterator: None,
                                    latest_at: None,
                                    result: Err(error),
                                };
                            }
                        }
                    }
                };
                let result = api.get_records(iterator, limit).await;
                Read {
                    shard,
                    latest_at: latest_at.filter(|_| fresh.is_some()),
                    iterator: fresh,
                    result,
                }
            });
        }
        let mut reads = Vec::new();
        while let Some(joined) = calls.join_next().await {
            match joined {
                Ok(read) => reads.push(read),
                Err(err) => std::panic::resume_unwind(err.into_panic()),
            }
        }
        // Nothing is awaited from here on: the state changes and the records handed out
        // go together, which keeps `next_event` cancel-safe.
        reads.sort_by(|a, b| a.shard.cmp(&b.shard));
        let mut records = Vec::new();
        let mut fatal = None;
        let now = Instant::now();
        let mut ended = false;
        for read in reads {
            if !self.gate.as_ref().is_none_or(|gate| gate(&read.shard)) {
                // Refused since the read began: nothing of it is handed out or kept.
                if let Some(state) = self.shards.get_mut(&read.shard) {
                    state.ready_at = now + MIN_CALL_INTERVAL;
                }
                continue;
            }
            let state = self
                .shards
                .get_mut(&read.shard)
                .expect("read shards are known");
            if read.iterator.is_some() {
                state.iterator = read.iterator;
            }
            if let Some(at) = read.latest_at {
                state.start = Some(StartPosition::AtTimestamp(at));
            }
            match read.result {
                Ok(output) => {
                    state.backoff = None;
                    state.failing = None;
                    let got = output.records();
                    // Only the first record after a seek can be the aggregated record
                    // the position is inside of.
                    let handled_through = state.handled_through.take_if(|_| !got.is_empty());
                    records.extend(ShardRecord::read_page(&read.shard, got, handled_through));
                    if let Some(last) = got.last() {
                        state.last_sequence = Some(last.sequence_number().to_owned());
                    }
                    if let Some(behind) = output.millis_behind_latest() {
                        state.behind = Some(behind as f64);
                        behind_gauge(&read.shard).set(behind as f64);
                    }
                    let caught_up =
                        got.is_empty() && output.millis_behind_latest().unwrap_or(0) == 0;
                    state.iterator = output.next_shard_iterator().map(str::to_owned);
                    if state.iterator.is_none() {
                        tracing::info!(stream = %read.shard.stream, shard = %read.shard.shard_id, "shard closed and read to its end");
                        state.finished = true;
                        ended = true;
                        self.finished_unreported.push(read.shard.clone());
                    }
                    state.ready_at = now
                        + if caught_up {
                            self.options.poll_interval.max(MIN_CALL_INTERVAL)
                        } else {
                            MIN_CALL_INTERVAL
                        };
                }
                Err(error) if error.is_expired_iterator() => {
                    tracing::warn!(stream = %read.shard.stream, shard = %read.shard.shard_id, "shard iterator expired; getting a new one after the last record read");
                    metrics::counter!("logpipe_kinesis_expired_iterators_total").increment(1);
                    state.iterator = None;
                    state.ready_at = now + MIN_CALL_INTERVAL;
                }
                Err(error) if error.is_retriable() => {
                    let wait = state.backoff.map_or(FIRST_SHARD_BACKOFF, |last| {
                        (last * 2).min(MAX_SHARD_BACKOFF)
                    });
                    state.backoff = Some(wait);
                    state.ready_at = now + wait;
                    if error.is_throttling() {
                        metrics::counter!("logpipe_kinesis_read_throttled_total").increment(1);
                    }
                    if let Some(behind) = state.behind {
                        behind_gauge(&read.shard).set(behind);
                    }
                    let since = state.failing.as_ref().map_or(now, |(since, _)| *since);
                    state.failing = Some((since, error.to_string()));
                    tracing::warn!(stream = %read.shard.stream, shard = %read.shard.shard_id, error = %error, ?wait, "reading the shard failed; trying again");
                }
                Err(error) => {
                    tracing::error!(stream = %read.shard.stream, shard = %read.shard.shard_id, error = %error, "reading the shard failed");
                    state.ready_at = now + FIRST_SHARD_BACKOFF;
                    fatal.get_or_insert(error);
                }
            }
        }
        if ended {
            // A shard ended: its children are listed now.
            self.next_discovery = Some(now);
        }
        if let Some(error) = fatal {
            if records.is_empty() {
                return Err(error);
            }
            self.stashed_error = Some(error);
        }
        Ok(records)
    }

    /// The shards found so far, and whether each is closed and read to its end.
    pub fn shards(&self) -> Vec<(ShardRef, bool)> {
        self.shards
            .iter()
            .map(|(shard, state)| (shard.clone(), state.finished))
            .collect()
    }
}

/// Every shard of `stream`, with its parents (the parent and the adjacent parent a split
/// or a merge gave it), every page read.
///
/// # Errors
///
/// [`KinesisError`] when the stream cannot be listed.
pub(crate) async fn list_shards(
    api: &dyn KinesisApi,
    stream: &Arc<str>,
) -> Result<Vec<(ShardRef, Vec<Arc<str>>)>, KinesisError> {
    let mut listed = Vec::new();
    let mut token = None;
    loop {
        let page = api.list_shards(stream.to_string(), token.take()).await?;
        for shard in page.shards() {
            let parents: Vec<Arc<str>> =
                [shard.parent_shard_id(), shard.adjacent_parent_shard_id()]
                    .into_iter()
                    .flatten()
                    .map(Arc::from)
                    .collect();
            let key = ShardRef {
                stream: Arc::clone(stream),
                shard_id: shard.shard_id().into(),
            };
            listed.push((key, parents));
        }
        match page.next_token() {
            Some(next) if !next.is_empty() => token = Some(next.to_owned()),
            _ => break,
        }
    }
    Ok(listed)
}

/// How far reading `shard` is behind its newest record, in milliseconds.
fn behind_gauge(shard: &ShardRef) -> metrics::Gauge {
    metrics::gauge!(
        "logpipe_kinesis_millis_behind_latest",
        "stream" => Arc::clone(&shard.stream),
        "shard" => Arc::clone(&shard.shard_id),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use aws_sdk_kinesis::operation::get_records::GetRecordsOutput;
    use aws_sdk_kinesis::operation::list_shards::ListShardsOutput;
    use aws_sdk_kinesis::operation::put_record::PutRecordOutput;
    use aws_sdk_kinesis::operation::put_records::PutRecordsOutput;
    use aws_sdk_kinesis::primitives::Blob;
    use aws_sdk_kinesis::types::{
        HashKeyRange, PutRecordsRequestEntry, Record, SequenceNumberRange, Shard,
    };

    use super::*;
    use crate::api::PutRecordRequest;
    use logpipe_core::BoxFuture;

    /// A stream of a closed parent shard `p` (one record) and its child `c` (one record,
    /// then nothing), where the first `GetRecords` of each shard answers an expired
    /// iterator; or, `open_pair`, of two open shards `a` and `b` without records. Shards
    /// named in `throttled` answer every `GetRecords` with throttling.
    #[derive(Default)]
    struct FakeStream {
        open_pair: bool,
        calls: Mutex<Vec<String>>,
        throttled: Mutex<Vec<&'static str>>,
    }

    impl FakeStream {
        fn throttle(&self, shards: &[&'static str]) {
            *self.throttled.lock().unwrap() = shards.to_vec();
        }

        fn log(&self, call: String) -> usize {
            let mut calls = self.calls.lock().unwrap();
            calls.push(call.clone());
            calls.iter().filter(|c| **c == call).count()
        }
    }

    fn shard(id: &str, parent: Option<&str>) -> Shard {
        Shard::builder()
            .shard_id(id)
            .set_parent_shard_id(parent.map(str::to_owned))
            .hash_key_range(
                HashKeyRange::builder()
                    .starting_hash_key("0")
                    .ending_hash_key("1")
                    .build()
                    .unwrap(),
            )
            .sequence_number_range(
                SequenceNumberRange::builder()
                    .starting_sequence_number("0")
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    }

    impl KinesisApi for FakeStream {
        fn put_records(
            &self,
            _: String,
            _: Vec<PutRecordsRequestEntry>,
        ) -> BoxFuture<'_, Result<PutRecordsOutput, KinesisError>> {
            unimplemented!("the consumer does not write")
        }

        fn put_record(
            &self,
            _: PutRecordRequest,
        ) -> BoxFuture<'_, Result<PutRecordOutput, KinesisError>> {
            unimplemented!("the consumer does not write")
        }

        fn list_shards(
            &self,
            _: String,
            _: Option<String>,
        ) -> BoxFuture<'_, Result<ListShardsOutput, KinesisError>> {
            let output = if self.open_pair {
                ListShardsOutput::builder()
                    .shards(shard("a", None))
                    .shards(shard("b", None))
            } else {
                ListShardsOutput::builder()
                    .shards(shard("p", None))
                    .shards(shard("c", Some("p")))
            }
            .build();
            Box::pin(async move { Ok(output) })
        }

        fn get_shard_iterator(
            &self,
            _: String,
            shard_id: String,
            start: StartPosition,
        ) -> BoxFuture<'_, Result<String, KinesisError>> {
            self.log(format!("iterator {shard_id} {start:?}"));
            Box::pin(async move { Ok(shard_id) })
        }

        fn get_records(
            &self,
            iterator: String,
            _: i32,
        ) -> BoxFuture<'_, Result<GetRecordsOutput, KinesisError>> {
            let nth = self.log(format!("records {iterator}"));
            let throttled = self.throttled.lock().unwrap().contains(&iterator.as_str());
            let output = match (iterator.as_str(), nth) {
                _ if throttled => Err(KinesisError::service(
                    "GetRecords",
                    crate::THROUGHPUT_EXCEEDED,
                    "Rate exceeded for shard",
                )),
                (shard, _) if self.open_pair => Ok(page(None, Some(shard))),
                (_, 1) => Err(KinesisError::service(
                    "GetRecords",
                    crate::EXPIRED_ITERATOR,
                    "expired",
                )),
                ("p", 2) => Ok(page(Some("1"), None)),
                ("c", 2) => Ok(page(Some("2"), Some("c"))),
                (shard, _) => Ok(page(None, Some(shard))),
            };
            Box::pin(async move { output })
        }
    }

    fn page(sequence: Option<&str>, next: Option<&str>) -> GetRecordsOutput {
        let records = sequence.map(|sequence| {
            Record::builder()
                .sequence_number(sequence)
                .partition_key("k")
                .data(Blob::new(sequence.as_bytes()))
                .build()
                .unwrap()
        });
        GetRecordsOutput::builder()
            .set_records(Some(records.into_iter().collect()))
            .set_next_shard_iterator(next.map(str::to_owned))
            .millis_behind_latest(0)
            .build()
            .unwrap()
    }

    /// A consumer of the open pair of shards, each sought to its start.
    async fn open_pair() -> (Arc<FakeStream>, ShardReader, Vec<ShardRef>) {
        let api = Arc::new(FakeStream {
            open_pair: true,
            ..FakeStream::default()
        });
        let mut consumer = ShardReader::new(api.clone(), ["s"], ReaderOptions::default()).unwrap();
        let ReaderEvent::Assigned(shards) = consumer.next_event().await.unwrap() else {
            panic!("shards first")
        };
        for shard in &shards {
            consumer.seek(shard, None).unwrap();
        }
        (api, consumer, shards)
    }

    #[tokio::test(start_paused = true)]
    async fn shards_failing_call_after_call_are_reported_from_the_one_failing_longest() {
        let (api, mut consumer, _) = open_pair().await;
        let throttled = "Kinesis GetRecords failed with ProvisionedThroughputExceededException";
        api.throttle(&["a"]);
        let ReaderEvent::ReadsFailing { since, reason } = consumer.next_event().await.unwrap()
        else {
            panic!("a fails")
        };
        assert_eq!(reason, format!("shard a of s: {throttled}"));
        // `b` fails too, later: `a` is still the one failing longest, so nothing is new.
        api.throttle(&["a", "b"]);
        let quiet = tokio::time::timeout(Duration::from_secs(60), consumer.next_event()).await;
        assert!(quiet.is_err(), "no event while a fails: {quiet:?}");
        // `a` reads again: `b` is now the one failing longest, since later.
        api.throttle(&["b"]);
        let ReaderEvent::ReadsFailing {
            since: b_since,
            reason,
        } = consumer.next_event().await.unwrap()
        else {
            panic!("b still fails")
        };
        assert_eq!(reason, format!("shard b of s: {throttled}"));
        assert!(b_since > since);
        api.throttle(&[]);
        assert!(matches!(
            consumer.next_event().await.unwrap(),
            ReaderEvent::ReadsSucceed
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn the_millis_behind_gauge_of_a_shard_whose_reads_fail_is_set_again() {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let _recorder = metrics::set_default_local_recorder(&recorder);
        let (api, mut consumer, shards) = open_pair().await;
        // Both shards are read (nothing in them, 0 ms behind); then something else sets
        // `a`'s gauge (as an idle timeout would drop it) and `a`'s reads fail.
        let quiet = tokio::time::timeout(Duration::from_secs(5), consumer.next_event()).await;
        assert!(quiet.is_err(), "nothing to read: {quiet:?}");
        let a = shards.iter().find(|s| &*s.shard_id == "a").unwrap();
        behind_gauge(a).set(-1.0);
        api.throttle(&["a"]);
        let ReaderEvent::ReadsFailing { .. } = consumer.next_event().await.unwrap() else {
            panic!("a fails")
        };
        let a_behind = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .find(|(key, ..)| {
                key.key().name() == "logpipe_kinesis_millis_behind_latest"
                    && key.key().labels().any(|l| l.value() == "a")
            })
            .map(|(.., value)| value);
        assert_eq!(
            a_behind,
            Some(metrics_util::debugging::DebugValue::Gauge(0.0.into()))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_child_is_read_after_its_parent_ends_and_expired_iterators_are_renewed() {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let _recorder = metrics::set_default_local_recorder(&recorder);
        let api = Arc::new(FakeStream::default());
        let options = ReaderOptions {
            initial_position: InitialPosition::Latest,
            ..ReaderOptions::default()
        };
        let mut consumer = ShardReader::new(api.clone(), ["s"], options).unwrap();
        let ReaderEvent::Assigned(shards) = consumer.next_event().await.unwrap() else {
            panic!("shards first")
        };
        assert_eq!(shards.len(), 2);
        for shard in &shards {
            consumer.seek(shard, None).unwrap();
        }
        let mut read = Vec::new();
        let mut finished = Vec::new();
        while read.len() < 2 {
            match consumer.next_event().await.unwrap() {
                ReaderEvent::Records(records) => read.extend(records),
                ReaderEvent::Finished(shards) => {
                    finished.extend(shards.into_iter().map(|s| (s, read.len())))
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        // The parent's end is told after its records, before the child's records.
        let finished: Vec<_> = finished
            .iter()
            .map(|(s, after)| (&*s.shard_id, *after))
            .collect();
        assert_eq!(finished, [("p", 1)]);
        let read: Vec<_> = read
            .iter()
            .map(|r| (&*r.shard.shard_id, r.sequence_number.as_str()))
            .collect();
        assert_eq!(read, [("p", "1"), ("c", "2")]);

        let calls = api.calls.lock().unwrap().clone();
        let first_child_call = calls.iter().position(|c| c.contains(" c")).unwrap();
        assert!(
            calls[..first_child_call].contains(&"records p".to_owned()),
            "{calls:?}"
        );
        // The parent starts where configured (LATEST) and, once its iterator expired
        // before anything was read, at the time of the first iterator; its child starts
        // at its oldest record.
        assert_eq!(calls[0], "iterator p Latest");
        assert!(calls[2].starts_with("iterator p AtTimestamp"), "{calls:?}");
        assert_eq!(calls[first_child_call], "iterator c TrimHorizon");
        // Each shard's MillisBehindLatest (0 in every answer here) is a gauge.
        let mut behind: Vec<_> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter(|(key, ..)| key.key().name() == "logpipe_kinesis_millis_behind_latest")
            .map(|(key, _, _, value)| {
                let labels: Vec<_> = key.key().labels().map(|l| l.value().to_owned()).collect();
                (labels, value)
            })
            .collect();
        behind.sort_by(|a, b| a.0.cmp(&b.0));
        let zero = || metrics_util::debugging::DebugValue::Gauge(0.0.into());
        assert_eq!(
            behind,
            [
                (vec!["s".to_owned(), "c".to_owned()], zero()),
                (vec!["s".to_owned(), "p".to_owned()], zero())
            ]
        );
        assert_eq!(
            consumer.shards(),
            [
                (
                    ShardRef {
                        stream: "s".into(),
                        shard_id: "c".into()
                    },
                    false
                ),
                (
                    ShardRef {
                        stream: "s".into(),
                        shard_id: "p".into()
                    },
                    true
                ),
            ]
        );
    }
}
