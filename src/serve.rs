//! The HTTP endpoints of `run_consumers --metrics-addr`: `/metrics` (Prometheus text
//! format), `/healthz` (the process is alive) and `/readyz` (every consumer runs with its
//! partitions assigned, none is stalled or stopping: see [`health`](crate::health)).
//!
//! The server is hyper's HTTP/1.1 server over Tokio, one request a connection: a request
//! head is at most 8 KiB (else 431) and must come within 10 seconds (else the connection
//! is closed); `GET` and `HEAD` are answered, other methods get 405, and what is not HTTP
//! gets 400. That is all Prometheus scrapes and Kubernetes probes need.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::{BuildError, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::health::Health;

/// Largest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client has to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one connection may last at most, answer included.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
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
                    tokio::spawn(serve_connection(stream, metrics, health));
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

/// Serves the one request of a connection, then closes it.
async fn serve_connection(stream: TcpStream, metrics: PrometheusHandle, health: Health) {
    let service = service_fn(move |request: Request<Incoming>| {
        let response = answer(&request, &metrics, &health);
        std::future::ready(Ok::<_, Infallible>(response))
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(READ_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::debug!(error = %err, "metrics endpoint: connection failed"),
        Err(_) => tracing::debug!("metrics endpoint: connection took too long; closed"),
    }
}

/// The answer to `request`.
fn answer(
    request: &Request<Incoming>,
    metrics: &PrometheusHandle,
    health: &Health,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return response(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET and HEAD\n".into(),
        );
    }
    match request.uri().path() {
        "/metrics" => response(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics.render(),
        ),
        "/healthz" => response(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => {
            let report = health.report();
            let status = if report.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            response(status, "text/plain", report.text)
        }
        _ => response(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// A response of `status` with `body` (hyper leaves the body out for `HEAD`).
fn response(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// The endpoints serving `health` on a free port (with a recorder of their own, not
    /// installed): their address and what stops them.
    async fn serving(
        health: Health,
    ) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let endpoints = Endpoints {
            listener,
            metrics: PrometheusBuilder::new().build_recorder().handle(),
            health,
        };
        let stop = CancellationToken::new();
        let server = tokio::spawn(endpoints.serve(stop.clone()));
        (addr, stop, server)
    }

    /// Sends `request` to `addr` and reads until the server closes the connection: what
    /// came back, or the error of reading it (a reset).
    async fn exchange(addr: SocketAddr, request: &[u8]) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await?;
        let mut response = Vec::new();
        let read = stream.read_to_end(&mut response);
        tokio::time::timeout(Duration::from_secs(40), read)
            .await
            .expect("the server closes the connection in time")?;
        Ok(String::from_utf8_lossy(&response).into_owned())
    }

    /// Serves `health` and sends `request`: the status line and the body.
    async fn ask(health: Health, request: &str) -> (String, String) {
        let (addr, stop, server) = serving(health).await;
        let response = exchange(addr, request.as_bytes()).await.unwrap();
        stop.cancel();
        server.await.unwrap();
        status_and_body(&response)
    }

    fn status_and_body(response: &str) -> (String, String) {
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
            ("\u{ff}\r\n\r\n", "HTTP/1.1 400 Bad Request"),
            ("GET /healthz\r\n\r\n", "HTTP/1.1 400 Bad Request"),
        ];
        for (request, expected) in cases {
            assert_eq!(ask(Health::new(), request).await.0, expected, "{request:?}");
        }
        let (status, body) = ask(Health::new(), "HEAD /healthz HTTP/1.1\r\n\r\n").await;
        assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", ""));
    }

    #[tokio::test]
    async fn bad_requests_are_answered_or_dropped_and_the_next_probe_is_answered() {
        let (addr, stop, server) = serving(Health::new()).await;
        let healthz = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
        let too_large = format!(
            "GET /healthz HTTP/1.1\r\nX-Padding: {}\r\n\r\n",
            "a".repeat(MAX_HEAD + 1024)
        );
        let mut garbage: Vec<u8> = (0..=255).collect();
        garbage.extend_from_slice(b"\r\n\r\n");
        for (what, request, status) in [
            ("a head too large", too_large.as_bytes(), "431"),
            ("garbage bytes", &garbage[..], "400"),
            ("a DELETE", b"DELETE /readyz HTTP/1.1\r\n\r\n", "405"),
            ("a head cut short", b"GET /healthz HTTP/1.1\r\nHost", ""),
        ] {
            // Answered with the status, or closed (reset when the server left bytes
            // unread), never left open.
            match exchange(addr, request).await {
                Ok(response) if response.is_empty() => assert!(status.is_empty(), "{what}"),
                Ok(response) => assert!(
                    response.starts_with(&format!("HTTP/1.1 {status} ")),
                    "{what}: {response}"
                ),
                Err(err) => assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{what}"),
            }
            let answer = exchange(addr, healthz).await.unwrap();
            assert_eq!(
                status_and_body(&answer),
                ("HTTP/1.1 200 OK".into(), "ok\n".into()),
                "after {what}"
            );
        }
        stop.cancel();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_client_that_sends_nothing_is_closed_after_the_read_timeout() {
        let (addr, stop, server) = serving(Health::new()).await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let started = tokio::time::Instant::now();
        // Others are answered meanwhile.
        let answer = exchange(addr, b"GET /healthz HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(status_and_body(&answer).0, "HTTP/1.1 200 OK");
        let mut response = Vec::new();
        tokio::time::timeout(
            CONNECTION_TIMEOUT + READ_TIMEOUT,
            silent.read_to_end(&mut response),
        )
        .await
        .expect("the silent connection is closed")
        .unwrap();
        assert!(
            started.elapsed() >= READ_TIMEOUT,
            "not closed before its time"
        );
        let text = String::from_utf8_lossy(&response);
        assert!(
            text.is_empty() || text.starts_with("HTTP/1.1 408"),
            "{text}"
        );
        stop.cancel();
        server.await.unwrap();
    }
}
