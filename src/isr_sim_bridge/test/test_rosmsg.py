"""Message builders round trip through CDR with the rosbags typestore."""

from __future__ import annotations

import math

import numpy as np
import pytest

from isr_sim_bridge import rosmsg

F = rosmsg.default_factory()


def _roundtrip(msg):
    data = F.serialize(msg)
    return F.deserialize(data, msg.__msgtype__)


def test_typestore_has_vision_and_isr_msgs():
    ts = rosmsg.isr_typestore()
    for name in (
        "vision_msgs/msg/Detection2DArray",
        "isr_msgs/msg/EpisodeMetrics",
        "isr_msgs/msg/TrainingProgress",
    ):
        assert name in ts.types
    msgdef, _ = ts.generate_msgdef("vision_msgs/msg/Detection2DArray", ros_version=2)
    assert "vision_msgs/ObjectHypothesis hypothesis" in msgdef


def test_image_roundtrip():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, size=(5, 7, 3), dtype=np.uint8)
    msg = _roundtrip(rosmsg.image_msg(F, img, 1.25, "drone_0/camera_optical"))
    assert (msg.height, msg.width, msg.step, msg.encoding) == (5, 7, 21, "rgb8")
    np.testing.assert_array_equal(rosmsg.image_to_numpy(msg), img)
    assert rosmsg.stamp_to_sec(msg.header.stamp) == pytest.approx(1.25)
    with pytest.raises(ValueError, match="shape"):
        rosmsg.image_msg(F, img[..., 0], 0.0, "x")


def test_camera_info_roundtrip():
    msg = _roundtrip(rosmsg.camera_info_msg(F, 64, 48, 70.0, 0.5, "cam"))
    info = rosmsg.camera_info_to_numpy(msg)
    assert info["hfov_deg"] == pytest.approx(70.0)
    # The renderer's principal point (pixel-centre convention), not w/2: half a pixel matters.
    from isr_sim_bridge.camera import CameraConfig, camera_intrinsics

    fx, fy, cx, cy = camera_intrinsics(CameraConfig(resolution="64x48", horizontal_fov_deg=70.0))
    assert info["K"][0, 2] == cx == 31.5 and info["K"][1, 2] == cy == 23.5
    assert info["K"][0, 0] == pytest.approx(fx) and info["K"][1, 1] == pytest.approx(fy)
    assert msg.distortion_model == "plumb_bob" and len(msg.d) == 5 and not np.any(msg.d)
    assert np.asarray(msg.p).reshape(3, 4)[0, 0] == pytest.approx(info["K"][0, 0])


def test_detections_roundtrip():
    boxes = np.array([[1.0, 2.0, 11.0, 22.0], [5.0, 5.0, 6.0, 9.0]])
    msg = _roundtrip(
        rosmsg.detection2d_array_msg(
            F, boxes, ["vehicle", "person"], 2.0, "cam", [0.9, 0.5], [3, 7]
        )
    )
    d = rosmsg.detections_to_numpy(msg)
    np.testing.assert_allclose(d["boxes_xyxy_px"], boxes)
    assert d["class_names"] == ["vehicle", "person"] and d["ids"] == ["3", "7"]
    np.testing.assert_allclose(d["scores"], [0.9, 0.5])
    empty = rosmsg.detections_to_numpy(
        _roundtrip(rosmsg.detection2d_array_msg(F, np.zeros((0, 4)), [], 0, "c"))
    )
    assert empty["boxes_xyxy_px"].shape == (0, 4)


def test_odometry_twist_roundtrip():
    yaw = 0.7
    q = np.array([math.cos(yaw / 2), 0, 0, math.sin(yaw / 2)])
    v = np.array([3.0, -1.0, 0.5])
    msg = _roundtrip(
        rosmsg.odometry_msg(F, [1, 2, 30], q, v, [0, 0, 0.2], 3.0, "map", "drone_1/base_link")
    )
    o = rosmsg.odometry_to_numpy(msg)
    np.testing.assert_allclose(o["pos_enu_m"], [1, 2, 30])
    np.testing.assert_allclose(o["vel_enu_m_s"], v, atol=1e-12)
    np.testing.assert_allclose(o["quat_wxyz"], q)
    assert msg.child_frame_id == "drone_1/base_link"
    # body-frame twist: forward speed along the heading
    assert msg.twist.twist.linear.x == pytest.approx(v[0] * math.cos(yaw) + v[1] * math.sin(yaw))
    lin, ang = rosmsg.action_to_twist([0.5, -1, 0.2, 1])
    t = rosmsg.twist_to_numpy(_roundtrip(rosmsg.twist_stamped_msg(F, lin, ang, 1.0)))
    np.testing.assert_allclose(t["linear"], [5, -10, 1])
    assert t["angular"][2] == pytest.approx(math.pi / 2)


def test_step_and_episode_metrics_roundtrip():
    msg = _roundtrip(
        rosmsg.step_metrics_msg(
            F,
            1.0,
            {"step": 3, "fps": 1234.5, "rendered": True},
            [{"reward": -0.25, "targets_found": 2}],
        )
    )
    d = rosmsg.step_metrics_to_dict(msg)
    assert d["sim"] == {"step": 3, "fps": 1234.5, "rendered": True}
    assert d["drone_0"] == {"reward": -0.25, "targets_found": 2}
    em = _roundtrip(
        rosmsg.episode_metrics_msg(F, 9.0, drone_index=2, episode_return=4.5, terminated=True)
    )
    assert em.drone_index == 2 and em.episode_return == 4.5 and em.terminated
    assert math.isnan(em.time_to_first_detection_s)
    with pytest.raises(ValueError, match="unknown"):
        rosmsg.episode_metrics_msg(F, 0.0, bogus=1)
    assert _roundtrip(rosmsg.string_msg(F, "hi")).data == "hi"
    assert _roundtrip(rosmsg.bool_msg(F, True)).data is True


def test_rclpy_factory_converts_arrays():
    f = rosmsg.RclpyFactory()
    assert f.uint8_seq(np.array([1, 2, 3], dtype=np.uint8)).tolist() == [1, 2, 3]
    assert f.float64_seq([1.5]).tolist() == [1.5]
    try:
        import std_msgs.msg  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError):
            f("std_msgs/msg/String")
    else:
        assert f("std_msgs/msg/String")(data="x").data == "x"
