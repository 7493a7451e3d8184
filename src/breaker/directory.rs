//! How a response future reaches its circuit without holding a reference count on it.
//!
//! A future that held an `Arc` of its circuit would pay two locked read-modify-writes
//! per call, the increment in `call` and the decrement at completion: about 8 ns here,
//! a third of the closed path. Instead every circuit is entered in a process-wide
//! *registry* under a [`CircuitId`] (a slot and the slot's generation), and a future
//! keeps only the id. Each thread keeps a *directory*, slot → (generation, circuit), of
//! the circuits whose calls it has completed: a completion looks its id up there (one
//! thread-local access, one compare), and only a thread's first completion of a circuit
//! goes to the registry (a lock) to fill its entry.
//!
//! **Owners and retirement.** Services, layers, gates and handles hold an
//! [`OwnedCircuit`]; when the last of them is dropped the circuit is *retired*: its slot
//! leaves the registry (the next circuit in that slot gets the next generation, so an
//! old id can never reach it), its event streams end, and a process-wide retirement
//! count moves. A directory compares that count on every lookup and, when it moved,
//! drops its entries of retired circuits, so a retired circuit's memory is freed as
//! soon as every thread that completed one of its calls has completed another breaker
//! call (or has exited). A call still in flight when its circuit is retired counts
//! nothing: nobody can read the circuit any more.
//!
//! **Re-entrancy.** A lookup runs the completion with the thread's directory borrowed.
//! If the completion runs user code (an event callback) that completes another breaker
//! call on the same thread, that inner lookup finds the directory busy and goes to the
//! registry instead; so does a completion on a thread whose directory is already gone
//! (during thread exit).

use std::cell::RefCell;
use std::fmt;
use std::num::NonZeroU32;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::shared::SharedCircuit;

/// A circuit's registry entry: its slot and the slot's generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CircuitId {
    /// The slot's index plus one: the zero niche keeps `Option<CallRecord>` as small as
    /// the record.
    slot: NonZeroU32,
    generation: u32,
}

impl CircuitId {
    #[inline]
    fn index(self) -> usize {
        self.slot.get() as usize - 1
    }

    fn new(index: u32, generation: u32) -> CircuitId {
        CircuitId {
            slot: NonZeroU32::MIN.saturating_add(index),
            generation,
        }
    }
}

struct Registry {
    slots: Vec<RegistrySlot>,
    free: Vec<u32>,
}

struct RegistrySlot {
    generation: u32,
    circuit: Option<Weak<SharedCircuit>>,
}

static REGISTRY: Mutex<Registry> = parking_lot::const_mutex(Registry {
    slots: Vec::new(),
    free: Vec::new(),
});

/// How many circuits have been retired: a directory that saw another count prunes.
static RETIREMENTS: AtomicU64 = AtomicU64::new(0);

impl Registry {
    fn enter(&mut self, circuit: &Arc<SharedCircuit>) -> CircuitId {
        let weak = Some(Arc::downgrade(circuit));
        if let Some(slot) = self.free.pop() {
            let entry = &mut self.slots[slot as usize];
            entry.circuit = weak;
            return CircuitId::new(slot, entry.generation);
        }
        // Fewer than 2^32 - 1 circuits are ever alive at once (each takes kilobytes).
        let slot = self.slots.len() as u32;
        self.slots.push(RegistrySlot {
            generation: 0,
            circuit: weak,
        });
        CircuitId::new(slot, 0)
    }

    fn leave(&mut self, id: CircuitId) {
        let entry = &mut self.slots[id.index()];
        entry.circuit = None;
        entry.generation = entry.generation.wrapping_add(1);
        self.free.push(id.index() as u32);
    }

    fn find(&self, id: CircuitId) -> Option<Arc<SharedCircuit>> {
        let entry = self.slots.get(id.index())?;
        if entry.generation != id.generation {
            return None;
        }
        entry.circuit.as_ref()?.upgrade()
    }
}

/// An owner's share of a circuit: what services, layers, gates and handles hold.
/// Dropping the last one retires the circuit (see the [module docs](self)).
pub(crate) struct OwnedCircuit {
    circuit: Arc<SharedCircuit>,
    id: CircuitId,
}

impl OwnedCircuit {
    /// Enters `circuit` in the registry.
    pub(crate) fn new(circuit: SharedCircuit) -> Arc<OwnedCircuit> {
        let circuit = Arc::new(circuit);
        let id = REGISTRY.lock().enter(&circuit);
        Arc::new(OwnedCircuit { circuit, id })
    }

    /// The id a response future keeps.
    #[inline]
    pub(crate) fn id(&self) -> CircuitId {
        self.id
    }
}

impl Deref for OwnedCircuit {
    type Target = SharedCircuit;

    #[inline]
    fn deref(&self) -> &SharedCircuit {
        &self.circuit
    }
}

impl Drop for OwnedCircuit {
    fn drop(&mut self) {
        REGISTRY.lock().leave(self.id);
        self.circuit.retire();
        // After `retire`: a directory that sees the new count sees the circuit retired.
        RETIREMENTS.fetch_add(1, Ordering::Release);
    }
}

impl fmt::Debug for OwnedCircuit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedCircuit")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// One thread's entries, indexed by slot.
struct Directory {
    retirements: u64,
    entries: Vec<Option<(u32, Arc<SharedCircuit>)>>,
}

thread_local! {
    static DIRECTORY: RefCell<Directory> = const {
        RefCell::new(Directory {
            retirements: 0,
            entries: Vec::new(),
        })
    };
}

