//! The simulated HAL: `streams` instruments sampling at `rate_hz` each,
//! deterministic from a seed. Sample g (counting over all streams) belongs
//! to stream `g % streams`, is that stream's sample `g / streams`, and is due
//! `g / (streams * rate_hz)` seconds after the source started. Values depend
//! only on (seed, stream, per-stream sequence).
//!
//! [`Sim::value`] and [`Sim::sample`] say what each sample is; the source
//! itself ([`Sim::run`]) produces the same samples in order through
//! [`Samples`], which walks (stream, sequence) without a division and
//! computes each distinct sine once per round, and is paced by
//! [`super::pace::Pacer`].

use std::sync::atomic::Ordering;

use helix::telemetry::{Sample, KIND_SAMPLE, QUALITY_SIMULATED, QUALITY_SUSPECT};
use helix::{PublishError, Writer};

use super::pace::{Clock, Monotonic, Pacer, TICK};
use super::plant::{Directive, Effect, Lag};
use super::SourceState;
use helix::control::Op;

/// Largest batch claimed (and committed) at once. Readers get a wake-up's
/// first samples while the rest are written, and a writer preempted in the
/// middle of a claim holds back at most this many samples. Larger claims
/// mean fewer commits (each one that finds a reader parked wakes it), but
/// in e2e runs at 10,000 streams (every process on CPUs 0,1) claims of
/// 1,024 gave the reader a p50 of 36-62 us and a p99 of 363-628 us
/// against 16-23 us and 68-466 us with 256, for the same CPU.
const BATCH: u64 = 256;

/// Distinct sine periods: a stream's period is 50 + (0..PERIODS) samples.
const PERIODS: usize = 500;

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

/// The stream's sine period, as an index: the period is `50 + index`
/// samples. (`h >> 20` is below 2^44, exact as an `f64`, so this is the
/// value `50.0 + (h >> 20) as f64 % 500.0` always had, without `fmod`.)
#[inline]
fn period_index(h: u64) -> usize {
    ((h >> 20) % PERIODS as u64) as usize
}

/// The slow sine of sample `seq` of a stream whose period is index `p`.
#[inline]
fn sine(seq: u64, p: usize) -> f64 {
    let period = 50.0 + p as f64;
    (seq as f64 / period * std::f64::consts::TAU).sin()
}

impl Sim {
    /// The per-stream hash every value of `stream` derives from.
    #[inline]
    fn stream_hash(&self, stream: u32) -> u64 {
        mix(self.seed ^ ((stream as u64) << 32))
    }

    /// The value of stream `stream`'s sample `seq`: a per-stream baseline,
    /// a slow sine, and a little noise; every 997th sample of every 50th
    /// stream spikes (and is flagged suspect), so alarms have work to do.
    pub fn value(&self, stream: u32, seq: u64) -> (f64, u32) {
        let h = self.stream_hash(stream);
        compose(stream, h, seq, sine(seq, period_index(h)))
    }

    /// Stream `stream`'s own level, about which its values move (the level
    /// a `release` returns it to).
    #[allow(dead_code)]
    pub fn baseline(&self, stream: u32) -> f64 {
        baseline(self.stream_hash(stream))
    }

    /// The value of stream `stream`'s sample `seq` at `level` in place of
    /// its baseline: what it is while it follows a setpoint
    /// (`docs/abi.md` §12.6).
    #[allow(dead_code)]
    pub fn value_at(&self, stream: u32, seq: u64, level: f64) -> (f64, u32) {
        let h = self.stream_hash(stream);
        compose_at(stream, h, seq, sine(seq, period_index(h)), level)
    }

    /// The `g`-th sample overall, due at `start_ns + g / total rate`.
    #[allow(dead_code)]
    pub fn sample(&self, g: u64, start_ns: u64) -> Sample {
        let stream = (g % self.streams as u64) as u32;
        let seq = g / self.streams as u64;
        let (value, quality) = self.value(stream, seq);
        Sample { stream, quality, seq, sample_ns: start_ns + self.due_offset_ns(g), ingest_ns: 0, value }
    }

    /// Samples per second over all streams.
    pub fn total_rate(&self) -> f64 {
        self.streams as f64 * self.rate_hz
    }

    /// When sample `g` is due, ns after the start.
    #[allow(dead_code)]
    pub fn due_offset_ns(&self, g: u64) -> u64 {
        due_offset_ns(g, self.total_rate())
    }

