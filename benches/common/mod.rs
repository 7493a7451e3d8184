//! Helpers shared by the benches: the always-ready inner service, a no-op-waker driver,
//! and the reader of criterion's saved medians for the ratio tables.

use std::convert::Infallible;
use std::future::{Future, Ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// The inner service: always ready, answers at once.
#[derive(Clone, Copy, Debug)]
pub struct Echo;

impl tower::Service<u64> for Echo {
    type Response = u64;
    type Error = Infallible;
    type Future = Ready<Result<u64, Infallible>>;

    #[inline]
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, req: u64) -> Self::Future {
        std::future::ready(Ok(req))
    }
}

/// Polls a future to completion in place with a no-op waker.
#[inline]
pub fn drive<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = f.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

/// Median of one benchmark from criterion's saved estimates, in nanoseconds.
pub fn median_ns(group: &str, function: &str) -> Option<f64> {
    let home = std::env::var_os("CRITERION_HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|| "target".into())
                .join("criterion")
        });
    let path = home
        .join(group.replace('/', "_"))
        .join(function)
        .join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["median"]["point_estimate"].as_f64()
}
