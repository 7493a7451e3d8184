//! A fixed list of endpoints.

use std::collections::HashSet;
use std::convert::Infallible;
use std::hash::Hash;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use tower::discover::Change;

use super::Weighted;
use crate::error::ConfigError;

/// A discovery source that inserts a fixed list of endpoints, in order, then ends (the
/// balancer keeps them). Build one with [`FixedList::builder`], or
/// [`FixedList::unweighted`] when every weight is 1.
///
/// ```
/// use palisade::discover::FixedList;
///
/// let list = FixedList::builder()
///     .endpoint("10.0.0.1:80", "svc-a", 5)
///     .endpoint("10.0.0.2:80", "svc-b", 1)
///     .build()
///     .unwrap();
/// assert_eq!(list.len(), 2);
/// ```
#[derive(Debug)]
pub struct FixedList<K, S> {
    endpoints: std::vec::IntoIter<(K, Weighted<S>)>,
}

impl<K, S> FixedList<K, S> {
    /// A builder.
    pub fn builder() -> FixedListBuilder<K, S> {
        FixedListBuilder {
            endpoints: Vec::new(),
        }
    }

    /// A list in which every endpoint has weight 1. A repeated key replaces the earlier
    /// endpoint, as a repeated `Insert` does.
    pub fn unweighted(endpoints: impl IntoIterator<Item = (K, S)>) -> Self {
        Self {
            endpoints: endpoints
                .into_iter()
                .map(|(k, s)| (k, Weighted::new(s, 1)))
                .collect::<Vec<_>>()
                .into_iter(),
        }
    }

    /// Endpoints not yet handed to the balancer.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// Whether all endpoints were handed to the balancer (or there were none).
    pub fn is_empty(&self) -> bool {
        self.endpoints.len() == 0
    }
}

/// Builds a [`FixedList`].
#[derive(Debug)]
pub struct FixedListBuilder<K, S> {
    endpoints: Vec<(K, S, u32)>,
}

impl<K, S> FixedListBuilder<K, S> {
    /// Adds an endpoint with a weight (at least 1).
    pub fn endpoint(mut self, key: K, service: S, weight: u32) -> Self {
        self.endpoints.push((key, service, weight));
        self
    }

    /// Validates (weights at least 1, keys distinct) and builds. Errors name the field
    /// `endpoint`.
    pub fn build(self) -> Result<FixedList<K, S>, ConfigError>
    where
        K: Hash + Eq,
    {
        let mut seen = HashSet::with_capacity(self.endpoints.len());
        for (i, (key, _, weight)) in self.endpoints.iter().enumerate() {
            if *weight == 0 {
                return Err(ConfigError::new(
                    "endpoint",
                    format!("weight of endpoint #{i} must be at least 1"),
                ));
            }
            if !seen.insert(key) {
                return Err(ConfigError::new(
                    "endpoint",
                    format!("key of endpoint #{i} repeats an earlier one"),
                ));
            }
        }
        Ok(FixedList {
            endpoints: self
                .endpoints
                .into_iter()
                .map(|(k, s, w)| (k, Weighted::new(s, w)))
                .collect::<Vec<_>>()
                .into_iter(),
        })
    }
}

impl<K, S> Unpin for FixedList<K, S> {}

impl<K, S> Stream for FixedList<K, S> {
    type Item = Result<Change<K, Weighted<S>>, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Poll::Ready(self.endpoints.next().map(|(k, s)| Ok(Change::Insert(k, s))))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.endpoints.len(), Some(self.endpoints.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_rejects_zero_weight_and_repeated_keys() {
        let e = FixedList::builder()
            .endpoint("a", (), 1)
            .endpoint("b", (), 0)
            .build()
            .unwrap_err();
        assert_eq!(e.field(), "endpoint");
        assert!(e.reason().contains("#1"));
        let e = FixedList::builder()
            .endpoint("a", (), 1)
            .endpoint("a", (), 2)
            .build()
            .unwrap_err();
        assert!(e.reason().contains("repeats"));
    }
}
