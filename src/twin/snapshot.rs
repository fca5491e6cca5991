//! Reading the twin's state table from `twin.state` (docs/abi.md §10.2):
//! the newest state of every stream and the twin's own counters.
//!
//! Every snapshot interval the twin publishes a full snapshot (a begin
//! marker, the state of every stream that has had a sample, an end marker);
//! between snapshots, the states of the streams that changed. A stream's
//! latest state is therefore its last state frame in ring order, and
//! [`Snapshot::read`] takes exactly that: it drains the ring from the
//! oldest frame it still holds up to what was published when it started,
//! keeping, of the newest twin instance, each stream's last state frame and
//! the two newest begin markers.
//!
//! The newest instance is the one whose begin marker came last in ring
//! order, whatever its number: the number is the twin's start time on a
//! clock that can be stepped back, and a single damaged frame could carry
//! any number. A twin publishes a snapshot first thing, so its first begin
//! marker precedes all its state frames; only in a ring that holds no begin
//! marker (yet) is the instance that of the last state frame.
//!
//! It reads as a non-gating reader, so it never holds the twin back. A
//! frame the twin overwrites while it is being copied is never taken (the
//! copy is seen to be torn and the ring reports an overrun); after an
//! overrun reading goes on from the oldest intact frame, whose newer states
//! supersede what was lost.

use std::collections::BTreeMap;

use super::{Marker, StreamState, KIND_SNAPSHOT_BEGIN, KIND_SNAPSHOT_END, KIND_STREAM_STATE, TWIN_FORMAT_VERSION};
use crate::shm::Namespace;
use crate::{
    AttachError, Damaged, ForeignRing, FrameRef, LeaseInfo, Owners, Reader, ReaderOptions, RingView, Start,
    TryReadError, WaitStrategy,
};

