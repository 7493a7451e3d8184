//! The endpoint set: who is a member, who is ready, who is ejected.
//!
//! Members live in slots (recycled through a free list, with a generation so a stale
//! [`EndpointId`] never resolves). Three index structures keep every per-request step O(1):
//!
//! - `ready`: the slots that are *reserved* (their `poll_ready` returned `Ready` and they
//!   have not been called since) and pickable (not ejected, or the set is in panic).
//!   Pickers index into it. The endpoint a call goes to stays in place until the next
//!   `poll_ready` re-polls it, so the order is stable in steady state.
//! - `to_poll`: slots to poll on the next `poll_ready` — just inserted, just called, or
//!   woken after returning `Pending`.
//! - the [`WakeQueue`]: slots whose waker fired since the last look.
//!
//! What a request touches is kept dense, so its cost stays flat from ten endpoints to
//! tens of thousands: the per-slot state every request reads or writes ([`SlotState`]:
//! statistics pointer, readiness, ready position, 16 bytes) is an array apart from the
//! colder [`Meta`] (weights, ejection record, key hash), and when the picker
//! [uses in-flight counts](super::Picker::uses_in_flight) the ready endpoints' counts sit
//! in an array beside `ready`, by position, brought up to date before each pick from the
//! completion queue (as for the load index), so that a power-of-two-choices pick reads
//! two `u32`s of one array.
//!
//! Nothing scans all endpoints per request; scans happen only on rare events (an
//! endpoint crossing the consecutive-failure threshold, an outlier-detection interval, a
//! slow-start step, entering or leaving panic).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use tower_service::Service;

use super::ejection::{EjectionRecord, OutlierDetection};
use super::endpoint::{EndpointId, EndpointStats};
use super::events::{EndpointForward, HubOwner, KeyedEvents};
use super::load_index::{CompletionQueue, LoadOrder};
use super::picker::{Candidates, LoadIndex};
use super::readiness::{SlotWaker, WakeQueue};
use super::slow_start::SlowStart;
use crate::breaker::events::EventCallback;
use crate::breaker::gate::{GateCall, GateCore};
use crate::breaker::{BreakerConfig, BreakerHandle};
use crate::clock::Clock;
use crate::error::{BoxError, BreakerOpen};

const NONE: u32 = u32::MAX;

/// Where an endpoint stands with its own `poll_ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Readiness {
    /// Needs polling (queued in `to_poll`).
    Unpolled,
    /// Polled, returned `Pending`; its waker will queue it again.
    Pending,
    /// Polled, returned `Ready`, not called since.
    Reserved,
}

/// Per-slot state that every request reads or writes, in a dense array of its own
/// (16 bytes a slot, so 160 KB at 10,000 endpoints stays in cache where the full
/// [`Meta`] would not): the statistics, the readiness, the ready position.
#[derive(Debug)]
pub(crate) struct SlotState {
    pub(crate) stats: Arc<EndpointStats>,
    ready_pos: u32,
    pub(crate) readiness: Readiness,
    in_to_poll: bool,
    pub(crate) live: bool,
}

impl SlotState {
    #[inline]
    pub(crate) fn ready_position(&self) -> Option<usize> {
        (self.ready_pos != NONE).then_some(self.ready_pos as usize)
    }
}

/// The rest of the per-slot state that pickers may read (no service inside, so not
/// generic). The balancer itself reads it on membership, weight and ejection changes
/// (and for the weighted load order), not on every request.
#[derive(Debug)]
pub(crate) struct Meta {
    pub(crate) generation: u32,
    pub(crate) weight: u32,
    pub(crate) effective_weight: f64,
    pub(crate) added_at: u64,
    pub(crate) key_hash: u64,
    member_pos: u32,
    pub(crate) ejection: EjectionRecord,
}

/// Counters the balancer reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub(crate) removed_on_error: u64,
    pub(crate) ejections: u64,
}

