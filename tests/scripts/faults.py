# -*- coding: utf-8 -*-
"""Targets for the fault tests of `py-spy record` (tests/faults.rs).

Usage: python faults.py MODE READY_JSON [ARGS...]

Runs unchanged on Python 2.7 and 3.6 to 3.15: no f-strings, ASCII only.

Every mode writes READY_JSON (a temporary file, then renamed) once its threads are in
place: {"pid", "version", "filename" (co_filename of this file), "lines" (first and
last line of the functions below), plus what the mode adds}. The process ends itself
with SIGALRM after 120 s, a safety net for test runs that die without killing it.
Errors end it with exit status 3.

Modes:

* `workers N STOP_FILE MIN_CHUNKS`: N threads "worker-I" run `work_chunk` (a fixed
  computation, its result checked against the one computed before the threads start)
  until STOP_FILE exists and each has done at least MIN_CHUNKS chunks; the main thread
  joins them, prints `DONE workers=N chunks=C` (C: the chunks done, summed) and exits 0.
  READY adds "worker_native_ids".
* `churn STOP_FILE RESULT_JSON`: a thread "busy" spins in `churn_spin` (marker
  `# HOT churn_spin`) while the main thread starts short-lived threads (`churn_child`),
  BATCH at a time, and joins them, until STOP_FILE exists; then it writes RESULT_JSON:
  {"started", "seconds", "per_second"} and exits 0.
* `threads N_IDLE N_BUSY`: N_IDLE threads "idle-I" wait on an event in `idle_wait`
  (marker `# HOT idle_wait`), N_BUSY threads "busy-I" spin in `spin` (`# HOT spin`), the
  main thread sleeps in `main_sleep` (`# HOT main_sleep`). READY adds "native_ids"
  (every thread's OS id, main thread included).
* `late SECONDS`: the main thread writes READY, sleeps SECONDS in `main_sleep`-like
  steps, then starts a thread "late-idle" waiting in `late_idle` (`# HOT late_idle`) and
  a thread "late-busy" spinning in `late_spin` (`# HOT late_spin`), and sleeps on in
  `main_sleep`. Threads that start while py-spy samples.
* `deep DEPTH`: a thread "deep" (with an 256 MiB stack, so that interpreters that
  recurse on the C stack survive) calls `recurse` DEPTH times (one line, marker
  `# CALL recurse`), then spins in `deep_spin` (`# HOT deep_spin`). READY adds
  "deep_native_id" and "depth" (the Python frames of that thread, counted by walking
  them).
* `exec SECONDS PROGRAM ARGS...`: starts 4 threads "helper-I" that sleep in short steps,
  spins in `before_exec` (`# HOT before_exec`) for SECONDS, then replaces itself with
  PROGRAM ARGS (`os.execv`) while the helpers still run.
* `finalized SECONDS HOLD`: spins in `final_spin` (`# HOT final_spin`) for SECONDS, then
  returns; the C library's exit handlers then sleep HOLD whole seconds (one registered
  with `__cxa_atexit`), so the process lives on after `Py_FinalizeEx` has freed its
  thread states and its interpreter. Exit status 0.
"""
import inspect
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import traceback

sys.dont_write_bytecode = True


def fail(message):
    sys.stderr.write("faults.py: " + message + "\n")
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


def line_range(func):
    lines, first = inspect.getsourcelines(func)
    return [first, first + len(lines) - 1]


def write_json(path, data):
    with open(path + ".tmp", "w") as out:
        json.dump(data, out, indent=1, sort_keys=True)
    os.rename(path + ".tmp", path)


def guarded(function):
    """Runs `function` in a thread; any exception ends the process (status 3)."""

    def run(*args):
        try:
            function(*args)
        except BaseException:
            fail(function.__name__ + " failed:\n" + traceback.format_exc())

    return run


def start_thread(function, name, args=()):
    thread = threading.Thread(target=guarded(function), name=name, args=args)
    thread.daemon = True
    thread.start()
    return thread


# --------------------------------------------------------------------- workers --

def work_chunk():
    total = 0
    for i in range(20000):
        total = (total + i * i) % 1000003
    return total


def worker(expected, stop_file, min_chunks, done, index, ids):
    ids[index] = native_thread_id()
    chunks = 0
    while chunks < min_chunks or not os.path.exists(stop_file):
        if work_chunk() != expected:
            fail("worker %d: a chunk computed a wrong result" % index)
        chunks += 1
    done[index] = chunks


