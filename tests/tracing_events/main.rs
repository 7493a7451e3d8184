//! With the `tracing` feature, transitions are `tracing` events.
//!
//! A binary of its own: tracing caches each callsite's interest process-wide, so another
//! test of the same binary hitting the breaker's callsites concurrently, with no
//! subscriber on its thread, can make this test's scoped subscriber miss events (seen
//! when it shared the breaker binary).
#![cfg(feature = "tracing")]

use std::sync::{Arc, Mutex};

use palisade::breaker::BreakerConfig;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Collects the formatted fields of every event.
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<Vec<String>>>);

struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
}

impl Subscriber for Collect {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut line = String::new();
        event.record(&mut Fields(&mut line));
        self.0.lock().unwrap().push(line);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn transitions_are_tracing_events() {
    let collect = Collect::default();
    let lines = collect.0.clone();
    tracing::subscriber::with_default(collect, || {
        let handle = BreakerConfig::default().layer().handle();
        handle.force_open();
        handle.reset();
    });
    let lines = lines.lock().unwrap();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].contains("from=closed") && lines[0].contains("to=forced-open"));
    assert!(lines[1].contains("to=closed") && lines[1].contains("reason=reset by the handle"));
}
