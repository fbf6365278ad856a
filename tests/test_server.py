"""The firmware server's request dispatch (firmware/rbnn_server.py), on the MicroPython
unix port: the handler table agrees with the host's frame names, payloads shorter than a
request needs and unknown types are refused by name, slow requests are ACKed first,
repeats are answered from the kept reply (HELLO is always applied), and every failure
is answered with the code it carries."""

from __future__ import annotations

import json

import pytest
from mpy_helpers import run_mpy_code

from rbnn.device import frames as fr

SCRIPT = r"""
import json, struct
import rbnn_server as S

class Console:
    def __init__(self):
        self.out = bytearray()
    def read(self, buf, timeout_ms):
        return 0
    def write(self, b):
        self.out += b

def frames(b):
    out, i = [], 0
    while i < len(b):
        n = b[i + 6] | b[i + 7] << 8
        t, seq = b[i + 2], b[i + 4] | b[i + 5] << 8
        p = bytes(b[i + 8 : i + 8 + n])
        out.append([t, seq, json.loads(p) if t in (S.ERR, S.INFO | S.REPLY) else p.hex()])
        i += 12 + n
    return out

con = Console()
srv = S.Server(con, 1024)

def ask(t, seq, payload=b""):
    con.out = bytearray()
    srv.dispatch(t, seq, memoryview(payload))
    return frames(con.out)

class CodedError(ValueError):
    code = "E_RANGE"

r = {"names": {t: e[0] for t, e in S.HANDLERS.items()},
     "least": {t: e[2] for t, e in S.HANDLERS.items()}}
r["short"] = {t: ask(t, 10 + t, bytes(e[2] - 1)) for t, e in S.HANDLERS.items() if e[2]}
r["unknown"] = ask(0x42, 3)
r["slow"] = ask(S.LOAD, 4, b"missing.rbnn")
first = ask(S.INFO, 5)
d0 = srv.stats["duplicates"]
again = ask(S.INFO, 5)
r["repeat"] = [first == again, srv.stats["duplicates"] - d0]
ask(S.HELLO, 6)
r["hello_twice"] = [len(ask(S.HELLO, 6)), srv.stats["duplicates"] - d0]
r["refusal"] = [list(S.refusal(e)) for e in (OSError(28), OSError(30), OSError(5), MemoryError("x"),
                                              S.Refused("E_NAME", "n"), KeyError("k"))]
r["engine"] = [[x.args[0], x.args[1]] for x in (
    S._engine_refusal(CodedError("rbnn: E_CRC at offset 9: crc32: expected 1, found 2"), "E_HEADER"),
    S._engine_refusal(ValueError("rbnn: m.rbnn: E_CRC at offset 9: crc32: expected 1, found 2"), "E_HEADER"),
    S._engine_refusal(ValueError("rbnn: input has 7 bytes; expected 100 raw features"), "E_INPUT"),
    S._engine_refusal(ValueError("rbnn: E_x: not a code"), "E_INPUT"))]
r["window"] = [srv.hello()["window"]]
class Board:  # a board module that holds one TRAIN frame only (a UART without flow control)
    WINDOW = 1
import sys
sys.modules["rbnn_board"] = Board
r["window"].append(srv.hello()["window"])
del sys.modules["rbnn_board"]
print(json.dumps(r))
"""


@pytest.fixture(scope="module")
def served(micropython, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("server")
    out = run_mpy_code(micropython, SCRIPT, tmp, timeout=120).stdout
    return json.loads(out)


def test_handler_table_names_the_host_frame_types(served):
    table = {int(t): name for t, name in served["names"].items()}
    requests = {t: n for t, n in fr.NAMES.items() if t not in (fr.ACK, fr.NAK, fr.ERR)}
    assert table == requests


def test_short_payloads_are_refused_by_name(served):
    assert served["short"], "no request needs a payload"
    for t, got in served["short"].items():
        least = served["least"][t]
        name = fr.NAMES[int(t)]
        assert got[-1][0] == fr.ERR, got
        assert got[-1][2] == {"code": "E_PROTO",
                              "message": f"{name} payload of {least - 1} bytes, expected >= {least}"}  # fmt: skip


def test_unknown_type_and_slow_requests(served):
    assert served["unknown"] == [[fr.ERR, 3, {"code": "E_PROTO", "message": "unknown frame type 0x42"}]]
    ack, err = served["slow"]
    assert ack == [fr.ACK, 4, ""]  # the ACK comes first, then the result
    assert err[0] == fr.ERR and err[2]["code"] == "E_NOFILE"


def test_repeats_are_answered_from_the_kept_reply_but_hello_is_applied(served):
    assert served["repeat"] == [True, 1]
    assert served["hello_twice"] == [1, 1]  # answered again, and not counted as a duplicate


def test_failures_carry_their_code(served):
    codes = [c for c, _ in served["refusal"]]
    assert codes == ["E_NOSPACE", "E_IO", "E_IO", "E_MEMORY", "E_NAME", "E_INTERNAL"]
    assert served["refusal"][0][1].startswith("filesystem full: ")
    assert served["refusal"][1][1].startswith("read-only filesystem: ")
    # an engine's own code attribute first, then the code its text names, else the default
    assert [c for c, _ in served["engine"]] == ["E_RANGE", "E_CRC", "E_INPUT", "E_INPUT"]
    assert served["engine"][1][1] == "rbnn: m.rbnn: E_CRC at offset 9: crc32: expected 1, found 2"


def test_hello_says_the_train_window(served):
    # 2 by default (one frame applied, the next arriving); a board module may say less
    assert served["window"] == [2, 1]