def mode_workers(ready_path, args):
    count, stop_file, min_chunks = int(args[0]), args[1], int(args[2])
    expected = work_chunk()
    done = [0] * count
    ids = [None] * count
    threads = [start_thread(worker, "worker-%d" % i,
                            (expected, stop_file, min_chunks, done, i, ids))
               for i in range(count)]
    while None in ids:
        time.sleep(0.001)
    write_ready(ready_path, {"worker_native_ids": ids})
    for thread in threads:
        while thread.is_alive():
            thread.join(0.05)
    if 0 in done:
        fail("a worker did not finish: %r" % (done,))
    sys.stdout.write("DONE workers=%d chunks=%d\n" % (count, sum(done)))
    sys.stdout.flush()
    sys.exit(0)


# ----------------------------------------------------------------------- churn --

BATCH = 8


def churn_spin(stop):
    while not stop[0]: pass  # HOT churn_spin


def churn_child(counter):
    counter.append(1)


def mode_churn(ready_path, args):
    stop_file, result_path = args[0], args[1]
    if hasattr(sys, "setswitchinterval"):
        # A spinning thread holds the GIL for the whole switch interval (5 ms): shorter
        # turns let the main thread start and join threads hundreds of times a second.
        sys.setswitchinterval(0.0002)
    stop = [False]
    busy = start_thread(churn_spin, "busy", (stop,))
    write_ready(ready_path, {})
    counter = []
    started = 0
    begin = time.time()
    while not os.path.exists(stop_file):
        batch = [threading.Thread(target=churn_child, args=(counter,))
                 for _ in range(BATCH)]
        for thread in batch:
            thread.start()
        for thread in batch:
            thread.join()
        started += BATCH
    seconds = time.time() - begin
    stop[0] = True
    busy.join()
    if len(counter) != started:
        fail("%d threads started, %d ran" % (started, len(counter)))
    write_json(result_path, {"started": started, "seconds": seconds,
                             "per_second": started / seconds})
    sys.exit(0)


# --------------------------------------------------------------------- threads --

def idle_wait(event):
    event.wait()  # HOT idle_wait


def spin(stop):
    while not stop[0]: pass  # HOT spin


def main_sleep():
    while True: time.sleep(3600)  # HOT main_sleep


def record_id(ids, index, function, *args):
    ids[index] = native_thread_id()
    function(*args)


def mode_threads(ready_path, args):
    n_idle, n_busy = int(args[0]), int(args[1])
    threading.stack_size(256 * 1024)
    event = threading.Event()
    stop = [False]
    ids = [None] * (n_idle + n_busy)
    for i in range(n_idle):
        start_thread(record_id, "idle-%d" % i, (ids, i, idle_wait, event))
    for i in range(n_busy):
        start_thread(record_id, "busy-%d" % i, (ids, n_idle + i, spin, stop))
    while None in ids:
        time.sleep(0.01)
    write_ready(ready_path, {"native_ids": [native_thread_id()] + ids})
    main_sleep()


def late_idle(event):
    event.wait()  # HOT late_idle


def late_spin(stop):
    while not stop[0]: pass  # HOT late_spin


def mode_late(ready_path, args):
    write_ready(ready_path, {})
    time.sleep(float(args[0]))
    start_thread(late_idle, "late-idle", (threading.Event(),))
    start_thread(late_spin, "late-busy", ([False],))
    main_sleep()


# ------------------------------------------------------------------------ deep --

def deep_spin(stop, reached):
    reached.set()
    while not stop[0]: pass  # HOT deep_spin


def recurse(n, stop, reached):
    return recurse(n - 1, stop, reached) if n else deep_spin(stop, reached)  # CALL recurse


def python_depth(frame):
    depth = 0
    while frame is not None:
        depth += 1
        frame = frame.f_back
    return depth


def mode_deep(ready_path, args):
    depth = int(args[0])
    sys.setrecursionlimit(depth + 1000)
    threading.stack_size(256 * 1024 * 1024)
    stop = [False]
    reached = threading.Event()
    ids = {}

    def deep_entry():
        ids["deep"] = native_thread_id()
        recurse(depth, stop, reached)

    thread = start_thread(deep_entry, "deep")
    if not reached.wait(60):
        fail("the recursion did not reach its depth within 60 s")
    frame = sys._current_frames()[thread.ident]
    write_ready(ready_path, {"deep_native_id": ids["deep"], "depth": python_depth(frame)})
    main_sleep()


# ------------------------------------------------------------------------ exec --

