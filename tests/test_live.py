"""abaw-rt live: a live source from a pipe (a subprocess writing MPEG-TS at real-time pace), NDJSON checks,
lookahead by indices, causal mode, a killed source, bad input, reconnecting a tcp:// source. One thread
everywhere (OMP_NUM_THREADS=1)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("av")
pytest.importorskip("onnxruntime")

ROOT = Path(__file__).resolve().parents[1]
FEEDER = Path(__file__).with_name("live_feeder.py")
SERVER = Path(__file__).with_name("live_tcp_server.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
CLI = [sys.executable, "-c", "import sys; sys.argv[0] = 'abaw-rt'; from abaw_rt.cli import run; run()"]


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    from abaw_rt.defaults.sample import make_sample_video

    return make_sample_video(tmp_path_factory.mktemp("live") / "clip.mp4", seconds=4.0)


def _feeder(video: Path, speed: float = 1.0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(FEEDER), str(video), "--speed", str(speed)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)


def _live(args, stdin=None, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + ["live", *map(str, args), "--threads", "1"], stdin=stdin, capture_output=True,
                          text=True, timeout=timeout, env=ENV)


def _lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def _sent(feeder: subprocess.Popen) -> int:
    err = feeder.stderr.read().decode()
    feeder.wait(timeout=30)
    return int(err.strip().split()[-1])


@pytest.mark.parametrize("lookahead", [0, 12])
def test_pipe_ndjson_one_object_per_frame_in_order_after_its_lookahead(sample, tmp_path, lookahead):
    feeder = _feeder(sample)  # no shedding: on a busy machine a shed window would hold the first frame longer
    res = _live(["-", "--lookahead", lookahead, "--shed-backlog", "0", "--out", tmp_path / "out"], stdin=feeder.stdout)
    sent = _sent(feeder)
    assert res.returncode == 0, res.stderr
    objs = _lines(res.stdout)
    assert [o["frame"] for o in objs] == list(range(sent))  # one per sent frame, in order
    for o in objs:
        assert set(o) >= {"frame", "time", "capture_time", "emit_time", "latency_ms", "face", "values", "probabilities"}
        assert o["emit_time"] >= o["capture_time"]
        flushed = o["received"] == sent  # the last frames are emitted when the stream ends
        assert flushed or o["received"] >= o["frame"] + 1 + lookahead, o
    assert objs[0]["received"] == 1 + lookahead
    rows = list(csv.DictReader(open(tmp_path / "out" / "stdin" / "predictions.csv")))
    assert len(rows) == sent
    # never revised: the files written at the end hold exactly the values streamed
    for o, r in zip(objs, rows):
        assert abs(float(r["valence"]) - o["values"]["valence"]) < 1e-6
        assert r["expr"] == o["values"]["expr"]
    report = json.loads((tmp_path / "out" / "stdin" / "report.json").read_text())
    assert report["frames"] == sent and report["ended_by"] == "end"
    # the built-in demo model's outputs depend on at most 50 later frames (attention band 25, 2 layers)
    assert report["model_future_frames"] == 50
    assert f"depend on up to 50 later frames; at --lookahead {lookahead} " in res.stderr


def _live_on_pipe(sample, out, lookahead: int):
    """A real-time MPEG-TS feeder piped into a running ``live -``, 2.5 s into the stream: (feeder, live)."""
    feeder = _feeder(sample)
    live = subprocess.Popen(CLI + ["live", "-", "--lookahead", str(lookahead), "--threads", "1", "--out", str(out)],
                            stdin=feeder.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    feeder.stdout.close()
    time.sleep(2.5)
    return feeder, live


def test_killed_source_ends_cleanly_with_frames_flushed(sample, tmp_path):
    feeder, live = _live_on_pipe(sample, tmp_path / "o", 25)
    feeder.send_signal(signal.SIGKILL)
    feeder.wait()
    stdout, stderr = live.communicate(timeout=60)
    assert live.returncode == 0, stderr
    objs = _lines(stdout)
    assert objs and [o["frame"] for o in objs] == list(range(len(objs)))
    report = json.loads((tmp_path / "o" / "stdin" / "report.json").read_text())
    assert report["frames"] == len(objs)  # every frame received was emitted


def test_interrupt_flushes_and_exits_130(sample, tmp_path):
    feeder, live = _live_on_pipe(sample, tmp_path / "o", 50)
    live.send_signal(signal.SIGINT)
    stdout, stderr = live.communicate(timeout=60)
    feeder.kill()
    assert live.returncode == 130, stderr
    objs = _lines(stdout)
    report = json.loads((tmp_path / "o" / "stdin" / "report.json").read_text())
    assert objs and report["frames"] == len(objs) and report["interrupted"]


@pytest.mark.parametrize(
    "source, stdin, match",
    [
        ("/tmp/abaw-rt-no-such-clip.mp4", None, "no such file"),
        ("/dev/video97", None, "no such camera"),
        ("http://127.0.0.1:9/stream.ts", None, "cannot open"),
        ("-", b"this is not media\n" * 200, "cannot open"),
    ],
)
def test_bad_input_one_line_exit_2_nothing_left(tmp_path, source, stdin, match):
    out = tmp_path / "never"
    res = subprocess.run(CLI + ["live", source, "--timeout", "3", "--out", str(out)], input=stdin,
                         capture_output=True, timeout=60, env=ENV)
    err = res.stderr.decode().strip()
    assert res.returncode == 2, err
    assert len(err.splitlines()) == 1 and match in err and err.startswith("error:")
    assert not out.exists()


def test_no_video_stream_is_refused(tmp_path):
    import av
    import numpy as np

    wav = tmp_path / "voice.wav"
    with av.open(str(wav), "w") as c:
        s = c.add_stream("pcm_s16le", rate=16000)
        f = av.AudioFrame.from_ndarray(np.zeros((1, 16000), np.int16), format="s16", layout="mono")
        f.sample_rate = 16000
        for p in s.encode(f):
            c.mux(p)
    res = _live([wav, "--out", tmp_path / "never"])
    assert res.returncode == 2 and "no video stream" in res.stderr, res.stderr
    assert not (tmp_path / "never").exists()


def test_stalled_url_times_out(tmp_path):
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)  # accepts, never sends
    port = server.getsockname()[1]
    try:
        res = _live([f"tcp://127.0.0.1:{port}", "--timeout", "1", "--out", tmp_path / "never"], timeout=60)
    finally:
        server.close()
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "source 'tcp://" in res.stderr
    assert not (tmp_path / "never").exists()


def test_falling_behind_sheds_counted_frames_and_windows_and_still_emits_every_frame(sample, tmp_path):
    feeder = _feeder(sample, speed=6.0)  # 150 fps in: more than this CPU extracts
    res = _live(["-", "--lookahead", "0", "--shed-backlog", "2", "--shed-hop", "3", "--out", tmp_path / "o"],
                stdin=feeder.stdout)
    sent = _sent(feeder)
    assert res.returncode == 0, res.stderr
    objs = _lines(res.stdout)
    assert [o["frame"] for o in objs] == list(range(sent))
    report = json.loads((tmp_path / "o" / "stdin" / "report.json").read_text())
    shed = sum(o["shed"] for o in objs)
    assert shed > 0 and report["shed_frames"] == shed
    # a shed frame's window point came with the same backlog, so fusion windows were shed too; with hop 1 every
    # frame is a window point (plus one at the end), and --shed-hop 3 allows at most 2 skipped in a row
    runs, skipped = report["windows_run"], report["windows_shed"]
    assert skipped > 0 and runs + skipped in (sent, sent + 1)
    assert runs >= sent // 3


def test_network_source_on_loopback(sample, tmp_path):
    """A tcp:// URL (FFmpeg listening on loopback); the feeder's MPEG-TS is relayed into the socket."""
    import socket

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    live = subprocess.Popen(CLI + ["live", f"tcp://127.0.0.1:{port}?listen=1", "--lookahead", "5", "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    conn = None
    for _ in range(100):  # until the listener is up
        try:
            conn = socket.create_connection(("127.0.0.1", port), timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    assert conn is not None, live.stderr.read() if live.poll() is not None else "no listener"
    feeder = _feeder(sample, speed=2.0)
    while chunk := feeder.stdout.read(4096):
        conn.sendall(chunk)
    conn.close()
    sent = _sent(feeder)
    stdout, stderr = live.communicate(timeout=60)
    assert live.returncode == 0, stderr
    assert [o["frame"] for o in _lines(stdout)] == list(range(sent))


def _tcp_server(video: Path, sessions: int, speed: float = 2.0, hold: float = 0.0) -> tuple[subprocess.Popen, int]:
    server = subprocess.Popen([sys.executable, str(SERVER), str(video), "--sessions", str(sessions), "--speed",
                               str(speed), "--hold", str(hold)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    return server, int(server.stdout.readline().split()[-1])


def _sessions_sent(server: subprocess.Popen) -> list[int]:
    server.wait(timeout=60)
    return [int(n) for n in server.stderr.read().strip().split()[1:]]


def test_reconnect_continues_indices_and_times_over_a_closed_connection(sample, tmp_path):
    """The server sends the clip, closes, accepts again and sends it once more; then refuses connections."""
    server, port = _tcp_server(sample, sessions=2)
    res = _live([f"tcp://127.0.0.1:{port}", "--lookahead", "5", "--timeout", "3", "--reconnect", "2",
                 "--reconnect-wait", "0.2", "--out", tmp_path / "o"])
    sent = _sessions_sent(server)
    assert res.returncode == 0, res.stderr
    assert len(sent) == 2, sent
    objs = _lines(res.stdout)
    assert [o["frame"] for o in objs] == list(range(sum(sent)))  # both sessions, indices continue
    assert [o["session"] for o in objs] == [0] * sent[0] + [1] * sent[1]
    times = [o["time"] for o in objs]
    assert all(b > a for a, b in zip(times, times[1:]))  # the second session's restarted clock placed after
    report = json.loads((tmp_path / "o" / "stream" / "report.json").read_text())
    assert report["frames"] == sum(sent) and report["reconnects"] == 1
    assert report["gaps"][0]["after_frame"] == sent[0] - 1 and report["lost_s"] >= 0
    assert report["ended_by"].startswith("reconnect failed (2 attempts")  # the server has gone: refused
    assert "reconnects 1" in res.stderr


def test_reconnect_after_a_stall(sample, tmp_path):
    """The connection stays open but silent for longer than --timeout (2 s): the run reconnects; the server
    accepts again 0.5 s later (within the new connection's --timeout); the time lost shows in the stream
    times."""
    server, port = _tcp_server(sample, sessions=2, hold=2.5)
    res = _live([f"tcp://127.0.0.1:{port}", "--lookahead", "0", "--timeout", "2", "--reconnect", "1",
                 "--reconnect-wait", "0", "--out", tmp_path / "o"])
    sent = _sessions_sent(server)
    assert res.returncode == 0, res.stderr
    objs = _lines(res.stdout)
    assert [o["frame"] for o in objs] == list(range(len(objs))) and len(sent) == 2
    first = sum(o["session"] == 0 for o in objs)
    # a stalled connection never reaches its end: FFmpeg still holds its last packets (a few frames)
    assert sent[0] - 12 <= first <= sent[0], (first, sent)
    assert sent[1] - 12 <= len(objs) - first <= sent[1]  # (the server holds the second one too)
    report = json.loads((tmp_path / "o" / "stream" / "report.json").read_text())
    (gap,) = report["gaps"]
    assert gap["ended_by"].startswith(("stalled", "error")) and gap["lost_s"] >= 0.5, gap  # capture may lag the network
    t = {o["frame"]: o["time"] for o in objs}
    assert t[first] - t[first - 1] >= gap["lost_s"]  # the gap shows in the stream times


def test_without_reconnect_a_closed_connection_ends_the_run_flushed(sample, tmp_path):
    server, port = _tcp_server(sample, sessions=1)
    res = _live([f"tcp://127.0.0.1:{port}", "--lookahead", "5", "--timeout", "3", "--out", tmp_path / "o"])
    sent = _sessions_sent(server)
    assert res.returncode == 0, res.stderr
    objs = _lines(res.stdout)
    assert [o["frame"] for o in objs] == list(range(sent[0])) and {o["session"] for o in objs} == {0}
    report = json.loads((tmp_path / "o" / "stream" / "report.json").read_text())
    assert report["frames"] == sent[0] and report["reconnects"] == 0 and report["ended_by"] == "end"


@pytest.mark.parametrize("source", ["file", "-"])
def test_reconnect_refused_on_a_file_or_stdin(sample, tmp_path, source):
    res = subprocess.run(CLI + ["live", str(sample) if source == "file" else "-", "--reconnect", "3", "--out",
                                str(tmp_path / "never")], input=b"", capture_output=True, timeout=60, env=ENV)
    err = res.stderr.decode().strip()
    assert res.returncode == 2, err
    assert len(err.splitlines()) == 1 and "--reconnect 3" in err and "not a network URL" in err
    assert not (tmp_path / "never").exists()


def test_reconnect_refused_on_a_camera_accepted_on_a_url():
    from abaw_rt.errors import AbawRtError
    from abaw_rt.pipeline.stream.live import LiveConfig
    from abaw_rt.pipeline.stream.source import LiveSource

    with pytest.raises(AbawRtError, match="'/dev/video0' is a camera, not a network URL"):
        LiveConfig(reconnect=1).check_source(LiveSource("/dev/video0", "camera"))
    LiveConfig(reconnect=1).check_source(LiveSource("rtsp://camera.local/stream", "url"))
    LiveConfig().check_source(LiveSource("-", "stdin"))  # 0: off, nothing to refuse
    with pytest.raises(AbawRtError, match="--reconnect -1"):
        LiveConfig(reconnect=-1).check()


def test_extractor_backend_names_an_extractor_of_the_spec(sample, tmp_path):
    """live takes infer's --extractor-backend; a name the spec lacks is refused before any frame is read."""
    res = subprocess.run(CLI + ["live", str(sample), "--extractor-backend", "nosuch=cpu", "--out",
                                str(tmp_path / "never")], capture_output=True, timeout=60, env=ENV)
    err = res.stderr.decode().strip()
    assert res.returncode == 2, err
    assert len(err.splitlines()) == 1 and "--extractor-backend" in err and "no extractor 'nosuch'" in err
    assert not (tmp_path / "never").exists() and not res.stdout.strip()


def test_a_camera_opens_through_the_platform_device_input_and_runs_live(sample, monkeypatch):
    """No camera here: FFmpeg's device input is faked by the call contract (``av.open('/dev/video0',
    format='v4l2', ...)`` on Linux), and the 'camera' then delivers the sample clip's frames. Everything after
    the open is the real live path: decoder and faces threads, features, windows, NDJSON. The frames are released
    at the clip's own pace, as a camera delivers them (faster, the live run would rightly shed most of them)."""
    import io

    import av

    from abaw_rt.pipeline.jobs import FusionChoice, JobRunner, VideoJob
    from abaw_rt.pipeline.run import PipelineConfig
    from abaw_rt.pipeline.stream import source as source_mod
    from abaw_rt.pipeline.stream.live import LiveConfig, LiveRun
    from abaw_rt.pipeline.stream.sinks import NdjsonSink

    real_open, calls = av.open, []

    def device_open(what, format=None, options=None, timeout=None, **kw):
        calls.append((what, format, dict(options or {}), timeout))
        return real_open(str(sample), timeout=timeout, **kw)

    monkeypatch.setattr(av, "open", device_open)
    monkeypatch.setattr(source_mod.sys, "platform", "linux")
    out = io.StringIO()
    runner = JobRunner(VideoJob(Path("."), PipelineConfig(infer_threads=1), FusionChoice(threads=1)))
    with runner:
        summary = LiveRun(runner.pipeline, source_mod.LiveSource("/dev/video0", "camera"),
                          LiveConfig(lookahead=5, realtime=True),
                          [NdjsonSink(out)]).run()
    assert calls == [("/dev/video0", "v4l2", {}, (10.0, 10.0))]
    objs = _lines(out.getvalue())
    assert summary["kind"] == "camera" and summary["frames"] == len(objs) == 100  # 4 s at 25 fps
    assert [o["frame"] for o in objs] == list(range(100)) and any(o["face"] for o in objs)
    assert summary["ended_by"] == "end" and summary["detections"] + summary["shed_frames"] >= 20


@pytest.mark.parametrize("platform, text, device, fmt", [
    ("linux", "camera:0", "/dev/video0", "v4l2"), ("linux", "/dev/video2", "/dev/video2", "v4l2"),
    ("darwin", "camera:0", "0", "avfoundation"), ("darwin", "camera:0:1", "0:1", "avfoundation"),
    ("win32", "camera:Integrated Camera", "video=Integrated Camera", "dshow"),
    ("win32", "video=USB Cam", "video=USB Cam", "dshow"),
])
def test_camera_names_map_to_the_platform_device_input(monkeypatch, platform, text, device, fmt):
    import av

    from abaw_rt.pipeline.stream import source as source_mod

    calls = []
    monkeypatch.setattr(source_mod.sys, "platform", platform)
    monkeypatch.setattr(av, "open", lambda what, format=None, **kw: calls.append((what, format)) or "container")
    assert source_mod.camera_device(text) == device
    assert source_mod.open_container(source_mod.LiveSource(text, "camera"), 1.0) == "container"
    assert calls == [(device, fmt)]


def test_camera_without_a_device_or_without_audio_for_an_audio_model(monkeypatch, tmp_path):
    """``camera:97`` with no /dev/video97 is refused when parsed; a camera stream without audio and the
    built-in (audio) model: one error that says how to send camera and microphone together."""
    import av

    from abaw_rt.errors import AbawRtError
    from abaw_rt.pipeline import synthetic as syn
    from abaw_rt.pipeline.jobs import FusionChoice, JobRunner, VideoJob
    from abaw_rt.pipeline.run import PipelineConfig
    from abaw_rt.pipeline.stream import source as source_mod
    from abaw_rt.pipeline.stream.live import LiveConfig, LiveRun

    monkeypatch.setattr(source_mod.sys, "platform", "linux")
    with pytest.raises(AbawRtError, match="no such camera"):
        source_mod.parse_source("camera:97")
    mute = syn.write_video(tmp_path / "mute.mp4", frames=10, audio=False)
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda what, format=None, options=None, **kw: real_open(str(mute), **kw))
    runner = JobRunner(VideoJob(Path("."), PipelineConfig(infer_threads=1), FusionChoice(threads=1)))
    with runner, pytest.raises(AbawRtError, match="has no audio track.*ffmpeg -f v4l2 -i /dev/video0 -f alsa"):
        LiveRun(runner.pipeline, source_mod.LiveSource("camera:0", "camera"), LiveConfig(), []).run()
