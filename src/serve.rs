//! The HTTP endpoints of `run_consumers --metrics-addr`: `/metrics` (Prometheus text
//! format), `/healthz` (the process is alive) and `/readyz` (every consumer runs with its
//! partitions assigned, none is stalled or stopping: see [`health`](crate::health)).
//!
//! The server is a small HTTP/1.1 responder over Tokio: it reads one request head (at
//! most 8 KiB, within 10 seconds), answers `GET` or `HEAD` and closes the connection.
//! That is all Prometheus scrapes and Kubernetes probes need.

use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::{BuildError, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::health::Health;

/// Largest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client has to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How often histograms are trimmed of old samples.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);
/// A gauge not set for this long is left out of `/metrics`: the lag of a partition given
/// up or a shard no longer read. Live ones are set every few seconds.
const GAUGE_IDLE: Duration = Duration::from_secs(60);
/// Histogram buckets, in seconds, of handler and commit latencies.
const BUCKETS: &[f64] = &[
    0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// An error starting the endpoints.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The Prometheus recorder could not be installed (another one already is).
    #[error("cannot install the Prometheus metrics recorder")]
    Recorder(#[source] BuildError),
    /// The address could not be bound.
    #[error("cannot listen on {addr} (metrics_addr)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The endpoints, bound and ready to serve.
#[derive(Debug)]
pub struct Endpoints {
    listener: TcpListener,
    metrics: PrometheusHandle,
    health: Health,
}

impl Endpoints {
    /// Installs the Prometheus recorder as the process's `metrics` recorder and binds
    /// `addr` (port 0 picks a free port; see [`local_addr`](Self::local_addr)).
    ///
    /// # Errors
    ///
    /// [`ServeError::Recorder`] when a recorder is already installed;
    /// [`ServeError::Bind`] when `addr` cannot be bound.
    pub async fn bind(addr: SocketAddr, health: Health) -> Result<Self, ServeError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let metrics = PrometheusBuilder::new()
            .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE))
            .set_buckets(BUCKETS)
            .map_err(ServeError::Recorder)?
            .install_recorder()
            .map_err(ServeError::Recorder)?;
        describe();
        Ok(Self {
            listener,
            metrics,
            health,
        })
    }

    /// The address bound.
    ///
    /// # Errors
    ///
    /// The I/O error of the socket, if it has none.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves requests until `shutdown` is cancelled.
    pub async fn serve(self, shutdown: CancellationToken) {
        let upkeep = self.metrics.clone();
        let upkeep_stop = shutdown.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(UPKEEP_EVERY);
            loop {
                tokio::select! {
                    () = upkeep_stop.cancelled() => return,
                    _ = every.tick() => upkeep.run_upkeep(),
                }
            }
        });
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => return,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, _peer)) => {
                    let metrics = self.metrics.clone();
                    let health = self.health.clone();
                    tokio::spawn(async move {
                        if let Err(err) = answer(stream, &metrics, &health).await {
                            tracing::debug!(error = %err, "metrics endpoint: connection failed");
                        }
                    });
                }
                Err(err) => {
                    // Such as too many open files: wait a little rather than spin.
                    tracing::warn!(error = %err, "metrics endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// The help text of logpipe's metrics, for the recorder just installed.
fn describe() {
    use metrics::Unit;
    metrics::describe_counter!(
        "logpipe_records_handled_total",
        "Records whose handler succeeded"
    );
    metrics::describe_counter!(
        "logpipe_records_skipped_total",
        "Records skipped, by reason"
    );
    metrics::describe_counter!(
        "logpipe_records_dead_lettered_total",
        "Records written to the dead-letter stream, by reason"
    );
    metrics::describe_counter!(
        "logpipe_handler_retries_total",
        "Handler calls retried after a failure"
    );
    metrics::describe_counter!(
        "logpipe_handler_failures_total",
        "Records whose handler still failed after its retries"
    );
    metrics::describe_histogram!(
        "logpipe_handler_seconds",
        Unit::Seconds,
        "Time to decode and handle a record, successful calls"
    );
    metrics::describe_histogram!(
        "logpipe_commit_seconds",
        Unit::Seconds,
        "Time to store a batch of positions"
    );
    metrics::describe_gauge!(
        "logpipe_kinesis_millis_behind_latest",
        Unit::Milliseconds,
        "How far reading a Kinesis shard is behind its newest record"
    );
    #[cfg(feature = "kafka")]
    metrics::describe_gauge!(
        logpipe_kafka::LAG_GAUGE,
        Unit::Count,
        "Records of a Kafka partition not handled yet: its end offset minus the next offset the group's consumer handles"
    );
}

/// Reads one request head and answers it.
async fn answer(
    mut stream: TcpStream,
    metrics: &PrometheusHandle,
    health: &Health,
) -> std::io::Result<()> {
    let head = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Ok(head) => head?,
        Err(_) => return Ok(()),
    };
    let Some(head) = head else {
        return respond(&mut stream, false, 400, "text/plain", "bad request\n").await;
    };
    let mut words = head.split(' ');
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return respond(&mut stream, false, 405, "text/plain", "only GET and HEAD\n").await;
    }
    let path = target.split('?').next().unwrap_or("");
    match path {
        "/metrics" => {
            let body = metrics.render();
            respond(
                &mut stream,
                head_only,
                200,
                "text/plain; version=0.0.4",
                &body,
            )
            .await
        }
        "/healthz" => respond(&mut stream, head_only, 200, "text/plain", "ok\n").await,
        "/readyz" => {
            let report = health.report();
            let status = if report.ready { 200 } else { 503 };
            respond(&mut stream, head_only, status, "text/plain", &report.text).await
        }
        _ => respond(&mut stream, head_only, 404, "text/plain", "not found\n").await,
    }
}

