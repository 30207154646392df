//! The HTTP endpoints of `run_consumers --metrics-addr`: `/metrics` (Prometheus text
//! format), `/healthz` (the process is alive) and `/readyz` (every consumer runs with its
//! partitions assigned, and none is stuck retrying).
//!
//! The server is a small HTTP/1.1 responder over Tokio: it reads one request head (at
//! most 8 KiB, within 10 seconds), answers `GET` or `HEAD` and closes the connection.
//! That is all Prometheus scrapes and Kubernetes probes need.

use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::{BuildError, PrometheusBuilder, PrometheusHandle};
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
            .set_buckets(BUCKETS)
            .map_err(ServeError::Recorder)?
            .install_recorder()
            .map_err(ServeError::Recorder)?;
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
