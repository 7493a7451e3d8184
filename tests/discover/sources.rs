//! The discovery sources on their own, as streams of changes.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::task::{Context, Poll};

use futures::StreamExt;
use palisade::discover::{ChannelSet, Closed, FixedList, Layered, Weighted};
use tower::discover::Change;
use tower::{Layer, Service};

fn describe<K: Copy, S>(c: &Change<K, Weighted<S>>) -> (K, Option<u32>) {
    match c {
        Change::Insert(k, s) => (*k, Some(s.weight())),
        Change::Remove(k) => (*k, None),
    }
}

#[tokio::test]
async fn fixed_list_inserts_each_endpoint_in_order_then_ends() {
    let mut list = FixedList::builder()
        .endpoint("a", (), 5)
        .endpoint("b", (), 1)
        .build()
        .unwrap();
    assert_eq!(list.len(), 2);
    let first = list.next().await.unwrap().unwrap();
    assert_eq!(describe(&first), ("a", Some(5)));
    let second = list.next().await.unwrap().unwrap();
    assert_eq!(describe(&second), ("b", Some(1)));
    assert!(list.next().await.is_none());
    assert!(list.is_empty());
}

#[tokio::test]
async fn unweighted_fixed_list_gives_weight_one() {
    let list = FixedList::unweighted([("a", ()), ("b", ())]);
    let changes: Vec<_> = list.map(|c| describe(&c.unwrap())).collect().await;
    assert_eq!(changes, vec![("a", Some(1)), ("b", Some(1))]);
}

#[tokio::test]
async fn channel_set_delivers_inserts_updates_and_removes_in_order() {
    let (mut set, handle) = ChannelSet::new();
    let other = handle.clone();
    handle.insert("a", (), 2).unwrap();
    other.insert("a", (), 7).unwrap();
    handle.insert("b", (), 0).unwrap();
    other.remove("a").unwrap();
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(describe(&set.next().await.unwrap().unwrap()));
    }
    assert_eq!(
        got,
        vec![("a", Some(2)), ("a", Some(7)), ("b", Some(1)), ("a", None)]
    );
    drop((handle, other));
    assert!(
        set.next().await.is_none(),
        "ends when every handle is dropped"
    );
}

#[tokio::test]
async fn channel_handle_reports_a_dropped_set() {
    let (set, handle) = ChannelSet::<&str, ()>::new();
    assert!(!handle.is_closed());
    drop(set);
    assert!(handle.is_closed());
    assert_eq!(handle.insert("a", (), 1), Err(Closed));
    assert_eq!(handle.remove("a"), Err(Closed));
}

/// Adds a fixed amount to every response.
#[derive(Clone)]
struct AddLayer(u32);

struct Add<S>(u32, S);

impl<S> Layer<S> for AddLayer {
    type Service = Add<S>;
    fn layer(&self, inner: S) -> Add<S> {
        Add(self.0, inner)
    }
}

impl<S: Service<u32, Response = u32, Error = Infallible>> Service<u32> for Add<S> {
    type Response = u32;
    type Error = Infallible;
    type Future = Ready<Result<u32, Infallible>>;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.1.poll_ready(cx)
    }
    fn call(&mut self, x: u32) -> Self::Future {
        drop(self.1.call(x));
        ready(Ok(x + self.0))
    }
}

#[tokio::test]
async fn layered_source_wraps_every_endpoint_and_keeps_its_weight() {
    let id = tower::service_fn(|x: u32| ready(Ok::<_, Infallible>(x)));
    let list = FixedList::builder().endpoint("a", id, 3).build().unwrap();
    let mut layered = Layered::new(list, AddLayer(100));
    match layered.next().await.unwrap().unwrap() {
        Change::Insert(k, mut svc) => {
            assert_eq!((k, svc.weight()), ("a", 3));
            assert_eq!(svc.get_mut().call(1).await.unwrap(), 101);
        }
        Change::Remove(_) => panic!("expected an insert"),
    }
    assert!(layered.next().await.is_none());
}
