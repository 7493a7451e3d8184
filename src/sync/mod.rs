//! The low-level concurrency pieces the window, the breaker and the bulkhead share: one
//! cache-line padding type, one cached CPU count, and one facade over the atomics, locks
//! and hints their lock-free structures are built on, so that those structures can be
//! model-checked with [loom](https://docs.rs/loom) (as tokio's `loom` module does for
//! tokio).
//!
//! - [`CachePadded`] is crossbeam-utils' (already in the build through quanta): a value
//!   aligned and padded to its architecture's false-sharing unit (128 bytes on x86-64 and
//!   aarch64, whose prefetchers pull cache lines in pairs), so that writes to its
//!   neighbours do not invalidate its line.
//! - [`available_parallelism`] asks the OS once per process (on Linux it reads cgroup
//!   files) for the machine's parallelism, which sizes the window's stripes and the
//!   bulkhead's shards.
//! - The atomics ([`AtomicI64`], [`AtomicU64`], [`AtomicUsize`]), the [`Mutex`] and the
//!   [`spin_loop`] and [`yield_now`] hints are plain re-exports of `std`'s and
//!   `parking_lot`'s in every normal build, so the code compiled is exactly what it would
//!   be without this module. In the crate's unit tests built with `--cfg palisade_loom`
//!   they are loom's models instead ([`model`](self) module), and the `loom` test modules
//!   beside each structure explore every interleaving of a few threads. Only what a model
//!   checks goes through the facade: the bulkhead's permits, the window cell's try-lock
//!   and the breaker's half-open probe slots.
//!
//! The cfg is the crate's own, not `loom`: tokio and other dependencies change their own
//! code under `cfg(loom)`. Only the unit tests see the loom side
//! (`cfg(all(test, palisade_loom))`); a normal build with the cfg set is a normal build.
//! Every model runs with
//!
//! ```text
//! RUSTFLAGS="--cfg palisade_loom" LOOM_MAX_PREEMPTIONS=2 \
//!     cargo test --release --target-dir target/loom --lib loom
//! ```
//!
//! (its own target dir, because other RUSTFLAGS invalidate the normal build's cache).
//!
//! `Arc` is not modelled: the structures only share immutable data through it, and the
//! models drop every `Arc` before each execution ends.

use std::sync::OnceLock;

pub(crate) use crossbeam_utils::CachePadded;

/// The machine's parallelism (at least 1), asked of the OS once per process.
pub(crate) fn available_parallelism() -> usize {
    static PARALLELISM: OnceLock<usize> = OnceLock::new();
    *PARALLELISM.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

#[cfg(not(all(test, palisade_loom)))]
pub(crate) use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize};

#[cfg(all(
    not(all(test, palisade_loom)),
    any(feature = "breaker", feature = "bulkhead")
))]
pub(crate) use parking_lot::Mutex;

#[cfg(not(all(test, palisade_loom)))]
pub(crate) use std::hint::spin_loop;

#[cfg(not(all(test, palisade_loom)))]
pub(crate) use std::thread::yield_now;

#[cfg(all(test, palisade_loom))]
mod model;

#[cfg(all(test, palisade_loom))]
pub(crate) use self::model::*;

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn available_parallelism_is_at_least_one_and_stable() {
        let first = available_parallelism();
        assert!(first >= 1);
        assert_eq!(available_parallelism(), first);
    }

    // The window's and the breaker's layouts (and their memory figures) assume a padded
    // value takes whole 128-byte line pairs on the machines palisade is tuned for.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    #[test]
    fn cache_padded_occupies_whole_line_pairs() {
        assert_eq!(std::mem::align_of::<CachePadded<[u64; 8]>>(), 128);
        assert_eq!(std::mem::size_of::<CachePadded<[u64; 8]>>(), 128);
        assert_eq!(std::mem::size_of::<CachePadded<u64>>(), 128);
    }
}
