//! A stream's running statistics, safe from finite extremes: see
//! [`Moments`].

/// A stream's running mean, variance, EWMA and Holt's level and trend,
/// kept so that finite inputs never make them infinite, NaN or wrong for
/// good. Two legal values such as +1e308 and -1e308 differ by more than
/// an `f64` holds; and once a running mean has been near 1e307, rounding
/// leaves a residue there (about 1e290) that ordinary data only dilutes.
///
/// - Scaled: the fields hold the true values times `2^-exp` (`m2` times
///   `2^-2 exp`). `exp` is 0 for ordinary data. It grows by
///   [`Moments::STEP`] whenever a value would pass `2^448` or `m2` would
///   pass `2^960`, so no difference, square or sum overflows. Scaling by a
///   power of two is exact; what falls below the scale's precision
///   (`2^-1022` of it) counts as zero, as it would in the sums anyway.
/// - The mean is the sum over the count, the sum compensated (Neumaier's
///   improved Kahan summation): `sum + carry` is the exact sum to about an
///   ulp, so values that cancel (+1e308, -1e308) leave the mean of the
///   others. The variance is Welford's update on that mean; the EWMA,
///   level and trend are the textbook recursions (bounded filters: they
///   forget the extremes geometrically).
/// - What is reported is scaled back and saturates at `f64::MAX`: the
///   variance of values 1e154 apart is beyond an `f64`.
#[derive(Debug, Clone, Copy)]
pub struct Moments {
    exp: i32,
    /// `2^-exp`.
    scale: f64,
    /// The values' sum, and what rounding took from it.
    sum: f64,
    carry: f64,
    mean: f64,
    /// Sum of squared deviations from the mean.
    m2: f64,
    ewma: f64,
    level: f64,
    trend: f64,
}

impl Default for Moments {
    fn default() -> Moments {
        Moments { exp: 0, scale: 1.0, sum: 0.0, carry: 0.0, mean: 0.0, m2: 0.0, ewma: 0.0, level: 0.0, trend: 0.0 }
    }
}

/// `2^k`, for `k` from -1022 to 1023.
const fn pow2(k: i32) -> f64 {
    f64::from_bits(((k + 1023) as u64) << 52)
}

impl Moments {
    /// How much `exp` grows at a time.
    const STEP: i32 = 64;
    /// Largest scaled value taken without rescaling.
    const VALUE_LIMIT: f64 = pow2(448);
    /// Largest scaled sum of squares kept without rescaling.
    const M2_LIMIT: f64 = pow2(960);

    /// Starts with the stream's first value.
    pub fn first(&mut self, v: f64) {
        *self = Moments::default();
        let v = self.fit(v);
        (self.sum, self.mean, self.ewma, self.level) = (v, v, v, v);
    }

    /// Takes a later value, the stream's `count`th; `alpha` smooths the EWMA
    /// and the level, `beta` the trend.
    pub fn take(&mut self, v: f64, count: u64, alpha: f64, beta: f64) {
        let v = self.add(v, count);
        self.ewma += alpha * (v - self.ewma);
        let prev = self.level;
        self.level = alpha * v + (1.0 - alpha) * (self.level + self.trend);
        self.trend = beta * (self.level - prev) + (1.0 - beta) * self.trend;
    }

    /// Takes a value that arrived after newer ones, the stream's `count`th:
    /// into the sum, the mean and the variance, which do not depend on the
    /// order; not into the EWMA, the level and the trend, which follow the
    /// newest values.
    pub fn take_unordered(&mut self, v: f64, count: u64) {
        self.add(v, count);
    }

    /// Adds `v`, the `count`th value, to the sum, the mean and the sum of
    /// squares; returns it at the scale it was added at.
    fn add(&mut self, v: f64, count: u64) -> f64 {
        let v = self.fit(v);
        let sum = self.sum + v;
        // What the addition rounded away, from the smaller of the two.
        self.carry += if self.sum.abs() >= v.abs() { (self.sum - sum) + v } else { (v - sum) + self.sum };
        self.sum = sum;
        let before = self.mean;
        self.mean = (self.sum + self.carry) / count as f64;
        self.m2 += (v - before) * (v - self.mean);
        if self.m2 > Moments::M2_LIMIT {
            self.rescale();
        }
        v
    }

    /// `v` at the current scale, raised first until it fits.
    fn fit(&mut self, v: f64) -> f64 {
        while (v * self.scale).abs() > Moments::VALUE_LIMIT {
            self.rescale();
        }
        v * self.scale
    }

    /// Raises the scale by [`Moments::STEP`].
    fn rescale(&mut self) {
        self.exp += Moments::STEP;
        self.scale = pow2(-self.exp);
        let s = pow2(-Moments::STEP);
        for x in [&mut self.sum, &mut self.carry, &mut self.mean, &mut self.ewma, &mut self.level, &mut self.trend] {
            *x *= s;
        }
        self.m2 *= s * s;
    }

