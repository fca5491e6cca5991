use proptest::prelude::*;

use super::*;

fn bytes(c: &Command) -> &[u8] {
    bytemuck::bytes_of(c)
}

#[test]
fn every_op_round_trips_through_decode() {
    let cases = [
        (Command::set(1, "", 3, -2.5), Op::Set, "telemetry", 3, -2.5),
        (Command::new(Op::Release, 2, "plant.b", 9, 0.0), Op::Release, "plant.b", 9, 0.0),
        (Command::new(Op::Pause, 3, "telemetry", 0, 0.0), Op::Pause, "telemetry", 0, 0.0),
        (Command::new(Op::Resume, u64::MAX, "telemetry", 0, 0.0), Op::Resume, "telemetry", 0, 0.0),
        (Command::new(Op::Rate, 5, "telemetry", 0, 1e6), Op::Rate, "telemetry", 0, 1e6),
    ];
    for (c, op, source, stream, value) in cases {
        let v = decode(KIND_COMMAND, bytes(&c)).unwrap();
        assert_eq!(v, Valid { op, request: c.request, source: source.into(), stream, value });
        assert_eq!(c.validate(), Ok(v));
    }
}

/// Each field broken in turn is named by its own reason.
#[test]
fn each_kind_of_garbage_is_rejected_with_its_reason() {
    let good = Command::set(1, "telemetry", 3, 1.0);
    let with = |f: &dyn Fn(&mut Command)| {
        let mut c = good;
        f(&mut c);
        decode(KIND_COMMAND, bytes(&c))
    };
    assert_eq!(decode(KIND_LOG, bytes(&good)), Err(Reason::BadKind));
    assert_eq!(decode(KIND_COMMAND, &bytes(&good)[..95]), Err(Reason::BadSize));
    assert_eq!(decode(KIND_COMMAND, &[bytes(&good), &[0]].concat()), Err(Reason::BadSize));
    assert_eq!(decode(KIND_COMMAND, &[]), Err(Reason::BadSize));
    assert_eq!(with(&|c| c.version = 2), Err(Reason::BadVersion));
    assert_eq!(with(&|c| c.op = 0), Err(Reason::UnknownOp));
    assert_eq!(with(&|c| c.op = 6), Err(Reason::UnknownOp));
    assert_eq!(with(&|c| c.request = 0), Err(Reason::NoRequestId));
    assert_eq!(with(&|c| c.reserved = 1), Err(Reason::NotZero));
    // A pause carries neither a stream nor a value.
    assert_eq!(with(&|c| c.op = Op::Pause as u16), Err(Reason::NotZero));
    assert_eq!(with(&|c| (c.op, c.value) = (Op::Pause as u16, 0.0)), Err(Reason::NotZero));
    assert_eq!(with(&|c| (c.op, c.stream) = (Op::Release as u16, 3)), Err(Reason::NotZero));
    // -0.0 is not the zero word.
    assert_eq!(with(&|c| (c.op, c.value) = (Op::Release as u16, -0.0)), Err(Reason::NotZero));
    assert_eq!(with(&|c| c.source[0] = b'A'), Err(Reason::BadSource));
    assert_eq!(with(&|c| c.source[40] = b'x'), Err(Reason::BadSource), "bytes after the NUL");
    assert_eq!(with(&|c| c.source = [b'a'; SOURCE_LEN]), Err(Reason::BadSource), "64 bytes, no NUL");
    assert_eq!(with(&|c| c.source[..2].copy_from_slice(&[0xc3, 0xa9])), Err(Reason::BadSource));
    assert_eq!(with(&|c| c.value = f64::NAN), Err(Reason::BadValue));
    assert_eq!(with(&|c| c.value = f64::INFINITY), Err(Reason::BadValue));
    let rate = |v: f64| with(&|c| (c.op, c.stream, c.value) = (Op::Rate as u16, 0, v));
    assert_eq!(rate(0.0), Err(Reason::BadValue));
    assert_eq!(rate(-1.0), Err(Reason::BadValue));
    assert_eq!(rate(1e6 + 1.0), Err(Reason::BadValue));
    assert_eq!(rate(f64::NAN), Err(Reason::BadValue));
    assert!(rate(0.5).is_ok());
    // Only stream ops default the source.
    let pause = Command::new(Op::Pause, 1, "", 0, 0.0);
    assert_eq!(decode(KIND_COMMAND, bytes(&pause)), Err(Reason::BadSource));
}

