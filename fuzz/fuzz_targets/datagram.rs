//! The HAL's UDP datagram parser (`helix::telemetry::datagram`): any bytes
//! are either rejected with a reason or are a datagram whose samples all
//! decode and encode back to exactly the same bytes.
#![no_main]

use helix::telemetry::datagram::{encode, sample, validate, HEADER, MAX_SAMPLES, RECORD};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|d: &[u8]| {
    let Ok(count) = validate(d) else { return };
    assert!((1..=MAX_SAMPLES).contains(&count), "validate accepted a count of {count}");
    assert_eq!(d.len(), HEADER + RECORD * count, "validate accepted a datagram of the wrong length");
    let samples: Vec<_> = (0..count).map(|i| sample(d, i, 7)).collect();
    assert!(samples.iter().all(|s| s.ingest_ns == 7));
    assert_eq!(encode(&samples), d, "a valid datagram does not round-trip through its samples");
});
