# -*- coding: utf-8 -*-
"""A busy thread and a sleeping main thread, for `py-spy record --pid` (tests/record.rs).

Usage: python record_idle.py READY_JSON [LIFETIME_SECONDS]

Runs unchanged on Python 2.7 and 3.6 to 3.15 (also free-threaded builds): no f-strings,
ASCII only.

* a thread named "busy": `busy_entry` -> `spin`, which spins forever on ONE line
  (marker comment `# HOT spin`): always active (and holding the GIL).
* MainThread: `<module>` -> `main` -> `sleeper`, which sleeps in `time.sleep` on ONE line
  (marker `# HOT sleeper`): always idle.

The calls of `spin` and `sleeper` carry the markers `# CALL spin` and `# CALL sleeper`.

Once the busy thread runs, the main thread writes READY_JSON (a temporary file, then
renamed): {"pid", "version", "free_threaded", "filename" (co_filename of this file's
functions), "main_native_id", "busy_native_id" (OS thread ids), "lines": {"spin": [first, last], "sleeper": [...],
"busy_entry": [...]}}, then sleeps. The process ends itself with
SIGALRM after LIFETIME_SECONDS (default 120), a safety net for test runs that die without
killing it. Nothing is printed on stdout; errors end the process with exit status 3.
"""
import inspect
import json
import os
import platform
import signal
import sys
import threading
import time
import traceback

sys.dont_write_bytecode = True

BUSY_STARTED = threading.Event()
NATIVE_IDS = {}


def fail(message):
    sys.stderr.write("record_idle.py: " + message + "\n")
    sys.stderr.flush()
    os._exit(3)


def native_thread_id():
    getter = getattr(threading, "get_native_id", None)
    if getter is not None:
        return getter()
    import ctypes

    numbers = {"x86_64": 186, "amd64": 186, "aarch64": 178, "arm64": 178, "i386": 224,
               "i686": 224}
    number = numbers.get(platform.machine().lower())
    if number is None:
        fail("no gettid syscall number for " + platform.machine())
    return ctypes.CDLL(None, use_errno=True).syscall(number)


def spin(stop):
    while not stop[0]: pass  # HOT spin


def busy_entry():
    try:
        NATIVE_IDS["busy"] = native_thread_id()
        BUSY_STARTED.set()
        spin([False])  # CALL spin
    except BaseException:
        fail("busy thread failed:\n" + traceback.format_exc())


def sleeper():
    while True: time.sleep(3600)  # HOT sleeper


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
    if len(sys.argv) not in (2, 3):
        fail("usage: record_idle.py READY_JSON [LIFETIME_SECONDS]")
    ready_path = sys.argv[1]
    lifetime = int(sys.argv[2]) if len(sys.argv) == 3 else 120
    signal.alarm(lifetime)
    NATIVE_IDS["main"] = native_thread_id()
    thread = threading.Thread(target=busy_entry, name="busy")
    thread.daemon = True
    thread.start()
    if not BUSY_STARTED.wait(30):
        fail("the busy thread did not start within 30 s")
    ready = {
        "pid": os.getpid(),
        "version": platform.python_version(),
        "free_threaded": free_threaded(),
        "filename": spin.__code__.co_filename,
        "main_native_id": NATIVE_IDS["main"],
        "busy_native_id": NATIVE_IDS["busy"],
        "lines": {"spin": line_range(spin), "sleeper": line_range(sleeper),
                  "busy_entry": line_range(busy_entry)},
    }
    tmp_path = ready_path + ".tmp"
    with open(tmp_path, "w") as out:
        json.dump(ready, out, indent=1, sort_keys=True)
    os.rename(tmp_path, ready_path)
    sleeper()  # CALL sleeper


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except BaseException:
        fail("failed:\n" + traceback.format_exc())
