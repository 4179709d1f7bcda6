# -*- coding: utf-8 -*-
"""Worker processes for `py-spy record --subprocesses` (tests/record.rs).

Usage: python record_multi.py OUT_JSON [SECONDS]

Runs unchanged on Python 2.7 and 3.6 to 3.15: no f-strings, ASCII only.

Starts 3 worker processes with `multiprocessing` and the version's default start method
(fork up to 3.13, forkserver on 3.14+ on Linux: there the workers are children of the
fork server, grandchildren of this process). Each worker writes `worker-<pid>.json` next
to OUT_JSON ({"pid", "ppid", "cmdline": /proc/self/cmdline joined by spaces, or null
without /proc}) and then spins in `worker_burn` (ONE line, marker `# HOT worker_burn`)
for SECONDS of wall time (default 1.5). When all have ended, OUT_JSON gets
{"parent": pid, "start_method", "filename", "lines": {"worker_burn": [first, last]},
"workers": [the workers' files, in start order], "exitcodes"}.
"""
import inspect
import json
import multiprocessing
import os
import sys
import time

sys.dont_write_bytecode = True

WORKERS = 3


def worker_burn(seconds):
    end = time.time() + seconds
    while time.time() < end: pass  # HOT worker_burn


def own_cmdline():
    try:
        with open("/proc/self/cmdline", "rb") as source:
            raw = source.read()
    except (IOError, OSError):
        return None
    parts = raw.rstrip(b"\0").split(b"\0")
    return b" ".join(parts).decode("utf-8", "replace")


def worker_main(out_dir, seconds):
    info = {"pid": os.getpid(), "ppid": os.getppid(), "cmdline": own_cmdline()}
    path = os.path.join(out_dir, "worker-%d.json" % os.getpid())
    with open(path + ".tmp", "w") as out:
        json.dump(info, out, sort_keys=True)
    os.rename(path + ".tmp", path)
    worker_burn(seconds)


def line_range(func):
    lines, first = inspect.getsourcelines(func)
    return [first, first + len(lines) - 1]


def main():
    if len(sys.argv) not in (2, 3):
        sys.stderr.write("usage: record_multi.py OUT_JSON [SECONDS]\n")
        sys.exit(2)
    out_path = os.path.abspath(sys.argv[1])
    seconds = float(sys.argv[2]) if len(sys.argv) == 3 else 1.5
    out_dir = os.path.dirname(out_path)
    get_method = getattr(multiprocessing, "get_start_method", None)
    method = get_method() if get_method is not None else "fork"
    processes = [multiprocessing.Process(target=worker_main, args=(out_dir, seconds))
                 for _ in range(WORKERS)]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    workers = []
    for process in processes:
        path = os.path.join(out_dir, "worker-%d.json" % process.pid)
        try:
            with open(path) as source:
                workers.append(json.load(source))
        except (IOError, OSError, ValueError):
            workers.append({"pid": process.pid, "ppid": None, "cmdline": None})
    result = {
        "parent": os.getpid(),
        "start_method": method,
        "filename": worker_burn.__code__.co_filename,
        "lines": {"worker_burn": line_range(worker_burn)},
        "workers": workers,
        "exitcodes": [process.exitcode for process in processes],
    }
    with open(out_path + ".tmp", "w") as out:
        json.dump(result, out, indent=1, sort_keys=True)
    os.rename(out_path + ".tmp", out_path)


if __name__ == "__main__":
    main()