    /// The samples from the first, in order, due from `start_ns`.
    pub fn samples(&self, start_ns: u64) -> Samples<'_> {
        Samples {
            sim: self,
            start_ns,
            total_rate: self.total_rate(),
            g: 0,
            base_g: 0,
            stream: 0,
            seq: 0,
            sines: vec![(u64::MAX, 0.0); PERIODS],
            lags: Vec::new(),
        }
    }

    /// Writes samples as they fall due until asked to stop. A full ring
    /// (gating readers behind) makes it wait, then catch up: samples are
    /// late, never dropped; how late is in `state.behind_ns`.
    pub fn run(&self, writer: Writer, state: &SourceState) -> Result<(), PublishError> {
        self.run_on(writer, state, &mut Monotonic)
    }

    /// [`Sim::run`] on `clock` (tests give it one of their own). Between
    /// two commits it takes the directives helixd's control thread left in
    /// `state.inbox` ([`Sim::obey`]).
    pub fn run_on(&self, mut writer: Writer, state: &SourceState, clock: &mut impl Clock) -> Result<(), PublishError> {
        let mut course = Course { pacer: Pacer::new(clock.now_ns(), self.total_rate()), paused: false };
        let mut samples = self.samples(course.pacer.start_ns());
        let capacity = writer.geometry().capacity;
        let result = (|| {
            while !state.stopping() {
                self.obey(state, &mut samples, &mut course, writer.next_seq(), clock.now_ns());
                let now = clock.now_ns();
                if course.paused {
                    state.behind_ns.store(0, Ordering::Relaxed);
                    state.tick();
                    clock.sleep_until(now + TICK.as_nanos() as u64, &state.inbox);
                    continue;
                }
                let due = samples.base_g + course.pacer.due(now);
                state.behind_ns.store(course.pacer.behind_ns(samples.since_base(), now), Ordering::Relaxed);
                while samples.next_index() < due && !state.stopping() && !state.inbox.is_waiting() {
                    let n = (due - samples.next_index()).min(BATCH).min(capacity);
                    // While gating readers hold the ring full, a command
                    // or a stop is taken between waits for room.
                    let give_up = || state.stopping() || state.inbox.is_waiting();
                    // Counted as pushed: a claim that fails midway still
                    // publishes what it took (found by review).
                    let mut pushed = 0;
                    let written = super::write_batch(&mut writer, n, state, give_up, |claim| {
                        let ingest_ns = clock.now_ns();
                        for _ in 0..n {
                            let mut s = samples.next_sample();
                            s.ingest_ns = ingest_ns;
                            claim.push_kind(KIND_SAMPLE, bytemuck::bytes_of(&s))?;
                            pushed += 1;
                        }
                        Ok(())
                    });
                    state.samples.fetch_add(pushed, Ordering::Relaxed);
                    if !written? {
                        break;
                    }
                    // A long catch-up is progress too (the watchdog).
                    state.tick();
                }
                state.tick();
                if state.inbox.is_waiting() {
                    continue;
                }
                let now = clock.now_ns();
                clock.sleep_until(course.pacer.wake_at(samples.since_base(), now), &state.inbox);
            }
            Ok(())
        })();
        state.inbox.close();
        result
    }

    /// Applies the directives waiting in `state.inbox`, if any, before the
    /// frame of ring sequence `ring_seq` is written, at `now`; reports each
    /// one's effect. A pause stops the samples; a resume or a rate change
    /// starts the schedule again from `now` at the (new) rate, so a pause
    /// skips time, not samples: nothing is published late in a burst.
    fn obey(&self, state: &SourceState, samples: &mut Samples<'_>, course: &mut Course, ring_seq: u64, now: u64) {
        let Some(directives) = state.inbox.take() else { return };
        let effects = directives.iter().map(|d: &Directive| {
            let mut stream_seq = 0;
            match d.op {
                Op::Set => stream_seq = samples.steer(d.stream, Some(d.value)),
                Op::Release => stream_seq = samples.steer(d.stream, None),
                Op::Pause => course.paused = true,
                Op::Resume => {
                    course.paused = false;
                    course.restart(samples, now, samples.total_rate);
                }
                Op::Rate => course.restart(samples, now, self.streams as f64 * d.value),
            }
            Effect { token: d.token, ring_seq, stream_seq }
        });
        let effects: Vec<Effect> = effects.collect();
        state.inbox.report(effects);
    }
}

