# -*- coding: utf-8 -*-
"""Workload for the accuracy test of `py-spy record` (tests/record.rs).

Usage: python record_accuracy.py OUT_JSON SECONDS

Runs unchanged on Python 2.7 and 3.6 to 3.15 (also free-threaded builds): no f-strings,
ASCII only. Three functions, `burn_a`, `burn_b` and `burn_c`, spin in turn for 5, 3 and
2 ms of CPU time each, over and over, until SECONDS of wall time have passed. The caller
measures the CPU time and the wall time actually spent inside each call; at the end the
totals are written to OUT_JSON (a temporary file, then renamed):

{"pid", "version", "free_threaded", "cycles",
 "a", "b", "c"            CPU seconds spent inside burn_a, burn_b, burn_c,
 "cpu": {"a", "b", "c"}   the same,
 "wall": {"a", "b", "c"}  wall seconds spent inside them (what a wall-clock sampler sees),
 "filename"               co_filename of the burn functions,
 "lines": {"burn_a": [first line (co_firstlineno), last line], ...}}

Each burn function is two statements; the spinning line carries a `# HOT <name>` marker
comment that the test looks up, and the lines calling `main` and the burn functions carry
`# CALL main` and `# CALL burn`: every sample inside a burn function has the stack
`<module>` (CALL main) -> `main` (CALL burn) -> `burn_x`. Nothing is printed on stdout;
errors end the process with exit status 3.
"""
import inspect
import json
import os
import platform
import sys
import time
import traceback

sys.dont_write_bytecode = True

try:
    cpu_clock = time.process_time
except AttributeError:  # Python 2: on Unix time.clock() is the process's CPU time
    cpu_clock = time.clock
wall_clock = time.time


def burn_a(budget):
    end = cpu_clock() + budget
    while cpu_clock() < end: pass  # HOT burn_a


def burn_b(budget):
    end = cpu_clock() + budget
    while cpu_clock() < end: pass  # HOT burn_b


def burn_c(budget):
    end = cpu_clock() + budget
    while cpu_clock() < end: pass  # HOT burn_c


PLAN = (("a", burn_a, 0.005), ("b", burn_b, 0.003), ("c", burn_c, 0.002))


def fail(message):
    sys.stderr.write("record_accuracy.py: " + message + "\n")
    sys.stderr.flush()
    os._exit(3)


def free_threaded():
    try:
        import sysconfig

        return bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    except Exception:
        return False


def line_range(func):
    lines, first = inspect.getsourcelines(func)
    return [first, first + len(lines) - 1]


def main():
    if len(sys.argv) != 3:
        fail("usage: record_accuracy.py OUT_JSON SECONDS")
    out_path = sys.argv[1]
    seconds = float(sys.argv[2])
    cpu = {"a": 0.0, "b": 0.0, "c": 0.0}
    wall = {"a": 0.0, "b": 0.0, "c": 0.0}
    cycles = 0
    deadline = wall_clock() + seconds
    while wall_clock() < deadline:
        for key, func, budget in PLAN:
            c0 = cpu_clock()
            w0 = wall_clock()
            func(budget)  # CALL burn
            c1 = cpu_clock()
            w1 = wall_clock()
            cpu[key] += c1 - c0
            wall[key] += w1 - w0
        cycles += 1
    result = {
        "pid": os.getpid(),
        "version": platform.python_version(),
        "free_threaded": free_threaded(),
        "cycles": cycles,
        "a": cpu["a"],
        "b": cpu["b"],
        "c": cpu["c"],
        "cpu": cpu,
        "wall": wall,
        "filename": burn_a.__code__.co_filename,
        "lines": dict((f.__name__, line_range(f)) for _, f, _ in PLAN),
    }
    tmp_path = out_path + ".tmp"
    with open(tmp_path, "w") as out:
        json.dump(result, out, indent=1, sort_keys=True)
    os.rename(tmp_path, out_path)


if __name__ == "__main__":
    try:
        main()  # CALL main
    except SystemExit:
        raise
    except BaseException:
        fail("failed:\n" + traceback.format_exc())
