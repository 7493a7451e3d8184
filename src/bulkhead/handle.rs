//! [`BulkheadHandle`]: observe and resize a running bulkhead.

use std::fmt;
use std::sync::Arc;

use super::permits::Permits;
use crate::error::ConfigError;

/// A handle on a bulkhead, from [`Bulkhead::handle`](super::Bulkhead::handle) or
/// [`BulkheadLayer::handle`](super::BulkheadLayer::handle). Cheap to clone; every clone
/// sees the same bulkhead. Readings are instantaneous snapshots of counters other threads
/// are changing.
#[derive(Clone)]
pub struct BulkheadHandle {
    permits: Arc<Permits>,
}

impl BulkheadHandle {
    pub(crate) fn new(permits: Arc<Permits>) -> Self {
        BulkheadHandle { permits }
    }

    /// Permits held now: calls admitted and not yet finished (or dropped), including
    /// queued calls a permit was handed to but that have not run yet. May exceed
    /// [`capacity`](Self::capacity) just after the capacity was lowered.
    ///
    /// Computed as the capacity minus the free permits, summed over the bulkhead's shards
    /// (a few dozen loads at most); a permit another thread is moving between a shard and
    /// the shared pool counts as in use for that instant.
    pub fn in_use(&self) -> usize {
        self.permits.in_use()
    }

    /// The current maximum number of concurrent calls.
    pub fn capacity(&self) -> usize {
        self.permits.capacity()
    }

    /// Calls queued for a permit now (always zero in fail-fast mode).
    pub fn waiting(&self) -> usize {
        self.permits.waiting()
    }

    /// Calls rejected with [`BulkheadFull`](crate::error::BulkheadFull) since the bulkhead
    /// was made, whether they failed fast or after waiting.
    pub fn rejected(&self) -> u64 {
        self.permits.rejected()
    }

    /// Changes the maximum number of concurrent calls at run time.
    ///
    /// Growing admits queued calls at once, head first. Shrinking revokes nothing: calls
    /// in flight finish, and new ones are admitted only once `in_use` is below the new
    /// capacity.
    ///
    /// # Errors
    /// A [`ConfigError`] naming `set_capacity` if `capacity` is zero; the capacity is then
    /// left unchanged.
    pub fn set_capacity(&self, capacity: usize) -> Result<(), ConfigError> {
        if capacity == 0 {
            return Err(ConfigError::new(
                "set_capacity",
                "must be greater than zero",
            ));
        }
        self.permits.set_capacity(capacity);
        Ok(())
    }
}

impl fmt::Debug for BulkheadHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BulkheadHandle")
            .field(&self.permits)
            .finish()
    }
}
