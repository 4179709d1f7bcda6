#!/usr/bin/env python3
"""Regenerate every file under python_bindings/src/ from CPython headers.

    python3 python_bindings/generate.py            # all versions in VERSIONS
    python3 python_bindings/generate.py v3_12 v2_7 # only these (lib.rs is always rewritten)

Needs libclang (apt-get install -y libclang-dev) and the bindgen CLI
(cargo install bindgen-cli --locked).  When run as root and either is missing,
the script installs it itself; otherwise it prints the install command and exits.

Generated files are never edited by hand: change this script and rerun it.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import namedtuple

# ---------------------------------------------------------------------------
# Header sets.  A row of VERSIONS names one of these (or an inline tuple).
# Each entry is one `#include` line of the wrapper header; `<...>` paths are
# relative to the row's include directories.
# ---------------------------------------------------------------------------
H_PUBLIC = ("Python.h", "frameobject.h")
H_27 = H_PUBLIC + ("longintrepr.h",)  # 2.7's Python.h leaves PyLongObject opaque
H_37 = H_PUBLIC + ("internal/pystate.h",)
H_38 = H_PUBLIC + ("internal/pycore_pystate.h",)
H_39 = H_PUBLIC + ("internal/pycore_runtime.h", "internal/pycore_interp.h", "internal/pycore_pystate.h")
H_310 = H_39 + ("internal/pycore_code.h", "internal/pycore_moduleobject.h", "internal/pycore_long.h")
H_311 = H_310 + ("internal/pycore_frame.h", "internal/pycore_dict.h")
H_312 = H_311 + ("internal/pycore_gil.h",)
H_314 = H_312 + ("internal/pycore_debug_offsets.h", "internal/pycore_stackref.h")

PYENV = "/root/.pyenv/versions"
CI = "/var/cache/py-spy-ci"  # made by tests/provision (sid chroot, free-threaded build)

# Clang arguments shared by every version.  (Free-threaded builds need nothing
# extra: Py_GIL_DISABLED comes from their own pyconfig.h.)
BASE_ARGS = ("-x", "c", "-std=c11", "-DPy_BUILD_CORE=1")

# Debian/sid keeps pyconfig.h under the multiarch directory; its
# /usr/include/python3.X/pyconfig.h includes <x86_64-linux-gnu/python3.X/pyconfig.h>.
# -idirafter keeps the host's libc headers ahead of the chroot's.
def sid(minor):
    return dict(inc=(f"{CI}/sid-root/usr/include/python3.{minor}",),
                args=("-idirafter", f"{CI}/sid-root/usr/include"))


Row = namedtuple("Row", "module major minor free_threaded family inc headers args prelude",
                 defaults=((), None))

# ---------------------------------------------------------------------------
# THE TABLE.  Adding a CPython version = adding one row here, then
#   python3 python_bindings/generate.py
# family: frame-model family used by the main crate's src/layout.rs.
# prelude: extra C appended after the includes (for structs CPython keeps out
#          of its installed headers).
# ---------------------------------------------------------------------------
# Objects/dict-common.h is not installed for 3.6-3.10; this is its layout
# (identical in all five: checked on live interpreters, dk_indices at +40).
DICTKEYS_36_310 = """
typedef struct { Py_hash_t me_hash; PyObject *me_key; PyObject *me_value; } PyDictKeyEntry;
struct _dictkeysobject {
    Py_ssize_t dk_refcnt;
    Py_ssize_t dk_size;
    void *dk_lookup;
    Py_ssize_t dk_usable;
    Py_ssize_t dk_nentries;
    char dk_indices[];
};
"""

VERSIONS = [
    Row("v2_7", 2, 7, False, "py27", (f"{PYENV}/2.7.18/include/python2.7",), H_27),
    Row("v3_6", 3, 6, False, "py36", (f"{PYENV}/3.6.15/include/python3.6m",), H_PUBLIC, prelude=DICTKEYS_36_310),
    Row("v3_7", 3, 7, False, "py37", (f"{PYENV}/3.7.16/include/python3.7m",), H_37, prelude=DICTKEYS_36_310),
    Row("v3_8", 3, 8, False, "py37", (f"{PYENV}/3.8.18/include/python3.8",), H_38, prelude=DICTKEYS_36_310),
    Row("v3_9", 3, 9, False, "py37", (f"{PYENV}/3.9.18/include/python3.9",), H_39, prelude=DICTKEYS_36_310),
    Row("v3_10", 3, 10, False, "py310", (f"{PYENV}/3.10.13/include/python3.10",), H_310, prelude=DICTKEYS_36_310),
    Row("v3_11", 3, 11, False, "py311", (f"{PYENV}/3.11.7/include/python3.11",), H_311),
    Row("v3_12", 3, 12, False, "py312", (f"{PYENV}/3.12.1/include/python3.12",), H_312),
    Row("v3_13", 3, 13, False, "py313", (f"{PYENV}/3.13.0/include/python3.13",), H_312),
    Row("v3_13t", 3, 13, True, "py313", (f"{CI}/python3.13t/include/python3.13t",), H_312),
    Row("v3_14", 3, 14, False, "py314", headers=H_314, **sid(14)),
    Row("v3_15", 3, 15, False, "py314", headers=H_314, **sid(15)),
]

# ---------------------------------------------------------------------------
# What to keep.  bindgen pulls in whatever these depend on; names a version
# lacks are simply absent from its module.
# ---------------------------------------------------------------------------
TYPES = [
    # objects
    "PyObject", "PyVarObject", "PyTypeObject", "PyHeapTypeObject",
    "PyASCIIObject", "PyCompactUnicodeObject", "PyUnicodeObject", "PyBytesObject",
    "PyStringObject", "PyIntObject", "PyLongObject", "digit", "PyFloatObject",
    "PyTupleObject", "PyListObject", "PyDictObject", "PyDictKeysObject",
    "PyDictKeyEntry", "PyDictUnicodeEntry", "PyDictValues", "PyDictEntry",
    "PySetObject", "setentry", "PyCellObject", "PyModuleObject",
    # interpreter state
    "PyInterpreterState", "PyThreadState", "_PyRuntimeState",
    "_gil_runtime_state", "_ceval_state", "_ceval_runtime_state", "_Py_DebugOffsets",
    # frames and code
    "PyFrameObject", "_PyInterpreterFrame", "_PyCFrame", "PyCodeObject",
    "_frameowner", "_PyStackRef",
]
VARS = [
    "FRAME_OWNED_BY_.*", "CO_FAST_.*", "CO_VARARGS", "CO_VARKEYWORDS",
    "Py_TPFLAGS_.*", "PyLong_SHIFT", "_PyLong_SIGN_MASK", "_PyLong_NON_SIZE_BITS",
    "_PyLong_.*_TAG", "_?Py_TAG_BITS",
]
# Big dependencies whose fields the profiler never reads: kept as sized blobs.
OPAQUE = [
    "_gc_runtime_state", "_obmalloc_.*", "_Py_mem_interp_free_queue", "_pymem_allocators",
    "_pending_calls", "_eval_breaker", "_Py_audit_hook_entry",
    "_PyImport_.*", "_Py_global_strings", "_Py_cached_objects", "_Py_static_objects",
    "_Py_interp_cached_objects", "_Py_interp_static_objects", "_py_object_state",
    "_PyTraceMalloc_.*", "_tracemalloc_.*", "_signals_runtime_state",
    "_Py_unicode_.*", "_Py_float_state", "_Py_tuple_state", "_Py_list_state",
    "_Py_dict_state", "_Py_async_gen_state", "_Py_context_state", "_Py_exc_state",
    "_Py_object_freelists", "_dtoa_state", "_types_runtime_state", "types_state",
    "_py_func_state", "_Py_long_state", "_atexit_runtime_state", "atexit_state",
    "_warnings_runtime_state", "_warnings", "_faulthandler_runtime_state",
    "_Py_interp_static_objects", "PyConfig", "PyPreConfig", "_PyPathConfig",
    "_ast_state", "ast_state", "_Py_mem_interp_free_queue", "_qsbr_.*",
    "_mimalloc_.*", "mi_.*", "_PyParkingLot.*", "_brc_.*", "_Py_hashtable_t",
    "_stoptheworld_state", "_PyThreadStateImpl", "_Py_ceval_.*state",
    "_getargs_runtime_state", "_ceval_.*pending.*", "_pending_call",
    "_xi_.*", "_xidregistry", "_Py_.*_freelist", "_py_trashcan", "_Py_Identifier",
    "_PyUnicode_Name_CAPI", "_PyInterpreterConfig", "_PyRuntimeState_.*config.*",
    "_rare_events", "_func_version_cache_item", "_Py_GlobalMonitors",
    "_PyCoMonitoringData", "_PyCoLineInstrumentationData", "_PyCoCached",
    "_PyExecutorArray", "_PyExecutorObject", "_PyOptimizerObject", "_optimizer.*",
    "_Py_BackoffCounter", "_PyCode_DEF.*", "_PyStackChunk",
    "PyMutex", "_PyMutex", "_PyRWMutex", "_PyOnceFlag", "_PyRecursiveMutex",
    "_PyEventRc", "_PyEval_.*", "_PyXI_.*", "_Py_codegen_.*", "_pythread_runtime_state",
    "_fileutils_state", "_Py_float_runtime_state", "_Py_unicode_runtime_ids",
    "_parser_runtime_state", "_ceval_runtime_state_.*", "_Py_long_.*",
    "_Py_object_stack", "_PyObjectStackChunk", "_PyMemoryView_.*", "_Py_Hash.*",
    "_Py_type_ids", "_PyType_.*", "type_cache", "_types_runtime_state",
    "_time_runtime_state", "_Py_AuditHookEntry", "_PyStackRef_.*",
    "_Py_interp_fini.*", "_pycore_.*", "_py_code_state", "_Py_code_state",
    "_Py_obmalloc_.*", "_gc_thread_state",
]

BINDGEN_FLAGS = [
    "--use-core", "--no-layout-tests", "--no-doc-comments", "--no-prepend-enum-name",
    "--rust-target", "1.77", "--with-derive-default",
]

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "src")


def need(tool_ok, what, install_cmd):
    if tool_ok():
        return
    if os.geteuid() == 0:
        print(f"{what} missing; installing: {install_cmd}", file=sys.stderr)
        subprocess.run(install_cmd, shell=True, check=True)
        if tool_ok():
            return
    sys.exit(f"error: {what} not found; install it with: {install_cmd}")


def have_libclang():
    roots = ["/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib"]
    if os.environ.get("LIBCLANG_PATH"):
        roots.insert(0, os.environ["LIBCLANG_PATH"])
    for r in roots:
        if os.path.isdir(r):
            for name in os.listdir(r):
                if name.startswith("llvm-") and os.path.exists(os.path.join(r, name, "lib", "libclang.so")):
                    return True
                if name.startswith("libclang") and ".so" in name and "cpp" not in name:
                    return True
    return False


def bindgen_path():
    return shutil.which("bindgen") or (
        os.path.expanduser("~/.cargo/bin/bindgen") if os.path.exists(os.path.expanduser("~/.cargo/bin/bindgen")) else None)


def run_bindgen(bindgen, row, wrapper, out, extra_types):
    cmd = [bindgen, wrapper, "-o", out] + BINDGEN_FLAGS
    for t in TYPES + extra_types:
        cmd += ["--allowlist-type", t]
    for v in VARS:
        cmd += ["--allowlist-var", v]
    for o in OPAQUE:
        # bindgen still emits an opaque struct's anonymous members; drop them
        cmd += ["--opaque-type", o, "--blocklist-type", f"({o})__bindgen_ty_.*"]
    cmd += ["--"] + list(BASE_ARGS) + list(row.args)
    for d in row.inc:
        cmd += ["-I", d]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stderr)
        sys.exit(f"error: bindgen failed for {row.module}")
    with open(out) as f:
        return f.read()


def generate(row, bindgen):
    if not os.path.isfile(os.path.join(row.inc[0], "Python.h")):
        print(f"error: {row.module}: no Python.h in {row.inc[0]} (see python_bindings/README.md for where "
              f"headers come from); {row.module}.rs left as it was", file=sys.stderr)
        return False
    with tempfile.TemporaryDirectory() as tmp:
        wrapper = os.path.join(tmp, "wrapper.h")
        with open(wrapper, "w") as f:
            f.write("".join(f"#include <{h}>\n" for h in row.headers))
            if row.prelude:
                f.write(row.prelude)
        out = os.path.join(tmp, "out.rs")
        body = run_bindgen(bindgen, row, wrapper, out, [])
        # bindgen 0.73 drops an opaque `typedef struct X {..} X` that is only
        # reached as a dependency (the field refers to a type never emitted);
        # allowlisting those names explicitly makes it emit them.
        tokens = set(re.findall(r"\b[A-Za-z_]\w*\b", body))
        defined = set(re.findall(r"pub (?:struct|union|type|enum) (\w+)", body))
        missing = sorted(t for t in tokens - defined if any(re.fullmatch(o, t) for o in OPAQUE))
        if missing:
            body = run_bindgen(bindgen, row, wrapper, out, missing)
    header = (f"// @generated by python_bindings/generate.py from CPython {row.major}.{row.minor}"
              f"{'t' if row.free_threaded else ''} headers ({', '.join(row.inc)}). Do not edit.\n\n")
    path = os.path.join(SRC, row.module + ".rs")
    with open(path, "w") as f:
        f.write(header + body)
    print(f"{row.module}: {path} ({body.count(chr(10))} lines)")
    return True


def write_lib():
    lines = [
        "// @generated by python_bindings/generate.py. Do not edit.",
        "//! CPython struct layouts, one module per minor version, generated by bindgen",
        "//! from that version's headers. See README.md; regenerate with",
        "//! `python3 python_bindings/generate.py`.",
        "#![no_std]",
        "#![allow(non_upper_case_globals, non_camel_case_types, non_snake_case, dead_code)]",
        "#![allow(clippy::all)]",
        "",
    ]
    rows = [r for r in VERSIONS if os.path.exists(os.path.join(SRC, r.module + ".rs"))]
    for row in VERSIONS:
        if row not in rows:
            print(f"warning: {row.module}.rs not generated yet; left out of lib.rs", file=sys.stderr)
    for row in rows:
        lines.append(f"pub mod {row.module};")
    lines += [
        "",
        "/// Calls `$m!(module, major, minor, free_threaded, family)` once per generated version.",
        "#[macro_export]",
        "macro_rules! for_each_version {",
        "    ($m:ident) => {",
    ]
    for row in rows:
        lines.append(f"        $m!({row.module}, {row.major}, {row.minor}, {str(row.free_threaded).lower()}, {row.family});")
    lines += ["    };", "}", ""]
    with open(os.path.join(SRC, "lib.rs"), "w") as f:
        f.write("\n".join(lines))


def main():
    only = set(sys.argv[1:])
    unknown = only - {r.module for r in VERSIONS}
    if unknown:
        sys.exit(f"error: unknown module(s) {sorted(unknown)}; known: {[r.module for r in VERSIONS]}")
    need(have_libclang, "libclang", "apt-get update && apt-get install -y libclang-dev")
    need(lambda: bindgen_path() is not None, "bindgen CLI", "cargo install bindgen-cli --locked")
    bindgen = bindgen_path()
    failed = [r.module for r in VERSIONS if (not only or r.module in only) and not generate(r, bindgen)]
    write_lib()
    if failed:
        sys.exit(f"error: not regenerated: {', '.join(failed)}")


if __name__ == "__main__":
    main()