/// Where a running simulator stands: its schedule, and whether it is paused.
struct Course {
    pacer: Pacer,
    paused: bool,
}

impl Course {
    /// The schedule starts again at `now`, at `total_rate`, from the next
    /// sample.
    fn restart(&mut self, samples: &mut Samples<'_>, now: u64, total_rate: f64) {
        self.pacer = Pacer::new(now, total_rate);
        samples.rebase(now, total_rate);
    }
}

/// When sample `g` is due, ns after the start, at `total_rate` samples/s.
#[inline]
fn due_offset_ns(g: u64, total_rate: f64) -> u64 {
    // Through i64 both ways: one instruction each on x86-64 where u64 takes
    // a dozen, and the same values, g and the offset being far below 2^63
    // (the ring's sequences stop at 2^63 - 1; for larger g this saturates
    // where `as u64` would be exact, at an offset of 292 years).
    (g.min(i64::MAX as u64) as i64 as f64 * 1e9 / total_rate) as i64 as u64
}

/// A value from its parts: the stream's hash `h` and the sine of `seq`.
#[inline]
fn compose(stream: u32, h: u64, seq: u64, sine: f64) -> (f64, u32) {
    compose_at(stream, h, seq, sine, baseline(h))
}

/// A stream's own level, about which its values move.
#[inline]
fn baseline(h: u64) -> f64 {
    // (Below 1000, so through u32: the same value, a cheaper conversion.)
    20.0 + (h % 1000) as u32 as f64 / 10.0
}

/// A value at `level`: the level, the slow sine and a little noise.
#[inline]
fn compose_at(stream: u32, h: u64, seq: u64, sine: f64, level: f64) -> (f64, u32) {
    let noise = (mix(h ^ seq) % 1000) as u32 as f64 / 1000.0 - 0.5;
    let v = level + 5.0 * sine + noise;
    if stream.is_multiple_of(50) && seq % 997 == 996 {
        (v * 3.0, QUALITY_SIMULATED | QUALITY_SUSPECT)
    } else {
        (v, QUALITY_SIMULATED)
    }
}

/// The simulator's samples in order, each exactly [`Sim::sample`]'s: the
/// stream and sequence advance by counting, and the sine of each of the
/// [`PERIODS`] periods is computed once per sequence (every stream of a
/// round shares the sequence, so a round of 10,000 streams takes at most
/// 500 sines instead of 10,000).
pub struct Samples<'s> {
    sim: &'s Sim,
    start_ns: u64,
    total_rate: f64,
    /// The next sample's index, stream and per-stream sequence.
    g: u64,
    /// The index at which the schedule last started (`start_ns`).
    base_g: u64,
    stream: u32,
    seq: u64,
    /// Per period index: the sequence its sine was computed for, and it.
    sines: Vec<(u64, f64)>,
    /// Per stream, the setpoint it follows (empty until the first).
    lags: Vec<Option<Lag>>,
}

