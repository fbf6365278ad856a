"""The training stream (docs/PROTOCOL.md, The training stream) on the virtual device: the
MicroPython unix port runs the firmware server behind a pseudo-terminal and trains the
model it holds on samples streamed by the host.

- replay: the device's model after a stream equals `rbnn grow --engine c` and `--engine
  twin` byte for byte, on every device engine (viper, plain Python, and C when the
  binary has the C module);
- faults: damaged, lost, duplicated frames in both directions, the device losing power
  at seeded points (mid-frame and inside a checkpoint's write), the host process killed
  and run again: every run ends in the bytes of the run without faults, and the device
  applied each sample once;
- bad input: a label out of range, a sample of the wrong length, a full arena, a
  checkpoint the flash cannot hold: a clear error, the last good checkpoint stored, and
  the stream resumes to the same bytes;
- the frames themselves: TRAIN by position (gap, repeat), E_STREAM, E_PROTO, PULL.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from test_faults import KINDS, faulty_link

from rbnn.cli import build_parser, main
from rbnn.data import load
from rbnn.data.plain import write_npz
from rbnn.device import frames as fr
from rbnn.device.link import DeviceError
from rbnn.device.stream import StreamError, pull_model, run_stream
from rbnn.device.virtual import VirtualDevice
from rbnn.format import pack

BAUD = 921600  # a pty ignores it; the link's timeouts count wire time at this rate
N_DATA = 3000
# 2,000 samples: 1,000 from 100, twice, shuffled; two new 3-bit blocks
REPLAY = ["--offset", "100", "--limit", "1000", "--epochs", "2", "--shuffle", "--bits", "3", "--blocks", "2",
          "--seed", "5"]  # fmt: skip
# 5,000 samples: 2,500 in file order, twice; two new 3-bit blocks (the fault runs)
LONG = ["--limit", "2500", "--epochs", "2", "--bits", "3", "--blocks", "2", "--seed", "9"]


# --- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 4-class plain data set of 64 features, a model trained on part of it in an arena
    of 8 planes (784-16-4 would be slower on a device and no better a test), and the
    `rbnn grow` outputs the streams must equal."""
    d = tmp_path_factory.mktemp("stream")
    rng = np.random.default_rng(31)
    y = rng.integers(0, 4, N_DATA).astype(np.uint8)
    proto = rng.random((4, 64)) < 0.5
    x = ((proto[y] ^ (rng.random((N_DATA, 64)) < 0.1)) * 255).astype(np.uint8)
    write_npz(d / "d.npz", x, y, 4)
    assert main(["train", "--data", str(d / "d.npz"), "--hidden", "16", "--epochs", "1", "--val", "100",
                 "--limit", "300", "--augment", "off", "--arena", "8", "-o", str(d / "m.rbnn")]) == 0  # fmt: skip
    grown = {}
    for name, opts in (("replay", REPLAY), ("long", LONG)):
        for engine in ("c", "twin") if name == "replay" else ("c",):
            out = d / f"g-{name}-{engine}.rbnn"
            assert main(["grow", str(d / "m.rbnn"), "--data", str(d / "d.npz"), *opts, "--engine", engine, "-q",
                         "-o", str(out)]) == 0  # fmt: skip
            grown[name, engine] = out.read_bytes()
    assert grown["replay", "c"] == grown["replay", "twin"]
    return {"dir": d, "data": d / "d.npz", "model": (d / "m.rbnn").read_bytes(), "grown": grown,
            "ds": load(str(d / "d.npz"), parts=("train",))}  # fmt: skip


def _engines(micropython: str) -> list[str]:
    # every engine of this binary: the fallback's two, and the C module when built in
    code = "try:\n import _rbnn\n print('c')\nexcept ImportError:\n print('-')\n"
    out = subprocess.run([micropython, "-c", code], capture_output=True, text=True, timeout=60).stdout.split()
    return ["viper", "python"] + (["c"] if out == ["c"] else [])


def _args(files, opts, checkpoint=1000):
    return build_parser().parse_args(["stream", "--port", "-", "--data", str(files["data"]), *opts,
                                      "--checkpoint", str(checkpoint)])  # fmt: skip


def _stream(link, files, opts, checkpoint=1000, **kw):
    return run_stream(link, files["ds"], _args(files, opts, checkpoint), None, checkpoint, log=lambda s: None, **kw)


