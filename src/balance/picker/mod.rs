//! Choosing the endpoint for one request.
//!
//! A [`Picker`] is asked once per request, from the balancer's `call`, to choose one of the
//! endpoints that are ready right now. It sees them through [`Candidates`]: a dense,
//! read-only view (no allocation, no copying) of the ready endpoints with their live
//! statistics, plus the full member list for pickers that keep their own tables. The
//! picker returns a position in `0..candidates.len()`.
//!
//! Built-in pickers, one per file:
//!
//! | picker | chooses | cost per pick |
//! |---|---|---|
//! | [`RoundRobin`] | the next ready endpoint in turn | O(1) |
//! | [`WeightedRoundRobin`] | a smooth weighted rotation (5:1:1 gives `a a a b c a a`) | O(1) when most endpoints are ready |
//! | [`PowerOfTwoChoices`] | the cheaper of two random endpoints (in-flight or peak-EWMA cost) | O(1) |
//! | [`LeastConnections`] | the fewest in flight (optionally per unit of weight), ties at random | O(1) pick, O(log ready) per load change |
//! | [`Random`] | uniformly, or in proportion to weight | O(1) |
//! | [`ConsistentHash`] | by the request's hash key on a ring with virtual nodes | O(log members) |
//!
//! # Writing a picker
//!
//! ```
//! use palisade::balance::{Candidates, Picker};
//!
//! /// Sends every request to the ready endpoint with the highest weight.
//! struct Heaviest;
//!
//! impl Picker for Heaviest {
//!     fn pick(&mut self, candidates: &Candidates<'_>, _key: Option<u64>) -> usize {
//!         (0..candidates.len())
//!             .max_by_key(|&i| candidates.get(i).weight())
//!             .unwrap_or(0)
//!     }
//! }
//! ```
//!
//! Pickers that precompute a table over the members (a weighted schedule, a hash ring)
//! rebuild it when [`Candidates::members_epoch`] or [`Candidates::weights_epoch`] change,
//! and map a remembered [`EndpointId`] back to a position with
//! [`Candidates::position`], which returns `None` for an endpoint that is not ready or no
//! longer a member.

mod consistent_hash;
mod least_connections;
mod p2c;
mod random;
mod round_robin;
mod weighted_round_robin;

pub use consistent_hash::ConsistentHash;
pub use least_connections::LeastConnections;
pub use p2c::{Cost, PowerOfTwoChoices};
pub use random::Random;
pub use round_robin::RoundRobin;
pub use weighted_round_robin::WeightedRoundRobin;

use std::fmt;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

use super::endpoint::EndpointId;
use super::set::{Meta, SlotState};
use crate::clock::Clock;

/// Chooses the endpoint for one request. See the [module docs](self).
pub trait Picker {
    /// Returns the position, in `0..candidates.len()`, of the endpoint that takes this
    /// request. `key` is the request's hash key when the balancer was given a
    /// [`HashKey`](super::HashKey) extractor.
    ///
    /// Called only when at least one endpoint is ready. A position out of range is
    /// reduced modulo `candidates.len()` rather than trusted.
    fn pick(&mut self, candidates: &Candidates<'_>, key: Option<u64>) -> usize;

    /// Whether this picker reads [`Endpoint::latency`]. When no picker does (and outlier
    /// detection is off), the balancer does not read the clock per request.
    fn uses_latency(&self) -> bool {
        false
    }

    /// Asks the balancer to keep the ready endpoints ordered by load, so that
    /// [`Candidates::least_loaded`] answers in O(1). Asked once, when the balancer is
    /// built. The index costs an O(log n) update whenever an endpoint's load or
    /// readiness changes, so only pickers that read it should ask.
    fn load_index(&mut self) -> Option<LoadIndex> {
        None
    }

    /// Whether this picker reads in-flight counts ([`Candidates::in_flight`],
    /// [`Endpoint::in_flight`]) on every pick. Asked once, when the balancer is built.
    /// When it does, the balancer keeps the ready endpoints' counts in one dense array
    /// beside the ready list, learning completions through a lock-free queue drained
    /// before each pick, so that reading a count touches that array only (not the
    /// endpoint's own state) however many endpoints there are. That costs a queue push
    /// per completion the balancer has not seen yet, so only pickers that read the
    /// counts should ask. Counts are exact either way.
    fn uses_in_flight(&self) -> bool {
        false
    }
}

impl<P: Picker + ?Sized> Picker for Box<P> {
    fn pick(&mut self, candidates: &Candidates<'_>, key: Option<u64>) -> usize {
        (**self).pick(candidates, key)
    }

    fn uses_latency(&self) -> bool {
        (**self).uses_latency()
    }

    fn load_index(&mut self) -> Option<LoadIndex> {
        (**self).load_index()
    }

