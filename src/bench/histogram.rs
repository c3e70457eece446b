//! A log-linear latency histogram: constant-time recording, mergeable, bounded memory.
//!
//! Values below 128 ns have a bucket each; above, every power of two is split into 64 buckets, so
//! a quantile is read with a relative error under 1/128 (0.8 %). Values from about 68 s up share
//! the last bucket; the exact maximum is kept on the side.

/// Buckets per power of two, as a number of bits.
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Values at or above this (2^36 ns ≈ 68.7 s) land in the last bucket.
const CLAMP: u64 = (1 << 36) - 1;
/// Number of buckets: the index of `CLAMP`, plus one.
const BUCKETS: usize = index(CLAMP) + 1;

/// The bucket of a value (see the module documentation).
const fn index(v: u64) -> usize {
    if v < 2 * SUB {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - SUB_BITS;
    (shift as u64 * SUB + (v >> shift)) as usize
}

/// The smallest value of a bucket, and its width.
fn bucket_range(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < 2 * SUB {
        return (i, 1);
    }
    let shift = i / SUB - 1;
    let mantissa = i - shift * SUB;
    (mantissa << shift, 1 << shift)
}

/// Counts of values (nanoseconds) by bucket. Allocates its buckets (16 KiB) on the first record.
#[derive(Clone, Debug, Default)]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    max: u64,
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Histogram {
        Histogram::default()
    }

    /// Records one value.
    pub fn record(&mut self, v: u64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS];
        }
        if let Some(c) = self.counts.get_mut(index(v.min(CLAMP))) {
            *c += 1;
        }
        self.count += 1;
        self.max = self.max.max(v);
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        if other.count == 0 {
            return;
        }
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS];
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.count += other.count;
        self.max = self.max.max(other.max);
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The largest value recorded (0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value below which a fraction `q` (0..=1) of the values lie: the middle of the bucket
    /// that holds the rank-`ceil(q·count)` value, never above the maximum. 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (low, width) = bucket_range(i);
                return (low + width / 2).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_cover_their_values() {
        let mut expected = 0;
        for v in (0..100_000u64).chain([CLAMP - 1, CLAMP]) {
            let i = index(v);
            assert!(i == expected || i == expected + 1 || v >= CLAMP - 1, "{v}");
            expected = i;
            let (low, width) = bucket_range(i);
            assert!(
                low <= v && v < low + width,
                "{v} not in bucket {i} = {low}+{width}"
            );
        }
        assert_eq!(index(CLAMP), BUCKETS - 1);
    }

    #[test]
    fn quantiles_are_within_one_percent() {
        let mut h = Histogram::new();
        for v in 1..=100_000u64 {
            h.record(v * 1000);
        }
        for (q, exact) in [
            (0.5, 50_000_000.0),
            (0.9, 90_000_000.0),
            (0.99, 99_000_000.0),
        ] {
            let got = h.quantile(q) as f64;
            assert!((got - exact).abs() / exact < 0.01, "q{q}: {got} vs {exact}");
        }
        assert_eq!(h.max(), 100_000_000);
        assert_eq!(h.quantile(1.0), 100_000_000);
    }

    #[test]
    fn merging_equals_recording_everything_in_one() {
        let (mut a, mut b, mut all) = (Histogram::new(), Histogram::new(), Histogram::new());
        for v in 0..1000u64 {
            let v = v * v * 37;
            if v % 3 == 0 { &mut a } else { &mut b }.record(v);
            all.record(v);
        }
        a.merge(&b);
        a.merge(&Histogram::new());
        assert_eq!(a.count(), all.count());
        assert_eq!(a.max(), all.max());
        for q in [0.0, 0.1, 0.5, 0.9, 0.999, 1.0] {
            assert_eq!(a.quantile(q), all.quantile(q));
        }
    }

    #[test]
    fn huge_values_are_clamped_but_the_max_is_exact() {
        let mut h = Histogram::new();
        h.record(u64::MAX);
        assert_eq!(h.max(), u64::MAX);
        assert_eq!(
            h.quantile(0.5),
            bucket_range(BUCKETS - 1).0 + bucket_range(BUCKETS - 1).1 / 2
        );
        assert_eq!(Histogram::new().quantile(0.5), 0);
    }
}
