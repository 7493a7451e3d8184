//! The layer and make-service forms of [`Balance`].
//!
//! - [`BalanceLayer`] turns a discovery source into a balancer:
//!   `ServiceBuilder::new().layer(layer).service(discover)`.
//! - [`MakeBalance`] wraps a service that *makes* discovery sources (one per target, as
//!   `tower::balance::p2c::MakeBalance` does) and answers each target with a balancer;
//!   [`MakeBalanceLayer`] is its layer form.
//!
//! Both hold only a validated configuration and clone the picker for each balancer.

use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tower::discover::Discover;
use tower_layer::Layer;
use tower_service::Service;

use super::events::{EndpointEventCallback, NoEndpointEvents};
use super::picker::Picker;
use super::service::{Balance, Builder};
use crate::weighted::Weighted;

/// Wraps a [`Discover`] source in a [`Balance`] with unit weights. Made by
/// [`Builder::into_layer`].
#[derive(Clone)]
pub struct BalanceLayer<P, H, C, E = NoEndpointEvents> {
    builder: Builder<P, H, C, E>,
}

impl<P, H, C, E> BalanceLayer<P, H, C, E> {
    pub(crate) fn new(builder: Builder<P, H, C, E>) -> Self {
        Self { builder }
    }

    /// The same layer, reading weights from [`Weighted`] endpoints.
    pub fn weighted(self) -> WeightedBalanceLayer<P, H, C, E> {
        WeightedBalanceLayer {
            builder: self.builder,
        }
    }

    /// A [`MakeBalance`] that builds a balancer over each source `make` produces.
    pub fn make<M>(self, make: M) -> MakeBalance<M, P, H, C, E> {
        MakeBalance {
            make,
            builder: self.builder,
        }
    }

    /// The same configuration as a layer over make-services: wraps a service that makes
    /// discovery sources into a [`MakeBalance`].
    pub fn into_make_layer(self) -> MakeBalanceLayer<P, H, C, E> {
        MakeBalanceLayer {
            builder: self.builder,
        }
    }
}

/// Wraps a service that makes discovery sources into a [`MakeBalance`]. Made by
/// [`BalanceLayer::into_make_layer`].
#[derive(Clone)]
pub struct MakeBalanceLayer<P, H, C, E = NoEndpointEvents> {
    builder: Builder<P, H, C, E>,
}

impl<M, P: Clone, H: Clone, C: Clone, E: Clone> Layer<M> for MakeBalanceLayer<P, H, C, E> {
    type Service = MakeBalance<M, P, H, C, E>;

    fn layer(&self, make: M) -> Self::Service {
        MakeBalance {
            make,
            builder: self.builder.clone(),
        }
    }
}

impl<P: fmt::Debug, H, C, E> fmt::Debug for MakeBalanceLayer<P, H, C, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MakeBalanceLayer")
            .field("builder", &self.builder)
            .finish()
    }
}

impl<D, P, H, C, E> Layer<D> for BalanceLayer<P, H, C, E>
where
    D: Discover,
    D::Key: Hash + Eq,
    P: Picker + Clone,
    H: Clone,
    C: Clone,
    E: EndpointEventCallback<D::Key> + Clone,
{
    type Service = Balance<D, P, H, C>;

    fn layer(&self, discover: D) -> Self::Service {
        self.builder
            .clone()
            .build(discover)
            .expect("validated when the layer was built")
    }
}

impl<P: fmt::Debug, H, C, E> fmt::Debug for BalanceLayer<P, H, C, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BalanceLayer")
            .field("builder", &self.builder)
            .finish()
    }
}

/// Wraps a [`Discover`] source of [`Weighted`] endpoints in a [`Balance`] that reads
/// their weights. Made by [`BalanceLayer::weighted`].
#[derive(Clone)]
pub struct WeightedBalanceLayer<P, H, C, E = NoEndpointEvents> {
    builder: Builder<P, H, C, E>,
}

impl<D, S, P, H, C, E> Layer<D> for WeightedBalanceLayer<P, H, C, E>
where
    D: Discover<Service = Weighted<S>>,
    D::Key: Hash + Eq,
    P: Picker + Clone,
    H: Clone,
    C: Clone,
    E: EndpointEventCallback<D::Key> + Clone,
{
    type Service = Balance<D, P, H, C>;

    fn layer(&self, discover: D) -> Self::Service {
        self.builder
            .clone()
            .build_weighted(discover)
            .expect("validated when the layer was built")
    }
}

impl<P: fmt::Debug, H, C, E> fmt::Debug for WeightedBalanceLayer<P, H, C, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeightedBalanceLayer")
            .field("builder", &self.builder)
            .finish()
    }
}

/// A make-service: for each target, asks `M` for a discovery source and answers with a
/// [`Balance`] over it (unit weights). Made by [`BalanceLayer::make`].
#[derive(Clone)]
pub struct MakeBalance<M, P, H, C, E = NoEndpointEvents> {
    make: M,
    builder: Builder<P, H, C, E>,
}

impl<M, P, H, C, E, Target> Service<Target> for MakeBalance<M, P, H, C, E>
where
    M: Service<Target>,
    M::Response: Discover,
    <M::Response as Discover>::Key: Hash + Eq,
    P: Picker + Clone,
    H: Clone,
    C: Clone,
    E: EndpointEventCallback<<M::Response as Discover>::Key> + Clone,
{
    type Response = Balance<M::Response, P, H, C>;
    type Error = M::Error;
    type Future = MakeFuture<M::Future, P, H, C, E>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.make.poll_ready(cx)
    }

    fn call(&mut self, target: Target) -> Self::Future {
        MakeFuture {
            inner: self.make.call(target),
            builder: Some(self.builder.clone()),
        }
    }
}

impl<M: fmt::Debug, P: fmt::Debug, H, C, E> fmt::Debug for MakeBalance<M, P, H, C, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MakeBalance")
            .field("make", &self.make)
            .field("builder", &self.builder)
            .finish()
    }
}

pin_project! {
    /// The future of [`MakeBalance`]'s `call`.
    pub struct MakeFuture<F, P, H, C, E = NoEndpointEvents> {
        #[pin]
        inner: F,
        builder: Option<Builder<P, H, C, E>>,
    }
}

impl<F, D, Error, P, H, C, E> Future for MakeFuture<F, P, H, C, E>
where
    F: Future<Output = Result<D, Error>>,
    D: Discover,
    D::Key: Hash + Eq,
    P: Picker,
    E: EndpointEventCallback<D::Key>,
{
    type Output = Result<Balance<D, P, H, C>, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let discover = ready!(this.inner.poll(cx))?;
        let builder = this
            .builder
            .take()
            .expect("MakeFuture polled after completion");
        Poll::Ready(Ok(builder
            .build(discover)
            .expect("validated when the layer was built")))
    }
}

impl<F, P, H, C, E> fmt::Debug for MakeFuture<F, P, H, C, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MakeFuture").finish_non_exhaustive()
    }
}