def _applied(data: bytes) -> int:
    st = pack.from_bytes(data).state()
    return st.steps - st.stream_base


# --- replay -----------------------------------------------------------------------------------
def test_stream_replays_grow_on_every_engine(vdev, files, micropython, monkeypatch):
    """2,000 streamed samples: the device's model equals `rbnn grow --engine c` and
    `--engine twin`, on each engine of the device (the model is deployed afresh for each:
    the stream of an already finished run changes nothing)."""
    want = files["grown"]["replay", "c"]
    for engine in _engines(micropython):
        monkeypatch.setenv("RBNN_ENGINE", engine)
        vdev.restart()
        link, _ = faulty_link(vdev)
        assert link.hello_info["engine"] == engine and link.hello_info["window"] >= 1
        link.deploy_model(files["model"], "m.rbnn")
        res = _stream(link, files, REPLAY, checkpoint=700)
        assert res.data == want, engine
        assert (vdev.fs / "m.rbnn").read_bytes() == want  # the last checkpoint is the result
        assert res.streamed == 2000 and res.resumed_from == 0 and res.checkpoints == 3
        assert _applied(res.data) == 2000 and link.device_stats()["trained"] == 2000
        link.leave()
        link.ser.close()


def test_cli_stream_and_pull_on_the_virtual_port(files, micropython, template_fs, tmp_path, capsys, monkeypatch):
    """`rbnn stream --port virtual --data D.npz` (a plain .npz data set), then `rbnn pull`:
    the file `rbnn grow` writes; running the finished stream again changes nothing."""
    monkeypatch.setenv("RBNN_MICROPYTHON", micropython)
    fs = tmp_path / "fs"
    shutil.copytree(template_fs, fs)
    with VirtualDevice(fs, micropython=micropython) as dev:  # put the model there
        link, _ = faulty_link(dev)
        link.deploy_model(files["model"], "m.rbnn")
        link.leave()
        link.ser.close()
    out = tmp_path / "s.rbnn"
    argv = ["stream", "--port", "virtual", "--fs", str(fs), "--data", str(files["data"]), *REPLAY, "-q"]
    assert main([*argv, "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "stream: 2,000 samples on virtual (2,000 streamed now, from 0)" in text and "running accuracy" in text
    assert out.read_bytes() == files["grown"]["replay", "twin"]
    # beside -o: the device's counters after every reply, and their running accuracy as a PNG
    hist = json.loads((tmp_path / "s.stream.json").read_text())
    pts = hist["points"]
    assert [p[0] for p in pts] == sorted({p[0] for p in pts}) and pts[-1][0] == 2000
    final = pack.from_bytes(out.read_bytes()).state()
    assert pts[-1][1:] == [final.steps, final.hits] and hist["grow_every"] == final.grow_every
    assert (tmp_path / "s.stream.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["pull", "--port", "virtual", "--fs", str(fs), "-o", str(tmp_path / "p.rbnn")]) == 0
    assert (tmp_path / "p.rbnn").read_bytes() == out.read_bytes()
    assert "pulled m.rbnn from virtual: 2,280 bytes" in capsys.readouterr().out
    assert main(argv) == 0  # the same command again: resumes at the end, same bytes
    assert "(0 streamed now, from 2,000)" in capsys.readouterr().out
    assert (fs / "m.rbnn").read_bytes() == out.read_bytes()


# --- faults on the link ------------------------------------------------------------------------------
@pytest.mark.parametrize("direction", ["out", "in"])
def test_frame_faults_every_kind(vdev, files, direction):
    """Garbage, bad CRC, truncated, duplicated and dropped frames, seeded, on about one
    frame in six, in one direction, through a 5,000-sample stream (small frames, so there
    are many): the bytes of the clean run, every sample applied once."""
    rng = np.random.default_rng(zlib.crc32(direction.encode()))
    plan = {i: KINDS[int(rng.integers(len(KINDS)))] for i in range(3, 600) if rng.random() < 0.17}
    link, fs = faulty_link(vdev, seed=5, plan=plan if direction == "out" else None,
                     reply_plan=plan if direction == "in" else None)  # fmt: skip
    link.deploy_model(files["model"], "m.rbnn")
    link.train_chunk = 40
    res = _stream(link, files, LONG, checkpoint=1500)
    assert res.data == files["grown"]["long", "c"]
    kinds = {k for d, _, k in fs.applied if d == direction}
    assert kinds == set(KINDS), kinds
    fs.plan.clear()
    fs.reply_plan.clear()
    st = link.device_stats()
    assert st["trained"] == 5000 and _applied(res.data) == 5000
    assert link.stats.retries > 0
    if direction == "out":
        assert st["garbage"] > 0 and st["bad_crc"] + st["truncated"] > 0
    link.leave()


# --- the device loses power --------------------------------------------------------------------------
def test_device_killed_at_seeded_points(vdev, files):
    """One 5,000-sample stream, the device killed at least 20 times at seeded frames (mid-frame,
    while training or checkpointing) and twice inside a checkpoint's write (the temp file
    written, and staged as NAME.new): every time it comes back with the last checkpoint
    and the run goes on; the end is the clean run's bytes."""
    rng = np.random.default_rng(1234)
    # 12..16 frames apart: a checkpoint (every 8 TRAIN frames) gets through between two
    kills = np.cumsum(rng.integers(12, 17, 30)) + 8
    link, fs = faulty_link(vdev)
    link.deploy_model(files["model"], "m.rbnn")
    link.train_chunk = 25
    fs.plan = {fs.sent + int(k): "kill" for k in kills}
    res = _stream(link, files, LONG, checkpoint=200)
    assert vdev.kills >= 20 and res.reconnects >= 20, (vdev.kills, res.reconnects)
    assert res.data == files["grown"]["long", "c"] and _applied(res.data) == 5000
    # inside CHECKPOINT's write_file: the device dies at the kill point, comes back
    # without it, and the stored file is the old checkpoint or the new one, whole
    for point in ("write_file:written", "write_file:staged"):
        link.leave()
        link.ser.close()
        vdev.fs.joinpath("m.rbnn").write_bytes(files["model"])  # a new run from the start
        vdev.restart(env={"RBNN_KILL_AT": point})
        before = vdev.kills
        link, fs = faulty_link(vdev)
        link.train_chunk = 40
        res = _stream(link, files, LONG, checkpoint=1000)
        assert vdev.kills == before + 1 and res.reconnects >= 1
        assert res.data == files["grown"]["long", "c"]
        assert not list(vdev.fs.glob("*.tmp")) and not list(vdev.fs.glob("*.new"))
    link.leave()


def test_host_killed_and_run_again(vdev, files, tmp_path):
    """`rbnn stream` killed three times at seeded moments (SIGKILL: no goodbye), then run
    again to the end: the clean run's bytes, and the device applied 5,000 samples."""
    link, _ = faulty_link(vdev)
    link.deploy_model(files["model"], "m.rbnn")
    link.leave()
    link.ser.close()
    argv = [sys.executable, "-m", "rbnn", "stream", "--port", vdev.port, "--baud", str(BAUD), "--data",
            str(files["data"]), *LONG, "--checkpoint", "700", "-q"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent / "host"))
    rng = np.random.default_rng(77)
    for delay in rng.uniform(1.0, 2.5, 3):
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(float(delay))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    out = tmp_path / "s.rbnn"
    r = subprocess.run([*argv, "-o", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == files["grown"]["long", "c"]
    assert (vdev.fs / "m.rbnn").read_bytes() == out.read_bytes() and _applied(out.read_bytes()) == 5000


# --- bad input ------------------------------------------------------------------------------------
def _bad_then_resume(vdev, files, hook, code, at):
    link, _ = faulty_link(vdev)
    link.deploy_model(files["model"], "m.rbnn")
    link.train_chunk = 40
    with pytest.raises(StreamError) as e:
        _stream(link, files, LONG, checkpoint=1000, samples_hook=hook)
    assert code in str(e.value) and f"sample {at} of the stream" in str(e.value), e.value
    stored = (vdev.fs / "m.rbnn").read_bytes()
    assert _applied(stored) == at // 1000 * 1000  # the last good checkpoint
    assert link.train_begin(pack.from_bytes(stored).state().stream_id)["applied"] == at  # stopped at the fault
    res = _stream(link, files, LONG, checkpoint=1000)
    assert res.resumed_from == at and res.data == files["grown"]["long", "c"]
    link.leave()


def test_label_out_of_range_stops_at_the_sample(vdev, files):
    def hook(a, b, x, y):
        if a <= 2345 < b:
            y = y.copy()
            y[2345 - a] = 7  # 4 classes
        return x, y

    _bad_then_resume(vdev, files, hook, "E_LABEL", 2345)


def test_sample_of_the_wrong_length_is_refused(vdev, files):
    first = []

    def hook(a, b, x, y):
        if a >= 3100 and (not first or first[0] == a):  # the first frame from 3,100 on
            first[:] = [a]
            x = np.concatenate([x, np.zeros((len(x), 1), np.uint8)], axis=1)  # one byte more each
        return x, y

    link, _ = faulty_link(vdev)
    link.deploy_model(files["model"], "m.rbnn")
    link.train_chunk = 20
    with pytest.raises(StreamError) as e:
        _stream(link, files, LONG, checkpoint=1000, samples_hook=hook)
    at = first[0]
    assert "E_INPUT" in str(e.value) and f"sample {at} of the stream" in str(e.value), e.value
    assert _applied((vdev.fs / "m.rbnn").read_bytes()) == 3000
    res = _stream(link, files, LONG, checkpoint=1000)
    assert res.resumed_from == at and res.data == files["grown"]["long", "c"]
    link.leave()


def test_full_arena_is_refused_before_anything_changes(vdev, files, tmp_path, capsys):
    """A model whose arena holds no new block: `rbnn stream` says so and uploads nothing;
    on the frames, GROW with no room and FREEZE without a live block are E_FULL."""
    full = files["grown"]["replay", "c"]
    m = pack.from_bytes(full)
    m.state().grow_left = 0
    data = pack.to_bytes(m)
    link, _ = faulty_link(vdev)
    link.deploy_model(data, "m.rbnn")
    sid = m.state().stream_id
    assert link.train_begin(sid)["applied"] == 2000  # the finished replay run: no block may open
    with pytest.raises(DeviceError, match="E_FULL.*sample 2000 of the stream"):
        link.request(fr.TRAIN, struct.pack("<IHHH", 2000, 1, 8, 0) + bytes(8))
    with pytest.raises(DeviceError) as e:
        link.freeze()
    assert e.value.code == "E_FULL"
    for _ in range(5):  # 5 free planes: one more 3-bit block opens, then none
        try:
            link.grow()
        except DeviceError as err:
            assert err.code == "E_FULL"
            break
    else:
        pytest.fail("GROW never ran out of room")
    link.load("m.rbnn")
    link.leave()
    link.ser.close()
    rc = main(["stream", "--port", vdev.port, "--data", str(files["data"]), "--bits", "8", "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "the board's model m.rbnn: no room left to grow" in err and err.count("\n") == 1
    # data that does not fit the model: refused by name, nothing sent
    x = np.zeros((50, 65), np.uint8)
    write_npz(tmp_path / "wide.npz", x, np.zeros(50, np.uint8), 4)
    rc = main(["stream", "--port", vdev.port, "--data", str(tmp_path / "wide.npz"), "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "the board's model m.rbnn has 64 inputs, --data has 65" in err
    assert (vdev.fs / "m.rbnn").read_bytes() == data


def test_checkpoint_on_a_full_flash(vdev, files):
    """The flash cannot hold a checkpoint (E_NOSPACE): a clear error, the stored model
    stays the last good checkpoint, and once there is room the stream resumes to the
    clean run's bytes."""
    link, _ = faulty_link(vdev)
    link.deploy_model(files["model"], "m.rbnn")
    link.train_chunk = 40
    # the first 1,000 samples and their checkpoint on a roomy flash
    with pytest.raises(StreamError):
        _stream(link, files, LONG, checkpoint=1000,
                samples_hook=lambda a, b, x, y: (x, np.where(np.arange(a, b) == 1500, 9, y)))  # fmt: skip
    good = (vdev.fs / "m.rbnn").read_bytes()
    assert _applied(good) == 1000
    link.leave()
    link.ser.close()
    used = sum(p.stat().st_size for p in vdev.fs.iterdir() if p.is_file())
    vdev.restart(env={"RBNN_FS_BYTES": str(used + len(good) // 2)})
    link, _ = faulty_link(vdev)
    link.train_chunk = 40
    with pytest.raises(StreamError) as e:
        _stream(link, files, LONG, checkpoint=1000)
    assert "CHECKPOINT" in str(e.value) and "E_NOSPACE" in str(e.value), e.value
    assert (vdev.fs / "m.rbnn").read_bytes() == good and not list(vdev.fs.glob("m.rbnn.*"))
    link.leave()
    link.ser.close()
    vdev.restart()  # room again; the loaded model was lost with the reboot: from the checkpoint
    link, _ = faulty_link(vdev)
    res = _stream(link, files, LONG, checkpoint=1000)
    assert res.resumed_from == 1000 and res.data == files["grown"]["long", "c"]
    link.leave()


# --- the frames -----------------------------------------------------------------------------------
def test_train_frames_apply_by_position(vdev, files):
    """TRAIN before TRAIN_BEGIN and TRAIN_BEGIN of another stream are E_STREAM; a frame
    after a gap applies nothing, a repeat applies nothing new, an overlap only its new
    samples; a malformed frame is E_PROTO; PULL from 0 is a valid file."""
    link, _ = faulty_link(vdev)
    link.deploy_model(files["model"], "m.rbnn")
    with pytest.raises(StreamError, match="E_LABEL"):  # a run stopped at sample 10, its block live
        _stream(link, files, LONG, checkpoint=0,
                samples_hook=lambda a, b, x, y: (x, np.where(np.arange(a, b) == 10, 9, y)))  # fmt: skip
    sid = pack.from_bytes((vdev.fs / "m.rbnn").read_bytes()).state().stream_id
    link.ser.close()
    link, _ = faulty_link(vdev)  # a new session: no stream begun

    def train(pos: int, n: int, width: int = 8, labels=None) -> tuple:
        y = labels if labels is not None else [1] * n
        payload = struct.pack("<IHH", pos, n, width) + struct.pack(f"<{n}H", *y) + bytes(n * width)
        return struct.unpack("<IIIIB", link.request(fr.TRAIN, payload))

    with pytest.raises(DeviceError, match="E_STREAM.*TRAIN_BEGIN first"):
        train(10, 1)
    with pytest.raises(DeviceError, match=f"E_STREAM.*belongs to stream 0x{sid:08x}, not 0x00000001"):
        link.train_begin(1)
    assert link.train_begin(sid)["applied"] == 10
    assert train(12, 2)[::4] == (10, fr.TRAIN_GAP)
    assert train(5, 3)[::4] == (10, fr.TRAIN_OLD)
    assert train(8, 4)[::4] == (12, fr.TRAIN_APPLIED)  # 8, 9 skipped; 10, 11 applied
    assert train(12, 1)[::4] == (13, fr.TRAIN_APPLIED)
    with pytest.raises(DeviceError, match="E_PROTO.*TRAIN of"):
        link.request(fr.TRAIN, struct.pack("<IHH", 13, 2, 8) + bytes(10))
    with pytest.raises(DeviceError, match="E_LABEL.*sample 14 of the stream"):
        train(13, 3, labels=[0, 300, 0])
    assert link.train_begin(sid)["applied"] == 14
    with pytest.raises(DeviceError, match="E_PROTO.*PULL at offset"):
        link.request(fr.PULL, struct.pack("<IH", 10**6, 100))
    data = link.pull()
    m = pack.from_bytes(data)  # resealed: every check passes
    assert m.state().steps - m.state().stream_base == 14 and m.live_index() is not None
    assert link.device_stats()["trained"] >= 4
    link.leave()


def test_checkpoint_cut_mid_write_leaves_no_new_file(vdev, files):
    """The device dies inside CHECKPOINT with the file written but not yet renamed: the
    flash holds the old model, the complete temp file, and no NAME.new (the start-up
    recovery renames a NAME.new over NAME, so one must never be partial); the server's
    start-up then removes the temp file. A partial temp file is removed likewise."""
    link, _ = faulty_link(vdev)
    link.deploy_model(files["model"], "m.rbnn")
    link.leave()
    link.ser.close()
    vdev.restart(env={"RBNN_KILL_AT": "write_file:written"})
    starts = vdev.starts
    link, _ = faulty_link(vdev)
    link.load("m.rbnn")
    with pytest.raises(Exception):  # noqa: B017 -- the device dies: a LinkError of some kind
        link.checkpoint("m.rbnn")
    vdev.wait_started(starts + 1)
    assert (vdev.fs / "m.rbnn").read_bytes() == files["model"]
    assert (vdev.fs / "m.rbnn.tmp").read_bytes() == files["model"] and not (vdev.fs / "m.rbnn.new").exists()
    (vdev.fs / "x.rbnn.tmp").write_bytes(files["model"][:100])  # as a power loss mid-write leaves it
    link.reconnect()
    assert not list(vdev.fs.glob("*.tmp")) and not list(vdev.fs.glob("*.new"))
    assert link.info()["models"] == [{"name": "m.rbnn", "bytes": len(files["model"]),
                                      "file_crc": int.from_bytes(files["model"][-4:], "little")}]  # fmt: skip
    link.leave()


def test_stream_id_is_the_same_all_along_the_run(files):
    """The id a run stamps at its start is what the model at its end (or at any point of
    it) gives again, so a host can tell its own stream from the device's model; another
    run (options, seed, data) or another starting model gives another id."""
    from rbnn.cli.grow import prepare_run, run_key
    from rbnn.format.summary import arena_lines
    from rbnn.learn import run as R

    args = _args(files, LONG)
    key = run_key(args, files["ds"])
    g = pack.from_bytes(files["grown"]["long", "c"])
    sid = g.state().stream_id
    assert sid != 0 and R.stream_id(g, key) == sid
    m = pack.from_bytes(files["model"])
    assert prepare_run(args, m, files["ds"], "m").stream_id == sid
    assert R.stream_id(g, run_key(_args(files, [*LONG[:-1], "10"]), files["ds"])) != sid  # --seed 10
    other = pack.from_bytes(files["model"])
    other.blocks[0].thresholds[0][0] += 1
    assert prepare_run(args, other, files["ds"], "m").stream_id != sid
    assert any(line == f"stream: 0x{sid:08x}, 5,000 samples applied since step 0 (rbnn grow and rbnn stream stamp "
               "their run; docs/PROTOCOL.md)" for line in arena_lines(g))  # fmt: skip


@pytest.mark.parametrize(
    "argv,message",
    [
        (["stream", "--bits", "0"], "--bits: expected 1..16, found 0"),
        (["stream", "--model", "x.bin"], "E_NAME: bad model name 'x.bin'"),
        (["stream", "-o", "{tmp}"], "expected a file name, found a folder"),
        (["pull", "-o", "{tmp}"], "expected a file name, found a folder"),
        (["pull", "-o", "{tmp}/m.rbnn", "--model", ".m.rbnn"], "E_NAME"),
    ],
)
def test_refusals_before_the_board_is_touched(files, tmp_path, capsys, argv, message):
    """Options the host can check are refused by name before the port is opened (the
    port named here does not exist)."""
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    data = ["--data", str(files["data"])] if argv[0] == "stream" else []
    rc = main([*argv, "--port", str(tmp_path / "no-such-port"), *data])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "no-such-port" not in err and err.count("\n") == 1, err


def test_pull_is_checked_on_arrival(files):
    """PULL in frames until a short one; a file that fails its check (a byte changed on
    the way inside valid frames, or a model changing between frames) is pulled again,
    then refused by name: `rbnn pull` writes nothing it has not checked."""
    from test_link import HELLO_REPLY, make_link, reply

    good = files["model"]
    served = []

    def device(f, port):
        if f.type == fr.HELLO:
            return reply(f, json.dumps(dict(HELLO_REPLY, max_payload=300)).encode())
        off, want = struct.unpack("<IH", f.payload)
        data = served[-1] if off else served.append(next(versions)) or served[-1]
        return reply(f, struct.pack("<I", off) + data[off : off + min(want, 296)])

    bad = bytearray(good)
    bad[len(bad) // 2] ^= 1  # a weight bit: only the CRC tells
    versions = iter([bytes(bad), good])
    link, port = make_link(device)
    link.hello()
    data, m = pull_model(link)  # the first pull fails its CRC, the second is good
    assert data == good and len(served) == 2 and len(good) > 296
    versions = iter([bytes(bad)] * 2)
    with pytest.raises(StreamError, match="the model pulled from fake fails its check: .*E_CRC"):
        pull_model(link)


def test_running_accuracy_windows():
    """The running accuracy of `rbnn stream`'s PNG: hits over steps since the latest point at
    least a window back; points without a full window behind them are left out."""
    from rbnn.train.plots import running_accuracy

    pts = [(0, 100, 50), (10, 110, 55), (20, 120, 65), (30, 130, 70), (40, 140, 80)]
    assert running_accuracy(pts, 20) == ([20, 30, 40], [75.0, 75.0, 75.0])
    assert running_accuracy(pts, 10) == ([10, 20, 30, 40], [50.0, 100.0, 50.0, 100.0])
    assert running_accuracy(pts, 50) == ([], [])
