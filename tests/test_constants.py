"""One source for the format's constants, error codes, check texts and the version: the
C core's generated header, the MicroPython fallback, the firmware, the C module, the
ctypes mirror and docs/FORMAT.md all say what rbnn.format.constants and checks say."""

from __future__ import annotations

import ast
import importlib.util
import re
import struct
import subprocess
import sys

import pytest
from test_fallback import error_corpus
from test_fallback_conv import error_corpus_v3

from rbnn import __version__
from rbnn.engines import ccore
from rbnn.errors import FormatError
from rbnn.format import checks, pack, trainstate
from rbnn.format import constants as K


def module_constants(path) -> dict:
    """Module-level NAME = <literal> assignments of a Python file (firmware cannot be
    imported by CPython in general; read its source instead)."""
    out = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return out


def test_generated_c_header_is_current(repo):
    # A constant or check changed in Python without `python -m rbnn.format.checks >
    # cmodules/rbnn/rbnn_spec.h` would leave the C core on the old numbers.
    assert (repo / "cmodules" / "rbnn" / "rbnn_spec.h").read_text() == checks.c_header()


def test_no_hand_copied_constants_in_c(repo):
    # the C sources name the generated macros, not their values
    src = (repo / "cmodules" / "rbnn" / "rbnn_core.c").read_text()
    src += (repo / "cmodules" / "rbnn" / "modrbnn.c").read_text()
    assert not re.search(r'#define\s+\w*VERSION\w*\s+"?\d', src)
    assert not re.search(r"'R'\s*\|\|?|b\[0\] != 'R'", src)
    for name in ("HEADER_BYTES", "BLOCK_ENTRY_BYTES"):
        assert not re.search(rf"#define\s+{name}\s+\d", src), name
    assert '"E_TRUNCATED"' not in src  # code names come from rbnn_spec.h


def test_fallback_constants_equal_the_host(repo):
    fw = module_constants(repo / "firmware" / "rbnn_py.py")
    for name in ("MAGIC", "HEADER_BYTES", "HEADER_BYTES_V2", "TRAIN_BYTES", "BLOCK_ENTRY_BYTES", "MAX_SCORE_Q",
                 "MAX_LAYERS", "MAX_BLOCKS", "MAX_PLANES", "MAX_BITS", "MAX_INPUTS", "MAX_SIZE", "UNUSED_PLANE",
                 "FROZEN", "LIVE", "I32_MAX", "U32_MAX", "READ_VERSIONS", "VERSION_V3", "LAYER_ENTRY_BYTES_V3",
                 "DENSE", "CONV", "POOL_2X2", "MAX_KERNEL", "MAX_DIM", "INPUT_PER_PLANE"):  # fmt: skip
        assert fw[name] == getattr(K, name), f"firmware/rbnn_py.py {name} = {fw[name]!r}, host {getattr(K, name)!r}"
    assert fw["_VERSIONS"] == checks.BY_NAME["VERSION"].expected
    assert fw["TRAIN_RULE"] == trainstate.RULE and fw["TRAIN_BYTES"] == trainstate.TRAIN_BYTES


def test_fallback_reads_the_training_fields_where_the_host_writes_them(repo):
    # _TRAIN: rule .. off_shift and the reserved byte 47, the fields the fallback unpacks
    # at once; every value distinct, so a field out of order or of the wrong size shows.
    fmt = module_constants(repo / "firmware" / "rbnn_py.py")["_TRAIN"]
    assert struct.calcsize(fmt) == trainstate.OFFSETS["lr"]
    st = trainstate.TrainState(lr=[1, 2], thr_shift=[-1], gate=[9], scale_shift=3, margin=4, bits=5, decay=6,
                               init_bits=7, loss=1, off_shift=-1, seed=10, steps=11, block_steps=12, hits=13,
                               active=14, grow_every=15, grow_left=16, stream_id=17, stream_base=18)  # fmt: skip
    data = bytearray(st.to_bytes())
    data[trainstate.OFFSETS["reserved47"]] = 19
    _, raw = trainstate.TrainState.unpack(bytes(data), 0, 2)
    names = ("rule", "seed", "steps", "block_steps", "hits", "active", "grow_every", "stream_id", "stream_base",
             "margin", "bits", "grow_left", "scale_shift", "decay", "init_bits", "loss", "off_shift", "reserved47")
    assert struct.unpack_from(fmt, data) == tuple(raw[n] for n in names)


def test_one_version_everywhere(repo):
    for path in ("firmware/rbnn.py", "firmware/rbnn_server.py"):
        assert module_constants(repo / path)["__version__"] == __version__, path
    assert f'#define RBNN_VERSION "{__version__}"' in checks.c_header()
    assert "RBNN_VERSION" in (repo / "cmodules" / "rbnn" / "modrbnn.c").read_text()
    assert re.search(r'^dynamic = \["version"\]', (repo / "host" / "pyproject.toml").read_text(), re.M)


def test_format_doc_lists_the_error_codes(repo):
    doc = (repo / "docs" / "FORMAT.md").read_text()
    rows = re.findall(r"^\| (-\d+) \| `(E_[A-Z]+)` \|", doc, re.M)
    assert [(int(n), name) for n, name in rows] == [(n, name) for n, name, _ in K.ERRORS]


def test_c_core_names_and_texts_equal_the_host():
    for num, name, text in K.ERRORS:
        assert ccore.strerror(num) == text
        assert ccore.lib().rbnn_code_name(num).decode() == name
    assert ccore.lib().rbnn_code_name(0).decode() == "OK"
    assert ccore.lib().rbnn_code_name(-99).decode() == "E_UNKNOWN"