impl Directory {
    #[inline]
    fn get(&mut self, id: CircuitId) -> Option<&SharedCircuit> {
        let retirements = RETIREMENTS.load(Ordering::Acquire);
        if retirements != self.retirements {
            self.prune(retirements);
        }
        let hit = matches!(
            self.entries.get(id.index()),
            Some(Some((generation, _))) if *generation == id.generation
        );
        if !hit {
            self.fill(id)?;
        }
        match self.entries.get(id.index()) {
            Some(Some((_, circuit))) => Some(circuit),
            _ => None,
        }
    }

    /// Drops the entries of retired circuits.
    #[cold]
    fn prune(&mut self, retirements: u64) {
        self.retirements = retirements;
        for entry in &mut self.entries {
            if entry.as_ref().is_some_and(|(_, c)| c.is_retired()) {
                *entry = None;
            }
        }
    }

    /// The thread's first completion of circuit `id` (or of the circuit now in its
    /// slot): fetches it from the registry.
    #[cold]
    fn fill(&mut self, id: CircuitId) -> Option<()> {
        let circuit = REGISTRY.lock().find(id)?;
        let slot = id.index();
        if self.entries.len() <= slot {
            self.entries.resize_with(slot + 1, || None);
        }
        self.entries[slot] = Some((id.generation, circuit));
        Some(())
    }
}

/// Runs `f` on circuit `id`, if it is not retired; `None` if it is.
#[inline]
pub(crate) fn with_circuit<R>(id: CircuitId, f: impl FnOnce(&SharedCircuit) -> R) -> Option<R> {
    let mut f = Some(f);
    let local = DIRECTORY.try_with(|directory| {
        let mut directory = directory.try_borrow_mut().ok()?;
        let circuit = directory.get(id)?;
        f.take().map(|f| f(circuit))
    });
    match (local, f) {
        (Ok(Some(r)), _) => Some(r),
        // Busy (a completion inside a completion), gone (thread exit), or retired.
        (_, Some(f)) => with_registry(id, f),
        (_, None) => None,
    }
}

#[cold]
fn with_registry<R>(id: CircuitId, f: impl FnOnce(&SharedCircuit) -> R) -> Option<R> {
    let circuit = REGISTRY.lock().find(id)?;
    Some(f(&circuit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::BreakerConfig;

    fn circuit() -> Arc<OwnedCircuit> {
        OwnedCircuit::new(SharedCircuit::new(&BreakerConfig::default()))
    }

    fn local_entry(id: CircuitId) -> Option<Weak<SharedCircuit>> {
        DIRECTORY.with(|d| match d.borrow().entries.get(id.index()) {
            Some(Some((generation, c))) if *generation == id.generation => Some(Arc::downgrade(c)),
            _ => None,
        })
    }

    #[test]
    fn a_live_circuit_is_found_and_cached_on_this_thread() {
        let owned = circuit();
        let id = owned.id();
        assert!(local_entry(id).is_none());
        let same = with_circuit(id, |c| std::ptr::eq(c, &**owned)).unwrap();
        assert!(same);
        assert!(local_entry(id).is_some(), "cached after the first lookup");
    }

    #[test]
    fn a_retired_circuit_is_not_found_and_its_memory_is_freed_at_the_next_lookup() {
        let owned = circuit();
        let id = owned.id();
        with_circuit(id, |_| ()).unwrap();
        let weak = local_entry(id).unwrap();
        drop(owned);
        assert!(
            with_circuit(id, |_| ()).is_none(),
            "retired: counts nothing"
        );
        assert!(weak.upgrade().is_none(), "the directory let go of it");
    }

    #[test]
    fn an_old_id_never_reaches_the_next_circuit_in_its_slot() {
        // A registry of its own, so that other tests do not take the freed slot.
        let mut registry = Registry {
            slots: Vec::new(),
            free: Vec::new(),
        };
        let shared = || Arc::new(SharedCircuit::new(&BreakerConfig::default()));
        let (first, next) = (shared(), shared());
        let old = registry.enter(&first);
        registry.leave(old);
        let new = registry.enter(&next);
        assert_eq!(new.index(), old.index(), "the slot is reused");
        assert_ne!(new, old, "under the next generation");
        assert!(registry.find(old).is_none());
        assert!(Arc::ptr_eq(&registry.find(new).unwrap(), &next));
    }

    #[test]
    fn a_lookup_inside_a_lookup_goes_to_the_registry() {
        let outer = circuit();
        let inner = circuit();
        let found = with_circuit(outer.id(), |_| {
            with_circuit(inner.id(), |c| std::ptr::eq(c, &**inner))
        });
        assert_eq!(found, Some(Some(true)));
    }

    #[test]
    fn circuits_come_and_go_while_threads_complete_calls_and_each_counts_its_own() {
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    for round in 0..200_u64 {
                        let owned = circuit();
                        let calls = 1 + round % 7;
                        for _ in 0..calls {
                            let admission = owned.admit().expect("closed");
                            with_circuit(owned.id(), |c| {
                                c.complete(admission, Some(crate::window::Event::Success))
                            })
                            .expect("live");
                        }
                        let counts = owned.metrics().window.counts;
                        assert_eq!((counts.successes, counts.total()), (calls, calls));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn other_threads_find_the_circuit_and_let_go_when_it_retires() {
        let owned = circuit();
        let id = owned.id();
        let weak = std::thread::spawn(move || {
            with_circuit(id, |_| ()).unwrap();
            local_entry(id).unwrap()
        })
        .join()
        .unwrap();
        // That thread exited: its directory is gone with its entry.
        drop(owned);
        assert!(weak.upgrade().is_none());
    }
}
