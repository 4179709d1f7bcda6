# -*- coding: utf-8 -*-
"""A short busy program that ends in a chosen way, for `py-spy record` (tests/record.rs).

Usage: python record_exit.py MODE [SECONDS] [READY_JSON]

Runs unchanged on Python 2.7 and 3.6 to 3.15: no f-strings, ASCII only.

If READY_JSON is given, {"pid", "filename", "lines": {"busy_exit": [first, last]}} is
written there first (a temporary file, then renamed). Then `busy_exit` spins on ONE line
(marker `# HOT busy_exit`) for SECONDS of wall time (default 0.3) and the program ends:
MODE is an exit status (`sys.exit(MODE)`), `term` (it sends itself SIGTERM: killed by
signal 15) or `kill` (SIGKILL, signal 9).
"""
import inspect
import json
import os
import signal
import sys
import time

sys.dont_write_bytecode = True


def busy_exit(seconds):
    end = time.time() + seconds
    while time.time() < end: pass  # HOT busy_exit


def line_range(func):
    lines, first = inspect.getsourcelines(func)
    return [first, first + len(lines) - 1]


def main():
    if not 2 <= len(sys.argv) <= 4:
        sys.stderr.write("usage: record_exit.py MODE [SECONDS] [READY_JSON]\n")
        sys.exit(2)
    mode = sys.argv[1]
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 0.3
    if len(sys.argv) > 3:
        ready_path = sys.argv[3]
        ready = {
            "pid": os.getpid(),
            "filename": busy_exit.__code__.co_filename,
            "lines": {"busy_exit": line_range(busy_exit)},
        }
        with open(ready_path + ".tmp", "w") as out:
            json.dump(ready, out, indent=1, sort_keys=True)
        os.rename(ready_path + ".tmp", ready_path)
    busy_exit(seconds)
    sys.stdout.flush()
    sys.stderr.flush()
    if mode == "term":
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)
    elif mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(10)
    sys.exit(int(mode))


if __name__ == "__main__":
    main()
