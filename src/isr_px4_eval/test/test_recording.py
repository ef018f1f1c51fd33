"""rosbag2 MCAP recording of a tiny ISREnv run reads back (topics, counts, types, values)."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import numpy as np
import pytest
import torch

from isr_px4_eval.evidence.bags import BagSource
from isr_px4_eval.evidence.npz import npz_to_bag
from isr_px4_eval.evidence.recording import (
    T_DET,
    T_IMAGE,
    T_ODOM,
    BagError,
    BagRecorder,
    EnvRecorder,
    StepRecord,
)
from isr_sim_bridge import rosmsg

torch.set_num_threads(1)
STEPS = 20


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """2 worlds x 2 drones, camera 64x64, 20 steps of random actions, recorded."""
    from isr_training.env import EnvConfig, ISREnv

    env = ISREnv(
        EnvConfig(
            num_worlds=2, drones_per_world=2, camera=True, camera_resolution="64x64", stagger=False
        )
    )
    path = tmp_path_factory.mktemp("bags") / "tiny"
    rec = EnvRecorder(env, path, test_name="tiny", phase="3")
    gen = torch.Generator().manual_seed(0)
    env.reset(seed=0)
    rec.record_reset()
    log = {"pos": [], "action": [], "reward": [], "image": None}
    for _ in range(STEPS):
        action = torch.rand(4, 4, generator=gen) * 2 - 1
        _, reward, term, trunc, info = env.step(action)
        rec.record_step(action, reward, term, trunc, info)
        log["pos"].append(env.vehicle.state.pos_enu_m.reshape(4, 3).clone().numpy())
        log["action"].append(action.numpy())
        log["reward"].append(reward.numpy())
        if info["rendered"]:
            log["image"] = env.image.reshape(4, 64, 64, 3).clone().numpy()
    rec.close()
    return env, path, log


def test_topics_counts_types(tiny_run):
    env, path, _ = tiny_run
    src = BagSource(path)
    assert not src.truncated
    assert (path / "metadata.yaml").is_file() and list(path.glob("*.mcap"))
    counts = Counter(t for t, _, _ in src.messages())
    renders = 1 + STEPS // env.task.perception_interval
    for i in range(4):
        assert src.topics[f"/drone_{i}/camera/image_raw"] == T_IMAGE
        assert src.topics[f"/drone_{i}/detections"] == T_DET
        assert src.topics[f"/drone_{i}/odom"] == T_ODOM
        assert counts[f"/drone_{i}/odom"] == STEPS + 1
        assert counts[f"/drone_{i}/cmd_vel"] == STEPS
        assert counts[f"/drone_{i}/camera/image_raw"] == renders
        assert counts[f"/drone_{i}/camera/camera_info"] == renders
        assert counts[f"/drone_{i}/detections_gt"] == renders
    assert counts["/isr/step_metrics"] == STEPS + 1 and counts["/isr/rendered"] == STEPS + 1
    meta = src.metadata()
    assert meta["test_name"] == "tiny" and meta["world_of_drone"] == [0, 0, 1, 1]
    # message definitions stored in the bag (Foxglove / ros2 bag info need them)
    text = (path / "metadata.yaml").read_text()
    assert "version: 8" in text and "storage_identifier: mcap" in text
    from rosbags.highlevel import AnyReader

    with AnyReader([path]) as r:  # no typestore given: definitions come from the bag
        conn = next(c for c in r.connections if c.topic == "/drone_0/detections")
        assert "ObjectHypothesisWithPose" in conn.msgdef.data
        msg = r.deserialize(next(r.messages([conn]))[2], conn.msgtype)
        assert msg.header.frame_id == "drone_0/camera_optical"


def test_decoded_values_equal(tiny_run):
    env, path, log = tiny_run
    src = BagSource(path)
    odom = [m for t, _, m in src.messages(["/drone_3/odom"])]
    pos = np.array([rosmsg.odometry_to_numpy(m)["pos_enu_m"] for m in odom[1:]])
    np.testing.assert_allclose(pos, np.array(log["pos"])[:, 3], rtol=1e-6, atol=1e-5)
    assert (
        odom[0].header.frame_id == "world_1/map" and odom[0].child_frame_id == "drone_3/base_link"
    )
    cmd = [rosmsg.twist_to_numpy(m)["linear"] for _, _, m in src.messages(["/drone_1/cmd_vel"])]
    np.testing.assert_allclose(cmd[4][:2], np.array(log["action"])[4, 1, :2] * 10.0, rtol=1e-5)
    imgs = [rosmsg.image_to_numpy(m) for _, _, m in src.messages(["/drone_2/camera/image_raw"])]
    np.testing.assert_array_equal(imgs[-1], log["image"][2])
    metrics = [rosmsg.step_metrics_to_dict(m) for _, _, m in src.messages(["/isr/step_metrics"])]
    rewards = np.array([m["drone_0"]["reward"] for m in metrics[1:]])
    np.testing.assert_allclose(rewards, np.array(log["reward"])[:, 0], rtol=1e-5, atol=1e-6)
    assert metrics[5]["sim"]["step"] == 5 and metrics[5]["sim"]["fps"] > 0
    det = [rosmsg.detections_to_numpy(m) for _, _, m in src.messages(["/drone_0/detections_gt"])]
    assert all(d["boxes_xyxy_px"].shape[1] == 4 for d in det)
    info = next(m for _, _, m in src.messages(["/drone_0/camera/camera_info"]))
    assert rosmsg.camera_info_to_numpy(info)["hfov_deg"] == pytest.approx(70.0)


def test_foxglove_mcap_reader_decodes_every_message(tiny_run):
    """Foxglove's own MCAP reader and ROS 2 decoder (mcap, mcap-ros2-support): not rosbags."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    env, path, log = tiny_run
    (mcap_file,) = path.glob("*.mcap")
    with open(mcap_file, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        summary = reader.get_summary()
        assert {s.encoding for s in summary.schemas.values()} == {"ros2msg"}
        assert {c.message_encoding for c in summary.channels.values()} == {"cdr"}
        types = Counter()
        odom3 = []
        for schema, channel, _, msg in reader.iter_decoded_messages():
            types[schema.name] += 1
            if channel.topic == "/drone_3/odom":
                p = msg.pose.pose.position
                odom3.append((p.x, p.y, p.z))
    assert (
        sum(types.values())
        == summary.statistics.message_count
        == len(list(BagSource(path).messages()))
    )
    for name in (T_IMAGE, T_DET, T_ODOM, "sensor_msgs/msg/CameraInfo", "std_msgs/msg/Bool"):
        assert types[name] > 0, name
    np.testing.assert_allclose(
        np.array(odom3[1:]), np.array(log["pos"])[:, 3], rtol=1e-6, atol=1e-5
    )


def test_cut_short_bag_reads_what_was_flushed(tiny_run, tmp_path):
    _, path, _ = tiny_run
    # 1) writer never closed (process killed): no metadata.yaml, no MCAP summary
    rec = BagRecorder(tmp_path / "killed", 1, {"test_name": "killed"})
    for k in range(7):
        rec.add_step(
            StepRecord(
                k * 0.1, k, np.full((1, 3), float(k)), np.zeros((1, 3)), np.array([[1.0, 0, 0, 0]])
            )
        )
    src = BagSource(tmp_path / "killed")
    assert src.truncated
    odom = [
        rosmsg.odometry_to_numpy(m)["pos_enu_m"][0] for _, _, m in src.messages(["/drone_0/odom"])
    ]
    assert odom == [float(k) for k in range(7)]
    rec.close()
    # 2) file cut in the middle
    cut = tmp_path / "cut"
    cut.mkdir()
    mcap = next(path.glob("*.mcap"))
    data = mcap.read_bytes()
    (cut / "cut.mcap").write_bytes(data[: len(data) // 2])
    src = BagSource(cut)
    assert src.truncated
    n = sum(1 for _ in src.messages(["/drone_0/odom"]))
    assert 2 <= n < STEPS + 1


def test_bad_bags(tmp_path):
    with pytest.raises(FileNotFoundError):
        BagSource(tmp_path / "nope")
    (tmp_path / "junk.mcap").write_bytes(b"not a bag")
    with pytest.raises(BagError, match="not an MCAP"):
        BagSource(tmp_path / "junk.mcap")
    BagRecorder(tmp_path / "b", 1).close()
    with pytest.raises(BagError, match="exists"):
        BagRecorder(tmp_path / "b", 1)


def test_npz_episode_to_bag(tmp_path):
    e, t = 2, 6
    rng = np.random.default_rng(0)
    arrays = {
        "length": np.array([6, 4]),
        "world_seed": np.array([3, 4]),
        "pos_enu_m": rng.normal(size=(e, t, 3)).astype(np.float32),
        "vel_enu_m_s": rng.normal(size=(e, t, 3)).astype(np.float32),
        "quat_wxyz": np.tile(np.array([1.0, 0, 0, 0], np.float32), (e, t, 1)),
        "action": rng.uniform(-1, 1, size=(e, t, 4)).astype(np.float32),
        "reward": rng.normal(size=(e, t)).astype(np.float32),
        "targets_found": np.zeros((e, t), np.int64),
        "det_boxes_xyxy_px": np.tile(np.array([1, 2, 10, 12], np.float32), (e, t, 3, 1)),
        "det_visible": np.zeros((e, t, 3), bool),
        "target_class": np.array([[0, 1, 2], [0, 0, 1]]),
        "control_dt_s": np.array(0.1),
        "image_size": np.array([80, 80]),
        "meta_json": np.array(json.dumps({"backend": "embedded"})),
    }
    arrays["det_visible"][0, 2, 1] = True
    npz = tmp_path / "embedded.npz"
    np.savez_compressed(npz, **arrays)
    bag = npz_to_bag(npz, tmp_path / "bag", test_name="npz")
    src = BagSource(bag)
    counts = Counter(t for t, _, _ in src.messages())
    assert counts["/drone_0/odom"] == 6 and counts["/drone_1/odom"] == 4
    dets = [rosmsg.detections_to_numpy(m) for _, _, m in src.messages(["/drone_0/detections"])]
    assert dets[2]["class_names"] == ["person"] and dets[2]["ids"] == ["1"]
    assert src.metadata()["world_of_drone"] == [0, 1]
    shutil.rmtree(bag)


class _FakeNode:
    """Stands in for an rclpy node: publishers append (topic, message) to one log."""

    def __init__(self) -> None:
        self.log: list[tuple[str, object]] = []
        self.types: dict[str, str] = {}

    def create_publisher(self, cls, topic, depth):
        node = self
        node.types[topic] = cls.__msgtype__

        class _Pub:
            def publish(self, msg):
                node.log.append((topic, msg))

        return _Pub()


def test_live_sink_publishes_what_the_bag_holds_with_clock_and_tf(tiny_run):
    from isr_sim_bridge.live import LiveSink
    from isr_training.env import EnvConfig, ISREnv

    env = ISREnv(EnvConfig(num_worlds=1, drones_per_world=2, stagger=False))
    node = _FakeNode()
    rec = EnvRecorder(env, None, "live", "3", sink=LiveSink(node, rosmsg.default_factory()))
    env.reset(seed=0)
    rec.record_reset()
    for _ in range(6):
        a = torch.zeros(2, 4)
        _, r, term, trunc, info = env.step(a)
        rec.record_step(a, r, term, trunc, info)
    topics = [t for t, _ in node.log]
    assert node.types["/clock"] == "rosgraph_msgs/msg/Clock"
    assert node.types["/tf"] == "tf2_msgs/msg/TFMessage"
    assert node.types["/drone_1/odom"] == T_ODOM and "/isr/episode_metrics" not in node.types
    clocks = [rosmsg.stamp_to_sec(m.clock) for t, m in node.log if t == "/clock"]
    assert clocks == pytest.approx([0.1 * k for k in range(7)])  # sim time, one per step
    # every odometry goes after the clock of its time and has its transform on /tf
    last_clock = -1.0
    for t, m in node.log:
        if t == "/clock":
            last_clock = rosmsg.stamp_to_sec(m.clock)
        elif t.endswith("/odom"):
            assert rosmsg.stamp_to_sec(m.header.stamp) <= last_clock + 1e-9
    tfs = [m.transforms[0] for t, m in node.log if t == "/tf"]
    odoms = [m for t, m in node.log if t.endswith("/odom")]
    assert len(tfs) == len(odoms) == 2 * 7
    assert tfs[-1].transform.translation.x == odoms[-1].pose.pose.position.x
    assert tfs[-1].child_frame_id == odoms[-1].child_frame_id == "drone_1/base_link"
    assert topics.count("/drone_0/cmd_vel") == 6
    # throttled: a topic is published at most once per min_interval_s of wall time
    node2 = _FakeNode()
    rec2 = EnvRecorder(
        env, None, "live", "3", sink=LiveSink(node2, rosmsg.default_factory(), min_interval_s=60)
    )
    rec2.record_reset()
    for _ in range(5):
        rec2.record_step(torch.zeros(2, 4), r, term, trunc, info)
    t2 = [t for t, _ in node2.log]
    assert t2.count("/drone_0/odom") == 1 and t2.count("/clock") >= 5


def test_episode_metrics_carry_tick_latency():
    f = rosmsg.default_factory()
    msg = rosmsg.episode_metrics_msg(f, 1.0, max_tick_interval_s=0.061, p99_tick_interval_s=0.052)
    back = f.deserialize(f.serialize(msg), "isr_msgs/msg/EpisodeMetrics")
    assert back.max_tick_interval_s == pytest.approx(0.061)
    assert back.p99_tick_interval_s == pytest.approx(0.052)
    assert rosmsg.episode_metrics_msg(f, 1.0).max_tick_interval_s == 0.0


def test_drone_view_publishes_a_throttled_snapshot_of_the_first_world():
    from isr_sim_bridge.live import DroneView, LiveSink
    from isr_training.env import EnvConfig, ISREnv

    env = ISREnv(EnvConfig(num_worlds=2, drones_per_world=3))
    env.reset(seed=1)
    node = _FakeNode()
    view = DroneView(LiveSink(node, rosmsg.default_factory()), drones=4, min_interval_s=0.0)
    for _ in range(3):
        env.step(torch.zeros(6, 4))
        view(env)
    assert view.published == 3 and view.steps == 3
    topics = {t for t, _ in node.log}
    assert {"/drone_0/odom", "/drone_2/odom", "/tf", "/clock"} <= topics
    assert "/drone_3/odom" not in topics  # only the first world's 3 drones
    odom = [m for t, m in node.log if t == "/drone_2/odom"][-1]
    p = env.vehicle.state.pos_enu_m[0, 2]
    assert odom.pose.pose.position.x == pytest.approx(float(p[0]), abs=1e-5)
    assert rosmsg.stamp_to_sec(odom.header.stamp) == pytest.approx(0.3)
    slow = DroneView(LiveSink(_FakeNode(), rosmsg.default_factory()), min_interval_s=60.0)
    for _ in range(5):
        slow(env)
    assert slow.published == 1 and slow.steps == 5
