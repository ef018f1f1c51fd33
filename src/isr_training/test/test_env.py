"""Tests of the batched ISR environment, its adapters and the baselines (tiny scale)."""

from __future__ import annotations

import copy
import functools
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from isr_direct_dynamics import InitialState
from isr_direct_dynamics.config import ConfigError, from_dict
from isr_training.adapters import ISRGymVectorEnv, ISRSB3VecEnv, register_envs
from isr_training.baselines import RandomPolicy, ScriptedExpert, run_policy
from isr_training.env import EnvConfig, ISREnv
from isr_training.task.config import TaskConfig

TIME_LEFT = 9  # index of the time-left feature in the state vector


def small_cfg(**kw) -> EnvConfig:
    cfg = EnvConfig(num_worlds=2, drones_per_world=2, stagger=False)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


@pytest.fixture(scope="module")
def env():
    return ISREnv(small_cfg())


def place(env: ISREnv, pos, yaw=None, mask=None) -> None:
    pos = torch.as_tensor(pos, dtype=torch.float32).expand(*env._shape, 3).clone()
    yaw = None if yaw is None else torch.full(env._shape, float(yaw))
    env.vehicle.reset(mask, InitialState(pos_enu_m=pos, yaw_rad=yaw))


@pytest.mark.unit
def test_shapes_and_types(env):
    obs = env.reset(seed=0)
    assert obs.shape == (4, env.obs_dim) and obs.dtype == torch.float32
    obs, rew, term, trunc, info = env.step(torch.zeros(4, 4))
    assert obs.shape == (4, env.obs_dim)
    assert rew.shape == (4,) and term.dtype == torch.bool and trunc.dtype == torch.bool
    assert set(info["reward_terms"]) >= {"new_target", "coverage", "time", "collision"}
    assert all(v.shape == (4,) for v in info["episode"].values())
    assert torch.isfinite(obs).all()


@pytest.mark.unit
def test_bad_actions(env):
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action has shape \(4, 3\), expected \(4, 4\)"):
        env.step(torch.zeros(4, 3))
    before = int(env.nonfinite_action_count)
    act = torch.zeros(4, 4)
    act[1, 2] = float("nan")
    act[3, 0] = float("inf")
    obs, *_ = env.step(act)
    assert int(env.nonfinite_action_count) == before + 2
    assert torch.isfinite(obs).all()


@pytest.mark.unit
def test_bad_config_names_the_field():
    with pytest.raises(ConfigError, match="drones_per_world"):
        from_dict(EnvConfig, {"drones_per_world": 40})
    with pytest.raises(ConfigError, match="unknown config key 'num_drones'"):
        from_dict(EnvConfig, {"num_drones": 4})
    with pytest.raises(ConfigError, match=r"task\.reward\.time"):
        from_dict(EnvConfig, {"task": {"reward": {"time": 1.0}}})


@pytest.mark.unit
def test_truncation_not_termination_and_terminal_obs():
    env = ISREnv(small_cfg(task=TaskConfig(episode_length_s=1.0)))
    obs = env.reset(seed=1)
    for step in range(10):
        obs, _, term, trunc, info = env.step(torch.zeros(4, 4))
        if step < 9:
            assert not trunc.any()
    assert trunc.all() and not term.any()
    final = info["final_obs"]
    assert torch.allclose(
        final[:, TIME_LEFT], torch.zeros(4)
    )  # the last observation of the episode
    assert torch.allclose(obs[:, TIME_LEFT], torch.ones(4))  # the first one of the next
    assert (info["episode"]["length"] == 10).all()


@pytest.mark.unit
@pytest.mark.parametrize("interval", [1, 2])
def test_obs_after_auto_reset_equals_a_full_observation(interval):
    """step() rebuilds only the kinematic part after a reset and on steps without perception;
    the observation must equal a full _observe()."""
    cfg = EnvConfig(num_worlds=2, drones_per_world=4, seed=5)  # staggered: resets spread out
    cfg.task.episode_length_s = 3.0
    cfg.task.perception_interval = interval
    env = ISREnv(cfg)
    env.reset(seed=5)
    gen = torch.Generator().manual_seed(5)
    resets = 0
    for _ in range(40):
        obs, _, _, _, info = env.step(torch.rand(8, 4, generator=gen) * 2 - 1)
        resets += int(info["done"].sum())
        assert torch.equal(obs, env._observe())
    assert resets >= 8