pub(crate) struct EndpointSet<K, S> {
    states: Vec<SlotState>,
    metas: Vec<Meta>,
    services: Vec<Option<S>>,
    /// Each member's circuit breaker gate, when endpoint breakers are on.
    gates: Vec<Option<GateCore>>,
    /// Where each member's circuit forwards its events, keyed, when endpoint breakers
    /// are on.
    forwards: Vec<Option<Arc<EndpointForward>>>,
    breaker: Option<BreakerConfig<()>>,
    /// The keyed endpoint events, once someone asked for them.
    events: Option<HubOwner<K>>,
    wakers: Vec<(Arc<SlotWaker>, Waker)>,
    keys: HashMap<K, u32>,
    free: Vec<u32>,
    ready: Vec<u32>,
    /// The in-flight count of each slot in `ready`, by the same position: exact at each
    /// pick when `dense_in_flight` (completions drained by `refresh_load`), and a
    /// reading taken when the slot became ready otherwise (unused then).
    ready_in_flight: Vec<u32>,
    /// Whether the picker reads `ready_in_flight`.
    dense_in_flight: bool,
    members: Vec<u32>,
    to_poll: Vec<u32>,
    scratch: Vec<u32>,
    queue: Arc<WakeQueue>,
    attention: Arc<AtomicBool>,
    members_epoch: u64,
    weights_epoch: u64,
    counters: Counters,
    ejected: usize,
    panic: bool,
    detection: Option<OutlierDetection>,
    slow_start: Option<SlowStart>,
    ramping: bool,
    next_sweep: u64,
    next_slow_start: u64,
    /// The earliest end of a current ejection (may be early after a removal, which only
    /// costs one idle health update).
    next_lift: u64,
    decay_ns: f64,
    /// The ready slots by load, when the picker asked for it.
    load: Option<LoadOrder>,
    /// The load order's choice for the next pick (set by `refresh_load`).
    load_top: Option<u32>,
    /// The slot called since the last `refresh_load`, whose load (place in the load
    /// order, dense in-flight count) is brought up to date then (a request that
    /// completes before the next pick then moves nothing).
    load_called: Option<u32>,
    /// Slots whose in-flight count went down, when a load order or dense counts are
    /// kept.
    completions: Option<Arc<CompletionQueue>>,
    /// The weights epoch the load heap's scores were computed under.
    load_weights_epoch: u64,
}

/// Entries in the completion queue; a fuller queue costs one re-read of every ready
/// endpoint at the next pick.
const COMPLETION_QUEUE_CAPACITY: usize = 4096;

/// Reads `slot`'s in-flight count, clearing its unseen completions, into the load
/// order and the dense counts (when it is a ready member).
#[inline]
fn learn_load(
    states: &[SlotState],
    metas: &[Meta],
    ready_in_flight: &mut [u32],
    load: &mut Option<LoadOrder>,
    slot: u32,
) {
    let Some(state) = states.get(slot as usize) else {
        return;
    };
    let in_flight = state.stats.take_queued();
    if !state.live {
        return;
    }
    if let Some(position) = state.ready_position() {
        ready_in_flight[position] = dense_count(in_flight);
    }
    if let Some(heap) = load.as_mut() {
        heap.update(slot, in_flight, metas[slot as usize].effective_weight);
    }
}

/// An in-flight count as the dense array holds it (counts never reach `u32::MAX`: the
/// statistics word keeps 32 bits for them).
#[inline]
fn dense_count(in_flight: usize) -> u32 {
    u32::try_from(in_flight).unwrap_or(u32::MAX)
}

impl<K: Hash + Eq, S> EndpointSet<K, S> {
    pub(crate) fn new(
        detection: Option<OutlierDetection>,
        slow_start: Option<SlowStart>,
        breaker: Option<BreakerConfig<()>>,
        load_index: Option<LoadIndex>,
        dense_in_flight: bool,
        decay_ns: f64,
        now: u64,
    ) -> Self {
        let next_sweep = detection
            .as_ref()
            .map_or(u64::MAX, |d| now.saturating_add(super::nanos(d.interval)));
        Self {
            states: Vec::new(),
            metas: Vec::new(),
            services: Vec::new(),
            gates: Vec::new(),
            forwards: Vec::new(),
            breaker,
            events: None,
            wakers: Vec::new(),
            keys: HashMap::new(),
            free: Vec::new(),
            ready: Vec::new(),
            ready_in_flight: Vec::new(),
            dense_in_flight,
            members: Vec::new(),
            to_poll: Vec::new(),
            scratch: Vec::new(),
            queue: Arc::new(WakeQueue::default()),
            attention: Arc::new(AtomicBool::new(false)),
            members_epoch: 0,
            weights_epoch: 0,
            counters: Counters::default(),
            ejected: 0,
            panic: false,
            detection,
            slow_start,
            ramping: false,
            next_sweep,
            next_slow_start: u64::MAX,
            next_lift: u64::MAX,
            decay_ns,
            load: load_index.map(|l| LoadOrder::new(l.per_weight, l.seed)),
            load_top: None,
            load_called: None,
            completions: (load_index.is_some() || dense_in_flight)
                .then(|| Arc::new(CompletionQueue::new(COMPLETION_QUEUE_CAPACITY))),
            load_weights_epoch: 0,
        }
    }

    // ----- views ---------------------------------------------------------------------

    #[inline]
    pub(crate) fn candidates<'a>(&'a self, clock: &'a Clock, now: Option<u64>) -> Candidates<'a> {
        Candidates {
            ready: &self.ready,
            ready_in_flight: self.dense_in_flight.then_some(&self.ready_in_flight[..]),
            members: &self.members,
            states: &self.states,
            metas: &self.metas,
            clock,
            now,
            members_epoch: self.members_epoch,
            weights_epoch: self.weights_epoch,
            least_loaded: self.load_top,
        }
    }

