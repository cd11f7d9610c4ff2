//! One PRNG for every test: xorshift64*, small, deterministic, seedable.
//! Not for secrets. A test that draws from it prints its seed (the output
//! libtest shows when the test fails) and reads a seed to replay from an
//! environment variable.

use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A fixed seed (0 is replaced: xorshift never leaves zero).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 { 0x9E37_79B9_7F4A_7C15 } else { seed })
    }

    /// The seed in `var` if set (to replay a failure), else one from the
    /// clock; printed either way, with how to replay it.
    pub fn from_env(var: &str, what: &str) -> Rng {
        let seed = std::env::var(var).ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1) | 1
        });
        println!("{what} seed: {seed} ({var}={seed} to replay)");
        Rng::new(seed)
    }

    /// An independent stream for worker `n` of a test seeded with `self`.
    pub fn fork(&mut self, n: u64) -> Rng {
        Rng::new(self.next_u64() ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform enough below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn nonzero_byte(&mut self) -> u8 {
        (self.next_u64() % 255 + 1) as u8
    }

    pub fn fill(&mut self, out: &mut [u8]) {
        out.iter_mut().for_each(|b| *b = self.next_u64() as u8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_stream_and_zero_is_no_fixed_point() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        assert!(xs.iter().all(|x| *x == b.next_u64()));
        assert_ne!(Rng::new(43).next_u64(), xs[0]);
        let mut zero = Rng::new(0);
        assert!((0..8).any(|_| zero.next_u64() != 0));
        assert!((0..1000).all(|_| zero.below(7) < 7));
        assert_eq!(zero.below(0), 0);
        assert!((0..1000).all(|_| zero.nonzero_byte() != 0));
    }
}