@pytest.mark.unit
def test_crash_terminates_and_only_that_drone_resets():
    cfg = small_cfg()
    cfg.task.safety.enabled = False  # let the drone fly into the ground
    runs = []
    for crash in (False, True):
        env = ISREnv(copy.deepcopy(cfg))
        env.reset(seed=3)
        act = torch.zeros(4, 4)
        if crash:
            place(env, [0.0, 0.0, 1.0], mask=torch.tensor([[True, False], [False, False]]))
            act[0, 2] = -1.0
        traj = []
        for _ in range(5):
            _, _, term, trunc, info = env.step(act)
            traj.append(env.vehicle.state.pos_enu_m.clone())
            if crash and term[0]:
                assert not trunc[0] and not term[1:].any()
                assert info["episode"]["collisions"][0] == 1
                assert info["reward_terms"]["collision"][0] == 1
                assert env.step_count[0, 0] == 0 and env.step_count[0, 1] > 0
        runs.append(torch.stack(traj))
    # Drones 1..3 flew exactly the same with or without drone 0's crash and reset.
    assert torch.equal(runs[0][:, 0, 1], runs[1][:, 0, 1])
    assert torch.equal(runs[0][:, 1], runs[1][:, 1])
    assert not torch.equal(runs[0][:, 0, 0], runs[1][:, 0, 0])


@pytest.mark.unit
def test_new_target_reward_when_flying_over_a_target():
    cfg = small_cfg(num_worlds=1, drones_per_world=1)
    cfg.task.perception_interval = 1
    env = ISREnv(cfg)
    env.reset(seed=0)
    w = env.world
    t = int(torch.nonzero(w.target_valid[0] & (w.target_class[0] == 0))[0])
    tp = w.target_pos_enu_m[0, t].clone()
    # 20 m behind the target (the camera looks forward and down), 20 m up, facing it along +x.
    place(env, [float(tp[0]) - 20.0, float(tp[1]), 20.0], yaw=0.0)
    _, rew, _, _, info = env.step(torch.zeros(1, 4))
    assert bool(env.found[0, 0, t])
    assert info["reward_terms"]["new_target"][0] >= 1
    assert rew[0] >= env.task.reward.new_target - 1.0
    _, _, _, _, info = env.step(torch.zeros(1, 4))
    assert not bool(env.found[0, 0, t] & False)
    assert info["reward_terms"]["new_target"][0] == 0  # the same target is not rewarded twice


@pytest.mark.unit
def test_determinism():
    def rollout():
        env = ISREnv(small_cfg())
        obs = [env.reset(seed=5)]
        gen = torch.Generator().manual_seed(0)
        rews = []
        for _ in range(30):
            o, r, *_ = env.step(torch.rand(4, 4, generator=gen) * 2 - 1)
            obs.append(o)
            rews.append(r)
        return torch.stack(obs), torch.stack(rews)

    (o1, r1), (o2, r2) = rollout(), rollout()
    assert torch.equal(o1, o2) and torch.equal(r1, r2)


@pytest.mark.unit
def test_staggered_episode_starts():
    env = ISREnv(EnvConfig(num_worlds=8, drones_per_world=2))
    env.reset(seed=0)
    assert len(set(env.step_count.flatten().tolist())) > 4


@pytest.mark.unit
def test_camera_observation_dict():
    cfg = small_cfg(camera=True, camera_resolution="32x32")
    env = ISREnv(cfg)
    obs = env.reset(seed=0)
    assert obs["image"].shape == (4, 32, 32, 3) and obs["image"].dtype == torch.uint8
    assert obs["image"].float().std() > 0
    rendered = []
    for _ in range(4):
        obs, *_, info = env.step(torch.zeros(4, 4))
        rendered.append(info["rendered"])
    assert rendered == [False, True, False, True]  # perception_interval = 2


@pytest.mark.integration
def test_gymnasium_env_checker():
    from gymnasium.utils.env_checker import check_env

    register_envs()
    env = gym.make("ISRSearch-v0").unwrapped
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)


@pytest.mark.integration
def test_sb3_env_checker():
    from stable_baselines3.common.env_checker import check_env

    register_envs()
    check_env(gym.make("ISRSearch-v0").unwrapped, warn=True)