impl Samples<'_> {
    /// The index of the next sample.
    pub fn next_index(&self) -> u64 {
        self.g
    }

    /// Samples since the schedule last started.
    fn since_base(&self) -> u64 {
        self.g - self.base_g
    }

    /// The schedule starts again: the next sample is due at `start_ns`, the
    /// ones after it at `total_rate`.
    fn rebase(&mut self, start_ns: u64, total_rate: f64) {
        (self.base_g, self.start_ns, self.total_rate) = (self.g, start_ns, total_rate);
    }

    /// `stream` follows the setpoint `target` (`None`: its own baseline)
    /// from its next sample on, from the level it has there; returns that
    /// sample's per-stream sequence.
    pub fn steer(&mut self, stream: u32, target: Option<f64>) -> u64 {
        let from_seq = if stream < self.stream { self.seq + 1 } else { self.seq };
        let base = baseline(self.sim.stream_hash(stream));
        if self.lags.is_empty() {
            self.lags = vec![None; self.sim.streams as usize];
        }
        let lag = &mut self.lags[stream as usize];
        let from_level = lag.map_or(base, |l| l.level(from_seq));
        *lag = Some(Lag { target: target.unwrap_or(base), from_seq, from_level });
        from_seq
    }

    /// The next sample (its `ingest_ns` zero).
    #[inline]
    pub fn next_sample(&mut self) -> Sample {
        let (stream, seq) = (self.stream, self.seq);
        let h = self.sim.stream_hash(stream);
        let p = period_index(h);
        let memo = &mut self.sines[p];
        if memo.0 != seq {
            *memo = (seq, sine(seq, p));
        }
        let (value, quality) = match self.lags.get(stream as usize) {
            Some(Some(lag)) => compose_at(stream, h, seq, memo.1, lag.level(seq)),
            _ => compose(stream, h, seq, memo.1),
        };
        let sample_ns = self.start_ns + due_offset_ns(self.g - self.base_g, self.total_rate);
        self.g += 1;
        self.stream += 1;
        if self.stream == self.sim.streams {
            self.stream = 0;
            self.seq += 1;
        }
        Sample { stream, quality, seq, sample_ns, ingest_ns: 0, value }
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

    #[test]
    fn the_generator_gives_exactly_the_defined_samples() {
        for (streams, rate_hz, seed) in [(1, 100.0, 1), (3, 10.0, 7), (50, 333.3, 9), (1237, 100.0, 42)] {
            let sim = Sim { streams, rate_hz, seed };
            let mut gen = sim.samples(5_000);
            // Past several spikes of stream 0 (every 997th sample).
            let n = (streams as u64 * 2100).max(5000);
            for g in 0..n {
                assert_eq!(gen.next_index(), g);
                let s = gen.next_sample();
                let want = sim.sample(g, 5_000);
                // Bit for bit, the value too.
                assert_eq!((s, s.value.to_bits()), (want, want.value.to_bits()), "{sim:?}, sample {g}");
            }
        }
    }

    /// A clock that moves only when the source sleeps (to the time asked),
    /// plus `stall` ns once, at the first sleep at or after `stall_at`; it
    /// asks the source to stop once `end` has passed. It records each
    /// wake-up: (when, lateness the source last reported).
    struct Virtual {
        now: u64,
        end: u64,
        stall_at: u64,
        stall: u64,
        state: std::sync::Arc<SourceState>,
        wakes: Vec<(u64, u64)>,
    }

    impl Clock for Virtual {
        fn now_ns(&mut self) -> u64 {
            self.now
        }
        fn sleep_until(&mut self, t_ns: u64, _: &super::super::plant::Inbox) {
            self.wakes.push((self.now, self.state.behind_ns.load(Ordering::Relaxed)));
            self.now = self.now.max(t_ns);
            if self.stall > 0 && self.now >= self.stall_at {
                self.now += std::mem::take(&mut self.stall);
            }
            if self.now >= self.end {
                self.state.stop.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Runs `sim` on `clock` into a fresh ring; every frame it wrote, in
    /// order (the ring holds them all).
    fn run_virtual(sim: Sim, clock: &mut Virtual) -> Vec<Sample> {
        use helix::{Namespace, Policy, Reader, ReaderOptions, Ring, RingOptions, Start};
        let ns = Namespace::new(
            &format!("simpace{}t{:?}", std::process::id(), std::thread::current().id())
                .replace(['(', ')', ' '], "")
                .to_lowercase(),
        )
        .unwrap();
        let opts = RingOptions { capacity: 1 << 19, max_payload: 48, policy: Policy::Overwrite, ..Default::default() };
        let ring = Ring::create(&ns, "sim", &opts).unwrap();
        let opts = ReaderOptions { start: Start::Oldest, ..ReaderOptions::named("check") };
        let reader = Reader::attach(&ns, "sim", &opts);
        // The mappings stay; the files go now, whatever happens next.
        Ring::unlink(&ns, "sim").unwrap();
        let mut reader = reader.unwrap();
        sim.run_on(ring.writer().unwrap(), &clock.state.clone(), clock).unwrap();
        std::iter::from_fn(|| reader.try_read_pod::<Sample>().ok().map(|(_, s)| s)).collect()
    }

    fn virtual_clock(end: u64, stall_at: u64, stall: u64) -> Virtual {
        Virtual { now: 1_000, end, stall_at, stall, state: SourceState::new(), wakes: vec![] }
    }

    #[test]
    fn on_time_it_wakes_once_a_tick_and_writes_every_sample_due() {
        // 1,000 streams x 100 Hz for one (virtual) second.
        let sim = Sim { streams: 1000, rate_hz: 100.0, seed: 4 };
        let mut clock = virtual_clock(1_000 + 1_000_000_000, u64::MAX, 0);
        let written = run_virtual(sim, &mut clock);
        // Each wake-up after the first finds a tick's worth (100) due.
        let n = clock.wakes.len();
        assert!((999..=1001).contains(&n), "{n} wake-ups");
        assert_eq!(written.len() as u64, Pacer::new(1_000, 1e5).due(last_wake(&clock)));
        for (g, s) in written.iter().enumerate() {
            let want = Sample { ingest_ns: s.ingest_ns, ..sim.sample(g as u64, 1_000) };
            assert_eq!(*s, want);
            // Written when due, within a tick.
            assert!(s.ingest_ns >= s.sample_ns && s.ingest_ns - s.sample_ns <= 1_000_000 + 10_000);
        }
        assert!(clock.wakes.iter().all(|&(_, behind)| behind <= TICK_NS), "late while on time");
        assert_eq!(clock.state.samples.load(Ordering::Relaxed), written.len() as u64);
    }

    /// A slow stream's samples go out when due, at their `sample_ns`, not a
    /// period later. (Found by review: sample g went out at (g + 1) / rate,
    /// 33 ms late at 30 samples/s, and `behind_ns` said 0.)
    #[test]
    fn a_slow_source_writes_each_sample_at_its_sample_ns() {
        let sim = Sim { streams: 1, rate_hz: 30.0, seed: 4 };
        let mut clock = virtual_clock(1_000 + 1_000_000_000, u64::MAX, 0);
        let written = run_virtual(sim, &mut clock);
        assert_eq!(written.len(), 30, "samples 0 to 29 fall due within the second");
        for s in &written {
            assert!(s.ingest_ns >= s.sample_ns && s.ingest_ns - s.sample_ns <= TICK_NS, "{s:?}");
        }
    }

    /// When the source last looked at the clock to write what was due.
    fn last_wake(clock: &Virtual) -> u64 {
        clock.wakes.last().unwrap().0
    }

    const TICK_NS: u64 = super::super::pace::TICK.as_nanos() as u64;

    #[test]
    fn a_source_that_falls_behind_reports_it_catches_up_and_drops_nothing() {
        // 1,000 streams x 100 Hz; at 200 ms the thread gets no CPU for 3 s.
        let sim = Sim { streams: 1000, rate_hz: 100.0, seed: 4 };
        let mut clock = virtual_clock(1_000 + 4_000_000_000, 200_000_000, 3_000_000_000);
        let written = run_virtual(sim, &mut clock);
        let lateness: Vec<u64> = clock.wakes.iter().map(|&(_, b)| b).collect();
        let worst = *lateness.iter().max().unwrap();
        assert!((3_000_000_000..3_000_000_000 + 2 * TICK_NS).contains(&worst), "worst lateness {worst}");
        // Caught up at once (in one wake-up: this clock stands still while
        // it writes), and on time from then on.
        let at = lateness.iter().position(|&b| b == worst).unwrap();
        assert!(lateness[at + 1..].iter().all(|&b| b <= TICK_NS), "{:?}", &lateness[at..at + 3]);
        // Nothing dropped: every sample due, in order, each exactly defined.
        assert_eq!(written.len() as u64, Pacer::new(1_000, 1e5).due(last_wake(&clock)));
        for (g, s) in written.iter().enumerate() {
            assert_eq!(*s, Sample { ingest_ns: s.ingest_ns, ..sim.sample(g as u64, 1_000) });
        }
    }

    #[test]
    fn the_cheaper_arithmetic_gives_the_values_it_always_gave() {
        for stream in 0..20_000u32 {
            let h = Sim { streams: 1, rate_hz: 1.0, seed: 3 }.stream_hash(stream);
            assert_eq!(50.0 + period_index(h) as f64, 50.0 + (h >> 20) as f64 % 500.0);
            assert_eq!((h % 1000) as u32 as f64, (h % 1000) as f64);
        }
        for total in [1e6, 5e6, 30.0, 333.3 * 50.0, 1.0] {
            for g in [0, 1, 12_345, 1 << 40, (1 << 53) + 1, (1 << 62) + 12_345, (1 << 63) - 1] {
                let old = (g as f64 * 1e9 / total) as u64;
                if old < 1 << 63 {
                    assert_eq!(due_offset_ns(g, total), old, "g {g} at {total}/s");
                }
            }
        }
    }
}
