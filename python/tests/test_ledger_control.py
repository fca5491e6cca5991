"""helix.ledger against a ledger helix-ledger recorded from helixd, and
helix.Control against helixd's control path."""

import glob
import os
import re
import signal
import struct
import subprocess
import time
import warnings
import tracemalloc

import numpy as np
import pytest

import helix
from conftest import expected, interrupted, program, ring_stat

CONTROL_RINGS = (
    '[[ring]]\nname = "control.log"\nmax_payload = 144\ncapacity = 1024\npolicy = "block"\n'
    '[[ring]]\nname = "control.acks"\nmax_payload = 48\ncapacity = 1024\npolicy = "overwrite"\n'
    "[control]\nlanes = 4\naudit_reader = \"\"\n"
)


@pytest.fixture
def recorded(ns, helixd, tmp_path):
    """A ledger helix-ledger recorded of helixd's telemetry for a while,
    stopped cleanly: (folder, streams)."""
    d = helixd(policy="block", streams=3, rate_hz=1000.0)
    folder = tmp_path / "ledger"
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    env["HELIX_NAMESPACE"] = ns
    # The recorder signs checkpoints (it refuses to start without its key):
    # the ledger the tests read holds CHECKPOINT records among the frames.
    key = tmp_path / "ledger.key"
    subprocess.run([program("helix-ledger"), "keygen", str(key)], check=True, stdout=subprocess.DEVNULL)
    ledger = subprocess.Popen(
        [
            program("helix-ledger"),
            "--ring",
            "telemetry",
            "--fsync-interval-ms",
            "5",
            "--dir",
            str(folder),
            "--key",
            str(key),
            "--checkpoint-interval-s",
            "1",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # Until it has recorded at least 2,000 frames (it reads as a
        # gating reader named helix-ledger; its cursor says how far).
        deadline = time.monotonic() + 30
        while True:
            assert ledger.poll() is None, f"helix-ledger exited {ledger.returncode}"
            assert time.monotonic() < deadline, "helix-ledger recorded too little in 30 s"
            if folder.exists() and _recorded(ns) >= 2000:
                break
            time.sleep(0.05)
    finally:
        ledger.send_signal(signal.SIGTERM)
        try:
            ledger.wait(10)
        except subprocess.TimeoutExpired:
            ledger.kill()
            ledger.wait()
    return folder, d.streams


def _recorded(ns):
    # Frames published; the ledger is at most a few ms behind.
    with helix.Reader.attach("telemetry", namespace=ns) as r:
        return r.cursor - 1


def test_a_recorded_ledger_verifies_and_exports_every_sample(recorded):
    folder, streams = recorded
    summary = helix.ledger.verify(folder)
    (ring,) = [r for r in summary["rings"] if r["name"] == "telemetry"]
    assert ring["frames"] >= 1000 and ring["gaps"] == 0 and ring["lost"] == 0
    assert len(summary["hash"]) == 64
    samples = helix.ledger.export(folder, "telemetry")
    assert samples.dtype == helix.ledger.EXPORT_DTYPE
    assert len(samples) == ring["frames"]
    g = samples["ring_seq"] - 1
    assert (np.diff(samples["ring_seq"]) == 1).all()
    assert (samples["stream"] == g % streams).all() and (samples["seq"] == g // streams).all()
    assert (samples["recv_ns"] >= samples["ingest_ns"]).all()
    first = int(samples["ring_seq"][0])
    part = helix.ledger.export(folder, "telemetry", first + 10, first + 20)
    assert list(part["ring_seq"]) == list(range(first + 10, first + 21))
    # Found by review: a misspelt ring and a range given backwards gave an
    # empty array, which reads as "nothing recorded there".
    with pytest.raises(helix.ledger.LedgerError, match=r"ring 'no-such-ring' is not in the ledger .*\(it records telemetry\)"):
        helix.ledger.export(folder, "no-such-ring")
    with pytest.raises(ValueError, match="from_seq 20 is after to_seq 10"):
        helix.ledger.export(folder, "telemetry", 20, 10)


def test_export_to_pandas_when_installed(recorded):
    pandas = pytest.importorskip("pandas")
    folder, _ = recorded
    whole = helix.ledger.export(folder, "telemetry")
    first = int(whole["ring_seq"][0])
    df = helix.ledger.export_dataframe(folder, "telemetry", first, first + 99)
    assert isinstance(df, pandas.DataFrame) and list(df.columns) == list(helix.ledger.EXPORT_DTYPE.names)
    assert list(df["ring_seq"]) == list(range(first, first + 100))
    assert (df["value"].to_numpy() == whole["value"][:100]).all()


def test_without_pandas_export_dataframe_says_what_it_needs(recorded, monkeypatch):
    # numpy export keeps working; only the DataFrame needs pandas.
    import sys

    monkeypatch.setitem(sys.modules, "pandas", None)
    folder, _ = recorded
    assert len(helix.ledger.export(folder, "telemetry")) > 0
    with pytest.raises(ImportError, match="needs pandas"):
        helix.ledger.export_dataframe(folder, "telemetry")


def test_export_says_when_it_reads_past_a_torn_tail(recorded):
    folder, _ = recorded
    whole = helix.ledger.export(folder, "telemetry")
    # Zeros after the last block (a file extended, never written): a torn
    # tail, read past, and said.
    last = max(p for p in folder.iterdir() if p.suffix == ".hxl")
    with last.open("ab") as f:
        f.write(bytes(10))
    assert helix.ledger.verify(folder)["partial_tail"] == 10
    said = re.escape(f"{folder}: the last segment ends in 10 bytes of a torn tail")
    with pytest.warns(helix.ledger.TornTailWarning, match=said):
        again = helix.ledger.export(folder, "telemetry")
    assert (again == whole).all()


class _Recorder:
    """helix-ledger recording ring `ring` of namespace `ns` into
    tmp_path/ledger (signing with a key of its own), as a context manager:
    stopped cleanly at the end."""

    def __init__(self, ns, tmp_path, ring):
        self.folder, key = tmp_path / "ledger", tmp_path / "ledger.key"
        subprocess.run([program("helix-ledger"), "keygen", str(key)], check=True, stdout=subprocess.DEVNULL)
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        env["HELIX_NAMESPACE"] = ns
        args = ["--ring", ring, "--fsync-interval-ms", "5", "--dir", str(self.folder), "--key", str(key)]
        self.process = subprocess.Popen([program("helix-ledger"), *args], env=env, stderr=subprocess.DEVNULL)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(10)

    def alive(self, deadline, what):
        assert self.process.poll() is None and time.monotonic() < deadline, f"helix-ledger {what}"

    def until_recorded(self, frames):
        """Waits (30 s at most) until the ledger holds `frames` frames."""
        deadline = time.monotonic() + 30
        while True:
            try:
                rings = helix.ledger.verify(self.folder)["rings"]
            except helix.ledger.LedgerError:
                rings = []  # no segment yet
            if rings and rings[0]["frames"] >= frames:
                return
            self.alive(deadline, "recorded too little")
            time.sleep(0.05)


def test_export_of_samples_only_refuses_other_frames_without_holding_them(ns, tmp_path):
    # Without with_others, a frame of another kind is refused, naming the
    # first; their payloads are not copied into Python to be thrown away
    # (before, a whole ledger's of them were, then refused).
    w = helix.Writer.create("mixed", namespace=ns, capacity=4096, max_payload=1024, policy="block")
    with _Recorder(ns, tmp_path, "mixed") as rec:
        rec.until_recorded(0)
        w.publish_samples(np.zeros(1, helix.SAMPLE_DTYPE))
        w.publish_many([bytes(1024)] * 2000, kind=3)
        rec.until_recorded(2001)
    w.close()
    tracemalloc.start()
    try:
        with pytest.raises(helix.HelixError, match=r"'mixed' has 2000 frames of other kinds .* \(the first: seq 2, kind 3\)"):
            helix.ledger.export(rec.folder, "mixed")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"{peak} bytes held for an export that was refused"
    samples, others = helix.ledger.export(rec.folder, "mixed", with_others=True)
    frames = [o for o in others if o[0] == "frame"]
    assert len(samples) == 1 and len(frames) == 2000 and frames[0][1:4] == (2, 2, 3) and len(frames[0][4]) == 1024


def test_export_warns_when_the_ring_was_created_again(ns, tmp_path):
    # A ring removed and created again while recorded: its sequence starts
    # again, and export says so (before, ring_seq went back to 1 in the
    # array without a word).
    w = helix.Writer.create("inc", namespace=ns, capacity=64, policy="block")
    samples = np.zeros(5, helix.SAMPLE_DTYPE)
    samples["seq"] = np.arange(5)

    def until_joined(created_ns):
        deadline = time.monotonic() + 30
        while True:
            s = ring_stat(ns, "inc")
            if s["created_ns"] == created_ns and any(r["name"] == "helix-ledger" for r in s["readers"]):
                return
            rec.alive(deadline, "did not join")
            time.sleep(0.05)

    with _Recorder(ns, tmp_path, "inc") as rec:
        try:
            # The first incarnation is declared and replaced before a frame
            # of it is recorded: it holds no sequence to start again, so it
            # is not counted.
            until_joined(ring_stat(ns, "inc")["created_ns"])
            w.close()
            w = helix.Writer.create("inc", namespace=ns, capacity=64, policy="block", replace=True)
            until_joined(ring_stat(ns, "inc")["created_ns"])
            w.publish_samples(samples)
            rec.until_recorded(5)
            w.close()
            w = helix.Writer.create("inc", namespace=ns, capacity=64, policy="block", replace=True)
            w.publish_samples(samples[:3])
            rec.until_recorded(8)
        finally:
            w.close()
    with pytest.warns(helix.ledger.IncarnationWarning, match="'inc' was created again: the records exported are of 2 incarnations"):
        got = helix.ledger.export(rec.folder, "inc")
    assert list(got["ring_seq"]) == [1, 2, 3, 4, 5, 1, 2, 3]


def test_a_damaged_ledger_is_refused_naming_the_damage(recorded, tmp_path):
    folder, _ = recorded
    segment = max((p for p in folder.iterdir() if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF
    segment.write_bytes(bytes(data))
    with pytest.raises(helix.LedgerError, match=str(folder)):
        helix.ledger.verify(folder)
    with pytest.raises(helix.LedgerError):
        helix.ledger.export(folder, "telemetry")
    with pytest.raises(helix.LedgerError):
        helix.ledger.verify(tmp_path / "missing")


def test_commands_are_answered_by_helixd(ns, helixd):
    helixd(streams=4, rate_hz=200.0, extra=CONTROL_RINGS)
    c = helix.Control(namespace=ns)
    assert c.last_request is None
    ack = c.send("set", stream=2, value=37.5, timeout=10)
    assert (ack["verdict"], ack["op"], ack["reason"]) == ("accepted", "set", None)
    assert c.last_request == ack["request"]
    assert ack["ring_seq"] > 0 and ack["log_seq"] > 0
    # An infinite timeout waits for ever, as a Reader's does (it was
    # refused as "expected seconds >= 0").
    again = c.send("set", stream=2, value=37.5, timeout=float("inf"), request=ack["request"])
    assert again["repeat"] and again["log_seq"] == ack["log_seq"]
    for bad_timeout in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="expected seconds >= 0"):
            c.send("set", stream=2, value=37.5, timeout=bad_timeout)
    bad = c.send("set", stream=99, value=1.0, timeout=10)
    assert bad["verdict"] == "rejected" and bad["reason"] is not None
    with pytest.raises(ValueError, match="unknown op"):
        c.send("explode")
    # Malformed: refused here, never sent (nor audited).
    log_before = ring_stat(ns, "control.log")["published"]
    for bad in (dict(source="x" * 70), dict(source="Bad Name"), dict(request=0), dict(value=float("nan"))):
        with pytest.raises(ValueError, match="would be rejected"):
            c.send("set", stream=1, **bad)
    assert ring_stat(ns, "control.log")["published"] == log_before


def test_control_without_helixd_raises_control_error(ns):
    with pytest.raises(helix.ControlError, match="control"):
        helix.Control(namespace=ns)
    # Found by review: a bad namespace was an AttachError, which the
    # stub's `except ControlError` missed.
    with pytest.raises(helix.ControlError, match="bad ns"):
        helix.Control(namespace="bad ns")


@pytest.mark.skipif(os.geteuid() != 0, reason="making a file another user's needs root")
def test_control_rings_of_another_user_are_refused_unless_they_are_the_services(ns, helixd):
    helixd(streams=4, rate_hz=200.0, extra=CONTROL_RINGS)
    for f in glob.glob(f"/dev/shm/{ns}.control.acks*"):
        os.chown(f, 65534, 65534)
    with pytest.raises(helix.ControlError, match="not helixd's control path: .* is owned by uid 65534"):
        helix.Control(namespace=ns)
    with helix.Control(namespace=ns, service_uid=65534) as c:
        assert c.send("set", stream=1, value=2.0, timeout=10)["verdict"] == "accepted"


def connect_when_free(ns, within=30.0):
    """A Control once helixd has freed a lane (it frees a closed one when
    it next looks, within ``within`` seconds)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return helix.Control(namespace=ns)
        except helix.ControlError:
            if time.monotonic() > deadline:
                raise


def test_a_closed_control_gives_its_lane_back(ns, helixd):
    helixd(streams=4, rate_hz=200.0, extra=CONTROL_RINGS)
    held = [helix.Control(namespace=ns) for _ in range(4)]
    assert sorted(c.lane for c in held) == [0, 1, 2, 3]
    with pytest.raises(helix.ControlError, match="lane"):
        helix.Control(namespace=ns)
    freed = held.pop()
    freed.close()
    assert "closed" in repr(freed)
    with pytest.raises(RuntimeError, match="closed"):
        freed.send("set", stream=1, value=1.0)
    with connect_when_free(ns) as c:
        assert c.send("set", stream=1, value=2.0, timeout=10)["verdict"] == "accepted"
    assert "closed" in repr(c)
    connect_when_free(ns).close()


def test_ctrl_c_interrupts_a_command_waiting_for_its_answer(ns, helixd):
    # With an audit reader named and none joined, helixd holds an accepted
    # command unanswered: send() waits in slices and lets Python handle
    # signals between them, so SIGINT, sent once the command is in
    # control.log (posted: the child waits for its answer), ends it with
    # KeyboardInterrupt, not an hour later; last_request names it, to be
    # asked after again.
    helixd(streams=4, rate_hz=200.0, extra=CONTROL_RINGS.replace('audit_reader = ""', 'audit_reader = "helix-ledger"'))
    code = (
        "import helix\n"
        f"c = helix.Control(namespace={ns!r})\n"
        "print('waiting', flush=True)\n"
        "try:\n"
        "    c.send('set', stream=1, value=2.0, timeout=3600)\n"
        "finally:\n"
        "    print(c.last_request, flush=True)\n"
    )
    with helix.Reader.attach("control.log", namespace=ns) as log:
        out, err = interrupted(code, lambda: log.lag > 0)
        assert "KeyboardInterrupt" in err
        # The audit record's command (offset 48) holds the request id at 8.
        _, _, record = log.read(timeout=10)
    assert int(out) == struct.unpack_from("<Q", record, 48 + 8)[0] != 0


def test_export_says_what_the_ledger_lost_of_the_range(ns, tmp_path):
    # Found by review: the GAP records of a range were left out of what
    # export returned, so a range wholly lost read as one where nothing
    # was recorded. Here the recorder is stopped while 100 frames go
    # through a ring of 16 slots: it records 1..84 as lost.
    w = helix.Writer.create("lossy", namespace=ns, capacity=16)
    samples = np.zeros(100, helix.SAMPLE_DTYPE)
    samples["seq"] = np.arange(100)
    with _Recorder(ns, tmp_path, "lossy") as rec:
        deadline = time.monotonic() + 30
        while not any(r["name"] == "helix-ledger" for r in ring_stat(ns, "lossy")["readers"]):
            rec.alive(deadline, "did not join")
            time.sleep(0.05)
        rec.process.send_signal(signal.SIGSTOP)
        w.publish_samples(samples)
        rec.process.send_signal(signal.SIGCONT)
        rec.until_recorded(16)
    w.close()
    with pytest.warns(helix.ledger.LossWarning, match=r"'lossy' lost 84 sequences of 1\.\.=.* \(1 GAP record\)"):
        got = helix.ledger.export(rec.folder, "lossy")
    assert list(got["ring_seq"]) == list(range(85, 101))
    with pytest.warns(helix.ledger.LossWarning, match=r"lost 10 sequences of 11\.\.=20"):
        assert len(helix.ledger.export(rec.folder, "lossy", 11, 20)) == 0
    # With the GAP records returned, nothing is left to say.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, others = helix.ledger.export(rec.folder, "lossy", with_others=True)
    assert [(o[0], o[1], o[2]) for o in others if o[0] == "gap"] == [("gap", 1, 84)]
