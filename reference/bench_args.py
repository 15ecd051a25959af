"""Argument types and timing shared by the benchmark scripts in this
directory."""

import argparse
import statistics
import time


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is invalid: use 1 or more")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is invalid: use 0 or more")
    return value


def time_pass(forward, x, warmup: int, runs: int):
    """Call `forward(x)` `warmup` times untimed, then `runs` times timed, and
    return the median milliseconds (the upper of the two middle values for an
    even count) and the output of the last call."""
    for _ in range(warmup):
        forward(x)
    milliseconds = []
    for _ in range(runs):
        start = time.perf_counter()
        out = forward(x)
        milliseconds.append(1000 * (time.perf_counter() - start))
    return statistics.median_high(milliseconds), out
