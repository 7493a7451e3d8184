//! Simple discovery sources for [`Balance`](crate::balance::Balance).
//!
//! Both yield `Change<K, Weighted<S>>`: every endpoint carries its weight in a
//! [`Weighted`] wrapper, which
//! [`Builder::build_weighted`](crate::balance::Builder::build_weighted) reads.
//!
//! - [`FixedList`]: a set known up front, with a static weight each.
//! - [`ChannelSet`]: a set changed at runtime through a cloneable [`ChannelHandle`]
//!   (insert, update by re-inserting a key, remove).
//! - [`Layered`]: any such source with a [`Layer`](tower_layer::Layer) applied to every
//!   endpoint, e.g. a per-endpoint circuit breaker.
//!
//! Both sources are `Unpin` and never fail (`Error = Infallible`).

mod channel;
mod fixed;
mod layered;

pub use crate::weighted::Weighted;
pub use channel::{ChannelHandle, ChannelSet, Closed};
pub use fixed::{FixedList, FixedListBuilder};
pub use layered::Layered;
