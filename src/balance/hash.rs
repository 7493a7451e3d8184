//! The stable hash that places endpoints on a consistent-hash ring (see [`stable_hash`]).

use std::hash::{Hash, Hasher};

use xxhash_rust::xxh3::Xxh3;

/// The stable 64-bit hash of `key`: XXH3-64 of the bytes its `Hash` impl writes, with
/// integers little-endian and `usize`/`isize` as 64 bits.
///
/// Two client processes must send the same key to the same endpoint even when they were
/// built with different toolchains, so the hash may not be std's `DefaultHasher`, whose
/// algorithm std does not promise to keep between releases. palisade hashes with
/// XXH3-64 (seed 0, from the `xxhash-rust` crate), fed the bytes the key's `Hash`
/// implementation writes, with every integer written little-endian and `usize`/`isize`
/// widened to 64 bits, so the result is also the same on every architecture.
///
/// What stays the same is the hash of the bytes a key's `Hash` impl writes. For strings,
/// byte slices, integers, `bool`, `char` and tuples, arrays and derived structs of them,
/// those bytes are fixed by the layout of the value (a `str` writes its bytes and then
/// `0xff`). std does not promise the same of its other types (`SocketAddr`, `IpAddr`,
/// ...), whose `Hash` impls follow their private fields: key endpoints by a string or an
/// integer where clients built apart must agree.
///
/// The balancer places endpoints on the [`ConsistentHash`](super::ConsistentHash) ring
/// by this hash of their discovery key. Use it for request keys too, so a
/// [`HashKey`](super::HashKey) that is not already a number agrees across processes:
///
/// ```
/// use palisade::balance::stable_hash;
///
/// struct Get { user: String }
/// let by_user = |r: &Get| stable_hash(r.user.as_str());
/// assert_eq!(by_user(&Get { user: "ada".into() }), stable_hash("ada"));
/// ```
pub fn stable_hash<K: Hash + ?Sized>(key: &K) -> u64 {
    let mut hasher = StableHasher(Xxh3::new());
    key.hash(&mut hasher);
    hasher.finish()
}

/// A `Hasher` that writes integers in one byte order and width on every platform.
struct StableHasher(Xxh3);

impl Hasher for StableHasher {
    fn finish(&self) -> u64 {
        self.0.digest()
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn write_u8(&mut self, i: u8) {
        self.0.update(&[i]);
    }

    fn write_u16(&mut self, i: u16) {
        self.0.update(&i.to_le_bytes());
    }

    fn write_u32(&mut self, i: u32) {
        self.0.update(&i.to_le_bytes());
    }

    fn write_u64(&mut self, i: u64) {
        self.0.update(&i.to_le_bytes());
    }

    fn write_u128(&mut self, i: u128) {
        self.0.update(&i.to_le_bytes());
    }

    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }

    fn write_isize(&mut self, i: isize) {
        self.write_u64(i as i64 as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xxhash_rust::xxh3::xxh3_64;

    // The hash is defined by the bytes it is fed: each case spells them out, so a change
    // of hasher, byte order or integer width fails here.
    #[test]
    fn strings_hash_as_their_bytes_and_a_terminator() {
        assert_eq!(stable_hash("payments"), xxh3_64(b"payments\xff"));
        assert_eq!(stable_hash(&String::from("")), xxh3_64(b"\xff"));
    }

    #[test]
    fn integers_hash_little_endian_and_usize_as_64_bits() {
        assert_eq!(stable_hash(&0x0102_0304u32), xxh3_64(&[4, 3, 2, 1]));
        assert_eq!(stable_hash(&7usize), xxh3_64(&7u64.to_le_bytes()));
        assert_eq!(stable_hash(&-1isize), xxh3_64(&[0xff; 8]));
        let mut bytes = b"10.0.0.1\xff".to_vec();
        bytes.extend_from_slice(&8080u16.to_le_bytes());
        assert_eq!(stable_hash(&("10.0.0.1", 8080u16)), xxh3_64(&bytes));
    }

    #[test]
    fn the_hash_of_fixed_keys_never_changes() {
        // Golden values, computed apart from this crate (Python's `xxhash` package,
        // `xxh3_64_intdigest`): XXH3-64 with seed 0 is a published algorithm, so they hold
        // in every build on every platform.
        assert_eq!(xxh3_64(b""), 0x2d06_8005_38d3_94c2);
        assert_eq!(stable_hash("m1"), GOLDEN_M1);
        assert_eq!(stable_hash(&42u64), GOLDEN_42);
    }

    const GOLDEN_M1: u64 = 0x8549_7966_3f87_df9c;
    const GOLDEN_42: u64 = 0xd5a6_f8c8_38df_27c8;
}