    fn uses_in_flight(&self) -> bool {
        (**self).uses_in_flight()
    }
}

/// An ordering of the ready endpoints by load that a [`Picker`] asks the balancer to
/// maintain (see [`Picker::load_index`]).
///
/// - [`in_flight`](Self::in_flight): endpoints in buckets by in-flight count. Keeping
///   it costs O(1) per change of an endpoint's count; the choice is uniformly random
///   among the endpoints with the fewest in flight (drawn afresh for every pick from a
///   generator seeded with `seed`).
/// - [`in_flight_per_weight`](Self::in_flight_per_weight): an indexed min-heap by
///   `(in flight + 1) / effective weight`, O(log n) per change (and a rescore of every
///   ready endpoint when weights change, e.g. at each slow-start step). Ties are broken
///   by a random tag drawn each time an endpoint's load is set: in a fresh tie every
///   tied endpoint is equally likely to come first, but successive picks among a
///   standing tie are not independent draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadIndex {
    pub(crate) per_weight: bool,
    pub(crate) seed: u64,
}

impl LoadIndex {
    /// Orders by in-flight count; ties broken by tags drawn from `seed`.
    pub fn in_flight(seed: u64) -> Self {
        Self {
            per_weight: false,
            seed,
        }
    }

    /// Orders by `(in flight + 1) / effective weight`; ties broken by tags drawn from
    /// `seed`.
    pub fn in_flight_per_weight(seed: u64) -> Self {
        Self {
            per_weight: true,
            seed,
        }
    }
}

/// The ready endpoints, as a picker sees them. See the [module docs](self).
pub struct Candidates<'a> {
    pub(crate) ready: &'a [u32],
    /// The in-flight count of each ready endpoint, by position, when the balancer keeps
    /// them (see [`Picker::uses_in_flight`]).
    pub(crate) ready_in_flight: Option<&'a [u32]>,
    pub(crate) members: &'a [u32],
    pub(crate) states: &'a [SlotState],
    pub(crate) metas: &'a [Meta],
    pub(crate) clock: &'a Clock,
    /// The clock reading taken by `call` when it times the request anyway.
    pub(crate) now: Option<u64>,
    pub(crate) members_epoch: u64,
    pub(crate) weights_epoch: u64,
    /// The top of the balancer's load index, when it keeps one.
    pub(crate) least_loaded: Option<u32>,
}

impl<'a> Candidates<'a> {
    /// The position of the least-loaded ready endpoint by the balancer's
    /// [`LoadIndex`], or `None` when the balancer keeps none (the picker did not ask for
    /// one through [`Picker::load_index`]). O(1). Loads are current as of this pick:
    /// every request that completed before the pick began is accounted for.
    #[inline]
    pub fn least_loaded(&self) -> Option<usize> {
        self.states[self.least_loaded? as usize].ready_position()
    }

    /// How many endpoints are ready.
    #[inline]
    pub fn len(&self) -> usize {
        self.ready.len()
    }

    /// Whether no endpoint is ready (never the case inside [`Picker::pick`]).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.ready.is_empty()
    }

    /// The ready endpoint at `position`.
    ///
    /// # Panics
    /// If `position >= self.len()`, like slice indexing.
    #[inline]
    pub fn get(&self, position: usize) -> Endpoint<'a> {
        let slot = self.ready[position];
        Endpoint {
            slot,
            state: &self.states[slot as usize],
            meta: &self.metas[slot as usize],
            clock: self.clock,
            in_flight: self.ready_in_flight.map(|counts| counts[position]),
        }
    }

    /// The number of requests in flight on the ready endpoint at `position`: the same
    /// as `self.get(position).in_flight()`. When the picker
    /// [uses in-flight counts](Picker::uses_in_flight) this reads one dense array
    /// indexed by position, and nothing else.
    ///
    /// # Panics
    /// If `position >= self.len()`, like slice indexing.
    #[inline]
    pub fn in_flight(&self, position: usize) -> usize {
        match self.ready_in_flight {
            Some(counts) => counts[position] as usize,
            None => self.states[self.ready[position] as usize].stats.in_flight(),
        }
    }

    /// The ready endpoints in position order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Endpoint<'a>> + '_ {
        (0..self.len()).map(move |i| self.get(i))
    }

    /// The position of endpoint `id` among the ready ones, or `None` when it is not ready
    /// right now or is no longer a member (a stale id never resolves to another endpoint).
    #[inline]
    pub fn position(&self, id: EndpointId) -> Option<usize> {
        let state = self.states.get(id.slot())?;
        if !state.live || self.metas[id.slot()].generation != id.generation() {
            return None;
        }
        state.ready_position()
    }

    /// How many endpoints are members, ready or not.
    pub fn member_count(&self) -> usize {
        self.members.len()
    }

    /// Every member, ready or not (use [`Endpoint::is_ready`] to tell).
    pub fn members(&self) -> impl ExactSizeIterator<Item = Endpoint<'a>> + '_ {
        self.members.iter().map(move |&slot| {
            let state = &self.states[slot as usize];
            Endpoint {
                slot,
                state,
                meta: &self.metas[slot as usize],
                clock: self.clock,
                in_flight: self
                    .ready_in_flight
                    .zip(state.ready_position())
                    .map(|(counts, position)| counts[position]),
            }
        })
    }

    /// A counter that changes whenever an endpoint joins or leaves.
    #[inline]
    pub fn members_epoch(&self) -> u64 {
        self.members_epoch
    }

    /// A counter that changes whenever a member's weight or effective weight changes.
    #[inline]
    pub fn weights_epoch(&self) -> u64 {
        self.weights_epoch
    }

    /// The balancer's clock reading now, in nanoseconds (read once per request when the
    /// balancer times requests, so repeated calls may return the same value).
    #[inline]
    pub fn now(&self) -> u64 {
        self.now.unwrap_or_else(|| self.clock.now())
    }
}

