"""The YOLO perception backend of the environment: matching, counters, config, a tiny model."""

from __future__ import annotations

import pytest
import torch

from isr_direct_dynamics.config import ConfigError
from isr_sim_bridge.camera import CameraConfig
from isr_sim_bridge.detections import DetectionConfig
from isr_sim_bridge.world import WorldSpec, generate_worlds
from isr_training.env import EnvConfig, ISREnv, make_perception
from isr_training.perception import YoloPerception, match_detections


@pytest.mark.unit
def test_match_detections_is_greedy_by_score_one_to_one_and_class_aware():
    gt = torch.tensor([[[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50.0]]])  # (1, 3, 4)
    gt_cls = torch.tensor([[0, 1, 2]])
    gt_vis = torch.tensor([[True, True, False]])
    det = torch.tensor([[[0, 0, 10, 9], [1, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50.0],
                         [60, 60, 70, 70]]])  # fmt: skip
    scores = torch.tensor([[0.5, 0.9, 0.8, 0.99, 0.3]])
    cls = torch.tensor([[0, 0, 2, 2, 1]])  # det 2 has the wrong class; det 3's target is hidden
    valid = torch.tensor([[True, True, True, True, False]])
    m = match_detections(det, scores, cls, valid, gt, gt_cls, gt_vis, 0.5)
    # det 1 (score 0.9) takes target 0 first; det 0 then finds it taken
    assert m.tolist() == [[-1, 0, -1, -1, -1]]
    cls[0, 2] = 1
    m = match_detections(det, scores, cls, valid, gt, gt_cls, gt_vis, 0.5)
    assert m.tolist() == [[-1, 0, 1, -1, -1]]
    # IoU below the threshold never matches
    m = match_detections(det + 6.0, scores, cls, valid, gt, gt_cls, gt_vis, 0.5)
    assert (m == -1).all()
    empty = match_detections(det[:, :0], scores[:, :0], cls[:, :0], valid[:, :0], gt, gt_cls,
                             gt_vis)  # fmt: skip
    assert empty.shape == (1, 0)


@pytest.mark.unit
def test_yolo_perception_config_errors_name_the_weights(tmp_path):
    missing = tmp_path / "nope" / "best.pt"
    with pytest.raises(ConfigError, match="detector_weights.*nope/best.pt"):
        ISREnv(EnvConfig(num_worlds=1, perception="yolo", detector_weights=str(missing)))
    with pytest.raises(ConfigError, match="detector_weights"):
        ISREnv(EnvConfig(num_worlds=1, perception="yolo"))
    world = generate_worlds(WorldSpec(), [0])
    with pytest.raises(ConfigError, match="detector_weights.*nope/best.pt"):
        make_perception("yolo", world, "cpu", weights=missing)
    with pytest.raises(ConfigError, match="perception"):
        make_perception("sonar", world, "cpu")
    assert make_perception("gt", world, "cpu").camera is None


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """A YOLO model trained for one epoch on a few 64x64 frames (plumbing, not accuracy)."""
    from isr_sim_bridge.yolo import ViewSamplingConfig, YoloConfig, make_yolo_dataset, train_yolo

    root = tmp_path_factory.mktemp("yolo_env")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("YOLO_CONFIG_DIR", str(root / "ultralytics_cfg"))
        info = make_yolo_dataset(
            root / "data", [100, 101], drones_per_world=2, frames_per_drone=4,
            camera=CameraConfig(resolution="64x64"),
            views=ViewSamplingConfig(altitude_m=(12.0, 25.0)),
            detection=DetectionConfig(min_box_size_px=2.0), val_world_seeds=[900], seed=0,
        )  # fmt: skip
        cfg = YoloConfig(imgsz=64, epochs=1, batch=8, warmup_epochs=0.0, close_mosaic=0,
                         mosaic=0.0, optimizer="AdamW", lr0=0.004, plots=False, seed=0)  # fmt: skip
        yield train_yolo(info.data_yaml, cfg, root / "run")


