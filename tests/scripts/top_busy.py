# -*- coding: utf-8 -*-
"""Workload for the tests of `py-spy top` (tests/top.rs).

Usage: python top_busy.py [SECONDS]

Runs unchanged on Python 2.7 and 3.6 to 3.15: no f-strings, ASCII only. One thread spins
in `hot` about nine parts in ten and in `light` one part in ten (by loop iterations, so
the shares hold on any machine), for SECONDS of wall time (default: until killed). The
spinning lines carry `# HOT` and `# LIGHT` marker comments and the calls `# CALL hot`,
`# CALL light` and `# CALL main`; the test looks their line numbers up. Prints nothing.
"""
import sys
import time

sys.dont_write_bytecode = True


def hot(n):
    total = 0
    for i in range(n): total += i  # HOT
    return total


def light(n):
    total = 0
    for i in range(n): total += i  # LIGHT
    return total


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else None
    deadline = time.time() + seconds if seconds is not None else None
    while deadline is None or time.time() < deadline:
        hot(90000)  # CALL hot
        light(10000)  # CALL light


if __name__ == "__main__":
    main()  # CALL main
