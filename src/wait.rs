//! How a reader (or a lossless writer) waits: the strategy is chosen by the
//! caller and plugged into the ring's blocking calls.

/// What a reader does while no frame is available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStrategy {
    /// Poll without ever sleeping: the lowest latency, one core at 100%.
    Spin,
    /// Poll `spins` times, then park on the ring's futex.
    SpinThenPark {
        /// Polls before parking.
        spins: u32,
    },
    /// Park at once; the writer wakes parked readers with one `FUTEX_WAKE`
    /// per publish while any reader is parked (and none otherwise).
    Park,
}

impl WaitStrategy {
    /// Polls before parking (`u32::MAX` for [`WaitStrategy::Spin`]).
    pub fn spins(self) -> u32 {
        match self {
            WaitStrategy::Spin => u32::MAX,
            WaitStrategy::SpinThenPark { spins } => spins,
            WaitStrategy::Park => 0,
        }
    }
}

impl Default for WaitStrategy {
    /// Spin for a few microseconds (about the cost of one wake-up), then park.
    fn default() -> Self {
        WaitStrategy::SpinThenPark { spins: 4096 }
    }
}

impl std::str::FromStr for WaitStrategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "spin" => Ok(WaitStrategy::Spin),
            "park" => Ok(WaitStrategy::Park),
            "spin-then-park" | "hybrid" => Ok(WaitStrategy::default()),
            _ => Err(format!("unknown wait strategy {s:?}: expected spin, spin-then-park or park")),
        }
    }
}