@pytest.mark.integration
def test_sb3_vec_env_infos():
    venv = ISRSB3VecEnv(small_cfg(task=TaskConfig(episode_length_s=0.5)))
    venv.seed(0)
    obs = venv.reset()
    assert obs.shape == (4, venv.env.obs_dim)
    for _ in range(5):
        obs, rew, done, infos = venv.step(np.zeros((4, 4), dtype=np.float32))
    assert done.all()
    for info in infos:
        assert info["TimeLimit.truncated"] is True
        assert info["terminal_observation"].shape == obs.shape[1:]
        assert info["terminal_observation"][TIME_LEFT] == 0.0
        assert info["episode"]["l"] == 5


@pytest.mark.integration
def test_gym_vector_env_same_step_autoreset():
    venv = ISRGymVectorEnv(small_cfg(task=TaskConfig(episode_length_s=0.3)))
    obs, _ = venv.reset(seed=0)
    assert venv.observation_space.contains(obs.astype(np.float32))
    for _ in range(3):
        obs, rew, term, trunc, infos = venv.step(venv.action_space.sample())
    assert trunc.all() and not term.any()
    assert infos["_final_obs"].all() and infos["final_obs"][0].shape == (venv.env.obs_dim,)


@pytest.mark.integration
def test_expert_finds_clearly_more_targets_than_random():
    results = {}
    for name in ("random", "expert"):  # 16 worlds: 4 resolve +-0.1 only
        env = ISREnv(EnvConfig(num_worlds=16, drones_per_world=1, stagger=False, seed=100))
        policy = RandomPolicy(env.num_envs, seed=0) if name == "random" else ScriptedExpert(env)
        results[name] = run_policy(env, policy)
    assert results["expert"]["targets_found"] >= results["random"]["targets_found"] + 0.3
    assert results["expert"]["targets_found"] >= 0.7
    assert results["expert"]["crash_rate"] == 0.0
    assert results["expert"]["geofence_breaches"] == 0.0


@pytest.mark.integration
def test_run_policy_standard_errors_match_the_episodes():
    from isr_training.task.config import TaskConfig

    task = TaskConfig(episode_length_s=20.0)  # short episodes: some targets found, not all
    env = ISREnv(EnvConfig(num_worlds=4, drones_per_world=1, stagger=False, seed=100, task=task))
    seen = {"targets_found": [], "return": []}
    step = env.step

    def recording_step(action):
        out = step(action)
        info = out[4]
        for k in seen:
            seen[k] += info["episode"][k][info["done"]].tolist()
        return out

    env.step = recording_step
    m = run_policy(env, RandomPolicy(env.num_envs, seed=1))
    for k, values in seen.items():
        v = torch.tensor(values[:4], dtype=torch.float64)
        assert m[k] == pytest.approx(float(v.mean()), rel=1e-5, abs=1e-6)
        assert m[f"{k}_se"] == pytest.approx(float(v.std() / 2.0), rel=1e-4, abs=1e-6)


