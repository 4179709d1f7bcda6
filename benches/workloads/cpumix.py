"""CPU-bound workload for the target-slowdown rows of benches/versus_py_spy.rs.

Usage: python cpumix.py UNITS

Prints "ready" and waits for a line on stdin, so that a profiler can attach first; then
does UNITS units of pure-Python work (function calls, recursion, dicts, strings, sorting,
a small class), each some tens of microseconds, at a stack depth of about 20 (the
harness picks UNITS so the work takes a few seconds alone), and prints the wall seconds
the work took (time.perf_counter) on stdout. Exits when done. Only the work is timed:
starting the interpreter and waiting for the profiler are not.
"""
import sys
import time


class Point(object):
    __slots__ = ("x", "y")

    def __init__(self, x, y):
        self.x = x
        self.y = y

    def norm1(self):
        return abs(self.x) + abs(self.y)


def fib(n):
    if n < 2:
        return n
    return fib(n - 1) + fib(n - 2)


def words(seed):
    out = []
    for i in range(40):
        out.append("w%d_%d" % (seed % 17, i * 7 % 13))
    return out


def tally(items):
    counts = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


def unit(seed):
    total = fib(12)
    counts = tally(words(seed))
    text = ",".join(sorted(counts))
    total += len(text.upper().split(","))
    points = [Point(i - seed % 7, seed - i) for i in range(60)]
    points.sort(key=Point.norm1)
    total += sum(p.norm1() for p in points[:10])
    return total


def nest(depth, units):
    # Runs the work a fixed number of frames down, so samples have a realistic depth.
    if depth > 0:
        return nest(depth - 1, units)
    total = 0
    for seed in range(units):
        total += unit(seed)
    return total


def main():
    units = int(sys.argv[1])
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.readline()
    start = time.perf_counter()
    nest(17, units)
    elapsed = time.perf_counter() - start
    sys.stdout.write("%.6f\n" % elapsed)
    sys.stdout.flush()


main()