#[test]
fn reasons_and_verdicts_round_trip_through_their_wire_values() {
    for &r in Reason::ALL {
        assert_eq!(Reason::from_u16(r as u16), Some(r));
        let (v, code) = wire(Err(r));
        assert_eq!((v, code), (Verdict::Rejected as u16, r as u16));
        let log = LogRecord::new(KIND_COMMAND, &[], Err(r));
        assert_eq!(log.outcome(), Some(Err(r)));
    }
    assert_eq!(Reason::from_u16(0), None);
    assert_eq!(wire(Ok(())), (1, 0));
    let mut ack = Ack { verdict: 1, ..bytemuck::Zeroable::zeroed() };
    assert_eq!(ack.outcome(), Some(Ok(())));
    ack.reason = 3;
    assert_eq!(ack.outcome(), None, "accepted with a reason is no outcome");
    ack.verdict = 9;
    assert_eq!(ack.outcome(), None);
}

#[test]
fn a_log_record_keeps_the_first_96_bytes_and_the_length() {
    let c = Command::set(4, "telemetry", 1, 2.0);
    let r = LogRecord::new(KIND_COMMAND, bytes(&c), Ok(()));
    assert_eq!((r.len, r.kind, r.command()), (96, KIND_COMMAND, c));
    let long = vec![0xAB; 300];
    let r = LogRecord::new(7, &long, Err(Reason::BadKind));
    assert_eq!((r.len, r.command), (300, [0xAB; LOGGED_BYTES]));
    let r = LogRecord::new(KIND_COMMAND, &[1, 2, 3], Err(Reason::BadSize));
    assert_eq!(&r.command[..4], &[1, 2, 3, 0]);
}

/// The forwarded datagram is the bytes abi.md §12.7 lists, field by
/// field, and an instrument's parse refuses each thing wrong.
#[test]
fn a_forwarded_command_is_the_documented_40_bytes() {
    let v = Command::set(0x0102_0304_0506_0708, "plant", 9, -2.5).validate().unwrap();
    let f = Forward::new(1000, 77, &v);
    let want = [
        &b"HXC1"[..],
        &1u16.to_le_bytes(),
        &(Op::Set as u16).to_le_bytes(),
        &9u32.to_le_bytes(),
        &1000u32.to_le_bytes(),
        &0x0102_0304_0506_0708u64.to_le_bytes(),
        &77u64.to_le_bytes(),
        &(-2.5f64).to_le_bytes(),
    ]
    .concat();
    assert_eq!(f.as_bytes(), &want[..]);
    assert_eq!(Forward::parse(&want), Ok(f));
    assert_eq!(f.op(), Some(Op::Set));
    assert_eq!(Forward::parse(&want[..39]), Err(ForwardError::BadSize(39)));
    let broken = |at: usize, b: u8| {
        let mut w = want.clone();
        w[at] = b;
        Forward::parse(&w)
    };
    assert_eq!(broken(0, b'X'), Err(ForwardError::BadMagic));
    assert_eq!(broken(4, 2), Err(ForwardError::BadVersion(2)));
    assert_eq!(broken(6, 6), Err(ForwardError::UnknownOp(6)));
}

proptest! {
    /// Whatever the bytes, decode answers (never panics), and what it
    /// accepts is exactly a well-formed command: re-encoding it gives the
    /// same bytes.
    #[test]
    fn decode_accepts_exactly_well_formed_commands(
        payload in prop::collection::vec(any::<u8>(), 0..200),
        patch in (0u16..8, 1u16..3, any::<u64>(), any::<u32>(), any::<f64>()),
        kind in prop_oneof![Just(KIND_COMMAND), any::<u32>()],
    ) {
        // Half the cases: a 96-byte payload with plausible header fields,
        // so the deeper checks are reached.
        let mut payload = payload;
        if payload.len() >= 96 && patch.1 == 1 {
            payload.truncate(96);
            let mut c: Command = bytemuck::pod_read_unaligned(&payload);
            (c.version, c.op, c.request, c.stream, c.value) = (1, patch.0, patch.2, patch.3, patch.4);
            c.reserved = 0;
            payload = bytes(&c).to_vec();
        }
        if let Ok(v) = decode(kind, &payload) {
            let again = Command::new(v.op, v.request, &v.source, v.stream, v.value);
            let mut sent: Command = bytemuck::pod_read_unaligned(&payload);
            if sent.source[0] == 0 {
                // The default source was named by leaving it empty.
                sent.source[..DEFAULT_SOURCE.len()].copy_from_slice(DEFAULT_SOURCE.as_bytes());
            }
            prop_assert_eq!(bytes(&again), bytes(&sent));
        }
    }
}
