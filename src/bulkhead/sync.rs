//! The synchronisation primitives the bulkhead's permits are built on: `std`'s atomics,
//! `parking_lot`'s mutex and `std`'s spin and yield hints in every normal build (plain
//! re-exports, so the code compiled is exactly what it would be without this module), and
//! [loom](https://docs.rs/loom)'s models of them when the crate's tests are built with
//! `--cfg palisade_loom`, so that loom can explore every interleaving of a small test.
//!
//! The cfg is the crate's own, not `loom`: tokio and other dependencies change their own
//! code under `cfg(loom)`. Only the crate's unit tests see the loom side
//! (`cfg(all(test, palisade_loom))`); a normal build with the cfg set is a normal build.
//! How to run the model-checking tests is in the permits module's docs.
//!
//! `Arc` is not modelled: the permits only share immutable data through it, and the
//! model tests drop every `Arc` before each execution ends.

#[cfg(not(all(test, palisade_loom)))]
pub(crate) use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize};

#[cfg(not(all(test, palisade_loom)))]
pub(crate) use parking_lot::Mutex;

#[cfg(not(all(test, palisade_loom)))]
pub(crate) use std::hint::spin_loop;

#[cfg(not(all(test, palisade_loom)))]
pub(crate) use std::thread::yield_now;

#[cfg(all(test, palisade_loom))]
pub(crate) use self::model::*;

#[cfg(all(test, palisade_loom))]
mod model {
    pub(crate) use loom::hint::spin_loop;
    pub(crate) use loom::thread::yield_now;
    use std::sync::atomic::Ordering;

    /// Declares a wrapper of a loom atomic whose `load` is a read-modify-write.
    ///
    /// Every atomic access of the permits is `SeqCst`, and a program whose atomics are all
    /// `SeqCst` (and which has no data race) behaves as some interleaving of its threads:
    /// each load reads the latest value. loom explores the interleavings, but lets a
    /// `SeqCst` load read an older value than the latest store (loom does not model the
    /// single total order of `SeqCst` operations; tokio-rs/loom#180), so it would report
    /// executions, such as a store-buffering lost wake-up, that cannot happen. A
    /// read-modify-write always reads the latest value, so loading through
    /// `fetch_add(0)` makes loom explore exactly the real executions.
    macro_rules! seq_cst_atomic {
        ($name:ident, $int:ty) => {
            pub(crate) struct $name(loom::sync::atomic::$name);

            #[allow(dead_code)] // each type uses some of these
            impl $name {
                pub(crate) fn new(value: $int) -> Self {
                    $name(loom::sync::atomic::$name::new(value))
                }

                pub(crate) fn load(&self, order: Ordering) -> $int {
                    self.0.fetch_add(0, order)
                }

                pub(crate) fn fetch_add(&self, value: $int, order: Ordering) -> $int {
                    self.0.fetch_add(value, order)
                }

                pub(crate) fn fetch_sub(&self, value: $int, order: Ordering) -> $int {
                    self.0.fetch_sub(value, order)
                }

                pub(crate) fn swap(&self, value: $int, order: Ordering) -> $int {
                    self.0.swap(value, order)
                }

                pub(crate) fn compare_exchange_weak(
                    &self,
                    current: $int,
                    new: $int,
                    success: Ordering,
                    failure: Ordering,
                ) -> Result<$int, $int> {
                    self.0.compare_exchange_weak(current, new, success, failure)
                }
            }
        };
    }

    seq_cst_atomic!(AtomicI64, i64);
    seq_cst_atomic!(AtomicU64, u64);
    seq_cst_atomic!(AtomicUsize, usize);

    /// loom's mutex with `parking_lot`'s interface: `lock` returns the guard (no
    /// poisoning).
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Mutex(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
            self.0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        }
    }
}
