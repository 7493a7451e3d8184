//! What a call's result means to the layers that count it.
//!
//! A [`Classify`] turns a `&Result<Response, Error>` into an [`Outcome`]: success, failure,
//! or ignored (counted nowhere: a 4xx response, a request the caller cancelled). The
//! default, [`ErrIsFailure`], calls every `Ok` a success and every `Err` a failure. Any
//! `Fn(&Result<Res, E>) -> Outcome` is a classifier too:
//!
//! ```
//! use palisade::classify::{Classify, Outcome};
//!
//! // An HTTP-like status: 5xx is a failure, 4xx is the caller's fault and is ignored.
//! let by_status = |r: &Result<u16, std::io::Error>| match r {
//!     Ok(s) if *s >= 500 => Outcome::Failure,
//!     Ok(s) if *s >= 400 => Outcome::Ignored,
//!     Ok(_) => Outcome::Success,
//!     Err(_) => Outcome::Failure,
//! };
//! assert_eq!(by_status.classify(&Ok(503)), Outcome::Failure);
//! assert_eq!(by_status.classify(&Ok(404)), Outcome::Ignored);
//! assert_eq!(by_status.classify(&Ok(200)), Outcome::Success);
//! ```
//!
//! A classifier can also pass on how long the dependency asked its callers to stay away
//! ([`Classify::retry_after`], an HTTP `Retry-After`, say): the layers that honour it
//! (the breaker's open period, a balancer's ejection) keep away at least that long.

use std::time::Duration;

/// The verdict on one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The call worked; it counts toward health.
    Success,
    /// The call failed; it counts against health.
    Failure,
    /// The call says nothing about the dependency's health and is not counted.
    Ignored,
}

/// Decides what a call's result counts as.
///
/// Implementations must be cheap: they run once per call on the hot path.
pub trait Classify<Res, E> {
    /// Classifies one result.
    fn classify(&self, result: &Result<Res, E>) -> Outcome;

    /// How long the dependency asked callers to stay away, if `result` says so (an HTTP
    /// `Retry-After` on a 503 or 429) and this classifier passes it on.
    ///
    /// Called only for results that [`classify`](Classify::classify) called a
    /// [`Outcome::Failure`], so it costs nothing on the success path. The default says
    /// nothing (`None`); closures cannot say anything either.
    #[inline]
    fn retry_after(&self, result: &Result<Res, E>) -> Option<Duration> {
        let _ = result;
        None
    }
}

/// The default classifier: `Ok` is a success, `Err` is a failure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrIsFailure;

impl<Res, E> Classify<Res, E> for ErrIsFailure {
    #[inline]
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }
}

impl<Res, E, F> Classify<Res, E> for F
where
    F: Fn(&Result<Res, E>) -> Outcome,
{
    #[inline]
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        self(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_classifier_fails_errors_only() {
        assert_eq!(ErrIsFailure.classify(&Ok::<_, ()>(1)), Outcome::Success);
        assert_eq!(
            ErrIsFailure.classify(&Err::<(), _>("boom")),
            Outcome::Failure
        );
    }
}
