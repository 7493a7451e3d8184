//! The per-request timeout override: a function from the request to an optional duration.

use std::time::Duration;

/// Chooses a request's timeout: `Some(d)` overrides the default, `None` keeps it.
///
/// Implemented for every `Fn(&Req) -> Option<Duration>` (annotate the closure's argument
/// type, e.g. `|req: &MyRequest| ...`) and for [`NoOverride`], the default.
pub trait TimeoutOverride<Req> {
    /// The timeout for `req`, or `None` for the default.
    fn timeout_for(&self, req: &Req) -> Option<Duration>;
}

/// No per-request override: every call gets the default timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NoOverride;

impl<Req> TimeoutOverride<Req> for NoOverride {
    #[inline]
    fn timeout_for(&self, _: &Req) -> Option<Duration> {
        None
    }
}

impl<F, Req> TimeoutOverride<Req> for F
where
    F: Fn(&Req) -> Option<Duration>,
{
    #[inline]
    fn timeout_for(&self, req: &Req) -> Option<Duration> {
        self(req)
    }
}

/// Names a per-request override in `Debug` output without requiring it to be `Debug`
/// (closures are not).
pub(crate) fn override_name<O: 'static>() -> &'static str {
    if std::any::TypeId::of::<O>() == std::any::TypeId::of::<NoOverride>() {
        "NoOverride"
    } else {
        std::any::type_name::<O>()
    }
}