# Threads alive when the main thread execs: the exec kills them, which is what tangled
# with a profiler holding them (tests/faults.rs, exec rows). They sleep in short steps, so
# that the main thread, spinning, never waits long for the GIL.
EXEC_HELPERS = 4

def before_exec(seconds):
    end = time.time() + seconds
    while time.time() < end: pass  # HOT before_exec


def exec_helper():
    while True:
        time.sleep(0.0005)


def mode_exec(ready_path, args):
    seconds, argv = float(args[0]), args[1:]
    for i in range(EXEC_HELPERS):
        start_thread(exec_helper, "helper-%d" % i)
    write_ready(ready_path, {})
    before_exec(seconds)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(argv[0], argv)


# --------------------------------------------------------------------- signals --

# A profiler that holds the threads between samples sees every signal first and must
# pass it on at once: SIGNALS SIGUSR1s, each sent once the one before was handled (so
# none can merge with another), a SIGSTOP that must really stop the process until a
# helper's SIGCONT, and the helper's SIGCHLD.
SIGNALS = 200

def signal_spin(done):
    while not done[0]: pass  # HOT signal_spin


def send_signals(handled, result, done):
    pid = os.getpid()
    for _ in range(SIGNALS):
        expected = handled[0] + 1
        sent = time.time()
        os.kill(pid, signal.SIGUSR1)
        while handled[0] < expected and time.time() - sent < 1.0:
            time.sleep(0.0005)
        result["max_wait"] = max(result["max_wait"], time.time() - sent)
        if handled[0] < expected:
            result["lost"] += 1
    done[0] = True


def mode_signals(ready_path, args):
    result_path, seconds = args[0], float(args[1])
    if hasattr(sys, "setswitchinterval"):
        sys.setswitchinterval(0.0005)
    handled = [0]

    def on_sigusr1(signum, frame):
        handled[0] += 1

    signal.signal(signal.SIGUSR1, on_sigusr1)
    write_ready(ready_path, {})
    start = time.time()
    result = {"signals": SIGNALS, "lost": 0, "max_wait": 0.0}
    done = [False]
    sender = start_thread(send_signals, "sender", (handled, result, done))
    signal_spin(done)
    sender.join()
    helper = subprocess.Popen(["/bin/sh", "-c", "sleep 0.3; kill -CONT %d" % os.getpid()])
    before = time.time()
    os.kill(os.getpid(), signal.SIGSTOP)
    result["stopped"] = time.time() - before
    helper.wait()
    rest = [False]
    threading.Timer(max(0.1, start + seconds - time.time()), lambda: rest.__setitem__(0, True)).start()
    signal_spin(rest)
    result["handled"] = handled[0]
    write_json(result_path, result)


def final_spin(seconds):
    end = time.time() + seconds
    while time.time() < end: pass  # HOT final_spin


def mode_finalized(ready_path, args):
    seconds, hold = float(args[0]), int(args[1])
    import ctypes

    libc = ctypes.CDLL(None)
    # An exit handler of the C library runs after the interpreter is gone; it is called
    # with its argument, so `sleep` gets HOLD.
    sleep = ctypes.cast(libc.sleep, ctypes.c_void_p)
    if libc.__cxa_atexit(sleep, ctypes.c_void_p(hold), None) != 0:
        fail("__cxa_atexit failed")
    write_ready(ready_path, {})
    final_spin(seconds)


# ------------------------------------------------------------------------ main --

FUNCTIONS = [work_chunk, churn_spin, idle_wait, spin, main_sleep, deep_spin, recurse,
             before_exec, signal_spin, final_spin]


def write_ready(path, extra):
    ready = {
        "pid": os.getpid(),
        "version": platform.python_version(),
        "filename": spin.__code__.co_filename,
        "lines": dict((f.__name__, line_range(f)) for f in FUNCTIONS),
    }
    ready.update(extra)
    write_json(path, ready)


MODES = {"workers": mode_workers, "churn": mode_churn, "threads": mode_threads,
         "late": mode_late,
         "deep": mode_deep, "exec": mode_exec, "signals": mode_signals,
         "finalized": mode_finalized}


def main():
    if len(sys.argv) < 3 or sys.argv[1] not in MODES:
        fail("usage: faults.py {" + ",".join(sorted(MODES)) + "} READY_JSON [ARGS...]")
    signal.alarm(120)
    MODES[sys.argv[1]](sys.argv[2], sys.argv[3:])


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except BaseException:
        fail("failed:\n" + traceback.format_exc())
