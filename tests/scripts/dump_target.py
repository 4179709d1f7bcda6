# -*- coding: utf-8 -*-
"""Target process for the `py-spy dump` integration tests (tests/dump.rs).

Usage: python dump_target.py TRUTH_JSON_PATH

Runs unchanged on Python 2.7 and 3.6 to 3.15 (also free-threaded builds): no f-strings,
no walrus, no keyword-only arguments, ASCII identifiers in this file.

It parks threads at known places, then a short-lived reporter thread writes "the truth"
about every other thread (what a correct `py-spy dump` must print) to TRUTH_JSON_PATH
(written to a temporary file, then renamed) and exits, so it is not part of any later dump.
The process then blocks until LIFETIME seconds have passed and exits by itself (a safety
net for test runs that die without killing it). It prints nothing on stdout; failures go
to stderr and end the process with exit status 3.

Threads and where they park (each "parking frame" is the function that makes the
blocking call; the call is always on the line right after `announce()`). Every thread
other than MainThread runs its `*_entry` function under `guarded` (so its stack ends
`..._entry` -> `guarded` -> threading's frames), which ends the process on an exception:

* MainThread: `<module>` -> `main` -> `main_wait`, parks in `time.sleep` (a one-line loop).
* "worker-1": `worker_entry` -> `Worker.run_method` -> `nested_a` -> `nested_b` ->
  `nested_c`; `nested_c` parks on `BLOCK.acquire()` (a lock that is never released) and
  holds locals of every kind the dump renders: None, booleans, small/negative/huge
  ints, floats, ASCII/unicode/long strings, bytes, tuple, list, dict, set, an instance
  of a user class (`Klass`), plus a positional argument, *args and **kwargs.
  `Worker.run_method` holds `self` (a `Worker`), positional args, *args, **kwargs.
* "поток-2" (cyrillic; on 2.7 the name is the UTF-8 byte string, shown as the same text):
  `module_entry` -> a function in the cyrillic-named file `модуль.py` (Python 3:
  function `функция` with cyrillic local names) or `модуль_py2.py` (Python 2.7: function
  `funktsiya`, ASCII identifiers only); parks in `time.sleep` (one-line loop).
* "generator": `generator_entry` iterates `generator_body()`, which parks inside the
  generator body in `Event.wait()` (so `threading.py` frames sit above it).
* "decorated": `decorated_entry` -> `traced.<locals>.wrapper` -> `decorated_park`;
  `decorated_park` parks on `BLOCK.acquire()`.
* "phantom": `phantom_entry` runs `exec(compile(src, "<made-up/фантом.py>", "exec"))`;
  that code's `<module>` calls `фантом` (Python 3) / `phantom` (2.7), defined in the same
  made-up file, which parks in `time.sleep` (one-line loop).
* "recursion": `recursion_entry` -> `recurse` 50 times deep (n = 49 .. 0); the innermost
  `recurse` parks on `BLOCK.acquire()`.
* "busy": `busy_entry` -> `spin`, which spins forever on ONE line
  (`while not stop[0]: pass`): its status is "active" (or "active+gil").
* a thread started with `thread.start_new_thread` (not through `threading`, so it has no
  name: null in the dump): `raw_entry`, parks in `time.sleep` (one-line loop).

Truth JSON: {"pid", "version" (platform.python_version()), "version_info", "executable"
(sys.executable), "executable_realpath", "free_threaded", "argv", "reporter_native_id",
"threads": [{"ident", "native_id", "name" (null if not a threading.Thread), "role",
"busy", "frames": [leaf first: {"name" (co_qualname on 3.11+, else co_name), "co_name",
"filename" (co_filename), "line" (as traceback reports it), "locals"}]}]}.
"locals" is null for frames whose locals are not checked (code outside tests/scripts,
or code with cell/free variables); otherwise a list in co_varnames order of the bound
variables: {"name", "is_arg", "repr", "repr_prefixes", "unchecked"}: "repr" is the
expected text exactly (Python's repr, cut to 125 characters + "..." when longer than
128); for other objects "repr" is null and "repr_prefixes" lists acceptable prefixes
("<Klass at 0x"); "unchecked" marks containers holding such objects.
"""
import json
import os
import platform
import sys
import threading
import time
import traceback

