//! [`Weighted`]: an endpoint's service with its static weight, the vocabulary shared by
//! the discovery sources that produce it ([`discover`](crate::discover),
//! [`gossip::discover`](crate::gossip::discover)) and the balancer that reads it
//! ([`balance`](crate::balance)). Its own module so that each of those builds without
//! the others; re-exported as `balance::Weighted` and `discover::Weighted`.

use std::task::{Context, Poll};

/// A service with a static weight, as produced by the [`discover`](crate::discover)
/// sources. The balancer reads the weight when the endpoint is inserted (build it with
/// [`Builder::build_weighted`](crate::balance::Builder::build_weighted)); calls pass straight
/// through to the inner service.
///
/// A weight is relative: an endpoint of weight 4 gets four times the share of one of
/// weight 1 from the weight-aware pickers. Weights are at least 1.
#[derive(Debug, Clone)]
pub struct Weighted<S> {
    service: S,
    weight: u32,
}

impl<S> Weighted<S> {
    /// Wraps `service` with `weight` (a weight of 0 is raised to 1).
    pub fn new(service: S, weight: u32) -> Self {
        Self {
            service,
            weight: weight.max(1),
        }
    }

    /// The weight.
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.service
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.service
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.service
    }
}

impl<S, Req> tower_service::Service<Req> for Weighted<S>
where
    S: tower_service::Service<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.service.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        self.service.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_raises_zero_weight_to_one() {
        assert_eq!(Weighted::new((), 0).weight(), 1);
        assert_eq!(Weighted::new((), 7).weight(), 7);
    }
}
