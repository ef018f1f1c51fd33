"""Fitting the direct dynamics: recovery of known parameters, real fixtures, embedded model, CLI."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from isr_direct_dynamics import DirectDynamics, DirectDynamicsConfig, InitialState, from_dict
from isr_direct_dynamics.config import ConfigError
from isr_px4_eval.cli.tuning import register
from isr_px4_eval.px4.logs import FlightLog, FlightLogError
from isr_px4_eval.px4.logs_bag import read_bag
from isr_px4_eval.px4.logs_ulog import read_ulog
from isr_px4_eval.tuning.embedded import EmbeddedConfig, fit_from_embedded
from isr_px4_eval.tuning.fit import fit_tilt_drag, tune_flight
from isr_px4_eval.tuning.outputs import write_dynamics_config
from isr_px4_eval.tuning.replay import (
    Candidates,
    FitParams,
    TuningConfig,
    make_windows,
    replay,
    rmse_table,
)
from isr_px4_eval.tuning.search import cem_search

DATA = Path(__file__).parent / "data"
BAG_FIXTURE = DATA / "px4_sih_flight2_trim"
ULOG_FIXTURE = DATA / "px4_sih_flight2_trim.ulg"

TRUE = FitParams(
    tau_horizontal_s=0.5,
    tau_vertical_s=0.25,
    tau_yaw_s=0.3,
    slow_fraction_horizontal=0.3,
    tau_slow_horizontal_s=5.0,
    slow_fraction_vertical=0.15,
    tau_slow_vertical_s=2.0,
    vertical_coupling=0.8,
    max_horizontal_accel_m_s2=8.0,
    delay_s=0.15,
)

SMALL = TuningConfig(
    population=16, iterations=5, max_delay_s=0.24, window_s=10.0, burn_in_s=2.0, seed=0
)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def simulate_direct(
    params: FitParams,
    num_sequences: int = 4,
    duration_s: float = 40.0,
    dt: float = 0.05,
    noise_m_s: float = 0.02,
    seed: int = 0,
) -> list[FlightLog]:
    """Fly DirectDynamics with known parameters under random piecewise-constant commands."""
    rng = np.random.default_rng(seed)
    n = int(round(duration_s / dt))
    cfg = params.to_config(DirectDynamicsConfig(tilt_from_acceleration=False), dt)
    assert cfg.delay_steps * dt == pytest.approx(params.delay_s)
    model = DirectDynamics(1, num_sequences, dt, config=cfg)
    pos = torch.zeros(1, num_sequences, 3)
    pos[..., 2] = 500.0
    model.reset(initial=InitialState(pos_enu_m=pos))
    cmd = np.zeros((num_sequences, n + 1, 4))
    for s in range(num_sequences):
        k = int(round(1.0 / dt))  # 1 s at rest first
        while k < n + 1:
            hold = int(round(rng.uniform(0.5, 2.5) / dt))
            speed, heading = rng.uniform(0, 6), rng.uniform(-math.pi, math.pi)
            cmd[s, k : k + hold] = (
                speed * math.cos(heading),
                speed * math.sin(heading),
                rng.uniform(-1.5, 1.5),
                rng.uniform(-1.0, 1.0),
            )
            k += hold
    scale = np.array([10.0, 10.0, 5.0, math.radians(90.0)])
    vel = np.zeros((num_sequences, n + 1, 3))
    yaw_rate = np.zeros((num_sequences, n + 1))
    for k in range(n):
        action = torch.tensor(cmd[None, :, k] / scale, dtype=torch.float32)
        state = model.step(action)
        vel[:, k + 1] = state.vel_enu_m_s[0].numpy()
        yaw_rate[:, k + 1] = state.body_rates_flu_rad_s[0, :, 2].numpy()
    vel += rng.normal(0, noise_m_s, vel.shape)
    yaw_rate += rng.normal(0, noise_m_s, yaw_rate.shape)
    return [
        FlightLog(
            time_s=np.arange(n + 1) * dt,
            vel_enu_m_s=vel[s],
            pos_enu_m=np.zeros((n + 1, 3)),
            yaw_enu_rad=np.zeros(n + 1),
            yaw_rate_enu_rad_s=yaw_rate[s],
            cmd_vel_enu_m_s=cmd[s, :, :3],
            cmd_yaw_rate_enu_rad_s=cmd[s, :, 3],
            valid=np.ones(n + 1, dtype=bool),
            dt_s=dt,
            source=f"synthetic {s}",
        )
        for s in range(num_sequences)
    ]


# ------------------------------------------------------------------------------ unit
@pytest.mark.unit
def test_replay_matches_the_model_with_its_own_delay():
    logs = simulate_direct(TRUE, num_sequences=2, duration_s=12.0, noise_m_s=0.0)
    batch = make_windows(logs, window_s=100.0, burn_in_s=0.0, history_s=0.3)
    wrong = FitParams(**{**TRUE.__dict__, "delay_s": 0.05})
    sq, count, traj = replay(
        batch, Candidates.from_params([TRUE, wrong], 0.05), return_trajectory=True
    )
    exact, off = rmse_table(sq, count)
    for axis in ("vx", "vy", "vz", "yaw_rate"):
        assert exact[axis] < 1e-4
        assert off[axis] > 50 * max(exact[axis], 1e-5)
    assert traj is not None and traj.shape == (2, 2, batch.length, 4)
    assert int(count[0]) == batch.scored_samples


@pytest.mark.unit
def test_windows_clip_vertical_commands_as_px4():
    log = simulate_direct(TRUE, num_sequences=1, duration_s=12.0, noise_m_s=0.0)[0]
    log.cmd_vel_enu_m_s[:, 2] = np.linspace(-5.0, 5.0, log.num_samples)
    raw = make_windows([log], window_s=100.0, burn_in_s=0.0, history_s=0.2)
    clipped = make_windows([log], 100.0, 0.0, 0.2, climb_descent_m_s=(3.0, 1.5))
    assert float(raw.cmd[..., 2].min()) == pytest.approx(-5.0)
    assert float(clipped.cmd[..., 2].min()) == pytest.approx(-1.5)
    assert float(clipped.cmd[..., 2].max()) == pytest.approx(3.0)
    inside = (raw.cmd[..., 2] > -1.5) & (raw.cmd[..., 2] < 3.0)
    assert torch.equal(clipped.cmd[..., 2][inside], raw.cmd[..., 2][inside])
    torch.testing.assert_close(clipped.cmd[..., [0, 1, 3]], raw.cmd[..., [0, 1, 3]])


@pytest.mark.unit
def test_windows_burn_in_and_history():
    log = simulate_direct(TRUE, num_sequences=1, duration_s=30.0, noise_m_s=0.0)[0]
    batch = make_windows([log], window_s=10.0, burn_in_s=2.0, history_s=0.2)
    # Scored chunks [2, 12), [12, 22), [22, 30) s; each replayed from 2 s earlier (or the start).
    assert batch.num_windows == 3
    assert batch.history == 4
    starts = batch.time_s[:, 0]
    np.testing.assert_allclose(starts, [0.0, 10.0, 20.0], atol=1e-9)
    first_scored = [batch.time_s[i][batch.score[i, :, 0].numpy()][0] for i in range(3)]
    np.testing.assert_allclose(first_scored, [2.0, 12.0, 22.0], atol=1e-9)
    assert batch.scored_samples == log.num_samples - 40  # all but the first 2 s
    # The command history before window 2 is the log's, not zeros.
    i0 = int(round(20.0 / 0.05))
    np.testing.assert_allclose(
        batch.cmd[2, :4, :3].numpy(), log.cmd_vel_enu_m_s[i0 - 4 : i0], rtol=1e-6
    )
    with pytest.raises(FlightLogError, match="no replay window"):
        make_windows([log], window_s=10.0, burn_in_s=40.0, history_s=0.2)


@pytest.mark.unit
def test_params_config_round_trip_and_yaml(tmp_path):
    cfg = FitParams(**{**TRUE.__dict__, "delay_s": 0.16}).to_config(None, control_dt_s=0.1)
    assert cfg.delay_steps == 2  # 0.16 s rounded to 0.1 s steps
    assert FitParams.from_config(cfg, 0.1).tau_slow_horizontal_s == 5.0
    step = FitParams(tau_horizontal_s=0.5, delay_s=0.0).step_response()
    assert step["horizontal"]["t63_s"] == pytest.approx(0.5, abs=0.002)
    slow = TRUE.step_response()
    assert slow["horizontal"]["t63_s"] > TRUE.delay_s + TRUE.tau_horizontal_s
    assert 0.7 < slow["horizontal"]["at_5s"] < 0.9
    with pytest.raises(ConfigError, match="population"):
        TuningConfig(population=1).validate()
    with pytest.raises(ConfigError, match="holdout"):
        TuningConfig(holdout="middle").validate()


@pytest.mark.unit
def test_fit_recovers_known_parameters_within_5_percent():
    logs = simulate_direct(TRUE, num_sequences=4, duration_s=40.0, noise_m_s=0.02)
    batch = make_windows(logs, window_s=100.0, burn_in_s=0.0, history_s=0.25)
    cfg = TuningConfig(population=32, iterations=10, max_delay_s=0.25, seed=1)
    result = cem_search(batch, cfg, slow_pole=True)
    fit = result.best
    assert fit.delay_s == pytest.approx(TRUE.delay_s, abs=1e-9)
    for name in (
        "tau_horizontal_s",
        "tau_vertical_s",
        "tau_yaw_s",
        "slow_fraction_horizontal",
        "tau_slow_horizontal_s",
        "slow_fraction_vertical",
        "tau_slow_vertical_s",
        "vertical_coupling",
        "max_horizontal_accel_m_s2",
    ):
        true, got = getattr(TRUE, name), getattr(fit, name)
        assert abs(got - true) <= 0.05 * true, f"{name}: fitted {got:.4f}, true {true}"


def _tilt_log(c: float, seed: int, attitude: bool = True, wind=(0.0, 0.0)) -> FlightLog:
    """Velocity sinusoids with the thrust direction of a + g + c (v - w) (exact derivatives)."""
    rng = np.random.default_rng(seed)
    t = np.arange(0, 40, 0.02)
    w, ph, amp = rng.uniform(0.2, 0.8, 3), rng.uniform(0, 6, 3), np.array([5.0, 4.0, 1.0])
    vel = amp * np.sin(w * t[:, None] + ph)
    acc = amp * w * np.cos(w * t[:, None] + ph)
    n = acc + c * (vel - np.array([*wind, 0.0])) + np.array([0.0, 0.0, 9.80665])
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    z, z3 = np.zeros(len(t)), np.zeros((len(t), 3))
    return FlightLog(
        time_s=t, vel_enu_m_s=vel, pos_enu_m=z3, yaw_enu_rad=z, yaw_rate_enu_rad_s=z,
        cmd_vel_enu_m_s=z3, cmd_yaw_rate_enu_rad_s=z, valid=np.ones(len(t), dtype=bool),
        thrust_dir_enu=n if attitude else None,
    )  # fmt: skip


def test_tilt_drag_fit_recovers_known_drag():
    res = fit_tilt_drag([_tilt_log(0.7, 0), _tilt_log(0.7, 1)], [_tilt_log(0.7, 2)])
    assert res["tilt_drag_1_s"] == pytest.approx(0.7, rel=0.02)
    rmse = res["heldout_tilt_rmse_deg"]
    assert rmse["fitted"] < 0.2 < 2.0 < rmse["acceleration_only"]
    assert fit_tilt_drag([_tilt_log(0.7, 0, attitude=False)], []) is None
    # a constant wind per flight (unknown to the fit) does not bias it
    windy = [_tilt_log(0.7, 3, wind=(2.0, -1.0)), _tilt_log(0.7, 4, wind=(-1.5, 0.5))]
    res = fit_tilt_drag(windy, [_tilt_log(0.7, 5, wind=(1.0, 1.0))])
    assert res["tilt_drag_1_s"] == pytest.approx(0.7, rel=0.02)
    assert res["heldout_tilt_rmse_deg"]["fitted"] < 0.2
    assert res["wind_speed_fit_m_s"] == pytest.approx(
        (5**0.5 + (1.5**2 + 0.25) ** 0.5) / 2, rel=0.05
    )
    with pytest.raises(ConfigError, match="tilt_drag_1_s"):
        TuningConfig(tilt_drag_1_s=-1.0).validate()


# ------------------------------------------------------------------------------ integration
@pytest.mark.integration
def test_fit_on_real_bag_fixture_improves_rmse(tmp_path):
    log = read_bag(BAG_FIXTURE)
    result = tune_flight(log, SMALL)
    r = result.rmse_heldout
    assert r["written"]["horizontal"] < 0.15
    assert r["written"]["horizontal"] < 0.5 * r["untuned"]["horizontal"]
    assert r["first_order"]["horizontal"] < r["untuned"]["horizontal"]
    assert r["written"]["horizontal"] < r["first_order"]["horizontal"]
    assert 0.05 < result.slow_pole.delay_s < 0.25
    assert 0.15 < result.slow_pole.slow_fraction_horizontal < 0.5
    path = write_dynamics_config(result, tmp_path / "dynamics_config.yaml")
    text = path.read_text()
    assert text.startswith("# Direct-dynamics parameters fitted")
    cfg = from_dict(DirectDynamicsConfig, yaml.safe_load(text))
    assert cfg.delay_steps == round(result.written.delay_s / 0.1)
    assert cfg.slow_fraction_horizontal == pytest.approx(result.written.slow_fraction_horizontal)
    report = result.report()
    json.dumps(report)
    assert set(report["rmse_heldout"]) == {"untuned", "first_order", "slow_pole", "written"}
    # the odometry attitude gives the drag tilt: PX4 SIH's SIH_KDV / SIH_MASS = 1 / s
    tilt = result.info["tilt"]
    assert 0.8 < tilt["tilt_drag_1_s"] < 1.1 and cfg.tilt_drag_1_s == tilt["tilt_drag_1_s"]
    assert (
        tilt["heldout_tilt_rmse_deg"]["fitted"]
        < 0.5 * tilt["heldout_tilt_rmse_deg"]["acceleration_only"]
    )


@pytest.mark.integration
def test_fit_on_real_ulog_fixture_improves_rmse():
    result = tune_flight(read_ulog(ULOG_FIXTURE), SMALL)
    r = result.rmse_heldout
    assert r["written"]["horizontal"] < r["first_order"]["horizontal"] < r["untuned"]["horizontal"]


@pytest.mark.integration
def test_fit_from_embedded_quadrotor_improves_rmse():
    embedded = EmbeddedConfig(num_sequences=4, num_fit_sequences=2, duration_s=14.0, seed=2)
    cfg = TuningConfig(population=12, iterations=4, max_delay_s=0.2, window_s=10.0, burn_in_s=2.0)
    result = fit_from_embedded(embedded, cfg)
    r = result.rmse_heldout
    assert r["written"]["horizontal"] < r["untuned"]["horizontal"]
    assert r["slow_pole"]["horizontal"] < r["first_order"]["horizontal"]
    assert result.info["embedded"]["num_sequences"] == 4
    # sih_quadx: linear drag 1 N/(m/s), mass 1 kg
    assert result.config.tilt_drag_1_s == pytest.approx(1.0, rel=0.05)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="isr")
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench")
    register(sub, bench.add_subparsers(dest="target", required=True))
    return parser


@pytest.mark.integration
def test_cli_tune_dynamics_from_bag(tmp_path, capsys):
    out, rep, png = tmp_path / "dyn.yaml", tmp_path / "report.json", tmp_path / "fit.png"
    args = make_parser().parse_args(
        [
            "tune-dynamics", "--from", "bag", "--path", str(BAG_FIXTURE), "--out", str(out),
            "--json", str(rep), "--plot", str(png), "--population", "8", "--iterations", "2",
            "--max-delay", "0.2", "--window", "10", "--burn-in", "2",
        ]
    )  # fmt: skip
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "held-out RMSE" in text and "slow-pole" in text
    from_dict(DirectDynamicsConfig, yaml.safe_load(out.read_text()))
    report = json.loads(rep.read_text())
    assert report["rmse_heldout"]["written"]["vx"] > 0
    assert png.stat().st_size > 10_000


@pytest.mark.unit
def test_cli_bad_input_names_the_problem(tmp_path):
    parser = make_parser()
    args = parser.parse_args(["tune-dynamics", "--from", "bag"])
    with pytest.raises(ConfigError, match="--path is required"):
        args.func(args)
    args = parser.parse_args(["tune-dynamics", "--from", "ulog", "--path", str(tmp_path / "x")])
    with pytest.raises(FlightLogError, match="ULog not found"):
        args.func(args)
    args = parser.parse_args(
        ["tune-dynamics", "--from", "bag", "--path", str(BAG_FIXTURE), "--state", "groundtruth"]
    )
    with pytest.raises(ConfigError, match="not available for bags"):
        args.func(args)
    args = parser.parse_args(["tune-dynamics", "--from", "embedded", "--path", "x"])
    with pytest.raises(ConfigError, match="not used"):
        args.func(args)
    with pytest.raises(SystemExit):
        parser.parse_args(["tune-dynamics", "--from", "csv"])


@pytest.mark.unit
def test_bench_tuning_replay(capsys):
    args = make_parser().parse_args(
        ["bench", "tuning-replay", "--candidates", "16", "--windows", "2", "--seconds", "2"]
    )
    assert args.func(args) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["benchmark"] == "tuning-replay" and result["candidate_steps_per_s"] > 0