try:
    import _thread as thread_module
except ImportError:  # Python 2
    import thread as thread_module

sys.dont_write_bytecode = True

PY2 = sys.version_info[0] == 2
LIFETIME = 300.0
RECURSION_DEPTH = 50
HERE = os.path.dirname(os.path.abspath(__file__))

# A lock taken at start-up and never released: threads park on `BLOCK.acquire()`.
BLOCK = threading.Lock()
BLOCK.acquire()
# Never set: the generator parks in `NEVER.wait()`.
NEVER = threading.Event()

REGISTRY_LOCK = threading.Lock()
NATIVE_IDS = {}  # thread ident -> OS thread id
ANNOUNCED = {}  # thread ident -> (code object, line of the parking call)
ROLES = {}  # thread ident -> role
ALL_ANNOUNCED = threading.Event()
EXPECTED_THREADS = []  # filled by main(): number of threads that must announce


def fail(message):
    """Report a broken target on stderr and end the process (the test sees it exit)."""
    sys.stderr.write("dump_target.py: " + message + "\n")
    sys.stderr.flush()
    os._exit(3)


def native_thread_id():
    """The OS thread id (what `py-spy dump` calls thread_id) of the calling thread."""
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


def register(role):
    """Record the calling thread's OS id and role; call first thing in every thread."""
    ident = thread_module.get_ident()
    with REGISTRY_LOCK:
        NATIVE_IDS[ident] = native_thread_id()
        ROLES[ident] = role


def announce():
    """Declare that the caller parks on its next line (the blocking call is there)."""
    caller = sys._getframe(1)
    ident = thread_module.get_ident()
    with REGISTRY_LOCK:
        ANNOUNCED[ident] = (caller.f_code, caller.f_lineno + 1)
        if EXPECTED_THREADS and len(ANNOUNCED) >= EXPECTED_THREADS[0]:
            ALL_ANNOUNCED.set()


class Klass(object):
    """A user class: its instances show as `<Klass at 0x...>`."""


class Worker(object):
    """Gives the method frame `Worker.run_method` (qualified name on 3.11+)."""

    def run_method(self, n, *extra, **opts):
        return nested_a(n + 1)


def nested_a(n):
    return nested_b(n + 1) or n


def nested_b(n):
    return nested_c(n + 1, "extra", 4.5, key="value", other=None) or n


def nested_c(depth, *args, **kwargs):
    none_value = None
    true_value = True
    false_value = False
    small_int = 7
    negative_int = -12345
    medium_int = 2 ** 40
    huge_int = 2 ** 100
    huge_negative = -(2 ** 70)
    float_half = 1.5
    float_big = 1e20
    float_tenth = 0.1
    text_ascii = "hello"
    text_unicode = u"привет, мир 🐍"
    text_long = "x" * 1000
    raw_bytes = b"\x00\xffbytes"
    a_tuple = (1, "two", 3.0)
    empty_tuple = ()
    a_list = [1, 2, [3, None]]
    a_dict = {"a": 1, "b": [2, 3]}
    a_set = set([1, 2, 3])
    an_instance = Klass()
    announce()
    BLOCK.acquire()
    return (none_value, true_value, false_value, small_int, negative_int, medium_int,
            huge_int, huge_negative, float_half, float_big, float_tenth, text_ascii,
            text_unicode, text_long, raw_bytes, a_tuple, empty_tuple, a_list, a_dict,
            a_set, an_instance, depth, args, kwargs)


def worker_entry():
    register("worker")
    Worker().run_method(1, "a", "b", flag=True)


def module_entry():
    register("module")
    if PY2:
        filename = os.path.join(HERE, "модуль_py2.py")
        function_name = "funktsiya"
    else:
        filename = os.path.join(HERE, u"модуль.py")
        function_name = u"функция"
    with open(filename, "rb") as source_file:
        source = source_file.read()
    namespace = {"__name__": "modul", "announce": announce}
    exec(compile(source, filename, "exec"), namespace)
    namespace[function_name](3, "два")