/// Why one of the twin's rings could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TwinRingError {
    /// The ring does not exist in the namespace: helix-twin (and helixd,
    /// which creates its rings) has not run there.
    #[error("{ring} not found: is helix-twin running? (no ring {ring:?} in namespace {namespace})")]
    NotFound {
        /// The ring asked for.
        ring: String,
        /// The namespace looked in.
        namespace: String,
    },
    /// Any other attach failure: permissions, a corrupt file, a full reader
    /// table.
    #[error("{ring}: {error}")]
    Attach {
        /// The ring asked for.
        ring: String,
        /// Why it did not attach.
        error: AttachError,
    },
    /// The ring is owned by a user not believed: whoever made it could
    /// publish any state and any alarm.
    #[error(transparent)]
    Foreign(#[from] ForeignRing),
    /// The ring holds frames and none of the kinds the twin publishes
    /// there: another ring named in its place (`helixctl twin
    /// --state-ring telemetry`), whose writer would pass for the twin.
    #[error("{ring}: none of its {frames} frames is one the twin publishes there (of its kinds and sizes, and twin format version {TWIN_FORMAT_VERSION}; the first is of kind {kind:#010x}, {len} bytes): not the twin's ring")]
    NotTheTwins {
        /// The ring asked for.
        ring: String,
        /// The frames read.
        frames: u64,
        /// The first one's kind.
        kind: u32,
        /// The first one's length.
        len: usize,
    },
    /// A file of the ring shrank while it was read (a peer truncated it):
    /// what was read may be only part of what it holds.
    #[error(transparent)]
    Damaged(#[from] Damaged),
}

/// One of the twin's rings, attached twice: a view for its lease and
/// counters, and a non-gating reader from its oldest frame.
pub(super) struct TwinRing {
    pub(super) view: RingView,
    reader: Reader,
    name: String,
}

impl TwinRing {
    /// Attaches to `ring`, if one of `owners` owns it; the reader's entry is
    /// named `reader_name` while it reads.
    pub(super) fn attach(
        ns: &Namespace,
        ring: &str,
        reader_name: &str,
        owners: &Owners,
    ) -> Result<TwinRing, TwinRingError> {
        let err = |e: AttachError| match e {
            AttachError::NotFound { .. } => TwinRingError::NotFound { ring: ring.into(), namespace: ns.to_string() },
            error => TwinRingError::Attach { ring: ring.into(), error },
        };
        let view = RingView::attach(ns, ring).map_err(err)?;
        view.check_owner_in(owners)?;
        let opts =
            ReaderOptions { name: reader_name.into(), gating: false, start: Start::Oldest, wait: WaitStrategy::Park };
        // On the attachment judged above, so that the figures (the lease,
        // what was published) and the frames are of one ring, even if it
        // is replaced under its name meanwhile.
        let reader = view.reader(&opts).map_err(err)?;
        Ok(TwinRing { view, reader, name: ring.to_owned() })
    }

    /// Hands every frame up to what was published when it started to `f`,
    /// in ring order, skipping what the writer overwrote meanwhile. Never
    /// waits. Fails if frames were read and none `is_twins`: of a kind, a
    /// size and a format the twin publishes on the ring. (Found by review:
    /// a ring of any other frames showed as a twin with no stream and no
    /// alarm, its writer as the twin, alive; so did one of the twin's kinds
    /// in another size or format version.)
    pub(super) fn drain(
        &mut self,
        is_twins: impl Fn(&FrameRef<'_>) -> bool,
        mut f: impl FnMut(&FrameRef<'_>),
    ) -> Result<(), TwinRingError> {
        let end = self.view.stats().published;
        let (mut frames, mut twins, mut first) = (0u64, 0u64, None);
        while self.reader.cursor() <= end {
            let read = self.reader.try_read_batch(4096, |frame| {
                frames += 1;
                first.get_or_insert((frame.kind(), frame.len()));
                twins += u64::from(is_twins(frame));
                f(frame)
            });
            match read {
                Ok(_) | Err(TryReadError::Overrun(_)) => {}
                Err(TryReadError::Damaged(d)) => return Err(d.into()),
                Err(_) => break,
            }
        }
        // Damage met while reading (a peer truncated a file under the
        // reader, even at its last batch), not only at the start of a
        // batch: what was read may be only part of the ring. (Found by
        // review: a damaged ring read as whole and short, so a restarted
        // twin took over only some streams, and said it took them all.)
        if let Some(d) = self.view.damage() {
            return Err(d.into());
        }
        match first {
            Some((kind, len)) if twins == 0 => {
                Err(TwinRingError::NotTheTwins { ring: self.name.clone(), frames, kind, len })
            }
            _ => Ok(()),
        }
    }
}

/// A snapshot marker of the twin's format, if `f` is one (of either kind).
fn marker_of(f: &FrameRef<'_>) -> Option<Marker> {
    f.read::<Marker>().ok().filter(|m| m.version == TWIN_FORMAT_VERSION)
}

/// Whether `f` is a frame the twin publishes on its state ring: a stream
/// state, or a snapshot marker of its format version.
fn is_state_frame(f: &FrameRef<'_>) -> bool {
    match f.kind() {
        KIND_STREAM_STATE => f.len() == std::mem::size_of::<StreamState>(),
        KIND_SNAPSHOT_BEGIN | KIND_SNAPSHOT_END => marker_of(f).is_some(),
        _ => false,
    }
}

/// The twin's latest published state, as read from its state ring.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The state ring's writer lease: the twin's pid and whether it is
    /// alive. A twin that stopped leaves its last state readable.
    pub writer: LeaseInfo,
    /// The newest twin instance in the ring: that of the last begin marker
    /// in ring order (of the last state frame if it holds no marker; 0 if
    /// it holds no twin frame). Everything below is of that instance.
    pub instance: u64,
    /// Each stream's newest state frame, by stream id.
    pub streams: BTreeMap<u32, StreamState>,
    /// The newest snapshot begin marker: the twin's counters.
    pub marker: Option<Marker>,
    /// The begin marker before it, for rates.
    pub previous_marker: Option<Marker>,
}

impl Snapshot {
    /// Reads the twin's state ring `ring` in namespace `ns` as a non-gating
    /// reader named `reader_name` (shown by `helixctl readers` while it
    /// reads; it leaves the table when done). Reads what is published when
    /// it starts and never waits.
    pub fn read(ns: &Namespace, ring: &str, reader_name: &str, owners: &Owners) -> Result<Snapshot, TwinRingError> {
        let mut ring = TwinRing::attach(ns, ring, reader_name, owners)?;
        let mut snapshot = Snapshot::empty(ring.view.stats().lease);
        ring.drain(is_state_frame, |f| snapshot.take(f))?;
        Ok(snapshot)
    }

    fn empty(writer: LeaseInfo) -> Snapshot {
        Snapshot { writer, instance: 0, streams: BTreeMap::new(), marker: None, previous_marker: None }
    }

    /// Takes one frame of the state ring; frames of other kinds or sizes
    /// are not the twin's and are skipped.
    fn take(&mut self, f: &FrameRef<'_>) {
        match f.kind() {
            KIND_STREAM_STATE => {
                let Ok(s) = f.read::<StreamState>() else { return };
                // Before any begin marker, the last state frame's instance
                // is the best guess; after one, only its instance counts.
                if self.marker.is_none() && s.instance != self.instance {
                    self.restart(s.instance);
                }
                if s.instance == self.instance {
                    self.streams.insert(s.stream, s);
                }
            }
            KIND_SNAPSHOT_BEGIN => {
                let Some(m) = marker_of(f) else { return };
                if m.instance != self.instance {
                    self.restart(m.instance);
                }
                self.previous_marker = self.marker.replace(m);
            }
            _ => {}
        }
    }

    /// Starts over with `instance`, the newest in ring order so far: a
    /// restarted twin starts from nothing, so what was gathered from the
    /// instance before it is discarded.
    fn restart(&mut self, instance: u64) {
        *self = Snapshot::empty(self.writer.clone());
        self.instance = instance;
    }

    /// Telemetry frames the twin consumed per second between the two newest
    /// markers: `None` with fewer than two, 0 if they bear the same time.
    pub fn frames_per_sec(&self) -> Option<f64> {
        let (m, p) = (self.marker.as_ref()?, self.previous_marker.as_ref()?);
        let secs = m.published_ns.saturating_sub(p.published_ns) as f64 / 1e9;
        Some(if secs > 0.0 { m.frames.saturating_sub(p.frames) as f64 / secs } else { 0.0 })
    }
}

#[cfg(all(test, not(loom)))]
pub(super) mod tests {
    use super::*;
    use crate::twin::KIND_SNAPSHOT_END;
    use crate::{Ring, RingOptions, Writer};

    /// A namespace of its own with one ring (payloads of 256 bytes, 64
    /// slots) and its writer; unlinked on drop.
    pub(in crate::twin) struct TestRing {
        pub ns: Namespace,
        pub name: &'static str,
        pub writer: Writer,
        _ring: Ring,
    }

    impl TestRing {
        pub fn new(tag: &str, name: &'static str) -> TestRing {
            let ns = Namespace::new(&format!("tw{}{tag}", std::process::id())).unwrap();
            let _ = Ring::unlink(&ns, name);
            let ring =
                Ring::create(&ns, name, &RingOptions { capacity: 64, max_payload: 256, ..Default::default() }).unwrap();
            let writer = ring.writer().unwrap();
            TestRing { ns, name, writer, _ring: ring }
        }

        pub fn publish<T: bytemuck::Pod>(&mut self, kind: u32, frame: &T) {
            self.writer.publish_kind(kind, bytemuck::bytes_of(frame)).unwrap();
        }
    }

    impl Drop for TestRing {
        fn drop(&mut self) {
            let _ = Ring::unlink(&self.ns, self.name);
        }
    }

    fn state(instance: u64, stream: u32, last: f64) -> StreamState {
        StreamState { instance, stream, last, ..bytemuck::Zeroable::zeroed() }
    }

    fn marker(instance: u64, round: u64, published_ns: u64, frames: u64) -> Marker {
        Marker { version: TWIN_FORMAT_VERSION, instance, round, published_ns, frames, ..bytemuck::Zeroable::zeroed() }
    }

    #[test]
    fn a_stream_s_state_is_its_last_frame_of_the_newest_instance() {
        let mut r = TestRing::new("a", "twin.state");
        r.publish(KIND_STREAM_STATE, &state(5, 1, 9.0));
        r.publish(KIND_SNAPSHOT_BEGIN, &marker(7, 1, 1_000_000_000, 100));
        r.publish(KIND_STREAM_STATE, &state(7, 1, 1.0));
        r.publish(KIND_STREAM_STATE, &state(7, 2, 2.0));
        r.publish(KIND_SNAPSHOT_END, &marker(7, 1, 1_000_000_000, 100));
        // A change update, a late frame of the older twin, a foreign frame.
        r.publish(KIND_STREAM_STATE, &state(7, 1, 1.5));
        r.publish(KIND_STREAM_STATE, &state(5, 3, 3.0));
        r.publish::<crate::telemetry::Sample>(crate::telemetry::KIND_SAMPLE, &bytemuck::Zeroable::zeroed());
        r.publish(KIND_SNAPSHOT_BEGIN, &marker(7, 3, 1_500_000_000, 600));

        let s = Snapshot::read(&r.ns, r.name, "snapshot-test", &Owners::MINE).unwrap();
        assert_eq!(s.instance, 7);
        let last: Vec<(u32, f64)> = s.streams.values().map(|s| (s.stream, s.last)).collect();
        assert_eq!(last, [(1, 1.5), (2, 2.0)]);
        assert_eq!((s.marker.map(|m| m.round), s.previous_marker.map(|m| m.round)), (Some(3), Some(1)));
        assert_eq!(s.frames_per_sec(), Some(1000.0));
        assert_eq!((s.writer.pid, s.writer.alive), (Some(std::process::id()), true));
        // The reader left the table.
        assert!(RingView::attach(&r.ns, r.name).unwrap().stats().readers.is_empty());
    }

    /// A ring of other frames named as the twin's (`helixctl twin
    /// --state-ring telemetry`) is refused; an empty one is no twin's yet.
    #[test]
    fn a_ring_without_a_frame_of_the_twins_kinds_is_not_taken_for_the_twins() {
        let mut r = TestRing::new("n", "telemetry");
        assert_eq!(Snapshot::read(&r.ns, r.name, "snapshot-test", &Owners::MINE).unwrap().instance, 0);
        let alarms = crate::twin::ActiveAlarms::read(&r.ns, r.name, "snapshot-test", &Owners::MINE, 0).unwrap();
        assert!(alarms.raised.is_empty());
        for _ in 0..3 {
            r.publish::<crate::telemetry::Sample>(crate::telemetry::KIND_SAMPLE, &bytemuck::Zeroable::zeroed());
        }
        let said = "telemetry: none of its 3 frames is one the twin publishes there (of its kinds and sizes, and \
                    twin format version 1; the first is of kind 0x00000001, 40 bytes): not the twin's ring";
        match Snapshot::read(&r.ns, r.name, "snapshot-test", &Owners::MINE) {
            Err(e @ TwinRingError::NotTheTwins { frames: 3, .. }) => assert_eq!(e.to_string(), said),
            other => panic!("{other:?}"),
        }
        match crate::twin::ActiveAlarms::read(&r.ns, r.name, "snapshot-test", &Owners::MINE, 0) {
            Err(TwinRingError::NotTheTwins { frames: 3, kind: crate::telemetry::KIND_SAMPLE, .. }) => {}
            other => panic!("{other:?}"),
        }
        // Frames of the twin's kinds in another size or format version
        // (found by review: shown as a live twin with no stream).
        let other_version = Marker { version: 2, ..marker(2, 1, 20, 1) };
        r.publish(KIND_SNAPSHOT_BEGIN, &other_version);
        r.writer.publish_kind(KIND_STREAM_STATE, &[0u8; 184]).unwrap();
        match Snapshot::read(&r.ns, r.name, "snapshot-test", &Owners::MINE) {
            Err(TwinRingError::NotTheTwins { frames: 5, .. }) => {}
            other => panic!("{other:?}"),
        }
        // One frame of the twin's among them is enough.
        r.publish(KIND_SNAPSHOT_BEGIN, &marker(2, 1, 20, 1));
        assert_eq!(Snapshot::read(&r.ns, r.name, "snapshot-test", &Owners::MINE).unwrap().instance, 2);
    }

    /// A reader of the state ring (its group may write the reader table)
    /// truncates the table while the ring is read: an error naming the
    /// damage, not part of the ring taken for the whole of it.
    #[test]
    fn a_ring_damaged_while_it_is_read_is_an_error_not_a_short_state() {
        let mut r = TestRing::new("d", "twin.state");
        r.publish(KIND_SNAPSHOT_BEGIN, &marker(7, 1, 1_000_000_000, 3));
        for stream in 0..2 {
            r.publish(KIND_STREAM_STATE, &state(7, stream, 1.0));
        }
        let mut ring = TwinRing::attach(&r.ns, r.name, "snapshot-test", &Owners::MINE).unwrap();
        let table = std::fs::OpenOptions::new().write(true).open(r.ns.readers_path(r.name)).unwrap();
        table.set_len(0).unwrap();
        let mut taken = 0;
        match ring.drain(is_state_frame, |_| taken += 1) {
            Err(TwinRingError::Damaged(d)) => assert!(d.to_string().contains("twin.state"), "{d}"),
            other => panic!("{other:?} after {taken} frames"),
        }
    }

    #[test]
    fn a_newer_instance_discards_the_older_one_s_state_and_markers() {
        let mut r = TestRing::new("b", "twin.state");
        r.publish(KIND_SNAPSHOT_BEGIN, &marker(1, 1, 10, 5));
        r.publish(KIND_STREAM_STATE, &state(1, 4, 4.0));
        r.publish(KIND_SNAPSHOT_BEGIN, &marker(2, 1, 20, 1));
        let s = Snapshot::read(&r.ns, r.name, "snapshot-test", &Owners::MINE).unwrap();
        assert_eq!((s.instance, s.streams.len()), (2, 0));
        assert_eq!((s.marker.map(|m| m.instance), s.previous_marker), (Some(2), None));
        assert_eq!(s.frames_per_sec(), None);
    }

    #[test]
    fn the_newest_instance_is_the_last_to_begin_in_ring_order_not_the_largest_number() {
        // The clock stepped back between two starts: the live twin's
        // instance is the smaller number.
        let mut r = TestRing::new("e", "twin.state");
        r.publish(KIND_SNAPSHOT_BEGIN, &marker(10, 1, 10, 100));
        r.publish(KIND_STREAM_STATE, &state(10, 1, 1.0));
        r.publish(KIND_STREAM_STATE, &state(10, 2, 2.0));
        r.publish(KIND_SNAPSHOT_END, &marker(10, 1, 10, 100));
        r.publish(KIND_SNAPSHOT_BEGIN, &marker(5, 1, 20, 7));
        r.publish(KIND_STREAM_STATE, &state(5, 3, 3.0));
        r.publish(KIND_SNAPSHOT_END, &marker(5, 1, 20, 7));
        r.publish(KIND_STREAM_STATE, &state(5, 3, 3.5));
        // A late frame of the dead twin is not the live one's.
        r.publish(KIND_STREAM_STATE, &state(10, 4, 4.0));
        let s = Snapshot::read(&r.ns, r.name, "snapshot-test", &Owners::MINE).unwrap();
        assert_eq!(s.instance, 5);
        let last: Vec<(u32, f64)> = s.streams.values().map(|s| (s.stream, s.last)).collect();
        assert_eq!(last, [(3, 3.5)]);
        assert_eq!((s.marker.map(|m| (m.instance, m.frames)), s.previous_marker), (Some((5, 7)), None));
    }

    #[test]
    fn a_frame_of_the_largest_instance_does_not_blind_the_reader_to_the_twin_that_begins_after_it() {
        let mut r = TestRing::new("f", "twin.state");
        r.publish(KIND_STREAM_STATE, &state(u64::MAX, 9, 9.0));
        r.publish(KIND_SNAPSHOT_BEGIN, &marker(7, 1, 10, 1));
        r.publish(KIND_STREAM_STATE, &state(7, 1, 1.0));
        r.publish(KIND_STREAM_STATE, &state(u64::MAX, 2, 2.0));
        let s = Snapshot::read(&r.ns, r.name, "snapshot-test", &Owners::MINE).unwrap();
        assert_eq!(s.instance, 7);
        assert_eq!(s.streams.keys().copied().collect::<Vec<u32>>(), [1]);
        assert_eq!(s.marker.map(|m| m.instance), Some(7));
        // With no begin marker at all, the last state frame's instance.
        let mut r = TestRing::new("g", "twin.state");
        r.publish(KIND_STREAM_STATE, &state(u64::MAX, 9, 9.0));
        r.publish(KIND_STREAM_STATE, &state(3, 1, 1.0));
        let s = Snapshot::read(&r.ns, r.name, "snapshot-test", &Owners::MINE).unwrap();
        assert_eq!((s.instance, s.streams.keys().copied().collect::<Vec<u32>>()), (3, vec![1]));
    }

    #[test]
    fn an_empty_ring_is_an_empty_snapshot_and_a_missing_one_an_error() {
        let r = TestRing::new("c", "twin.state");
        let s = Snapshot::read(&r.ns, r.name, "snapshot-test", &Owners::MINE).unwrap();
        assert_eq!((s.instance, s.streams.len(), s.marker), (0, 0, None));
        let e = Snapshot::read(&r.ns, "elsewhere", "snapshot-test", &Owners::MINE).unwrap_err();
        assert!(matches!(e, TwinRingError::NotFound { .. }), "{e:?}");
        assert!(e.to_string().starts_with("elsewhere not found: is helix-twin running?"), "{e}");
    }

    #[test]
    fn the_rate_is_zero_between_markers_of_the_same_time() {
        let mut s = Snapshot::empty(LeaseInfo { pid: None, epoch: 0, alive: false, takeovers: 0 });
        s.marker = Some(marker(1, 2, 10, 50));
        s.previous_marker = Some(marker(1, 1, 10, 40));
        assert_eq!(s.frames_per_sec(), Some(0.0));
    }
}
