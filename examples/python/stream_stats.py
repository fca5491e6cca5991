#!/usr/bin/env python3
"""Follows helixd's telemetry ring for a few seconds and prints per-stream
statistics computed with numpy: samples, mean, standard deviation, min,
max, and the ingest-to-reader latency.

    pip install ./python                      # once, from the repository
    cargo run --release --bin helixd &        # the simulator, 10,000 streams
    python3 examples/python/stream_stats.py --seconds 5 --top 10

HELIX_NAMESPACE (or --namespace) picks the namespace, as for every HELIX
program."""

import argparse
import time

import numpy as np

import helix


def follow(reader, seconds, batch):
    """Every sample read in `seconds`, and how many were lost to overruns."""
    parts, lost, latency = [], 0, []
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        try:
            b = reader.read_batch(batch, timeout=min(left, 0.5))
        except helix.Overrun as e:
            lost += e.lost
            continue
        if not isinstance(b, np.ndarray):
            continue  # frames of another kind: not telemetry
        if len(b):
            # ingest_ns is CLOCK_MONOTONIC, as is time.monotonic_ns().
            latency.append(time.monotonic_ns() - b["ingest_ns"][-1])
            parts.append(b)
    samples = np.concatenate(parts) if parts else np.zeros(0, helix.SAMPLE_DTYPE)
    return samples, lost, np.array(latency)


def per_stream(samples):
    """(streams, count, mean, std, min, max), one entry per stream, with
    numpy's grouping: sort by stream once, then reduce each run."""
    order = np.argsort(samples["stream"], kind="stable")
    streams, starts, counts = np.unique(samples["stream"][order], return_index=True, return_counts=True)
    values = samples["value"][order]
    sums = np.add.reduceat(values, starts)
    means = sums / counts
    sq = np.add.reduceat(values * values, starts)
    std = np.sqrt(np.maximum(sq / counts - means * means, 0))
    return streams, counts, means, std, np.minimum.reduceat(values, starts), np.maximum.reduceat(values, starts)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ring", default="telemetry")
    p.add_argument("--namespace", default=None)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--batch", type=int, default=65536)
    p.add_argument("--top", type=int, default=10, help="streams to print (the busiest)")
    a = p.parse_args()
    with helix.Reader.attach(a.ring, namespace=a.namespace, reader_name="stream_stats") as r:
        samples, lost, latency = follow(r, a.seconds, a.batch)
    print(f"{len(samples)} samples in {a.seconds:g} s ({len(samples) / a.seconds:,.0f}/s), {lost} lost to overruns")
    if not len(samples):
        return
    streams, counts, means, std, lo, hi = per_stream(samples)
    bad = np.count_nonzero(samples["quality"] & helix.QUALITY_BAD)
    print(f"{len(streams)} streams; {bad} samples flagged bad")
    if len(latency):
        p50, p99 = np.percentile(latency, [50, 99]) / 1e3
        print(f"ingest to reader, newest sample of each batch: p50 {p50:.0f} us, p99 {p99:.0f} us")
    print(f"{'stream':>8} {'samples':>8} {'mean':>12} {'std':>10} {'min':>12} {'max':>12}")
    for i in np.argsort(-counts, kind="stable")[: a.top]:
        print(f"{streams[i]:>8} {counts[i]:>8} {means[i]:>12.4f} {std[i]:>10.4f} {lo[i]:>12.4f} {hi[i]:>12.4f}")


if __name__ == "__main__":
    main()
