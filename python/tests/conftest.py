"""Fixtures: a ring namespace of each test's own (its /dev/shm files
removed afterwards), a watchdog, and helixd running a simulator in it. The
programs come from HELIX_BIN (a folder), else the repository's
target/release."""

import faulthandler
import glob
import itertools
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import time

import pytest

import helix

REPO = pathlib.Path(__file__).resolve().parents[2]
WATCHDOG_SECONDS = int(os.environ.get("HELIX_TEST_WATCHDOG", "120"))
_counter = itertools.count()


_real_stderr = None


def pytest_configure(config):
    """Keeps a handle on the real standard error (pytest captures fd 2 in
    tests), so the watchdog's tracebacks are seen."""
    global _real_stderr
    capman = config.pluginmanager.getplugin("capturemanager")
    with capman.global_and_fixture_disabled():
        _real_stderr = os.fdopen(os.dup(2), "w")


@pytest.fixture(autouse=True)
def watchdog():
    """Ends the whole run with every thread's traceback if a test hangs
    (a C-level timer: it fires even if a thread holds the GIL)."""
    faulthandler.dump_traceback_later(WATCHDOG_SECONDS, exit=True, file=_real_stderr)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def ns():
    """A namespace no other test (or process) uses; its files are removed
    at the end."""
    name = f"pyt{os.getpid()}n{next(_counter)}"
    yield name
    for path in glob.glob(f"/dev/shm/{name}.*"):
        # A fan-in ring (helixd's `control`) is a folder.
        shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)


def program(name):
    """The path of HELIX program `name`; a missing one fails the test."""
    exe = pathlib.Path(os.environ.get("HELIX_BIN") or REPO / "target" / "release") / name
    if not os.access(exe, os.X_OK):
        raise RuntimeError(f"{name} not found at {exe}: build it (cargo build --release) or set HELIX_BIN")
    return str(exe)


class Helixd:
    """helixd with one `telemetry` ring written by its simulator: sample g
    (counting over all streams, from 0) is ring sequence g + 1, stream
    g % streams, per-stream sequence g // streams (docs/abi.md §9.1)."""

    def __init__(self, ns, tmp_path, capacity, policy, streams, rate_hz, extra):
        self.ns, self.streams = ns, streams
        config = tmp_path / "helix.toml"
        config.write_text(
            f'namespace = "{ns}"\nstatus_interval_ms = 60000\n'
            f'[[ring]]\nname = "telemetry"\nmax_payload = 48\ncapacity = {capacity}\npolicy = "{policy}"\n'
            f'[[source]]\nkind = "sim"\nring = "telemetry"\nstreams = {streams}\nrate_hz = {rate_hz}\nseed = 1\n'
            + extra
        )
        # Ready when it says so (sd_notify READY=1): every ring and the
        # control path are up by then.
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(tmp_path / "notify"))
        env = {k: v for k, v in os.environ.items() if k != "WATCHDOG_USEC"}
        env["NOTIFY_SOCKET"] = str(tmp_path / "notify")
        self.proc = subprocess.Popen(
            [program("helixd"), "--config", str(config)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            self._ready(notify)
        finally:
            notify.close()

    def _ready(self, notify):
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"helixd exited {self.proc.returncode}: {self.proc.stderr.read().decode()}")
            if time.monotonic() > deadline:
                raise RuntimeError("helixd was not ready within 20 s")
            notify.settimeout(0.1)
            try:
                if b"READY=1" in notify.recv(4096).split(b"\n"):
                    return
            except socket.timeout:
                pass

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stderr.close()


@pytest.fixture
def helixd(ns, tmp_path):
    """A factory: helixd(capacity=..., policy=..., streams=..., rate_hz=...,
    extra=TOML appended to its configuration)."""
    started = []

    def start(capacity=1 << 16, policy="overwrite", streams=7, rate_hz=1000.0, extra=""):
        d = Helixd(ns, tmp_path, capacity, policy, streams, rate_hz, extra)
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


def expected(g, streams):
    """(stream, per-stream seq) of simulator sample g."""
    return g % streams, g // streams


assert helix.SAMPLE_DTYPE.itemsize == 40


def ring_stat(ns, ring):
    """``helixctl --json stat ring``, parsed."""
    import json

    out = subprocess.run(
        [program("helixctl"), "--namespace", ns, "--json", "stat", ring], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def parked(ns, ring):
    """Readers of ``ring`` parked on its futex now (``helixctl stat``)."""
    return ring_stat(ns, ring)["parked"]


def interrupted(code, waiting):
    """Runs Python ``code`` in a child that prints ``waiting`` before the
    wait it ends in, sends it SIGINT once it says so and ``waiting()`` is
    true (it is in that wait: a signal before it would end the child
    before the call, whatever the call does), and returns what it printed
    after ``waiting`` and its standard error; the child must end on the
    signal, within 30 s."""
    import sys

    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "waiting\n"
        deadline = time.monotonic() + 30
        while not waiting():
            assert p.poll() is None, f"the child ended before its wait: {p.communicate()[1]}"
            assert time.monotonic() < deadline, "the child did not begin its wait within 30 s"
            time.sleep(0.01)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode != 0, err
    return out, err
