//! The simulated HAL: `streams` instruments sampling at `rate_hz` each,
//! deterministic from a seed. Sample g (counting over all streams) belongs
//! to stream `g % streams`, is that stream's sample `g / streams`, and is due
//! `g / (streams * rate_hz)` seconds after the source started. Values depend
//! only on (seed, stream, per-stream sequence).

use std::sync::atomic::Ordering;
use std::time::Duration;

use helix::process::now_ns;
use helix::telemetry::{Sample, KIND_SAMPLE, QUALITY_SIMULATED, QUALITY_SUSPECT};
use helix::{PublishError, Writer};

use super::SourceState;

/// Largest batch claimed at once.
const BATCH: u64 = 1024;

/// The simulator's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sim {
    /// Number of streams.
    pub streams: u32,
    /// Samples per second per stream.
    pub rate_hz: f64,
    /// Seed.
    pub seed: u64,
}

fn mix(mut x: u64) -> u64 {
    // splitmix64's finaliser: a well-spread hash of the inputs.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Sim {
    /// The value of stream `stream`'s sample `seq`: a per-stream baseline,
    /// a slow sine, and a little noise; every 997th sample of every 50th
    /// stream spikes (and is flagged suspect), so alarms have work to do.
    pub fn value(&self, stream: u32, seq: u64) -> (f64, u32) {
        let h = mix(self.seed ^ ((stream as u64) << 32));
        let base = 20.0 + (h % 1000) as f64 / 10.0;
        let period = 50.0 + (h >> 20) as f64 % 500.0;
        let noise = (mix(h ^ seq) % 1000) as f64 / 1000.0 - 0.5;
        let v = base + 5.0 * (seq as f64 / period * std::f64::consts::TAU).sin() + noise;
        if stream.is_multiple_of(50) && seq % 997 == 996 {
            (v * 3.0, QUALITY_SIMULATED | QUALITY_SUSPECT)
        } else {
            (v, QUALITY_SIMULATED)
        }
    }

    /// The `g`-th sample overall, due at `start_ns + g / total rate`.
    pub fn sample(&self, g: u64, start_ns: u64) -> Sample {
        let stream = (g % self.streams as u64) as u32;
        let seq = g / self.streams as u64;
        let (value, quality) = self.value(stream, seq);
        Sample { stream, quality, seq, sample_ns: start_ns + self.due_offset_ns(g), ingest_ns: 0, value }
    }

    fn due_offset_ns(&self, g: u64) -> u64 {
        (g as f64 * 1e9 / (self.streams as f64 * self.rate_hz)) as u64
    }

    /// Writes samples as they fall due until asked to stop. A full ring
    /// (gating readers behind) makes it wait, then catch up: samples are
    /// late, never dropped.
    pub fn run(&self, mut writer: Writer, state: &SourceState) -> Result<(), PublishError> {
        let start = now_ns();
        let mut next = 0u64;
        while !state.stopping() {
            let now = now_ns();
            let due = ((now - start) as f64 * self.streams as f64 * self.rate_hz / 1e9) as u64;
            while next < due && !state.stopping() {
                let n = (due - next).min(BATCH).min(writer.geometry().capacity);
                let mut claim = writer.claim(n)?;
                let ingest_ns = now_ns();
                for _ in 0..n {
                    let mut s = self.sample(next, start);
                    s.ingest_ns = ingest_ns;
                    claim.push_kind(KIND_SAMPLE, bytemuck::bytes_of(&s))?;
                    next += 1;
                }
                claim.commit();
                state.samples.store(next, Ordering::Relaxed);
                state.tick();
            }
            state.tick();
            // Sleep until the next sample is due (at most 10 ms, to notice
            // a stop request promptly).
            let wait = (start + self.due_offset_ns(next)).saturating_sub(now_ns());
            std::thread::sleep(Duration::from_nanos(wait.clamp(50_000, 10_000_000)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_deterministic_and_interleave_streams() {
        let sim = Sim { streams: 3, rate_hz: 10.0, seed: 7 };
        let a: Vec<Sample> = (0..9).map(|g| sim.sample(g, 1000)).collect();
        let b: Vec<Sample> = (0..9).map(|g| sim.sample(g, 1000)).collect();
        assert_eq!(a, b);
        assert_eq!(
            a.iter().map(|s| (s.stream, s.seq)).collect::<Vec<_>>(),
            [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1), (0, 2), (1, 2), (2, 2)]
        );
        // 30 samples/s overall: sample 3 is due 100 ms after the start.
        assert_eq!(a[3].sample_ns, 1000 + 100_000_000);
        assert_ne!(Sim { seed: 8, ..sim }.sample(0, 0).value, a[0].value);
        assert!(a.iter().all(|s| s.quality & QUALITY_SIMULATED != 0));
    }
}