def test_ctypes_mirror_matches_the_c_struct(repo, tmp_path):
    # offsetof and sizeof from a C compiler against what ctypes computes for _Model
    fields = [f[0] for f in ccore._Model._fields_]
    prog = ['#include <stdio.h>', '#include <stddef.h>', '#include "rbnn_core.h"', "int main(void) {",
            '  printf("size %zu\\n", sizeof(rbnn_model_t));']  # fmt: skip
    prog += [f'  printf("{f} %zu %zu\\n", offsetof(rbnn_model_t, {f}), sizeof(((rbnn_model_t *)0)->{f}));'
             for f in fields]  # fmt: skip
    prog += ["  return 0;", "}"]
    (tmp_path / "layout.c").write_text("\n".join(prog))
    exe = tmp_path / "layout"
    subprocess.run([ccore.compiler(), "-std=c99", "-I", str(ccore.source_dir()), str(tmp_path / "layout.c"),
                    "-o", str(exe)], check=True, capture_output=True)  # fmt: skip
    out = dict(line.split(" ", 1) for line in subprocess.run([str(exe)], capture_output=True, text=True,
                                                               check=True).stdout.splitlines())  # fmt: skip
    import ctypes

    assert int(out.pop("size")) == ctypes.sizeof(ccore._Model)
    for f in fields:
        off, size = map(int, out[f].split())
        got = getattr(ccore._Model, f)
        assert (got.offset, got.size) == (off, size), f"rbnn_model_t.{f}: C ({off}, {size}), ctypes ({got.offset}, {got.size})"
    # every field of the C struct is mirrored (none forgotten at the end or between)
    hdr = (repo / "cmodules" / "rbnn" / "rbnn_core.h").read_text()
    body = hdr[hdr.index("typedef struct {"): hdr.index("} rbnn_model_t;")]
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
    declared = re.findall(r"(\w+)(?:\[\w+\])?\s*[,;]", body)
    assert declared == fields


def _fallback_under_cpython(repo):
    # rbnn_py imports rbnn_pyconv (version 3) by name: firmware/ last on the path, so that
    # `rbnn` stays the host package
    if str(repo / "firmware") not in sys.path:
        sys.path.append(str(repo / "firmware"))
    spec = importlib.util.spec_from_file_location("rbnn_py_host", repo / "firmware" / "rbnn_py.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_same_error_message_from_python_c_and_fallback(repo):
    # The whole error corpus (every check, truncations, corruptions): the Python
    # reader's parts, the C core's rbnn_error_text and the fallback's ValueError give
    # one message, word for word.
    fb = _fallback_under_cpython(repo)
    seen = set()
    files = error_corpus() + error_corpus_v3()
    for i, data in enumerate(files):
        try:
            pack.from_bytes(data)
            want = None
        except FormatError as e:
            want = checks.text(e.code, e.offset, e.field, e.expected, e.found)
            seen.add(e.code)
        assert ccore.error_text(data) == want, f"file {i}: C"
        try:
            fb.Model(data)
            got = None
        except ValueError as e:
            got = str(e).removeprefix("rbnn: ")
        assert got == want, f"file {i}: fallback"
    assert seen >= {"E_TRUNCATED", "E_MAGIC", "E_VERSION", "E_FLAGS", "E_HEADER", "E_SIZE",
                    "E_LAYOUT", "E_CRC", "E_BLOCK", "E_PADDING", "E_RANGE", "E_TRAIN"}  # fmt: skip


def test_every_check_is_reachable_and_rendered_alike():
    # Each template renders in Python as C renders it: spot-check the number forms.
    assert checks.render("{found:x}", found=0xABC) == "0x00000abc"
    assert checks.render("{found:x4}", found=0x12345) == "0x2345"
    assert checks.render("{found:d}", found=2**32 - 5) == "-5"
    assert checks.render("{i}/{j}/{k} {want}", i=1, j=2, k=3, want=2**32 - 1) == "1/2/3 4294967295"
    # the check ids are dense, start at 1, and every code a check reports exists
    assert sorted(checks.ID.values()) == list(range(1, len(checks.CHECKS) + 1))
    assert {c.code for c in checks.CHECKS} <= set(K.NAMES)


@pytest.mark.parametrize("size", [0, 1, 8, 30])
def test_c_error_text_truncates_safely(size):
    # a short buffer gets a terminated prefix; the return value is the whole length
    import ctypes

    data = b"RBNX" + bytes(60)
    rc, m = ccore._init(data)
    full = ccore._text(m, rc)
    buf = ctypes.create_string_buffer(b"\xff" * (size + 4))
    n = ccore.lib().rbnn_error_text(ctypes.byref(m), rc, buf if size else None, size)
    assert n == len(full)
    if size:
        assert buf.raw[: size].split(b"\0")[0] == full.encode()[: size - 1]
        assert buf.raw[size : size + 4] == b"\xff" * 4  # nothing written past the buffer


def test_host_and_server_map_file_system_errors_alike(repo):
    # A full or read-only flash is E_NOSPACE / E_IO whether the server (a model upload)
    # or the host's firmware install meets it.
    from rbnn.device.deploy import FS_ERRORS

    fw = module_constants(repo / "firmware" / "rbnn_server.py")["_OS_CODES"]
    assert {e: code for e, (code, _) in fw.items()} == {e: code for e, (code, _) in FS_ERRORS.items()}