def generator_body(limit):
    produced = 0
    while produced < limit:
        announce()
        NEVER.wait()
        yield produced
        produced += 1


def generator_entry():
    register("generator")
    total = 0
    for item in generator_body(5):
        total += item
    return total


def traced(func):
    """A decorator: its `wrapper` frame sits between the caller and `func`."""

    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)

    return wrapper


@traced
def decorated_park(x, y=2):
    product = x * y
    announce()
    BLOCK.acquire()
    return product


def decorated_entry():
    register("decorated")
    decorated_park(21)


PHANTOM_FILENAME = "<made-up/фантом.py>" if PY2 else u"<made-up/фантом.py>"
PHANTOM_SOURCE = """
def FUNC(count):
    label = "phantom"
    announce()
    while True: time.sleep(3600)

FUNC(3)
"""


def phantom_entry():
    register("phantom")
    function_name = "phantom" if PY2 else u"фантом"
    source = PHANTOM_SOURCE.replace("FUNC", function_name)
    namespace = {"__name__": "phantom", "announce": announce, "time": time}
    exec(compile(source, PHANTOM_FILENAME, "exec"), namespace)


def recurse(n):
    if n > 0:
        return recurse(n - 1)
    announce()
    BLOCK.acquire()


def recursion_entry():
    register("recursion")
    recurse(RECURSION_DEPTH - 1)


def spin(stop):
    announce()
    while not stop[0]: pass


def busy_entry():
    register("busy")
    spin([False])


def raw_entry():
    register("raw")
    seconds = 3600
    announce()
    while True: time.sleep(seconds)


def main_wait(deadline):
    announce()
    while time.time() < deadline: time.sleep(max(0.01, deadline - time.time()))


# ---------------------------------------------------------------------------- truth --

BASIC_TYPES = (type(None), bool, int, float, str, bytes, tuple, list, dict, set)
if PY2:
    BASIC_TYPES = BASIC_TYPES + (long, unicode)  # noqa: F821 (Python 2 names)
CONTAINER_TYPES = (tuple, list, dict, set)


def is_basic(value):
    """Whether `value` is rendered like Python's repr (scalars, containers of scalars)."""
    if type(value) not in BASIC_TYPES:
        return False
    if isinstance(value, dict):
        return all(is_basic(k) and is_basic(v) for k, v in value.items())
    if isinstance(value, CONTAINER_TYPES):
        return all(is_basic(item) for item in value)
    return True


def cut(text):
    """The contract's truncation: longer than 128 characters -> first 125 + '...'."""
    if len(text) > 128:
        return text[:125] + "..."
    return text


def expected_repr(value):
    entry = {"repr": None, "repr_prefixes": [], "unchecked": False}
    if is_basic(value):
        entry["repr"] = cut(repr(value))
    elif isinstance(value, CONTAINER_TYPES):
        entry["unchecked"] = True
    else:
        kind = type(value)
        prefixes = ["<%s at 0x" % kind.__name__]
        module = getattr(kind, "__module__", None)
        if module and module not in ("builtins", "__builtin__"):
            prefixes.append("<%s.%s at 0x" % (module, kind.__name__))
        entry["repr_prefixes"] = prefixes
    return entry


def our_file(filename):
    return filename.startswith(HERE) or filename == PHANTOM_FILENAME


def frame_locals(frame):
    """Expected locals of a frame (None when not checked): co_varnames order, bound only."""
    code = frame.f_code
    if not our_file(code.co_filename) or code.co_cellvars or code.co_freevars:
        return None
    values = frame.f_locals
    nargs = code.co_argcount + getattr(code, "co_kwonlyargcount", 0)
    if code.co_flags & 0x04:  # CO_VARARGS
        nargs += 1
    if code.co_flags & 0x08:  # CO_VARKEYWORDS
        nargs += 1
    result = []
    for index, name in enumerate(code.co_varnames[:code.co_nlocals]):
        if name not in values:
            continue
        entry = expected_repr(values[name])
        entry["name"] = name
        entry["is_arg"] = index < nargs
        result.append(entry)
    return result