impl fmt::Debug for Candidates<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Candidates")
            .field("ready", &self.len())
            .field("members", &self.member_count())
            .finish()
    }
}

/// One endpoint with its live statistics, as a picker sees it.
#[derive(Clone, Copy)]
pub struct Endpoint<'a> {
    slot: u32,
    state: &'a SlotState,
    meta: &'a Meta,
    clock: &'a Clock,
    /// The count from the balancer's dense array, when it keeps one and this endpoint
    /// is ready.
    in_flight: Option<u32>,
}

impl Endpoint<'_> {
    /// The endpoint's id.
    #[inline]
    pub fn id(&self) -> EndpointId {
        EndpointId::new(self.slot, self.meta.generation)
    }

    /// Requests sent to it and not yet completed or dropped. Inside a pick, requests
    /// that completed before the pick began are not counted; one completing during the
    /// pick may or may not be.
    #[inline]
    pub fn in_flight(&self) -> usize {
        match self.in_flight {
            Some(count) => count as usize,
            None => self.state.stats.in_flight(),
        }
    }

    /// Its weight as discovered (1 when the source has none).
    #[inline]
    pub fn weight(&self) -> u32 {
        self.meta.weight
    }

    /// Its weight after slow start: ramps from a fraction of [`weight`](Self::weight) up to
    /// the full weight over the slow-start window after the endpoint joined.
    #[inline]
    pub fn effective_weight(&self) -> f64 {
        self.meta.effective_weight
    }

    /// The [`stable_hash`](crate::balance::stable_hash) of the endpoint's discovery key:
    /// the same in every balancer, process and build (for hash rings that must agree
    /// between instances).
    #[inline]
    pub fn key_hash(&self) -> u64 {
        self.meta.key_hash
    }

    /// Whether it is ready now (always true for endpoints from [`Candidates::get`]).
    #[inline]
    pub fn is_ready(&self) -> bool {
        self.state.ready_position().is_some()
    }

    /// Its position among the ready endpoints, if ready.
    #[inline]
    pub fn position(&self) -> Option<usize> {
        self.state.ready_position()
    }

    /// The time since it joined the balancer (reads the clock).
    pub fn age(&self) -> Duration {
        Duration::from_nanos(self.clock.now().saturating_sub(self.meta.added_at))
    }

    /// Its peak-EWMA latency decayed to now (reads the clock); `None` before the first
    /// response. Recorded only when the balancer's picker [uses latency](Picker::uses_latency).
    pub fn latency(&self) -> Option<Duration> {
        self.latency_nanos_at(self.clock.now())
            .map(|ns| Duration::from_nanos(ns as u64))
    }

    /// [`latency`](Self::latency) in nanoseconds, decayed to the clock reading `now`, for
    /// pickers that read the clock once per pick.
    #[inline]
    pub fn latency_nanos_at(&self, now: u64) -> Option<f64> {
        self.state.stats.latency_at(now)
    }
}

impl fmt::Debug for Endpoint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("id", &self.id())
            .field("in_flight", &self.in_flight())
            .field("weight", &self.weight())
            .field("effective_weight", &self.effective_weight())
            .finish()
    }
}

/// The small, fast, seedable generator the random pickers share.
///
/// A clone of a generator seeded from the OS draws a fresh seed, so balancers made by one
/// layer do not make the same "random" choices in lockstep; a clone of an explicitly
/// seeded generator repeats its sequence, for reproducible tests.
#[derive(Debug)]
pub(crate) struct PickRng {
    rng: SmallRng,
    seeded: bool,
}

impl Clone for PickRng {
    fn clone(&self) -> Self {
        if self.seeded {
            PickRng {
                rng: self.rng.clone(),
                seeded: true,
            }
        } else {
            PickRng::from_entropy()
        }
    }
}

impl PickRng {
    pub(crate) fn seeded(seed: u64) -> Self {
        PickRng {
            rng: SmallRng::seed_from_u64(seed),
            seeded: true,
        }
    }

    pub(crate) fn from_entropy() -> Self {
        PickRng {
            rng: SmallRng::from_rng(&mut rand::rng()),
            seeded: false,
        }
    }

    /// A uniform integer in `0..n` (`n > 0`), by multiply-shift (bias below 2^-32 for
    /// any `n` a balancer can hold).
    #[inline]
    pub(crate) fn below(&mut self, n: usize) -> usize {
        ((self.rng.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// A uniform 64-bit number (to seed another generator).
    #[inline]
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// A uniform float in `[0, 1)`.
    #[inline]
    pub(crate) fn unit(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// SplitMix64's finaliser: spreads nearby integers over the whole 64-bit range.
#[inline]
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
