//! Division by a divisor fixed at construction, by multiplication.
//!
//! Every record divides the clock reading by the bucket width and the epoch by the
//! bucket count. A hardware 64-bit `div` costs tens of cycles on many CPUs; this is
//! two multiplications and a compare.

/// A divisor with its precomputed reciprocal.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Divisor {
    d: u64,
    /// floor((2^64 - 1) / d).
    m: u64,
}

impl Divisor {
    pub(crate) fn new(d: u64) -> Self {
        assert!(d > 0, "divisor must be positive");
        Self { d, m: u64::MAX / d }
    }

    /// The divisor `d`.
    #[inline]
    pub(crate) fn get(&self) -> u64 {
        self.d
    }

    /// `n / d`. The estimate `floor(n * m / 2^64)` (the high half of one 64-bit
    /// multiplication) is at most `n / d` because `m <= 2^64 / d`, and at least one less
    /// because `m >= 2^64 / d - 1` and `n < 2^64`; one compare fixes it.
    #[inline]
    pub(crate) fn div(&self, n: u64) -> u64 {
        let q = ((u128::from(n) * u128::from(self.m)) >> 64) as u64;
        if n - q * self.d >= self.d {
            q + 1
        } else {
            q
        }
    }

    /// `n % d`.
    #[inline]
    pub(crate) fn rem(&self, n: u64) -> u64 {
        n - self.div(n) * self.d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn divisor_matches_hardware_division() {
        let divisors = [
            1u64,
            2,
            3,
            4,
            1 << 40,
            7,
            10,
            1_000,
            100_000_000,
            1_000_000_007,
            u64::MAX / 3,
            u64::MAX,
        ];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for &d in &divisors {
            let div = Divisor::new(d);
            for n in [0, 1, d - 1, d, d.wrapping_add(1), u64::MAX - 1, u64::MAX] {
                assert_eq!(div.div(n), n / d, "{n} / {d}");
                assert_eq!(div.rem(n), n % d, "{n} % {d}");
            }
            for _ in 0..10_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                assert_eq!(div.div(x), x / d, "{x} / {d}");
                assert_eq!(div.rem(x), x % d, "{x} % {d}");
            }
        }
    }
}
