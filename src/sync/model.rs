//! loom's models of the [facade](super)'s primitives, with the interfaces of the `std`
//! and `parking_lot` ones they stand for.

pub(crate) use loom::hint::spin_loop;
pub(crate) use loom::thread::yield_now;
use std::sync::atomic::Ordering;

/// Declares a wrapper of a loom atomic whose `SeqCst` `load` is a read-modify-write.
///
/// Every atomic access of the bulkhead's permits is `SeqCst`, and a program whose atomics
/// are all `SeqCst` (and which has no data race) behaves as some interleaving of its
/// threads: each load reads the latest value. loom explores the interleavings, but lets a
/// `SeqCst` load read an older value than the latest store (loom does not model the
/// single total order of `SeqCst` operations; tokio-rs/loom#180), so it would report
/// executions, such as a store-buffering lost wake-up, that cannot happen. A
/// read-modify-write always reads the latest value, so a `SeqCst` load through
/// `fetch_add(0)` makes loom explore exactly the real executions. Weaker loads (the
/// window's try-lock, the breaker's probe slots) are loom's own, which may read any value
/// the memory model allows.
macro_rules! seq_cst_atomic {
    ($name:ident, $int:ty) => {
        #[derive(Debug)]
        pub(crate) struct $name(loom::sync::atomic::$name);

        #[allow(dead_code)] // each type uses some of these
        impl $name {
            pub(crate) fn new(value: $int) -> Self {
                $name(loom::sync::atomic::$name::new(value))
            }

            pub(crate) fn load(&self, order: Ordering) -> $int {
                if order == Ordering::SeqCst {
                    self.0.fetch_add(0, order)
                } else {
                    self.0.load(order)
                }
            }

            pub(crate) fn store(&self, value: $int, order: Ordering) {
                self.0.store(value, order)
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

            pub(crate) fn compare_exchange(
                &self,
                current: $int,
                new: $int,
                success: Ordering,
                failure: Ordering,
            ) -> Result<$int, $int> {
                self.0.compare_exchange(current, new, success, failure)
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