@pytest.mark.integration
def test_env_with_yolo_perception_steps_and_counts(tiny_weights):
    cfg = EnvConfig(num_worlds=2, drones_per_world=2, perception="yolo",
                    detector_weights=str(tiny_weights), detector_conf=0.001,
                    camera_resolution="64x64", stagger=False)  # fmt: skip
    cfg.task.perception_interval = 1
    env = ISREnv(cfg)
    perc = env.perception
    assert isinstance(perc, YoloPerception)
    obs = env.reset(seed=0)
    assert obs.shape == (4, env.obs_dim)
    t = env.world.target_valid.shape[1]
    gen = torch.Generator().manual_seed(0)
    gt_total = 0
    for _ in range(3):
        action = torch.rand(4, 4, generator=gen) * 2 - 1
        obs, reward, term, trunc, info = env.step(action)
        assert obs.shape == (4, env.obs_dim) and torch.isfinite(obs).all()
        assert reward.shape == (4,) and info["rendered"]
        assert env.det_boxes.shape == (2, 2, t, 4) and env.det_visible.shape == (2, 2, t)
        # per step: matched + missed = ground-truth visible; detections = tp + fp
        assert torch.equal(perc.last_tp + perc.last_fn, perc.last_gt)
        assert torch.equal(perc.last_gt, perc.last_gt_visible.sum(-1))
        ndet = torch.tensor([len(f) for f in perc.last_detections]).view(2, 2)
        assert torch.equal(perc.last_tp + perc.last_fp, ndet)
        assert (perc.last_fp >= 0).all() and (perc.last_fn >= 0).all()
        # a target counts as detected only where ground truth sees it
        assert not (env.det_visible & ~perc.last_gt_visible).any()
        assert torch.equal(env.det_visible.sum(-1), perc.last_tp)
        gt_total += int(perc.last_gt.sum())
    assert int((perc.total_tp + perc.total_fn).sum()) == int(perc.total_gt.sum()) == gt_total
    assert int(perc.total_fp.sum()) > 0  # at conf 0.001 an untrained model fires everywhere
    c = perc.counters()
    assert 0.0 <= c["precision"] <= 1.0
    assert c["recall"] != c["recall"] or 0.0 <= c["recall"] <= 1.0  # nan when nothing visible
    perc.reset_counters()
    assert int(perc.total_gt.sum()) == 0


@pytest.mark.integration
def test_make_perception_yolo_by_name_with_camera_observation(tiny_weights):
    world = generate_worlds(WorldSpec(), [3])
    perc = make_perception("yolo", world, "cpu", weights=tiny_weights, drones_per_world=2)
    assert isinstance(perc, YoloPerception) and perc.image_size == (80, 80)
    cfg = EnvConfig(num_worlds=1, drones_per_world=2, camera=True, world_seeds=[3])
    env = ISREnv(cfg, perception=perc, world=world)
    obs = env.reset(seed=1)
    assert obs["image"].shape == (2, 80, 80, 3) and obs["image"].dtype == torch.uint8
    assert perc.last_gt_visible.shape == (1, 2, world.target_valid.shape[1])


@pytest.mark.integration
def test_perfect_detector_reproduces_ground_truth(tiny_weights):
    """With a stand-in detector that returns the ground-truth boxes, YOLO perception = GT."""
    from isr_sim_bridge.yolo import FrameDetections

    cfg = EnvConfig(num_worlds=2, drones_per_world=3, perception="yolo", stagger=False,
                    detector_weights=str(tiny_weights))  # fmt: skip
    cfg.task.perception_interval = 1
    env = ISREnv(cfg)
    perc = env.perception
    render, frame = perc.camera.render, {}

    def spy_render(pos, quat):
        out = render(pos, quat)
        frame["det"], frame["next"] = out.detections, 0
        return out

    def oracle(images, conf=None):
        det, out = frame["det"], []
        vis = det.visible.flatten(0, 1)
        boxes, cls = det.boxes_xyxy.flatten(0, 1), det.class_id.flatten(0, 1)
        for i in range(frame["next"], frame["next"] + len(images)):
            m = vis[i]
            out.append(FrameDetections(boxes[i][m], torch.ones(int(m.sum())), cls[i][m]))
        frame["next"] += len(images)
        return out

    perc.camera.render = spy_render
    perc.detector.predict = oracle
    perc.batch_size = 4  # two batches for 6 drones
    env.reset(seed=0)
    gen = torch.Generator().manual_seed(1)
    seen = 0
    for _ in range(4):
        env.step(torch.rand(6, 4, generator=gen) * 2 - 1)
        gt = perc.last_gt_visible & env.world.target_valid[:, None]
        assert torch.equal(env.det_visible, gt)
        assert torch.equal(env.det_boxes[gt], perc.last_gt_boxes[gt])
        assert torch.equal(perc.last_tp, perc.last_gt) and int(perc.last_fp.sum()) == 0
        seen += int(gt.sum())
    assert seen > 0
    assert perc.precision() == 1.0 and perc.recall() == 1.0