/// The request line of a request head, or `None` when the head is too long or not text.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return Ok(None);
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&chunk[..read]);
    }
    let Ok(text) = std::str::from_utf8(&head) else {
        return Ok(None);
    };
    Ok(text.lines().next().map(str::to_owned))
}

async fn respond(
    stream: &mut TcpStream,
    head_only: bool,
    status: u16,
    content_type: &str,
    body: &str,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let mut response = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        response.push_str(body);
    }
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves `health` on a free port (with a recorder of its own, not installed) and
    /// sends `request`: the status line and the body.
    async fn ask(health: Health, request: &str) -> (String, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let endpoints = Endpoints {
            listener,
            metrics: PrometheusBuilder::new().build_recorder().handle(),
            health,
        };
        let stop = CancellationToken::new();
        let server = tokio::spawn(endpoints.serve(stop.clone()));
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        let read = stream.read_to_string(&mut response);
        tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .expect("an answer in time")
            .unwrap();
        stop.cancel();
        server.await.unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        (head.lines().next().unwrap().to_owned(), body.to_owned())
    }

    #[tokio::test]
    async fn readyz_is_503_naming_the_error_once_a_consumer_stopped_on_one() {
        let health = Health::new();
        let people = health.register("people");
        let orders = health.register("orders");
        for consumer in [&people, &orders] {
            consumer.started();
            consumer.assigned();
        }
        let get = "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n";
        let (status, body) = ask(health.clone(), get).await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(body, "people: running\norders: running\n");

        orders.stopped(Some("handler failed".to_owned()));
        let (status, body) = ask(health.clone(), get).await;
        assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
        assert_eq!(
            body,
            "people: running\norders: stopped on an error: handler failed\n"
        );
        let (status, body) = ask(health, "GET /healthz HTTP/1.1\r\n\r\n").await;
        assert_eq!(
            (status.as_str(), body.as_str()),
            ("HTTP/1.1 200 OK", "ok\n")
        );
    }

    #[tokio::test]
    async fn readyz_is_503_before_any_consumer_is_assigned_and_when_one_is_dropped() {
        let health = Health::new();
        let get = "GET /readyz HTTP/1.1\r\n\r\n";
        let (status, body) = ask(health.clone(), get).await;
        assert_eq!(
            (status.as_str(), body.as_str()),
            ("HTTP/1.1 503 Service Unavailable", "no consumers\n")
        );
        let people = health.register("people");
        people.started();
        let (status, body) = ask(health.clone(), get).await;
        assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
        assert_eq!(body, "people: started, nothing assigned yet\n");
        people.assigned();
        drop(people); // as when its task panicked
        let (status, body) = ask(health, get).await;
        assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
        assert_eq!(
            body,
            "people: stopped on an error: ended without stopping\n"
        );
    }

    #[tokio::test]
    async fn other_methods_paths_and_garbage_get_their_own_answers() {
        let cases = [
            (
                "POST /readyz HTTP/1.1\r\n\r\n",
                "HTTP/1.1 405 Method Not Allowed",
            ),
            ("GET /other HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found"),
            ("GET /metrics?x=1 HTTP/1.1\r\n\r\n", "HTTP/1.1 200 OK"),
            ("\u{ff}\r\n\r\n", "HTTP/1.1 405 Method Not Allowed"),
        ];
        for (request, expected) in cases {
            assert_eq!(ask(Health::new(), request).await.0, expected, "{request:?}");
        }
        let (status, body) = ask(Health::new(), "HEAD /healthz HTTP/1.1\r\n\r\n").await;
        assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", ""));
    }
}
