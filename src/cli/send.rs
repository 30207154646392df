//! Sending many records at once, each handed to the backend in order.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use logpipe_core::{BackendError, OutgoingRecord, ProducerBackend};

/// Sends `records` at once, each handed to the backend in order (so that records of one
/// key keep their order), and waits until all are written.
///
/// # Errors
///
/// The first [`BackendError`] of a send; records sent before it may be written.
pub(super) async fn send_in_order<B: ProducerBackend>(
    backend: &B,
    records: Vec<OutgoingRecord>,
) -> Result<(), BackendError> {
    type Sending<'a> = Pin<Box<dyn Future<Output = Result<(), BackendError>> + Send + 'a>>;
    let mut pending: Vec<Option<Sending<'_>>> = records
        .into_iter()
        .map(|record| {
            let send: Sending<'_> = Box::pin(async move { backend.send(record).await.map(drop) });
            Some(send)
        })
        .collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        // Polled first in the order they were made.
        for slot in &mut pending {
            if let Some(send) = slot {
                match send.as_mut().poll(cx) {
                    Poll::Ready(Ok(())) => *slot = None,
                    Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                    Poll::Pending => done = false,
                }
            }
        }
        if done {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await
}
