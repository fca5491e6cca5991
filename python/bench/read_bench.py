"""Telemetry frames/s into numpy: helix.Reader.read_batch beside a
pure-Python reader written from docs/abi.md (ctypes, libatomic), in one run
on one ring. Run by tools/py-bench (which builds and installs the wheel and
pins the run); prints a table and, with --json FILE, writes the figures.

The ring is filled first (a Python-owned overwrite ring of `--frames`
slots, every slot a §9.1 sample), then each reader reads all of it from
the oldest frame: the reader's own cost per frame, with no writer running
beside it (a writer would share the two CPUs)."""

import argparse
import ctypes
import ctypes.util
import json
import os
import statistics
import time

import numpy as np

import helix

# docs/abi.md §2.2, §2.3
CAPACITY_AT, SLOT_SIZE_AT, DATA_OFFSET = 16, 24, 1024
STAMP_AT, LEN_AT, KIND_AT, PAYLOAD_AT = 0, 8, 12, 16
ACQUIRE = 2  # __ATOMIC_ACQUIRE


class CtypesReader:
    """A reader of a ring's data file from docs/abi.md alone: mapped
    read-only with libc's mmap, every word loaded with libatomic's
    __atomic_load_8, the §4.7 seqlock read (stamp, len/kind, payload words,
    stamp again). It does not register (a §4.5 join needs the control
    region), so it is an observer that a writer never waits for."""

    def __init__(self, path):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
        atomic = ctypes.CDLL("libatomic.so.1")
        self.load = getattr(atomic, "__atomic_load_8")  # getattr: no name mangling
        self.load.restype = ctypes.c_uint64
        self.load.argtypes = [ctypes.c_void_p, ctypes.c_int]
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            base = libc.mmap(None, size, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
            if base in (None, ctypes.c_void_p(-1).value):
                raise OSError(ctypes.get_errno(), f"mmap {path}")
        finally:
            os.close(fd)
        self.base = base
        self.capacity = self.load(base + CAPACITY_AT, ACQUIRE)
        self.slot_size = self.load(base + SLOT_SIZE_AT, ACQUIRE) & 0xFFFFFFFF

    def read(self, seq, out, n):
        """Reads frames seq.. into the bytes of `out` (n samples of 40
        bytes); returns how many (stops at the first not published)."""
        load, base, mask, size = self.load, self.base, self.capacity - 1, self.slot_size
        view = memoryview(out).cast("B").cast("Q")  # 5 words a sample
        for i in range(n):
            slot = base + DATA_OFFSET + ((seq + i) & mask) * size
            if load(slot + STAMP_AT, ACQUIRE) != seq + i:
                return i
            len_kind = load(slot + LEN_AT, 0)
            if len_kind & 0xFFFFFFFF != 40 or len_kind >> 32 != helix.KIND_SAMPLE:
                return i
            for w in range(5):
                view[5 * i + w] = load(slot + PAYLOAD_AT + 8 * w, 0)
            if load(slot + STAMP_AT, ACQUIRE) != seq + i:  # torn: an overrun
                return i
        return n


def fill(ns, frames):
    w = helix.Writer.create("bench", namespace=ns, capacity=frames, max_payload=40, replace=True)
    samples = np.zeros(frames, helix.SAMPLE_DTYPE)
    samples["stream"] = np.arange(frames) % 1000
    samples["seq"] = np.arange(frames) // 1000
    samples["value"] = np.random.default_rng(1).normal(size=frames)
    w.publish_samples(samples)
    return w, samples


def run_read_batch(ns, frames, batch):
    r = helix.Reader.attach("bench", namespace=ns, start="oldest", reader_name="py-bench")
    parts, got = [], 0
    t0 = time.perf_counter()
    while got < frames:
        a = r.read_batch(batch, timeout=0)
        parts.append(a)
        got += len(a)
    elapsed = time.perf_counter() - t0
    r.close()
    return frames / elapsed, np.concatenate(parts)


def run_ctypes(ns, frames):
    reader = CtypesReader(f"/dev/shm/{ns}.bench")
    out = np.zeros(frames, helix.SAMPLE_DTYPE)
    t0 = time.perf_counter()
    n = reader.read(1, out, frames)
    elapsed = time.perf_counter() - t0
    return n / elapsed, out[:n]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=1 << 22, help="frames in the ring (a power of two)")
    p.add_argument("--ctypes-frames", type=int, default=1 << 18, help="frames the ctypes reader reads")
    p.add_argument("--batch", type=int, default=65536, help="read_batch's max_frames")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--json", help="write the figures to this file")
    p.add_argument("--markdown", help="write a section for docs/PERFORMANCE.md to this file")
    a = p.parse_args()
    ns = f"pybench{os.getpid()}"
    try:
        w, samples = fill(ns, a.frames)
        batch_rates, ctypes_rates = [], []
        for _ in range(a.runs):
            rate, got = run_read_batch(ns, a.frames, a.batch)
            assert (got == samples).all(), "read_batch returned other samples than were written"
            batch_rates.append(rate)
            rate, got = run_ctypes(ns, min(a.ctypes_frames, a.frames))
            assert (got == samples[: len(got)]).all() and len(got) > 0, "the ctypes reader misread"
            ctypes_rates.append(rate)
        w.close()
    finally:
        for f in (f"/dev/shm/{ns}.bench", f"/dev/shm/{ns}.bench@readers"):
            if os.path.exists(f):
                os.unlink(f)
    doc = {
        "scenario": "python",
        "frames": a.frames,
        "batch": a.batch,
        "runs": a.runs,
        "read_batch_frames_per_s": batch_rates,
        "ctypes_frames": min(a.ctypes_frames, a.frames),
        "ctypes_frames_per_s": ctypes_rates,
        "read_batch_median": statistics.median(batch_rates),
        "ctypes_median": statistics.median(ctypes_rates),
    }
    doc["ratio"] = doc["read_batch_median"] / doc["ctypes_median"]
    print(f"read_batch({a.batch}) into numpy: median {doc['read_batch_median'] / 1e6:.1f} M frames/s "
          f"(runs: {', '.join(f'{r / 1e6:.1f}' for r in batch_rates)} M)")
    print(f"ctypes reader (docs/abi.md):   median {doc['ctypes_median'] / 1e3:.0f} k frames/s "
          f"(runs: {', '.join(f'{r / 1e3:.0f}' for r in ctypes_rates)} k)")
    print(f"ratio: {doc['ratio']:.0f}x; {a.frames} frames of 40 bytes, {a.runs} runs")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(doc, f, indent=1)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(markdown(doc))