    /// Brings the ready endpoints' loads up to date with the requests that completed
    /// since the last pick and with the last call: the load order (also with weight
    /// changes, when it depends on weights), which then chooses the least-loaded
    /// endpoint for the next pick, and the dense in-flight counts.
    #[inline]
    pub(crate) fn refresh_load(&mut self) {
        let Some(queue) = self.completions.as_ref() else {
            return;
        };
        self.load_top = None;
        let called = self.load_called.take();
        let reweigh = self.load.as_ref().is_some_and(LoadOrder::per_weight)
            && self.load_weights_epoch != self.weights_epoch;
        if queue.take_overflow() || reweigh {
            // Re-read everything: drain the queue, clear every flag, rescore every
            // ready slot.
            while queue.pop().is_some() {}
            for &slot in &self.members {
                self.states[slot as usize].stats.take_queued();
            }
            for (position, &slot) in self.ready.iter().enumerate() {
                let in_flight = self.states[slot as usize].stats.in_flight();
                self.ready_in_flight[position] = dense_count(in_flight);
                if let Some(heap) = self.load.as_mut() {
                    heap.set(slot, in_flight, self.metas[slot as usize].effective_weight);
                }
            }
            self.load_weights_epoch = self.weights_epoch;
            self.load_top = self.load.as_mut().and_then(LoadOrder::choose);
            return;
        }
        // Bounded, so producers that keep pushing cannot hold the balancer here.
        for _ in 0..COMPLETION_QUEUE_CAPACITY {
            let Some(slot) = queue.pop() else { break };
            learn_load(
                &self.states,
                &self.metas,
                &mut self.ready_in_flight,
                &mut self.load,
                slot,
            );
        }
        if let Some(slot) = called {
            // Clears the mark `begin` left, so later completions queue the slot again.
            learn_load(
                &self.states,
                &self.metas,
                &mut self.ready_in_flight,
                &mut self.load,
                slot,
            );
        }
        self.load_top = self.load.as_mut().and_then(LoadOrder::choose);
    }

    #[inline]
    pub(crate) fn ready_len(&self) -> usize {
        self.ready.len()
    }

    pub(crate) fn member_count(&self) -> usize {
        self.members.len()
    }

    pub(crate) fn ejected_count(&self) -> usize {
        self.ejected
    }

    pub(crate) fn in_panic(&self) -> bool {
        self.panic
    }

    pub(crate) fn counters(&self) -> Counters {
        self.counters
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.members
            .iter()
            .map(|&s| self.states[s as usize].stats.in_flight())
            .sum()
    }

    pub(crate) fn queue(&self) -> &WakeQueue {
        &self.queue
    }

    pub(crate) fn id_of(&self, key: &K) -> Option<EndpointId> {
        let slot = *self.keys.get(key)?;
        Some(EndpointId::new(slot, self.metas[slot as usize].generation))
    }

    /// The handle of the circuit breaker of the member with key `key`.
    pub(crate) fn breaker_of(&self, key: &K) -> Option<BreakerHandle> {
        let slot = *self.keys.get(key)?;
        self.gates[slot as usize].as_ref().map(GateCore::handle)
    }

    /// The handle of the circuit breaker of member `id`.
    pub(crate) fn breaker_of_id(&self, id: EndpointId) -> Option<BreakerHandle> {
        self.meta(id)?;
        self.gates[id.slot()].as_ref().map(GateCore::handle)
    }

    pub(crate) fn meta(&self, id: EndpointId) -> Option<&Meta> {
        let m = self.metas.get(id.slot())?;
        (self.states[id.slot()].live && m.generation == id.generation()).then_some(m)
    }

    // ----- membership ----------------------------------------------------------------

