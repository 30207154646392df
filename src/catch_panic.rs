//! Panics of user code turned into values: a handler that panics fails its record instead
//! of taking its consumer down.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

/// The message a panic was started with, when it is text.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Runs `f`, catching a panic as `Err` with the panic's message.
pub(crate) fn catch<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| panic_message(&*payload))
}

/// Runs a future (boxed or otherwise `Unpin`), catching a panic in any of its polls as
/// `Err` with the panic's message.
///
/// The future is not polled again after it panicked. Whatever it borrowed may be left
/// half-changed, which the caller accepts by using it: the consumer uses it only for a
/// record that failed and is handled again from the start.
pub(crate) struct CatchPanic<F> {
    future: F,
}

impl<F: Future + Unpin> CatchPanic<F> {
    pub(crate) fn new(future: F) -> Self {
        Self { future }
    }
}

impl<F: Future + Unpin> Future for CatchPanic<F> {
    type Output = Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let future = Pin::new(&mut self.future);
        match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(panic_message(&*payload))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_in_a_later_poll_is_caught_with_its_message() {
        let caught = CatchPanic::new(Box::pin(async {
            tokio::task::yield_now().await;
            let fields: Vec<u32> = Vec::new();
            fields.first().copied().expect("the field is there")
        }))
        .await;
        assert_eq!(caught, Err("the field is there".to_owned()));
        let fine = CatchPanic::new(Box::pin(async { 7 })).await;
        assert_eq!(fine, Ok(7));
        let formatted = CatchPanic::new(Box::pin(async { panic!("order {} has no sku", 5) })).await;
        assert_eq!(formatted, Err::<(), _>("order 5 has no sku".to_owned()));
        assert_eq!(catch(|| 1), Ok(1));
        assert_eq!(
            catch(|| -> u8 { panic!("decoding") }),
            Err("decoding".to_owned())
        );
    }
}