@pytest.mark.integration
def test_compiled_task_kernels_match_eager():
    """EnvConfig.compile gives the eager results up to float rounding."""
    pytest.importorskip("torch._inductor", reason="torch.compile backend not available")
    runs = []
    for compiled in (False, True):
        cfg = EnvConfig(
            num_worlds=2, drones_per_world=3, seed=2, compile=compiled, cpu_kernels=False
        )
        cfg.task.perception_interval = 1
        env = ISREnv(cfg)
        env.reset(seed=2)
        gen = torch.Generator().manual_seed(2)
        steps = []
        for _ in range(6):
            obs, reward, term, _, info = env.step(torch.rand(6, 4, generator=gen) * 2 - 1)
            steps.append((obs, reward, term, info["interventions"]["geofence"]))
        runs.append(steps)
    for (o0, r0, t0, g0), (o1, r1, t1, g1) in zip(*runs, strict=True):
        torch.testing.assert_close(o0, o1, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(r0, r1, rtol=1e-5, atol=1e-5)
        assert torch.equal(t0, t1) and torch.equal(g0, g1)


@pytest.mark.parametrize(
    "variant",
    [
        {},  # state only: the fused ground-truth detector
        {"camera": True, "camera_resolution": "32x24"},  # the perception backend, images
        {"drones_per_world": 1, "set": {"perception_interval": 1}, "safety": False},
    ],
)
def test_numba_task_kernels_match_torch(variant):
    """EnvConfig.cpu_kernels (the fused numba step: safety filter, vehicle, detections, coverage,
    rewards, episode statistics, resets, observation) gives the torch code's results over resets
    and whole episodes: observations, final observations, rewards and their terms, terminated /
    truncated, interventions, episode statistics and the non-finite action count."""
    from isr_training import cpu_kernels

    if not cpu_kernels.AVAILABLE:
        pytest.fail("numba is a dependency (requirements.txt) but cannot be imported")
    runs = []
    d = variant.get("drones_per_world", 4)
    for numba_on in (False, True):
        cfg = EnvConfig(
            num_worlds=3, drones_per_world=d, seed=4, cpu_kernels=numba_on,
            camera=variant.get("camera", False),
            camera_resolution=variant.get("camera_resolution", "80x80"),
        )  # fmt: skip
        cfg.task.episode_length_s = 8.0
        cfg.task.safety.enabled = variant.get("safety", True)
        for k, v in variant.get("set", {}).items():
            setattr(cfg.task, k, v)
        env = ISREnv(cfg)
        assert env.cpu_kernels == numba_on
        obs = env.reset(seed=4)
        gen = torch.Generator().manual_seed(4)
        steps = [obs]
        for k in range(120):
            action = torch.rand(3 * d, 4, generator=gen) * 2 - 1
            if k % 30 < 10:
                action = torch.sign(action)  # full speed at walls, zones and obstacles
            if k % 17 == 0:
                action[k % (3 * d), k % 4] = float("nan")
            steps.append(env.step(action))
        runs.append(steps)
    close = functools.partial(torch.testing.assert_close, rtol=1e-5, atol=1e-5)

    def close_obs(a, b):
        # Camera images: poses equal to float rounding may move a target's edge across a pixel
        # centre, so a handful of edge pixels may differ; every other pixel is equal.
        if not isinstance(a, dict):
            close(a, b)
            return
        assert set(a) == set(b)
        for key in a:
            if key == "image":
                differ = a[key] != b[key]
                assert differ.float().mean().item() <= 5e-4, f"{int(differ.sum())} pixels differ"
            else:
                close(a[key], b[key])

    hits = dones = 0
    for k, (s0, s1) in enumerate(zip(*runs, strict=True)):
        if k == 0:
            close_obs(s1, s0)
            continue
        (o0, r0, te0, tr0, i0), (o1, r1, te1, tr1, i1) = s0, s1
        close_obs(o1, o0)
        close_obs(i1["final_obs"], i0["final_obs"])
        close(r1, r0)
        assert (
            torch.equal(te0, te1) and torch.equal(tr0, tr1) and torch.equal(i0["done"], i1["done"])
        )
        assert int(i0["nonfinite_actions"]) == int(i1["nonfinite_actions"]) > 0
        assert i0["rendered"] == i1["rendered"]
        for name in i0["reward_terms"]:
            # lead_approach is a difference of two ~100 m distances: positions equal to float
            # rounding (~1e-5 m at that range) leave ~1e-5 m in it
            tol = {"atol": 1e-4} if name == "lead_approach" else {}
            close(i1["reward_terms"][name], i0["reward_terms"][name], **tol)
        for kind in i0["interventions"]:
            assert torch.equal(i0["interventions"][kind], i1["interventions"][kind]), kind
            hits += int(i0["interventions"][kind].sum())
        done = i0["done"]
        assert set(i0["episode"]) == set(i1["episode"])
        for name in i0["episode"]:
            tol = {"atol": 1e-3} if name == "r/lead_approach" else {}  # (its sum: see above)
            close(i1["episode"][name][done], i0["episode"][name][done], equal_nan=True, **tol)
        dones += int(done.sum())
    assert dones > 0 and (hits > 0) == variant.get("safety", True)


def test_numba_crash_and_breach_flags_match_torch():
    """Constructed crashes (box, other drone, ground) and breaches: identical flags (the kernel
    shares its per-drone helper with the fused step, isr_training.cpu_kernels.task_step)."""
    from isr_training import cpu_kernels

    env = ISREnv(EnvConfig(num_worlds=2, drones_per_world=6, stagger=False, cpu_kernels=True))
    env.reset(seed=0)
    w = env.world
    pos = env.vehicle.state.pos_enu_m.clone()
    b = int(torch.nonzero(w.box_valid[0])[0])
    pos[0, 0] = 0.5 * (w.box_min_m[0, b] + w.box_max_m[0, b])  # inside a building
    pos[0, 1] = w.box_max_m[0, b] + torch.tensor([0.1, 0.1, 0.1])  # just outside, within radius
    pos[0, 2, 2] = 0.01  # on the ground
    pos[0, 3] = pos[0, 4] + 0.05  # two drones touching
    pos[1, 0, 0] = w.geofence_max_m[1, 0] + 1.0  # east of the fence
    pos[1, 1, 2] = w.geofence_max_m[1, 2] + 1.0  # above the ceiling
    crashed = torch.empty(env._shape, dtype=torch.bool)
    breached = torch.empty(env._shape, dtype=torch.bool)
    cpu_kernels.crashes_and_breaches(
        pos.numpy(), env.vehicle.state.ground_contact.numpy(), w.box_min_m.numpy(),
        w.box_max_m.numpy(), w.box_valid.numpy(), w.geofence_min_m.numpy(),
        w.geofence_max_m.numpy(), env.task.drone_radius_m, 2 * env.task.drone_radius_m,
        crashed.numpy(), breached.numpy(),
    )  # fmt: skip
    assert torch.equal(crashed, env._collisions(pos))
    assert torch.equal(breached, env._breach(pos))
    assert crashed[0, :5].all() and breached[1, :2].all() and not breached[0].any()


def test_drone_collisions_can_be_turned_off_in_both_step_paths():
    from isr_training import cpu_kernels

    cfg = EnvConfig(num_worlds=1, drones_per_world=3, stagger=False, cpu_kernels=True)
    cfg.task.drone_collisions = False
    env = ISREnv(cfg)
    env.reset(seed=0)
    pos = env.vehicle.state.pos_enu_m.clone()
    pos[0, 1] = pos[0, 0] + 0.05  # two drones touching, in the air
    crashed = torch.empty(env._shape, dtype=torch.bool)
    breached = torch.empty(env._shape, dtype=torch.bool)
    w = env.world
    cpu_kernels.crashes_and_breaches(
        pos.numpy(), env.vehicle.state.ground_contact.numpy(), w.box_min_m.numpy(),
        w.box_max_m.numpy(), w.box_valid.numpy(), w.geofence_min_m.numpy(),
        w.geofence_max_m.numpy(), env.task.drone_radius_m, env._drone_hit_m,
        crashed.numpy(), breached.numpy(),
    )  # fmt: skip
    assert not crashed[0, :2].any() and torch.equal(crashed, env._collisions(pos))
    cfg.task.drone_collisions = True
    assert ISREnv(cfg)._collisions(pos)[0, :2].all()


@pytest.mark.integration
def test_per_episode_values_pair_two_policies_world_by_world():
    from isr_training.baselines import paired_difference

    task = TaskConfig(episode_length_s=20.0)
    runs = {}
    for name in ("random", "expert"):
        env = ISREnv(EnvConfig(num_worlds=6, drones_per_world=1, stagger=False, seed=7, task=task))
        policy = RandomPolicy(env.num_envs, seed=0) if name == "random" else ScriptedExpert(env)
        runs[name] = run_policy(env, policy, per_episode=True)
    for r in runs.values():
        found = r["per_episode"]["targets_found"]
        assert len(found) == 6 and sum(found) / 6 == pytest.approx(r["targets_found"], abs=1e-6)
    d = paired_difference(
        runs["expert"]["per_episode"]["targets_found"],
        runs["random"]["per_episode"]["targets_found"],
    )
    diff = runs["expert"]["targets_found"] - runs["random"]["targets_found"]
    assert d["n"] == 6 and d["mean"] == pytest.approx(diff, abs=1e-6)
    assert d["a_better"] + d["b_better"] <= 6 and d["se"] >= 0
    one = paired_difference([0.5, float("nan")], [0.25, 0.1])  # an unfinished episode is left out
    assert one["n"] == 1 and one["mean"] == 0.25 and one["a_better"] == 1 and math.isnan(one["se"])


@pytest.mark.parametrize("numba_on", [False, True])
def test_leads_remember_detections_until_found(numba_on):
    """The lead block of the observation: every target detected and not yet found, at the
    position of its last detection (kept after it leaves the view), gone once found, cleared at
    the episode's end; the scripted expert's flight detects, leaves and finds targets."""
    from isr_training.env import LEAD_FEATURES

    cfg = EnvConfig(num_worlds=4, drones_per_world=1, stagger=False, seed=3, cpu_kernels=numba_on)
    cfg.task.episode_length_s = 30.0
    cfg.task.perception_interval = 1
    env = ISREnv(cfg)
    obs = env.reset(seed=3)
    expert = ScriptedExpert(env)
    expert.reset_mask(torch.ones(env._shape, dtype=torch.bool))
    k = env.task.observation.top_k_leads
    lead_block = slice(env.obs_dim - k * LEAD_FEATURES, env.obs_dim)
    remembered_out_of_view = became_found = 0
    prev_active = torch.zeros_like(env.found)
    for _ in range(env.max_episode_steps - 1):
        obs, _, _, _, info = env.step(expert(obs))
        assert not info["done"].any()
        active = env.detected & ~env.found
        w = env.world
        seen_now = env.det_visible
        # a target detected this step is remembered where it is now
        torch.testing.assert_close(
            env.lead_pos[seen_now], w.target_pos_enu_m[:, None].expand_as(env.lead_pos)[seen_now]
        )
        assert not (env.found & ~env.detected).any()  # found implies detected
        valid = obs[:, lead_block].view(env.num_envs, k, LEAD_FEATURES)[..., 0]
        n_active = active.sum(-1).view(-1)
        assert torch.equal(valid.sum(-1).long(), n_active.clamp(max=k))
        remembered_out_of_view += int((active & ~seen_now).sum())
        became_found += int((prev_active & env.found).sum())
        prev_active = active
    assert remembered_out_of_view > 0 and became_found > 0
    obs, _, _, _, info = env.step(expert(obs))  # the last step: every drone resets
    assert info["done"].all() and not env.detected.any()
    assert obs[:, lead_block].abs().sum() == 0
    final = info["final_obs"][:, lead_block].view(env.num_envs, k, LEAD_FEATURES)
    assert final[..., 0].sum() > 0  # the final observation still had its leads


@pytest.mark.parametrize("numba_on", [False, True])
def test_lead_approach_pays_the_metres_gained_on_identifying_the_nearest_lead(numba_on):
    """lead_approach: metres gained on the nearest remembered lead's 3D distance beyond its
    class's recognition range since the last step, negative when moving away, 0 on the first
    step with a lead, when the nearest lead changes, and for a drone without leads."""
    cfg = EnvConfig(num_worlds=1, drones_per_world=2, stagger=False, seed=0, cpu_kernels=numba_on)
    cfg.task.perception_interval = 1000  # no perception in this test: the leads are set by hand
    env = ISREnv(cfg)
    env.reset(seed=0)
    p0 = env.vehicle.state.pos_enu_m[0, 0].clone()
    env.detected[0, 0, 1] = True  # drone 0 remembers target 1, 90 m east of it, on the ground
    env.lead_pos[0, 0, 1] = p0 + torch.tensor([90.0, 3.0, -p0[2].item()])
    env.detected[0, 0, 2] = True  # and target 2, far west
    env.lead_pos[0, 0, 2] = p0 + torch.tensor([-250.0, 0.0, 0.0])
    reach = env.task.found_range_m[int(env.world.target_class[0, 1])]

    def beyond() -> float:
        gap = (env.lead_pos[0, 0, 1] - env.vehicle.state.pos_enu_m[0, 0]).norm()
        return max(float(gap) - reach, 0.0)

    def step(vx: float, vz: float = 0.0) -> tuple[float, float, float]:
        before = beyond()
        act = torch.zeros(2, 4)
        act[0, 0], act[0, 2] = vx, vz
        _, _, _, _, info = env.step(act)
        terms = info["reward_terms"]["lead_approach"]
        return float(terms[0]), before - beyond(), float(terms[1])

    first, _, other = step(1.0)
    assert first == 0.0 and other == 0.0  # no previous distance yet; drone 1 has no lead
    assert int(env.lead_near_idx[0, 0]) == 1 and int(env.lead_near_idx[0, 1]) == -1
    for _ in range(5):
        term, gained, other = step(1.0)
        assert term == pytest.approx(gained, abs=1e-4) and term > 0.05 and other == 0.0
    for _ in range(5):  # descending towards a lead on the ground counts too
        term, gained, _ = step(0.0, -1.0)
        assert term == pytest.approx(gained, abs=1e-4) and term > 0.01
    for _ in range(20):
        term, gained, _ = step(-1.0, 0.5)
    assert term == pytest.approx(gained, abs=1e-4) and term < -0.05
    env.found[0, 0, 1] = True  # found: the nearest lead is now target 2, a new one: no gain
    term, _, _ = step(-1.0)
    assert term == 0.0 and int(env.lead_near_idx[0, 0]) == 2