    /// Inserts an endpoint, or replaces the service and weight of the one with this key
    /// (keeping its statistics, ejection history, slow-start age and circuit).
    pub(crate) fn upsert(&mut self, key: K, key_hash: u64, service: S, weight: u32, now: u64) {
        let weight = weight.max(1);
        if let Some(&slot) = self.keys.get(&key) {
            let i = slot as usize;
            // The old service is dropped here; its in-flight requests finish on their own.
            self.services[i] = Some(service);
            let effective = self.effective(weight, self.metas[i].added_at, now);
            self.states[i].readiness = Readiness::Unpolled;
            let m = &mut self.metas[i];
            if m.weight != weight {
                m.weight = weight;
                m.effective_weight = effective;
                self.weights_epoch += 1;
            }
            self.sync_ready(slot);
            self.push_to_poll(slot);
            return;
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                let slot = self.metas.len() as u32;
                self.wakers.push(SlotWaker::new(slot, self.queue.clone()));
                self.services.push(None);
                self.gates.push(None);
                self.forwards.push(None);
                self.states.push(SlotState {
                    stats: self.new_stats(slot),
                    ready_pos: NONE,
                    readiness: Readiness::Unpolled,
                    in_to_poll: false,
                    live: false,
                });
                self.metas.push(Meta {
                    generation: 0,
                    weight: 1,
                    effective_weight: 1.0,
                    added_at: 0,
                    key_hash: 0,
                    member_pos: NONE,
                    ejection: EjectionRecord::default(),
                });
                slot
            }
        };
        let stats = self.new_stats(slot);
        let effective_weight = self.effective(weight, now, now);
        let member_pos = self.members.len() as u32;
        let state = &mut self.states[slot as usize];
        state.live = true;
        state.stats = stats;
        state.readiness = Readiness::Unpolled;
        state.ready_pos = NONE;
        let m = &mut self.metas[slot as usize];
        m.weight = weight;
        m.effective_weight = effective_weight;
        m.added_at = now;
        m.key_hash = key_hash;
        m.member_pos = member_pos;
        m.ejection = EjectionRecord::default();
        self.services[slot as usize] = Some(service);
        let (gate, forward) = self.new_gate(&key);
        self.gates[slot as usize] = gate;
        self.forwards[slot as usize] = forward;
        self.members.push(slot);
        self.keys.insert(key, slot);
        self.members_epoch += 1;
        self.weights_epoch += 1;
        if let Some(ss) = &self.slow_start {
            if !self.ramping {
                self.ramping = true;
                self.next_slow_start = now.saturating_add(ss.step_nanos());
            }
        }
        self.push_to_poll(slot);
        self.refresh_panic();
    }

    pub(crate) fn remove_key(&mut self, key: &K) {
        if let Some(slot) = self.keys.remove(key) {
            self.vacate(slot);
        }
    }

    fn remove_slot(&mut self, slot: u32) {
        self.keys.retain(|_, s| *s != slot);
        self.vacate(slot);
    }

    fn vacate(&mut self, slot: u32) {
        let i = slot as usize;
        self.services[i] = None;
        // Nothing the old circuit does is reported under the key any more (a handle
        // may keep it alive).
        if let Some(forward) = self.forwards[i].take() {
            forward.detach();
        }
        // Dropping the gate gives back a probe permit it held.
        self.gates[i] = None;
        self.states[i].live = false;
        let m = &mut self.metas[i];
        // A new generation at once: ids held by pickers stop resolving now, not at reuse.
        m.generation = m.generation.wrapping_add(1);
        let was_ejected = m.ejection.is_ejected();
        m.ejection = EjectionRecord::default();
        let member_pos = std::mem::replace(&mut m.member_pos, NONE) as usize;
        self.take_out_of_ready(slot);
        self.members.swap_remove(member_pos);
        if let Some(&moved) = self.members.get(member_pos) {
            self.metas[moved as usize].member_pos = member_pos as u32;
        }
        if was_ejected {
            self.ejected -= 1;
        }
        self.free.push(slot);
        self.members_epoch += 1;
        self.weights_epoch += 1;
        self.refresh_panic();
    }

    /// A new member's circuit breaker gate and its event forward (bound to the keyed
    /// events if someone already listens), when endpoint breakers are on.
    fn new_gate(&self, key: &K) -> (Option<GateCore>, Option<Arc<EndpointForward>>) {
        let Some(breaker) = &self.breaker else {
            return (None, None);
        };
        let forward = Arc::new(EndpointForward::default());
        if let Some(events) = &self.events {
            forward.bind(events.0.clone().forward(key));
        }
        let mut config = breaker.clone();
        config.on_event = Some(EventCallback::forwarding(
            breaker.on_event.as_ref(),
            forward.clone(),
        ));
        (Some(GateCore::new(&config)), Some(forward))
    }

    /// The keyed endpoint events, made by `make` (given the streams' buffer size) on the
    /// first call and bound to every member's circuit, as to every later one.
    pub(crate) fn keyed_events(
        &mut self,
        make: impl FnOnce(usize) -> Arc<dyn KeyedEvents<K>>,
    ) -> &Arc<dyn KeyedEvents<K>> {
        if self.events.is_none() {
            let events = make(self.event_buffer());
            self.install_keyed_events(events);
        }
        &self.events.as_ref().expect("made above").0
    }

    /// How many events each keyed stream buffers: as many as each circuit's.
    pub(crate) fn event_buffer(&self) -> usize {
        self.breaker.as_ref().map_or(64, |b| b.event_buffer)
    }

    /// Binds `events` to every member's circuit, and to every later one.
    pub(crate) fn install_keyed_events(&mut self, events: Arc<dyn KeyedEvents<K>>) {
        for (key, &slot) in &self.keys {
            if let Some(forward) = &self.forwards[slot as usize] {
                forward.bind(events.clone().forward(key));
            }
        }
        self.events = Some(HubOwner(events));
    }

    fn new_stats(&self, slot: u32) -> Arc<EndpointStats> {
        let threshold = self
            .detection
            .as_ref()
            .map_or(0, |d| d.consecutive_failures);
        Arc::new(EndpointStats::new(
            self.decay_ns,
            threshold,
            self.attention.clone(),
            self.completions.as_ref().map(|q| (q.clone(), slot)),
        ))
    }

    fn effective(&self, weight: u32, added_at: u64, now: u64) -> f64 {
        match &self.slow_start {
            Some(ss) => weight as f64 * ss.factor(now.saturating_sub(added_at)),
            None => weight as f64,
        }
    }

    // ----- readiness -----------------------------------------------------------------

    fn push_to_poll(&mut self, slot: u32) {
        let state = &mut self.states[slot as usize];
        if !state.in_to_poll {
            state.in_to_poll = true;
            self.to_poll.push(slot);
        }
    }

    /// Puts `slot` into, or takes it out of, the ready list so that the list holds
    /// exactly the reserved, pickable members.
    fn sync_ready(&mut self, slot: u32) {
        let state = &self.states[slot as usize];
        // With nothing ejected (the usual case) the ejection record is not read: it
        // lives in the colder `Meta`.
        let want = state.live
            && state.readiness == Readiness::Reserved
            && (self.panic
                || self.ejected == 0
                || !self.metas[slot as usize].ejection.is_ejected());
        match (want, state.ready_pos != NONE) {
            (true, false) => {
                let in_flight = state.stats.in_flight();
                if let Some(heap) = self.load.as_mut() {
                    heap.set(slot, in_flight, self.metas[slot as usize].effective_weight);
                }
                self.states[slot as usize].ready_pos = self.ready.len() as u32;
                self.ready.push(slot);
                self.ready_in_flight.push(dense_count(in_flight));
            }
            (false, true) => self.take_out_of_ready(slot),
            _ => {}
        }
    }

    fn take_out_of_ready(&mut self, slot: u32) {
        let pos = std::mem::replace(&mut self.states[slot as usize].ready_pos, NONE);
        if pos == NONE {
            return;
        }
        if let Some(heap) = self.load.as_mut() {
            heap.remove(slot);
        }
        self.ready.swap_remove(pos as usize);
        self.ready_in_flight.swap_remove(pos as usize);
        if let Some(&moved) = self.ready.get(pos as usize) {
            self.states[moved as usize].ready_pos = pos;
        }
    }

    /// Polls every endpoint that was inserted, called or woken since the last time.
    /// Endpoints whose `poll_ready` fails are removed and counted.
    pub(crate) fn poll_endpoints<Req>(&mut self)
    where
        S: Service<Req>,
        S::Error: Into<BoxError>,
    {
        if self.queue.has_woken() {
            let mut woken = std::mem::take(&mut self.scratch);
            self.queue.drain_into(&mut woken);
            for &slot in &woken {
                self.wakers[slot as usize].0.clear();
                let m = &self.states[slot as usize];
                // A stale wake (the endpoint is no longer pending, or the slot changed
                // hands) needs nothing. A gated endpoint that is reserved is polled again:
                // its circuit changed state (it may have opened).
                let gated = self.gates[slot as usize].is_some();
                if m.live
                    && (m.readiness == Readiness::Pending
                        || (gated && m.readiness == Readiness::Reserved))
                {
                    self.push_to_poll(slot);
                }
            }
            woken.clear();
            self.scratch = woken;
        }
        if self.to_poll.is_empty() {
            return;
        }
        let mut polling = std::mem::take(&mut self.scratch);
        std::mem::swap(&mut polling, &mut self.to_poll);
        for &slot in &polling {
            let i = slot as usize;
            self.states[i].in_to_poll = false;
            if !self.states[i].live {
                continue;
            }
            let Some(service) = self.services[i].as_mut() else {
                continue;
            };
            let mut cx = Context::from_waker(&self.wakers[i].1);
            // Without breakers every gate is `None`: skip reading that array (a cache
            // miss per request with many endpoints).
            let gate = if self.breaker.is_some() {
                self.gates[i].as_mut()
            } else {
                None
            };
            if let Some(gate) = gate {
                // An endpoint whose circuit would reject is not ready; the gate wakes
                // the slot when a probe is due or the circuit changes.
                if gate.poll_admissible(&mut cx).is_pending() {
                    self.states[i].readiness = Readiness::Pending;
                    self.sync_ready(slot);
                    continue;
                }
            }
            match service.poll_ready(&mut cx) {
                Poll::Ready(Ok(())) => {
                    self.states[i].readiness = Readiness::Reserved;
                    self.sync_ready(slot);
                }
                Poll::Pending => {
                    self.states[i].readiness = Readiness::Pending;
                    self.sync_ready(slot);
                }
                Poll::Ready(Err(error)) => {
                    let _error: BoxError = error.into();
                    #[cfg(feature = "tracing")]
                    tracing::debug!(slot, error = %_error, "endpoint failed poll_ready; removed");
                    self.counters.removed_on_error += 1;
                    self.remove_slot(slot);
                }
            }
        }
        polling.clear();
        self.scratch = polling;
    }

    /// Admits a call to the slot at ready `position` through its circuit breaker, if it
    /// has one. A circuit that rejects (it changed state since the slot was polled)
    /// takes the slot out of the ready list and queues it for polling, so the caller can
    /// pick again among the rest.
    #[inline]
    pub(crate) fn admit(&mut self, position: usize) -> Result<Option<GateCall>, BreakerOpen> {
        if self.breaker.is_none() {
            return Ok(None);
        }
        let slot = self.ready[position];
        let Some(gate) = self.gates[slot as usize].as_mut() else {
            return Ok(None);
        };
        match gate.admit_call() {
            Ok(call) => Ok(Some(call)),
            Err(open) => {
                self.states[slot as usize].readiness = Readiness::Unpolled;
                self.take_out_of_ready(slot);
                self.push_to_poll(slot);
                Err(open)
            }
        }
    }

    /// Members that are not ejected but whose circuit does not admit every call (open,
    /// half-open, forced open): they count against the ejection cap.
    fn blocked_by_breakers(&self) -> usize {
        if self.breaker.is_none() {
            return 0;
        }
        self.members
            .iter()
            .filter(|&&slot| self.is_blocked(slot))
            .count()
    }

    fn is_blocked(&self, slot: u32) -> bool {
        let i = slot as usize;
        !self.metas[i].ejection.is_ejected()
            && self.gates[i]
                .as_ref()
                .is_some_and(|g| !g.shared().state().admits_all())
    }

    /// The slot at ready `position` takes a call: it stays in the ready list (so the
    /// order is stable) but must be re-polled before the next pick.
    #[inline]
    pub(crate) fn begin_call(&mut self, position: usize) -> (&mut S, Arc<EndpointStats>) {
        let slot = self.ready[position];
        let i = slot as usize;
        self.states[i].readiness = Readiness::Unpolled;
        if !self.states[i].in_to_poll {
            self.states[i].in_to_poll = true;
            self.to_poll.push(slot);
        }
        let stats = self.states[i].stats.clone();
        stats.begin();
        if self.completions.is_some() {
            // At most one call between two refreshes; should there be another, bring the
            // earlier one up to date now.
            if let Some(earlier) = self.load_called.replace(slot) {
                if earlier != slot {
                    learn_load(
                        &self.states,
                        &self.metas,
                        &mut self.ready_in_flight,
                        &mut self.load,
                        earlier,
                    );
                }
            }
        }
        let service = self.services[i]
            .as_mut()
            .expect("a ready slot always holds a service");
        (service, stats)
    }

    // ----- health --------------------------------------------------------------------

    /// Whether anything needs [`update_health`](Self::update_health): outlier
    /// detection (ejections) or slow start is configured.
    pub(crate) fn updates_health(&self) -> bool {
        self.detection.is_some() || self.slow_start.is_some()
    }

    /// The clock reading at which [`update_health`](Self::update_health) next has work.
    pub(crate) fn next_health_update(&self) -> u64 {
        self.next_sweep
            .min(self.next_slow_start)
            .min(self.next_lift)
    }

    /// Applies consecutive-failure ejections, lifts expired ejections, runs the
    /// success-rate check each interval and steps slow start.
    pub(crate) fn update_health(&mut self, now: u64) {
        if self.attention.swap(false, Ordering::AcqRel) {
            self.eject_failing(now);
        }
        // Sweep before lifting: an ejection ending at an interval boundary still counts as
        // ejected for that interval, so its ejection count does not decay at once.
        if now >= self.next_sweep {
            self.sweep(now);
        }
        if now >= self.next_lift {
            self.lift_expired(now);
        }
        if now >= self.next_slow_start {
            self.step_slow_start(now);
        }
    }

    /// Whether a response future asked for a consecutive-failure review.
    #[inline]
    pub(crate) fn attention_raised(&self) -> bool {
        self.attention.load(Ordering::Relaxed)
    }

    /// Ejects `slot` if the cap allows; `blocked` is the number of other members kept
    /// out by their circuit breakers (see [`blocked_by_breakers`](Self::blocked_by_breakers)),
    /// which count against the cap and is updated when `slot` was one of them.
    fn eject(&mut self, slot: u32, now: u64, blocked: &mut usize) -> bool {
        let Some(detection) = &self.detection else {
            return false;
        };
        let was_blocked = self.is_blocked(slot);
        let out = self.ejected + *blocked - usize::from(was_blocked);
        if !detection.may_eject(out, self.members.len()) {
            return false;
        }
        let m = &mut self.metas[slot as usize];
        if m.ejection.is_ejected() {
            return false;
        }
        let until = m.ejection.eject(detection, now);
        #[cfg(feature = "tracing")]
        tracing::debug!(slot, until, "endpoint ejected");
        self.next_lift = self.next_lift.min(until);
        self.ejected += 1;
        if was_blocked {
            *blocked -= 1;
        }
        self.counters.ejections += 1;
        self.sync_ready(slot);
        self.refresh_panic();
        true
    }

    fn eject_failing(&mut self, now: u64) {
        let Some(threshold) = self.detection.as_ref().map(|d| d.consecutive_failures) else {
            return;
        };
        if threshold == 0 {
            return;
        }
        let mut blocked = self.blocked_by_breakers();
        for k in 0..self.members.len() {
            let slot = self.members[k];
            let stats = &self.states[slot as usize].stats;
            if stats.consecutive_failures() >= threshold {
                stats.reset_consecutive_failures();
                self.eject(slot, now, &mut blocked);
            }
        }
    }

    fn lift_expired(&mut self, now: u64) {
        self.next_lift = u64::MAX;
        for k in 0..self.members.len() {
            let slot = self.members[k];
            let m = &mut self.metas[slot as usize];
            match m.ejection.ejected_until {
                Some(until) if until <= now => {
                    m.ejection.ejected_until = None;
                    self.states[slot as usize]
                        .stats
                        .reset_consecutive_failures();
                    self.ejected -= 1;
                    self.sync_ready(slot);
                }
                Some(until) => self.next_lift = self.next_lift.min(until),
                None => {}
            }
        }
        self.refresh_panic();
    }

    fn sweep(&mut self, now: u64) {
        let Some(detection) = self.detection.clone() else {
            self.next_sweep = u64::MAX;
            return;
        };
        self.next_sweep = now.saturating_add(super::nanos(detection.interval));
        let counts: Vec<(u32, u32, u32)> = self
            .members
            .iter()
            .map(|&slot| {
                let m = &mut self.metas[slot as usize];
                if !m.ejection.is_ejected() && m.ejection.times_ejected > 0 {
                    m.ejection.times_ejected -= 1;
                }
                let (ok, failed) = self.states[slot as usize].stats.take_interval();
                (slot, ok, ok.saturating_add(failed))
            })
            .collect();
        let Some(floor) = detection.success_rate_floor(counts.iter().map(|&(_, ok, t)| (ok, t)))
        else {
            return;
        };
        // Worst first, so that the ejection cap keeps the worst out.
        let mut outliers: Vec<(u32, f64)> = counts
            .iter()
            .filter(|&&(_, ok, t)| detection.is_outlier(floor, ok, t))
            .map(|&(slot, ok, t)| (slot, ok as f64 / t as f64))
            .collect();
        outliers.sort_by(|a, b| a.1.total_cmp(&b.1));
        let mut blocked = self.blocked_by_breakers();
        for (slot, _) in outliers {
            self.eject(slot, now, &mut blocked);
        }
    }

    fn step_slow_start(&mut self, now: u64) {
        let Some(ss) = self.slow_start.clone() else {
            self.next_slow_start = u64::MAX;
            return;
        };
        let mut ramping = false;
        let mut changed = false;
        for &slot in &self.members {
            let m = &mut self.metas[slot as usize];
            let age = now.saturating_sub(m.added_at);
            let eff = m.weight as f64 * ss.factor(age);
            if eff != m.effective_weight {
                m.effective_weight = eff;
                changed = true;
            }
            ramping |= age < ss.window_nanos();
        }
        if changed {
            self.weights_epoch += 1;
        }
        self.ramping = ramping;
        self.next_slow_start = if ramping {
            now.saturating_add(ss.step_nanos())
        } else {
            u64::MAX
        };
    }

    fn refresh_panic(&mut self) {
        let Some(detection) = &self.detection else {
            return;
        };
        let members = self.members.len();
        let panic = detection.in_panic(members - self.ejected, members);
        if panic != self.panic {
            self.panic = panic;
            #[cfg(feature = "tracing")]
            tracing::debug!(
                panic,
                members,
                ejected = self.ejected,
                "balancer panic mode"
            );
            for k in 0..self.members.len() {
                let slot = self.members[k];
                self.sync_ready(slot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use proptest::prelude::*;
    use std::future::{ready, Ready};

    /// 0: ready, 1: pending, 2: fails.
    #[derive(Default)]
    struct Switch {
        state: Mutex<(u8, Option<Waker>)>,
    }

    impl Switch {
        fn set(&self, state: u8) {
            let mut g = self.state.lock();
            g.0 = state;
            if let Some(w) = g.1.take() {
                w.wake();
            }
        }
    }

    struct Fake(Arc<Switch>);

    impl Service<()> for Fake {
        type Response = ();
        type Error = std::io::Error;
        type Future = Ready<Result<(), std::io::Error>>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
            let mut g = self.0.state.lock();
            match g.0 {
                0 => Poll::Ready(Ok(())),
                1 => {
                    g.1 = Some(cx.waker().clone());
                    Poll::Pending
                }
                _ => Poll::Ready(Err(std::io::Error::other("down"))),
            }
        }

        fn call(&mut self, _: ()) -> Self::Future {
            ready(Ok(()))
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u32),
        Remove(u8),
        Set(u8, u8),
        Poll,
        Call(usize),
        End(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..12u8, 1..5u32).prop_map(|(k, w)| Op::Insert(k, w)),
            (0..12u8).prop_map(Op::Remove),
            (
                0..12u8,
                prop_oneof![4 => Just(0u8), 3 => Just(1u8), 1 => Just(2u8)]
            )
                .prop_map(|(k, s)| Op::Set(k, s)),
            Just(Op::Poll),
            any::<usize>().prop_map(Op::Call),
            any::<usize>().prop_map(Op::End),
        ]
    }

    /// The load index's top is a ready slot with the least in flight, and the dense
    /// counts (when kept) are every ready slot's count.
    fn check_load(set: &mut EndpointSet<u8, Fake>) {
        set.refresh_load();
        let clock = Clock::manual().0;
        let candidates = set.candidates(&clock, None);
        assert_eq!(set.ready_in_flight.len(), set.ready.len());
        for (pos, &slot) in set.ready.iter().enumerate() {
            let exact = set.states[slot as usize].stats.in_flight();
            assert_eq!(candidates.in_flight(pos), exact, "slot {slot} at {pos}");
            assert_eq!(candidates.get(pos).in_flight(), exact);
            if set.dense_in_flight {
                assert_eq!(set.ready_in_flight[pos] as usize, exact);
            }
        }
        if set.load.is_none() {
            return;
        }
        let top = candidates.least_loaded();
        let min = set
            .ready
            .iter()
            .map(|&s| set.states[s as usize].stats.in_flight())
            .min();
        match (top, min) {
            (None, None) => {}
            (Some(pos), Some(min)) => {
                let slot = set.ready[pos];
                assert_eq!(set.states[slot as usize].stats.in_flight(), min);
            }
            other => panic!("load index and ready list disagree: {other:?}"),
        }
    }

    fn check(set: &EndpointSet<u8, Fake>, after_poll: bool) {
        for (pos, &slot) in set.ready.iter().enumerate() {
            let m = &set.states[slot as usize];
            assert!(m.live, "ready slot {slot} is not a member");
            assert_eq!(m.ready_pos as usize, pos);
            assert!(set.services[slot as usize].is_some());
            if after_poll {
                assert_eq!(
                    m.readiness,
                    Readiness::Reserved,
                    "unreserved slot {slot} pickable"
                );
            }
        }
        for (pos, &slot) in set.members.iter().enumerate() {
            assert_eq!(set.metas[slot as usize].member_pos as usize, pos);
            let m = &set.states[slot as usize];
            if after_poll && m.readiness == Readiness::Reserved {
                assert!(
                    m.ready_position().is_some(),
                    "reserved slot {slot} not pickable"
                );
            }
        }
        assert_eq!(set.members.len(), set.keys.len());
        for (&k, &slot) in &set.keys {
            assert!(
                set.states[slot as usize].live,
                "key {k} maps to a vacant slot"
            );
        }
    }

    proptest! {
        #[test]
        fn ready_list_always_holds_exactly_the_reserved_members(
            ops in prop::collection::vec(op(), 1..200),
            indexed in any::<bool>(),
            dense in any::<bool>(),
        ) {
            let index = indexed.then(|| LoadIndex::in_flight(3));
            let mut set: EndpointSet<u8, Fake> =
                EndpointSet::new(None, None, None, index, dense, 1e9, 0);
            let mut switches: std::collections::HashMap<u8, Arc<Switch>> = Default::default();
            let mut held = Vec::new();
            for op in ops {
                let mut polled = false;
                match op {
                    Op::Insert(k, w) => {
                        let sw = switches.entry(k).or_default().clone();
                        set.upsert(k, k as u64, Fake(sw), w, 0);
                    }
                    Op::Remove(k) => set.remove_key(&k),
                    Op::Set(k, s) => {
                        if let Some(sw) = switches.get(&k) {
                            sw.set(s);
                        }
                    }
                    Op::Poll => {
                        set.poll_endpoints::<()>();
                        polled = true;
                    }
                    Op::Call(i) => {
                        set.poll_endpoints::<()>();
                        if set.ready_len() > 0 {
                            let pos = i % set.ready_len();
                            let (svc, stats) = set.begin_call(pos);
                            drop(svc.call(()));
                            held.push(stats);
                        }
                    }
                    Op::End(i) => {
                        if !held.is_empty() {
                            let n = held.len();
                            held.swap_remove(i % n).end();
                        }
                    }
                }
                check(&set, polled);
                check_load(&mut set);
            }
            for s in held.drain(..) {
                s.end();
            }
            prop_assert_eq!(set.in_flight(), 0);
        }
    }
}
