//! Latency samples and the figures reported from them.

use std::time::Duration;

use serde_json::{json, Value};

/// The timings of one case, in the order they were taken.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    times: Vec<Duration>,
    /// Iterations whose run did not succeed; they are not in `times`.
    pub failures: usize,
}

impl Samples {
    pub fn push(&mut self, d: Duration) {
        self.times.push(d);
    }

    pub fn len(&self) -> usize {
        self.times.len()
    }

    fn sorted_ms(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self.times.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        v.sort_by(f64::total_cmp);
        v
    }

    /// Nearest-rank percentile (`p` in 0..=100), in ms; NaN without samples.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        let v = self.sorted_ms();
        if v.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }

    /// The median, in ms (the mean of the middle two for an even count).
    pub fn median_ms(&self) -> f64 {
        let v = self.sorted_ms();
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    }

    pub fn p90_ms(&self) -> f64 {
        self.percentile_ms(90.0)
    }

    pub fn to_json(&self) -> Value {
        let v = self.sorted_ms();
        json!({
            "n": v.len(),
            "failures": self.failures,
            "median_ms": finite(self.median_ms()),
            "p90_ms": finite(self.p90_ms()),
            "p99_ms": finite(self.percentile_ms(99.0)),
            "min_ms": v.first().copied(),
            "max_ms": v.last().copied(),
            "mean_ms": (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64),
        })
    }
}

/// JSON has no NaN: a missing figure is null.
pub fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// The median of plain numbers (NaN when empty).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(ms: &[u64]) -> Samples {
        let mut s = Samples::default();
        for &m in ms {
            s.push(Duration::from_millis(m));
        }
        s
    }

    #[test]
    fn median_and_p90() {
        let s = samples(&[5, 1, 4, 2, 3, 6, 7, 8, 9, 10]);
        assert_eq!(s.median_ms(), 5.5);
        assert_eq!(s.p90_ms(), 9.0);
        assert_eq!(samples(&[3, 1, 2]).median_ms(), 2.0);
        assert!(samples(&[]).median_ms().is_nan());
        assert_eq!(samples(&[7]).p90_ms(), 7.0);
    }
}
