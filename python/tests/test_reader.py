"""helix.Reader and helix.Writer against rings a Rust program writes
(helixd's simulator) and rings Python writes, in namespaces of their own."""

import os
import threading

import numpy as np
import pytest

import helix
from conftest import expected, interrupted, parked, ring_stat


def test_every_frame_helixd_writes_is_received_in_order(ns, helixd):
    d = helixd(streams=7, rate_hz=2000.0)
    r = helix.Reader.attach("telemetry", namespace=ns, start="oldest")
    got = []
    while sum(len(b) for b in got) < 3000:
        batch = r.read_batch(512, timeout=10)
        assert len(batch) > 0, "helixd published nothing for 10 s"
        assert batch.dtype == helix.SAMPLE_DTYPE
        got.append(batch)
    samples = np.concatenate(got)
    g = np.arange(len(samples))
    assert (samples["stream"] == g % d.streams).all()
    assert (samples["seq"] == g // d.streams).all()
    assert (samples["quality"] & helix.QUALITY_SIMULATED).all()
    assert (samples["ingest_ns"] > 0).all()
    s = r.stats()
    assert (s["frames"], s["overruns"], s["lost"]) == (len(samples), 0, 0)
    assert r.cursor == len(samples) + 1


def test_overruns_are_exact_and_reading_resumes_where_they_say(ns, helixd):
    # A 64-slot ring at 28,000 frames/s laps a reader that sleeps (and
    # may lap it again between an overrun and the next read).
    d = helixd(capacity=64, streams=7, rate_hz=4000.0)
    r = helix.Reader.attach("telemetry", namespace=ns, start="oldest")
    start, lost_total, overruns, frames, resumed_at = r.cursor, 0, 0, 0, None
    while overruns < 3 or resumed_at is not None:
        if resumed_at is None:
            threading.Event().wait(0.05)
        before = r.cursor
        try:
            batch = r.read_batch(64, timeout=10)
        except helix.Overrun as e:
            assert e.lost == e.resume_at - before and e.lost > 0
            assert r.cursor == e.resume_at
            lost_total += e.lost
            overruns += 1
            resumed_at = e.resume_at
            continue
        assert len(batch) > 0 and r.cursor == before + len(batch)
        # Each sample is the simulator's sample at its ring sequence: none
        # skipped beyond what `lost` says, none repeated.
        g = np.arange(before - 1, before - 1 + len(batch))
        assert (batch["stream"] == g % d.streams).all() and (batch["seq"] == g // d.streams).all()
        frames += len(batch)
        resumed_at = None
    s = r.stats()
    assert (s["overruns"], s["lost"], s["frames"]) == (overruns, lost_total, frames)
    assert s["cursor"] == start + frames + lost_total


def test_python_writer_overrun_numbers_and_batches():
    ns = f"pyw{os.getpid()}"
    try:
        w = helix.Writer.create("w", namespace=ns, capacity=16)
        r = helix.Reader.attach("w", namespace=ns, start="oldest")
        samples = np.zeros(100, helix.SAMPLE_DTYPE)
        samples["seq"] = np.arange(100)
        samples["value"] = np.arange(100) * 0.5
        assert w.publish_samples(samples) == 100
        with pytest.raises(helix.Overrun) as e:
            r.read_batch(10)
        # 100 published into 16 slots: 1..84 are gone, 85..100 remain.
        assert (e.value.lost, e.value.resume_at) == (84, 85)
        assert "84 frames lost, resuming at 85" in str(e.value)
        a = r.read_batch(10)
        b = r.read_batch(10)
        assert (len(a), len(b)) == (10, 6)
        assert list(np.concatenate([a, b])["seq"]) == list(range(84, 100))
        assert (np.concatenate([a, b])["value"] == np.arange(84, 100) * 0.5).all()
        assert len(r.read_batch(10, timeout=0)) == 0
        assert r.lag == 0
    finally:
        for f in (f"/dev/shm/{ns}.w", f"/dev/shm/{ns}.w@readers"):
            if os.path.exists(f):
                os.unlink(f)


def test_other_kinds_come_as_tuples_and_batches_do_not_mix(ns):
    w = helix.Writer.create("mixed", namespace=ns, capacity=64, max_payload=64)
    r = helix.Reader.attach("mixed", namespace=ns, start="oldest")
    w.publish(b"first", kind=7)
    w.publish_many([b"a", b"bb"], kind=9)
    w.publish_samples(np.zeros(3, helix.SAMPLE_DTYPE))
    w.publish(b"x" * 40, kind=3)  # 40 bytes, not a sample: kind decides
    assert r.read_batch(100) == [(1, 7, b"first"), (2, 9, b"a"), (3, 9, b"bb")]
    assert len(r.read_batch(100)) == 3
    assert r.read_batch(100) == [(7, 3, b"x" * 40)]
    w.publish(b"it", kind=5)
    assert next(iter(r)) == (8, 5, b"it")
    assert r.read(timeout=0.01) is None


@pytest.mark.parametrize("how", ["read_batch", "read", "next"])
def test_a_waiting_reader_releases_the_gil(ns, how):
    # If a read held the GIL while waiting, the main thread could never
    # publish the frame it waits for: the watchdog would end the run.
    w = helix.Writer.create("gil", namespace=ns, capacity=16)
    r = helix.Reader.attach("gil", namespace=ns)
    read = {"read_batch": lambda: r.read_batch(4), "read": r.read, "next": lambda: next(iter(r))}[how]
    got = []
    t = threading.Thread(target=lambda: got.append(read()))
    t.start()
    threading.Event().wait(0.2)
    w.publish_samples(np.ones(2, helix.SAMPLE_DTYPE))
    t.join(30)
    assert not t.is_alive() and len(got) == 1
    assert len(got[0]) == 2 if how == "read_batch" else got[0][0] == 1


def test_bad_names_and_missing_rings_raise_attach_error(ns):
    with pytest.raises(helix.AttachError, match="no ring \"nope\" in namespace"):
        helix.Reader.attach("nope", namespace=ns)
    with pytest.raises(helix.AttachError, match="ring name"):
        helix.Reader.attach("bad/name", namespace=ns)
    with pytest.raises(helix.AttachError, match="namespace"):
        helix.Reader.attach("telemetry", namespace="bad ns")
    with pytest.raises(ValueError, match="start"):
        helix.Reader.attach("x", namespace=ns, start="middle")
    with pytest.raises(helix.HelixError):
        helix.Writer.create("w", namespace=ns, capacity=3)


def test_a_corrupt_ring_is_refused_with_the_field_named(ns):
    helix.Writer.create("c", namespace=ns, capacity=16).close()
    with open(f"/dev/shm/{ns}.c", "r+b") as f:
        f.write(b"\xff" * 8)  # the magic word (docs/abi.md §2.2)
    with pytest.raises(helix.AttachError, match="header field `magic`"):
        helix.Reader.attach("c", namespace=ns)


def test_a_ring_shrunk_under_a_reader_raises_damaged(ns):
    w = helix.Writer.create("s", namespace=ns, capacity=16)
    r = helix.Reader.attach("s", namespace=ns, start="oldest")
    w.publish(b"ok")
    assert r.read_batch(1) == [(1, 0, b"ok")]
    os.truncate(f"/dev/shm/{ns}.s", 0)
    with pytest.raises(helix.DamagedError, match="shrank|truncated"):
        r.read_batch(1, timeout=1)
    # Its counters are not the ring's any more either.
    with pytest.raises(helix.DamagedError, match="shrank|truncated"):
        r.lag
    with pytest.raises(helix.DamagedError, match="shrank|truncated"):
        r.stats()
    assert r.cursor == 2, "this reader's own position stays readable"


def test_a_closed_reader_says_so(ns):
    helix.Writer.create("z", namespace=ns, capacity=16)
    with helix.Reader.attach("z", namespace=ns) as r:
        pass
    with pytest.raises(RuntimeError, match="closed"):
        r.read_batch(1)


def test_the_package_under_test_is_the_installed_wheel():
    # CI installs the wheel it built into a fresh environment; an in-place
    # build (or the source folder on sys.path) would not test the wheel.
    import sys

    assert helix._helix.__file__.startswith(sys.prefix), helix._helix.__file__
    assert "site-packages" in helix.__file__, helix.__file__


def test_the_example_prints_per_stream_statistics(ns, helixd):
    import subprocess
    import sys

    from conftest import REPO

    helixd(streams=5, rate_hz=500.0)
    out = subprocess.run(
        [sys.executable, str(REPO / "examples" / "python" / "stream_stats.py"), "--namespace", ns, "--seconds", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "0 lost to overruns" in out.stdout and "5 streams" in out.stdout, out.stdout
    rows = [line.split() for line in out.stdout.splitlines() if line.split() and line.split()[0].isdigit()]
    assert sorted(int(r[0]) for r in rows[-5:]) == [0, 1, 2, 3, 4], out.stdout


def test_ctrl_c_interrupts_a_reader_waiting_without_a_deadline(ns):
    # read_batch(timeout=None) waits in slices and lets Python handle
    # signals between them: SIGINT, sent once the child's reader is parked
    # on the ring's futex, ends the wait with KeyboardInterrupt.
    helix.Writer.create("idle", namespace=ns, capacity=16)
    code = (
        "import helix, sys\n"
        f"r = helix.Reader.attach('idle', namespace={ns!r})\n"
        "print('waiting', flush=True)\n"
        "r.read_batch(1)\n"
    )
    _, err = interrupted(code, lambda: parked(ns, "idle") == 1)
    assert "KeyboardInterrupt" in err


def test_ctrl_c_interrupts_a_writer_held_by_a_gating_reader_that_never_reads(ns):
    # A block ring with an hour's stall timeout, full for a gating reader
    # that never reads: publish waits in slices and lets Python handle
    # signals between them (before, it waited the whole hour in one call,
    # deaf to Ctrl-C). SIGINT is sent once the writer has begun to wait.
    code = (
        "import helix\n"
        f"w = helix.Writer.create('held', namespace={ns!r}, capacity=16, policy='block', stall_timeout=3600)\n"
        f"r = helix.Reader.attach('held', namespace={ns!r}, gating=True, start='oldest')\n"
        "w.publish_many([b'x'] * 16)\n"
        "print('waiting', flush=True)\n"
        "w.publish(b'y')\n"
        "print('published', flush=True)\n"
    )
    out, err = interrupted(code, lambda: ring_stat(ns, "held")["writer_waits"] >= 1)
    assert "KeyboardInterrupt" in err and "published" not in out, (out, err)
    with pytest.raises(ValueError, match="stall_timeout -1"):
        helix.Writer.create("bad", namespace=ns, policy="block", stall_timeout=-1)


def test_a_timeout_past_what_the_clock_holds_waits_as_none_does(ns):
    # Before, a timeout of 1e19 s overflowed the clock: a PanicException,
    # which `except Exception` does not catch.
    w = helix.Writer.create("far", namespace=ns, capacity=16, max_payload=64)
    r = helix.Reader.attach("far", namespace=ns, start="oldest")
    w.publish(b"there", kind=4)
    assert r.read(timeout=1e19) == (1, 4, b"there")
    w.publish(b"again", kind=4)
    assert r.read_batch(8, timeout=1e300) == [(2, 4, b"again")]


def test_writer_errors_name_the_problem(ns):
    w = helix.Writer.create("lease", namespace=ns, capacity=16, max_payload=64)
    with pytest.raises(helix.LeaseError, match="already has a live writer: pid"):
        helix.Writer.attach("lease", namespace=ns)
    with pytest.raises(helix.PublishError, match="exceeds the ring's largest payload"):
        w.publish(b"x" * 1000)
    with pytest.raises(helix.AttachError, match="already exists"):
        helix.Writer.create("lease", namespace=ns, capacity=16)
    with pytest.raises(ValueError, match="one-dimensional"):
        w.publish_samples(np.zeros((2, 2), helix.SAMPLE_DTYPE))
    # An array without the sample's fields is refused, not converted: a
    # plain array filled every field with each value, and fields of other
    # names were matched by position.
    for plain in (np.arange(3.0), [1.0, 2.0], [1, 2], 5, np.float64(2.5)):
        with pytest.raises(TypeError, match="fields of helix.SAMPLE_DTYPE"):
            w.publish_samples(plain)
    renamed = np.zeros(2, [(n if n != "value" else "v", t) for n, t in helix.SAMPLE_DTYPE.descr])
    with pytest.raises(TypeError, match="got dtype"):
        w.publish_samples(renamed)
    assert w.next_seq == 1
    # A batch with a frame too large publishes nothing (before, the frames
    # before it went out, and the error said none had).
    r = helix.Reader.attach("lease", namespace=ns, start="oldest")
    with pytest.raises(helix.PublishError, match="frame 1 of 2: .*exceeds the ring's largest payload"):
        w.publish_many([b"a", b"x" * 1000])
    assert r.read(timeout=0) is None
    # Replacing a ring a live writer holds: LeaseError, as documented
    # (before: AttachError, which `except helix.LeaseError` missed).
    with pytest.raises(helix.LeaseError, match=f"held by live pid {os.getpid()}"):
        helix.Writer.create("lease", namespace=ns, capacity=16, replace=True)
    w.close()
    # The lease is free again: a new writer continues the sequence.
    w2 = helix.Writer.attach("lease", namespace=ns)
    assert w2.next_seq == 1 and w2.publish(b"a") == 1


def test_unlink_refuses_a_ring_a_live_writer_holds_unless_forced(ns):
    # As `helixctl rm`: before, helix.unlink removed helixd's rings without
    # a word, and their readers waited on the removed ring for ever.
    data = f"/dev/shm/{ns}.held"
    w = helix.Writer.create("held", namespace=ns, capacity=16)
    with pytest.raises(helix.LeaseError, match=f'ring "held" is in use: its writer lease is held by live pid {os.getpid()}'):
        helix.unlink("held", namespace=ns)
    assert os.path.exists(data)
    helix.unlink("held", namespace=ns, force=True)
    assert not os.path.exists(data)
    w.close()
    # A ring nobody writes goes without force.
    helix.Writer.create("free", namespace=ns, capacity=16).close()
    helix.unlink("free", namespace=ns)
    assert not os.path.exists(f"/dev/shm/{ns}.free")


def test_a_reader_says_when_its_ring_was_removed_or_made_again(ns):
    # A ring replaced under its name sends nothing more to the readers of
    # the old one; before, a Python reader could not tell, and waited for
    # ever.
    w = helix.Writer.create("again", namespace=ns, capacity=16)
    r = helix.Reader.attach("again", namespace=ns)
    first = r.stats()["created_ns"]
    assert not r.replaced()
    w.close()
    helix.unlink("again", namespace=ns)
    assert r.replaced()
    w = helix.Writer.create("again", namespace=ns, capacity=16)
    w.publish(b"new")
    assert r.replaced() and r.read(timeout=0) is None
    with helix.Reader.attach("again", namespace=ns, start="oldest") as r2:
        assert not r2.replaced() and r2.stats()["created_ns"] != first
        assert r2.read(timeout=0) == (1, 0, b"new")
    r.close()
    w.close()


def test_a_sample_value_a_field_cannot_hold_is_refused_naming_the_field(ns):
    w = helix.Writer.create("cast", namespace=ns, capacity=16)
    # Wider fields are cast, but a value a field of SAMPLE_DTYPE cannot hold
    # is refused, naming the field (numpy's cast sent stream 2**32 + 5 out
    # as stream 5, quality -1 as 4294967295).
    wide = np.zeros(1, [(n, "<f8" if n == "value" else "<i8") for n in helix.SAMPLE_DTYPE.names])
    for field, bad in (("stream", 2**32 + 5), ("quality", -1)):
        sample = wide.copy()
        sample[field] = bad
        with pytest.raises(ValueError, match=f"field {field} holds a value"):
            w.publish_samples(sample)
    fractional = np.zeros(1, [(n, "<f8") for n in helix.SAMPLE_DTYPE.names])
    fractional["seq"] = 1.5
    with pytest.raises(ValueError, match="field seq holds a value"):
        w.publish_samples(fractional)
    # So are tuples (taken in field order): numpy cast them as silently.
    for field, bad in (("stream", 1.5), ("quality", -1), ("seq", 2**64 + 1)):
        sample = dict.fromkeys(helix.SAMPLE_DTYPE.names, 0)
        sample[field] = bad
        with pytest.raises((ValueError, OverflowError), match=f"field {field} holds a value|too large|out of bounds"):
            w.publish_samples([tuple(sample.values())])
    assert w.next_seq == 1
    # Values it can hold go out as given (NaN in value included).
    r = helix.Reader.attach("cast", namespace=ns, start="oldest")
    wide["stream"], wide["seq"], wide["value"] = 7, 2**40, np.nan
    assert w.publish_samples(wide) == 1
    got = r.read_batch(1)
    assert (got["stream"][0], got["seq"][0], np.isnan(got["value"][0])) == (7, 2**40, True)
    # Tuples too, a time in ns beyond a float's 53 bits included.
    ns_time = 1_733_412_345_678_901_234
    assert w.publish_samples([(8, 1, 2**40 + 1, ns_time, ns_time, 0.5), (9, 0, 3, 4, 5, np.nan)]) == 3
    got = r.read_batch(2)
    assert (list(got["stream"]), got["sample_ns"][0], got["value"][0]) == ([8, 9], ns_time, 0.5)


def test_a_batch_of_large_frames_stops_at_64_mib(ns):
    # Found by review: a batch copied up to max_frames frames whatever
    # their size; a ring of 16 MiB frames made read_batch(65536) try to
    # build a TiB.
    w = helix.Writer.create("large", namespace=ns, capacity=8, max_payload=16 << 20)
    r = helix.Reader.attach("large", namespace=ns, start="oldest")
    frame = b"x" * (16 << 20)
    w.publish_many([frame] * 8, kind=3)
    # Everything is published: neither batch waits.
    first, second = r.read_batch(8, timeout=0), r.read_batch(8, timeout=0)
    assert [f[0] for f in first] == [1, 2, 3, 4] and [f[0] for f in second] == [5, 6, 7, 8]
    assert all(f[2] == frame for f in first + second)


def test_a_reader_says_whose_its_ring_is(ns):
    # A reader reads any ring it may open, as `helixctl tail` does; a
    # script that acts on what it reads is told who could write it.
    with helix.Writer.create("mine", namespace=ns, capacity=16):
        with helix.Reader.attach("mine", namespace=ns) as r:
            assert r.stats()["owner_uid"] == os.geteuid()
        if os.geteuid() != 0:
            return  # making a file another user's needs root
        os.chown(f"/dev/shm/{ns}.mine", 65534, 65534)
        with helix.Reader.attach("mine", namespace=ns) as r:
            assert r.stats()["owner_uid"] == 65534


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork with threads running
def test_a_handle_inherited_across_fork_is_refused_in_the_child_and_left_to_the_parent(ns):
    # Found by review: a Writer used in a forked child (multiprocessing's
    # default on Linux before Python 3.14) published its parent's next
    # sequence into the same slot, and readers took frames of both.
    w = helix.Writer.create("forked", namespace=ns, capacity=16)
    r = helix.Reader.attach("forked", namespace=ns, start="oldest")
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        said = []
        try:
            for use in (lambda: w.publish(b"child"), lambda: r.read(timeout=0), lambda: r.lag):
                try:
                    use()
                    said.append("used")
                except helix.HelixError as e:
                    said.append("refused" if f"made by process {os.getppid()}" in str(e) else str(e))
            # Closing its copies leaves the parent's lease and entry alone.
            w.close()
            r.close()
            os.write(wfd, ",".join(said).encode())
        finally:
            os._exit(0)
    os.close(wfd)
    assert os.waitpid(pid, 0)[1] == 0
    assert os.read(rfd, 4096).decode() == "refused,refused,refused"
    os.close(rfd)
    assert w.publish(b"parent") == 1
    assert r.read(timeout=0) == (1, 0, b"parent") and r.read(timeout=0) is None
    r.close()
    w.close()


def test_a_reader_waiting_is_told_when_its_ring_was_removed_or_made_again(ns):
    # Found by review: a reader iterating, or reading without a deadline,
    # waited on a removed ring for ever. It looks at the name every second
    # it waits; the 5 s deadlines only end a wait that would not see it.
    w = helix.Writer.create("again", namespace=ns, capacity=16)
    made_again = helix.Reader.attach("again", namespace=ns)
    removed = helix.Reader.attach("again", namespace=ns)
    w.close()
    helix.unlink("again", namespace=ns)
    with pytest.raises(helix.ReplacedError, match='ring "again" was removed since this reader attached'):
        removed.read(timeout=5)
    w = helix.Writer.create("again", namespace=ns, capacity=16)
    with pytest.raises(helix.ReplacedError, match='ring "again" was made again under its name'):
        made_again.read_batch(16, timeout=5)
    assert isinstance(helix.ReplacedError("x"), helix.HelixError)
    for r in (made_again, removed, w):
        r.close()


def test_a_batch_of_a_huge_count_takes_no_more_than_64_mib_of_samples(ns):
    # Found by review: read_batch(n) took a buffer of min(n, capacity)
    # samples, up to 2^32 of 40 bytes: a process ended by a failed
    # allocation instead of an answer. 2^22 slots here: 160 MiB then.
    with helix.Writer.create("huge", namespace=ns, capacity=1 << 22, max_payload=40) as w:
        samples = np.zeros(1, dtype=helix.SAMPLE_DTYPE)
        w.publish_samples(samples)
        # The reader keeps its buffer: the process's anonymous memory
        # after the call holds it.
        child = f"""
import helix
def anon_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:"))
r = helix.Reader.attach("huge", namespace={ns!r}, start="oldest")
before = anon_kib()
assert len(r.read_batch(1 << 40, timeout=0)) == 1
print(anon_kib() - before)
"""
        import subprocess
        import sys

        out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        grown_kib = int(out.stdout)
        assert grown_kib < 100 << 10, f"the batch took {grown_kib} KiB"
