//! Reading the active alarms from the twin's `alarms` ring (docs/abi.md
//! §10.3): an alarm is active from its raise to its clear, within one twin
//! instance.
//!
//! The ring may no longer hold the raise of a long-active alarm, so a
//! reader should also take the alarm bits of the stream's latest state
//! frame ([`super::Snapshot`]) as active.

use std::collections::BTreeMap;

use super::snapshot::{TwinRing, TwinRingError};
use super::{AlarmEvent, AlarmKind, KIND_ALARM};
use crate::ring::Owners;
use crate::shm::Namespace;
use crate::FrameRef;

/// The alarms raised and not cleared, as read from the alarm ring.
#[derive(Debug, Clone, Default)]
pub struct ActiveAlarms {
    /// The twin instance the alarms below are of: the one asked for, or
    /// (asked for 0) that of the last alarm event in ring order (0 if the
    /// ring holds none).
    pub instance: u64,
    /// The raise event of every active alarm, by stream and rule.
    pub raised: BTreeMap<(u32, AlarmKind), AlarmEvent>,
}

impl ActiveAlarms {
    /// Reads the alarm ring `ring` in namespace `ns` from its oldest frame,
    /// as a non-gating reader named `reader_name` (as
    /// [`super::Snapshot::read`] does), keeping the alarms of twin
    /// `instance`: pass the [`super::Snapshot::instance`] of the state
    /// ring, so that state and alarms are of the same twin. With 0 (a state
    /// ring that holds no twin frame) it keeps those of the instance whose
    /// event came last in ring order. An instance is never judged by its
    /// number: that is the twin's start on a clock that can be stepped
    /// back. Never waits.
    pub fn read(
        ns: &Namespace,
        ring: &str,
        reader_name: &str,
        owners: &Owners,
        instance: u64,
    ) -> Result<ActiveAlarms, TwinRingError> {
        let mut ring = TwinRing::attach(ns, ring, reader_name, owners)?;
        let mut alarms = ActiveAlarms { instance, raised: BTreeMap::new() };
        let follow = instance == 0;
        let is_alarm = |f: &crate::FrameRef<'_>| f.kind() == KIND_ALARM && f.len() == std::mem::size_of::<AlarmEvent>();
        ring.drain(is_alarm, |f| alarms.take(f, follow))?;
        Ok(alarms)
    }

    /// Takes one frame: a raise activates its alarm, a clear ends it.
    /// Events of another instance than `self.instance` are skipped, unless
    /// `follow`: then an event of another instance starts over with it.
    /// Frames of other kinds or sizes, and events of an unknown rule, are
    /// skipped.
    fn take(&mut self, f: &FrameRef<'_>, follow: bool) {
        if f.kind() != KIND_ALARM {
            return;
        }
        let Ok(e) = f.read::<AlarmEvent>() else { return };
        let Some(kind) = e.kind() else { return };
        if follow && e.instance != self.instance {
            self.instance = e.instance;
            self.raised.clear();
        }
        if e.instance != self.instance {
            return;
        }
        if e.is_raise() {
            self.raised.insert((e.stream, kind), e);
        } else {
            self.raised.remove(&(e.stream, kind));
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::super::snapshot::tests::TestRing;
    use super::super::{ACTION_CLEAR, ACTION_RAISE};
    use super::*;

    fn event(instance: u64, stream: u32, rule: u16, action: u16, event: u64) -> AlarmEvent {
        AlarmEvent { instance, stream, rule, action, event, ..bytemuck::Zeroable::zeroed() }
    }

    /// Events of two twins, the live one (instance 2) second in ring order.
    fn two_twins(tag: &str) -> TestRing {
        let mut r = TestRing::new(tag, "alarms");
        r.publish(KIND_ALARM, &event(1, 9, 2, ACTION_RAISE, 1));
        r.publish(KIND_ALARM, &event(2, 3, 2, ACTION_RAISE, 1));
        r.publish(KIND_ALARM, &event(2, 4, 1, ACTION_RAISE, 2));
        r.publish(KIND_ALARM, &event(2, 4, 1, ACTION_CLEAR, 3));
        r.publish(KIND_ALARM, &event(2, 5, 4, ACTION_RAISE, 4));
        // An unknown rule, a foreign frame.
        r.publish(KIND_ALARM, &event(2, 7, 9, ACTION_RAISE, 5));
        r.publish::<crate::telemetry::Sample>(crate::telemetry::KIND_SAMPLE, &bytemuck::Zeroable::zeroed());
        r
    }

    fn active(a: &ActiveAlarms) -> Vec<(u32, AlarmKind, u64)> {
        a.raised.iter().map(|(&(s, k), e)| (s, k, e.event)).collect()
    }

    #[test]
    fn an_alarm_is_active_from_its_raise_to_its_clear_within_the_instance_asked_for() {
        let mut r = two_twins("d");
        // A late event of the older twin.
        r.publish(KIND_ALARM, &event(1, 6, 2, ACTION_RAISE, 2));
        let a = ActiveAlarms::read(&r.ns, r.name, "alarms-test", &Owners::MINE, 2).unwrap();
        assert_eq!(a.instance, 2);
        assert_eq!(active(&a), [(3, AlarmKind::High, 1), (5, AlarmKind::Stale, 4)]);
        let a = ActiveAlarms::read(&r.ns, r.name, "alarms-test", &Owners::MINE, 1).unwrap();
        assert_eq!((a.instance, active(&a)), (1, vec![(6, AlarmKind::High, 2), (9, AlarmKind::High, 1)]));
    }

    #[test]
    fn asked_for_no_instance_the_last_in_ring_order_counts_not_the_largest_number() {
        // The live twin (2) started after one whose number is larger.
        let mut r = TestRing::new("h", "alarms");
        r.publish(KIND_ALARM, &event(u64::MAX, 9, 2, ACTION_RAISE, 1));
        r.publish(KIND_ALARM, &event(2, 3, 2, ACTION_RAISE, 1));
        let a = ActiveAlarms::read(&r.ns, r.name, "alarms-test", &Owners::MINE, 0).unwrap();
        assert_eq!((a.instance, active(&a)), (2, vec![(3, AlarmKind::High, 1)]));
        let a = ActiveAlarms::read(&two_twins("i").ns, "alarms", "alarms-test", &Owners::MINE, 0).unwrap();
        assert_eq!((a.instance, active(&a)), (2, vec![(3, AlarmKind::High, 1), (5, AlarmKind::Stale, 4)]));
    }
}
