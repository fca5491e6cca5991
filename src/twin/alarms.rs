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
use crate::shm::Namespace;
use crate::FrameRef;

/// The alarms raised and not cleared, as read from the alarm ring.
#[derive(Debug, Clone, Default)]
pub struct ActiveAlarms {
    /// The newest twin instance in the ring (0 if it holds no alarm event);
    /// the alarms below are of that instance.
    pub instance: u64,
    /// The raise event of every active alarm, by stream and rule.
    pub raised: BTreeMap<(u32, AlarmKind), AlarmEvent>,
}

impl ActiveAlarms {
    /// Reads the alarm ring `ring` in namespace `ns` from its oldest frame,
    /// as a non-gating reader named `reader_name` (as
    /// [`super::Snapshot::read`] does). Never waits.
    pub fn read(ns: &Namespace, ring: &str, reader_name: &str) -> Result<ActiveAlarms, TwinRingError> {
        let mut ring = TwinRing::attach(ns, ring, reader_name)?;
        let mut alarms = ActiveAlarms::default();
        ring.drain(|f| alarms.take(f));
        Ok(alarms)
    }

    /// Takes one frame: a raise activates its alarm, a clear ends it; an
    /// event of a newer instance discards the older one's alarms. Frames of
    /// other kinds or sizes, and events of an unknown rule, are skipped.
    fn take(&mut self, f: &FrameRef<'_>) {
        if f.kind() != KIND_ALARM {
            return;
        }
        let Ok(e) = f.read::<AlarmEvent>() else { return };
        let Some(kind) = e.kind() else { return };
        if e.instance > self.instance {
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

    #[test]
    fn an_alarm_is_active_from_its_raise_to_its_clear_within_the_newest_instance() {
        let mut r = TestRing::new("d", "alarms");
        r.publish(KIND_ALARM, &event(1, 9, 2, ACTION_RAISE, 1));
        r.publish(KIND_ALARM, &event(2, 3, 2, ACTION_RAISE, 1));
        r.publish(KIND_ALARM, &event(2, 4, 1, ACTION_RAISE, 2));
        r.publish(KIND_ALARM, &event(2, 4, 1, ACTION_CLEAR, 3));
        r.publish(KIND_ALARM, &event(2, 5, 4, ACTION_RAISE, 4));
        // A late event of the older twin, an unknown rule, a foreign frame.
        r.publish(KIND_ALARM, &event(1, 6, 2, ACTION_RAISE, 2));
        r.publish(KIND_ALARM, &event(2, 7, 9, ACTION_RAISE, 5));
        r.publish::<crate::telemetry::Sample>(crate::telemetry::KIND_SAMPLE, &bytemuck::Zeroable::zeroed());

        let a = ActiveAlarms::read(&r.ns, r.name, "alarms-test").unwrap();
        assert_eq!(a.instance, 2);
        let active: Vec<(u32, AlarmKind, u64)> = a.raised.iter().map(|(&(s, k), e)| (s, k, e.event)).collect();
        assert_eq!(active, [(3, AlarmKind::High, 1), (5, AlarmKind::Stale, 4)]);
    }
}