def markdown(doc):
    """The Python section of docs/PERFORMANCE.md (tools/perf-report)."""
    target = "met" if doc["read_batch_median"] >= 10e6 else "MISSED"
    runs = lambda rates, unit: ", ".join(f"{r / unit:.1f}" for r in rates)
    return (
        "\n## Python: telemetry into numpy\n\n"
        f"`tools/py-bench --runs {doc['runs']}` (python/bench/read_bench.py, pinned with taskset): a ring of "
        f"{doc['frames']:,} telemetry samples (40 bytes, kind 1) filled, then read from the oldest frame by "
        f"each reader in turn, no writer running.\n\n"
        "| reader | median frames/s | runs |\n|---|---:|---|\n"
        f"| `helix.Reader.read_batch({doc['batch']})` into numpy | {doc['read_batch_median'] / 1e6:.1f} M | "
        f"{runs(doc['read_batch_frames_per_s'], 1e6)} M |\n"
        f"| pure-Python ctypes reader from docs/abi.md ({doc['ctypes_frames']:,} frames) | "
        f"{doc['ctypes_median'] / 1e3:.0f} k | {runs(doc['ctypes_frames_per_s'], 1e3)} k |\n\n"
        f"read_batch is {doc['ratio']:.0f}x the ctypes reader; the target of 10 M frames/s is {target}.\n"
    )


if __name__ == "__main__":
    main()