    /// A scaled quantity as it is: saturated at `f64::MAX`.
    fn unscale(&self, x: f64) -> f64 {
        (x * pow2(self.exp)).clamp(-f64::MAX, f64::MAX)
    }

    /// The mean.
    pub fn mean(&self) -> f64 {
        self.unscale(self.mean)
    }

    /// The sample variance of `count` values.
    pub fn variance(&self, count: u64) -> f64 {
        if count < 2 {
            return 0.0;
        }
        self.unscale(self.unscale(self.m2 / (count - 1) as f64))
    }

    /// The exponentially weighted mean.
    pub fn ewma(&self) -> f64 {
        self.unscale(self.ewma)
    }

    /// Holt's trend, per sample.
    pub fn trend(&self) -> f64 {
        self.unscale(self.trend)
    }

    /// Holt's one-step-ahead prediction.
    pub fn prediction(&self) -> f64 {
        self.unscale(self.level + self.trend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The EWMA, trend and prediction by the textbook recursions, and the
    /// mean and variance in two passes: what `Moments` must give.
    fn textbook(values: &[f64], alpha: f64, beta: f64) -> [f64; 5] {
        let (mut ewma, mut level, mut trend) = (values[0], values[0], 0.0);
        for &v in &values[1..] {
            ewma += alpha * (v - ewma);
            let prev = level;
            level = alpha * v + (1.0 - alpha) * (level + trend);
            trend = beta * (level - prev) + (1.0 - beta) * trend;
        }
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let variance = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1.0);
        [mean, variance, ewma, trend, level + trend]
    }

    fn moments(values: &[f64]) -> [f64; 5] {
        let mut m = Moments::default();
        m.first(values[0]);
        for (i, &v) in values.iter().enumerate().skip(1) {
            m.take(v, i as u64 + 1, 0.1, 0.2);
        }
        let n = values.len() as u64;
        [m.mean(), m.variance(n), m.ewma(), m.trend(), m.prediction()]
    }

    fn near(what: &str, got: f64, want: f64, tol: f64) {
        assert!((got - want).abs() <= tol * want.abs().max(1.0), "{what}: {got}, expected {want}");
    }

    #[test]
    fn moments_of_ordinary_data_are_the_textbook_ones() {
        let values: Vec<f64> = (0..5000).map(|i| ((i * 7919) % 1000) as f64 * 0.37 - 120.0 + 1e-9 * i as f64).collect();
        for values in [values.clone(), values.iter().map(|v| v * 1e-250).collect()] {
            let (got, want) = (moments(&values), textbook(&values, 0.1, 0.2));
            near("mean", got[0], want[0], 1e-13);
            near("variance", got[1], want[1], 1e-12);
            // The filters are the textbook's, bit for bit.
            assert_eq!(got.map(f64::to_bits)[2..], want.map(f64::to_bits)[2..]);
        }
    }

    #[test]
    fn finite_extremes_never_make_a_statistic_infinite_nan_or_wrong_for_good() {
        // +1e308 and -1e308 amid ordinary values: their difference is
        // beyond f64, and they cancel, so the mean is that of the others
        // over all the values. The filters are the textbook's on values
        // scaled by 2^-600 (exact), scaled back; the variance is beyond
        // f64 and saturates.
        let ordinary = |i: usize| 5.0 + (i % 7) as f64;
        let mut values: Vec<f64> = (0..5).map(ordinary).collect();
        values.extend([1e308, -1e308]);
        values.extend((5..1000).map(ordinary));
        let got = moments(&values);
        assert!(got.iter().all(|x| x.is_finite()), "{got:?}");
        let others: f64 = (0..1000).map(ordinary).sum();
        near("mean", got[0], others / values.len() as f64, 1e-13);
        assert_eq!(got[1], f64::MAX);
        let scaled: Vec<f64> = values.iter().map(|v| v * pow2(-600)).collect();
        let want = textbook(&scaled, 0.1, 0.2).map(|x| x * pow2(600));
        for (i, what) in [(2, "ewma"), (3, "trend"), (4, "prediction")] {
            near(what, got[i], want[i], 1e-12);
        }
        // A variance that fits, of values whose squares sum past f64.
        let alternating: Vec<f64> = (0..1000).map(|i| if i % 2 == 0 { 1.2e154 } else { -1.2e154 }).collect();
        let [mean, variance, ..] = moments(&alternating);
        assert_eq!(mean, 0.0);
        near("variance", variance, 1.2e154 * 1.2e154 * (1000.0 / 999.0), 1e-12);
        // Every extreme at once.
        let wild = [f64::MAX, -f64::MAX, f64::MIN_POSITIVE, -f64::MAX, 0.0, f64::MAX, 1.0];
        assert!(moments(&wild).iter().all(|x| x.is_finite()), "{:?}", moments(&wild));
    }
}
