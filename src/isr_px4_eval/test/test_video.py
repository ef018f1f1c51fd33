"""isr video: every mode decodes (frame count, resolution); cut-short and bad bags."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from isr_px4_eval.cli.main import main
from isr_px4_eval.evidence.recording import BagRecorder, StepRecord, record_policy_run
from isr_px4_eval.evidence.video import make_video

torch.set_num_threads(1)
STEPS = 20


def decode(path):
    import imageio_ffmpeg

    gen = imageio_ffmpeg.read_frames(str(path))
    meta = gen.__next__()
    w, h = meta["size"]
    frames = [np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in gen]
    assert meta["codec"] == "h264"
    return frames, (w, h)


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    from isr_training.env import EnvConfig, ISREnv

    root = tmp_path_factory.mktemp("vid")
    out = {}
    for name, vehicle in (("direct", "direct"), ("quad", "quadrotor")):
        env = ISREnv(
            EnvConfig(
                num_worlds=2, drones_per_world=2, camera=True, camera_resolution="64x64",
                stagger=False, vehicle=vehicle,
            )
        )  # fmt: skip
        gen = torch.Generator().manual_seed(1)
        actions = [torch.rand(4, 4, generator=gen) * 2 - 1 for _ in range(STEPS)]
        it = iter(actions)
        out[name] = record_policy_run(
            env, lambda _o, it=it: next(it), STEPS, root / name, "video test", "2"
        )
    return out


@pytest.mark.parametrize("mode", ["single", "grid", "map", "side-by-side"])
def test_modes_decode(bags, tmp_path, mode):
    out = tmp_path / f"{mode}.mp4"
    r = make_video(bags["direct"], out, mode=mode, drone=1, bag2=bags["quad"])
    frames, size = decode(out)
    assert len(frames) == r.frames == STEPS + 1
    assert size == (r.width, r.height) and r.width % 16 == 0 and r.height % 16 == 0
    assert frames[5].std() > 10  # not blank


def test_cli_single_and_skip_marker(bags, tmp_path, capsys):
    out = tmp_path / "cli.mp4"
    assert main(["video", str(bags["direct"]), "-o", str(out), "--drone", "2"]) == 0
    assert "21 frames" in capsys.readouterr().out
    frames, _ = decode(out)
    # the RENDER/SKIP badge (top right) alternates green/red with render_interval 2
    w = frames[0].shape[1]
    badge = [f[20:30, w - 70 : w - 30].reshape(-1, 3).mean(0) for f in frames[1:5]]
    greens = [b[1] > b[0] for b in badge]
    assert True in greens and False in greens


def test_cut_short_bag_gives_video(bags, tmp_path):
    cut = tmp_path / "cut"
    cut.mkdir()
    data = next(bags["direct"].glob("*.mcap")).read_bytes()
    (cut / "cut.mcap").write_bytes(data[: int(len(data) * 0.6)])
    r = make_video(cut, tmp_path / "cut.mp4", mode="grid")
    frames, _ = decode(tmp_path / "cut.mp4")
    assert r.truncated and 2 <= len(frames) < STEPS + 1


def test_bag_without_needed_topics(tmp_path, capsys):
    rec = BagRecorder(tmp_path / "odom_only", 1)
    rec.add_step(StepRecord(0.0, 0, np.zeros((1, 3)), np.zeros((1, 3)), np.array([[1.0, 0, 0, 0]])))
    rec.close()
    assert (
        main(
            ["video", str(tmp_path / "odom_only"), "-o", str(tmp_path / "g.mp4"), "--mode", "grid"]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("error:") and "sensor_msgs/msg/Image" in err and "/drone_0/odom" in err
    assert len(err.strip().splitlines()) == 1
    assert (
        main(["video", str(tmp_path / "odom_only"), "-o", str(tmp_path / "m.mp4"), "--mode", "map"])
        == 0
    )
    assert (
        main(
            [
                "video",
                str(tmp_path / "odom_only"),
                "-o",
                str(tmp_path / "s.mp4"),
                "--mode",
                "side-by-side",
            ]
        )
        == 2
    )
    assert "--bag2" in capsys.readouterr().err


def test_encode_is_atomic(tmp_path):
    """A failure mid-encoding leaves neither a partial video nor a temporary file; success
    replaces the file in one step and decodes."""
    import imageio_ffmpeg

    from isr_px4_eval.evidence.video import encode

    out = tmp_path / "v.mp4"
    frame = np.zeros((32, 48, 3), np.uint8)

    def broken():
        yield frame
        yield frame
        raise RuntimeError("renderer died")

    with pytest.raises(RuntimeError, match="renderer died"):
        encode(broken(), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == []

    n, size = encode(iter([frame] * 5), out)
    assert (n, size) == (5, (48, 32))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]
    reader = imageio_ffmpeg.read_frames(str(out))
    meta = next(reader)
    assert tuple(meta["size"]) == (48, 32)
    assert sum(1 for _ in reader) == 5