def frame_key(frame):
    return [(f.f_code.co_filename, f.f_code.co_name, f.f_lineno) for f in walk(frame)]


def walk(frame):
    """Frames from `frame` (the leaf) to the root."""
    frames = []
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    return frames


def describe_frames(frame):
    frames = walk(frame)
    summary = traceback.extract_stack(frame)  # root first
    summary = list(reversed(summary))
    if len(summary) != len(frames):
        fail("traceback and f_back disagree on the stack depth")
    result = []
    for f, entry in zip(frames, summary):
        filename, line, co_name = entry[0], entry[1], entry[2]
        code = f.f_code
        result.append({
            "name": getattr(code, "co_qualname", code.co_name),
            "co_name": co_name,
            "filename": filename,
            "line": line,
            "locals": frame_locals(f),
        })
    return result


def parked(frames_by_ident):
    """Whether every announced thread has its parking frame at the announced line."""
    for ident, (code, line) in ANNOUNCED.items():
        frame = frames_by_ident.get(ident)
        if frame is None:
            return False
        if not any(f.f_code is code and f.f_lineno == line for f in walk(frame)):
            return False
    return True


def free_threaded():
    try:
        import sysconfig

        return bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
    except Exception:
        return False


def report(truth_path):
    try:
        me = thread_module.get_ident()
        if not ALL_ANNOUNCED.wait(20):
            fail("threads did not all announce within 20 s")
        deadline = time.time() + 20
        previous = None
        while True:
            frames = dict(sys._current_frames())
            frames.pop(me, None)
            if parked(frames):
                key = dict((ident, frame_key(f)) for ident, f in frames.items())
                if key == previous:
                    break
                previous = key
            else:
                previous = None
            if time.time() > deadline:
                fail("threads did not park within 20 s")
            time.sleep(0.15)
        names = dict((t.ident, t.name) for t in threading.enumerate())
        threads = []
        for ident, frame in frames.items():
            if ident not in NATIVE_IDS:
                fail("unregistered thread %r" % (ident,))
            threads.append({
                "ident": ident,
                "native_id": NATIVE_IDS[ident],
                "name": names.get(ident),
                "role": ROLES[ident],
                "busy": ROLES[ident] == "busy",
                "frames": describe_frames(frame),
            })
        truth = {
            "pid": os.getpid(),
            "version": platform.python_version(),
            "version_info": list(sys.version_info[:3]),
            "executable": sys.executable,
            "executable_realpath": os.path.realpath(sys.executable),
            "free_threaded": free_threaded(),
            "argv": sys.argv,
            "reporter_native_id": native_thread_id(),
            "threads": threads,
        }
        tmp_path = truth_path + ".tmp"
        with open(tmp_path, "w") as out:
            json.dump(truth, out, indent=1, sort_keys=True)
        os.rename(tmp_path, truth_path)
    except SystemExit:
        raise
    except BaseException:
        fail("reporter failed:\n" + traceback.format_exc())


def guarded(entry):
    """Every thread's body: an exception in a thread ends the process at once."""
    try:
        entry()
    except BaseException:
        fail("thread %s failed:\n%s" % (entry.__name__, traceback.format_exc()))


def start(target, name):
    thread = threading.Thread(target=guarded, args=(target,), name=name)
    thread.daemon = True
    thread.start()


def main():
    if len(sys.argv) != 2:
        fail("usage: dump_target.py TRUTH_JSON_PATH")
    deadline = time.time() + LIFETIME
    register("main")
    entries = [
        (worker_entry, "worker-1"),
        (module_entry, "поток-2" if PY2 else u"поток-2"),
        (generator_entry, "generator"),
        (decorated_entry, "decorated"),
        (phantom_entry, "phantom"),
        (recursion_entry, "recursion"),
        (busy_entry, "busy"),
    ]
    EXPECTED_THREADS.append(len(entries) + 2)  # + the raw thread + the main thread
    for target, name in entries:
        start(target, name)
    thread_module.start_new_thread(guarded, (raw_entry,))
    threading.Thread(target=report, args=(sys.argv[1],), name="reporter").start()
    main_wait(deadline)
    os._exit(0)


if __name__ == "__main__":
    main()
