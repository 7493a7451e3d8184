//! The per-request hash key that [`ConsistentHash`](super::ConsistentHash) routes on.

/// Extracts a hash key from a request, for pickers that route by key.
///
/// Any `Fn(&Req) -> u64` is one; [`NoKey`], the default, gives no key.
///
/// ```
/// use palisade::balance::HashKey;
///
/// struct Get { user: u64 }
/// let by_user = |r: &Get| r.user;
/// assert_eq!(by_user.hash_key(&Get { user: 7 }), Some(7));
/// ```
pub trait HashKey<Req> {
    /// The request's key, or `None` when it has none (the picker then chooses freely).
    fn hash_key(&self, req: &Req) -> Option<u64>;
}

/// No hash key: the default for pickers that do not route by key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoKey;

impl<Req> HashKey<Req> for NoKey {
    #[inline]
    fn hash_key(&self, _req: &Req) -> Option<u64> {
        None
    }
}

impl<Req, F> HashKey<Req> for F
where
    F: Fn(&Req) -> u64,
{
    #[inline]
    fn hash_key(&self, req: &Req) -> Option<u64> {
        Some(self(req))
    }
}
