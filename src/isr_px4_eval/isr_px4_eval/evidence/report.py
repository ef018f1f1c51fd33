"""Self-contained HTML report of an experiment directory (``isr report EXPERIMENT_DIR``).

Reads what ``isr train`` writes in ``experiments/<name>/`` (``SUMMARY.json``,
``imitation_model/history.json``, ``rl_model/history.json``, ``stages/*.done``) and, when
present, evaluation results (JSON files with ``metrics`` and ``backend``, as ``isr eval --json``
writes), a parity report (JSON with ``checks`` and ``return_ratio``), bags (directories with
``metadata.yaml`` or ``*.mcap``) and videos (``*.mp4``) anywhere under the directory.

Sections: stages, learning curves, per-term rewards, evaluation metrics with the random and
scripted-expert baselines, parity, trajectory map, coverage heatmap (the fraction of recorded
episodes whose camera footprint covered each 2.5 m cell, computed from the recorded poses with the
task's own footprint geometry; from a bag, which holds no camera geometry, the time spent per 5 m
cell), videos. Plots are PNGs embedded as base64. Videos are embedded as base64
``data:video/mp4`` when they total at most ``embed_video_mb`` (default 25 MiB), else linked by a
path relative to the HTML file. A missing stage is named in the report's
"Missing" list and its sections say so; the rest renders. A JSON input that exists but cannot be
read (``SUMMARY.json``, a history, ``pipeline.json`` or any ``*.json`` under the directory: empty,
binary, cut short, invalid, or a list where an object is expected) is an error naming the file;
an unreadable bag or recording is named in the "Missing" list.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from isr_direct_dynamics.io_checks import (
    atomic_write_text,
    check_output_file,
    describe_exception,
    read_json_file,
)

STAGES = ("data", "imitation", "rl", "finalize")
METRIC_COLUMNS = (
    ("return", "return"),
    ("targets_found", "targets found"),
    ("targets_found_se", "+- s.e."),
    ("coverage", "coverage"),
    ("collisions", "collisions"),
    ("geofence_breaches", "geofence breaches"),
    ("safety_interventions", "safety interventions"),
    ("time_to_first_detection_s", "first detection s"),
    ("crash_rate", "crash rate"),
    ("success_rate", "success rate"),
)


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return (
        f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'
    )


def _figure(w: float = 7.0, h: float = 3.6) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(w, h))


def _load_json(p: Path, what: str = "JSON file", expect: type | None = dict) -> Any:
    """The JSON of ``p``, or None when it is absent.

    An unreadable file (empty, binary, cut short, invalid JSON, not of type ``expect``) is a
    ``ConfigError`` naming it: a damaged input is an error, not a silently missing section.
    """
    if not p.exists():
        return None
    return read_json_file(p, what, expect)


def _num(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:,.3f}" if abs(v) < 1e5 else f"{v:,.0f}"
    if v is None:
        return "-"
    return html.escape(str(v))


def _table(header: list[str], rows: Iterable[list[Any]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_num(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


class Report:
    """Collects the sections of one experiment's report."""

    def __init__(self, exp: Path, out: Path, embed_video_mb: float = 25.0) -> None:
        self.exp, self.out = exp, out
        self.embed_video_mb = embed_video_mb
        self.sections: list[tuple[str, str]] = []
        self.missing: list[str] = []
        self.summary = _load_json(exp / "SUMMARY.json", "experiment summary") or {}
        self._scanned: dict[Path, Any] | None = None

    def scanned_json(self) -> dict[Path, Any]:
        """Every ``*.json`` under the experiment, parsed (an unreadable one is an error)."""
        if self._scanned is None:
            self._scanned = {
                p: _load_json(p, "JSON file", None) for p in sorted(self.exp.rglob("*.json"))
            }
        return self._scanned

    def add(self, title: str, body: str) -> None:
        """One section."""
        self.sections.append((title, body))

    def miss(self, title: str, what: str) -> None:
        """A section whose input is missing."""
        self.missing.append(what)
        self.add(title, f'<p class="missing">missing: {html.escape(what)}</p>')

    # -- sections ------------------------------------------------------------------------------

    def stages(self) -> None:
        """Which training stages finished."""
        rows = []
        for s in STAGES:
            done = (self.exp / "stages" / f"{s}.done").exists()
            wall = (self.summary.get("stage_wall_s") or {}).get(s)
            rows.append([s, done, wall])
            if not done:
                self.missing.append(f"training stage '{s}' (no stages/{s}.done)")
        body = _table(["stage", "finished", "wall s"], rows)
        if self.summary:
            tr = self.summary.get("training", {})
            body += _table(["key", "value"], [[k, v] for k, v in tr.items()])
        pipe = _load_json(self.exp / "pipeline.json", "pipeline status")  # isr pipeline's
        if isinstance(pipe, dict) and isinstance(pipe.get("stages"), dict):
            prow = []
            for s, st in pipe["stages"].items():
                if not isinstance(st, dict):
                    continue
                why = st.get("error") or st.get("reason")
                prow.append([s, st.get("status"), st.get("wall_s"), why])
                if st.get("status") in ("failed", "skipped") and s != "report":
                    self.missing.append(f"pipeline stage '{s}' {st.get('status')}: {why}")
            body += "<p>isr pipeline stages (pipeline.json)</p>"
            body += _table(["pipeline stage", "status", "wall s", "error"], prow)
        self.add("Stages", body)

    def learning_curves(self) -> None:
        """Imitation losses and RL reward / evaluation score."""
        parts = []
        im = _load_json(self.exp / "imitation_model" / "history.json", "imitation history")
        if isinstance(im, dict) and im.get("train_loss"):
            fig, ax = _figure()
            ax.plot(im["train_loss"], label="train loss")
            if im.get("val_loss"):
                ax.plot(im["val_loss"], label="validation loss")
            ax.set_xlabel("epoch")
            ax.set_yscale("log")
            ax.set_title("imitation (behaviour cloning)")
            ax.legend()
            parts.append(_png(fig))
        else:
            self.missing.append("imitation history (imitation_model/history.json)")
        rl = _load_json(self.exp / "rl_model" / "history.json", "RL history")
        if isinstance(rl, dict) and rl.get("history"):
            hist = rl["history"]
            x = [h.get("global_step", i) for i, h in enumerate(hist)]
            fig, ax = _figure()
            ax.plot(
                x, [h.get("rollout/reward_per_step", np.nan) for h in hist], label="reward per step"
            )
            ax.set_xlabel("environment steps")
            ax.set_title("RL rollouts")
            ax2 = ax.twinx()
            ax2.plot(
                x,
                [h.get("time/sps", np.nan) for h in hist],
                color="grey",
                alpha=0.5,
                label="steps/s",
            )
            ax2.set_ylabel("env steps / s")
            ax.legend(loc="upper left")
            parts.append(_png(fig))
            ev = rl.get("evals") or []
            if ev:
                fig, ax = _figure()
                xs = [e.get("global_step", 0) for e in ev]
                for k in ("targets_found", "coverage", "score"):
                    if k in ev[0]:
                        ax.plot(xs, [e.get(k, np.nan) for e in ev], marker="o", label=k)
                base = rl.get("val_baselines") or {}
                for (name, m), style in zip(sorted(base.items()), ("--", ":"), strict=False):
                    ax.axhline(
                        m.get("targets_found", np.nan), ls=style, color="grey",
                        label=f"{name}: targets_found",
                    )  # fmt: skip
                ax.set_xlabel("environment steps")
                ax.set_title(f"RL validation worlds (best step {rl.get('best_step')})")
                ax.legend()
                parts.append(_png(fig))
        else:
            self.missing.append("RL history (rl_model/history.json)")
        if parts:
            self.add("Learning curves", "".join(parts))
        else:
            self.add("Learning curves", '<p class="missing">missing: no training history</p>')

    def _results(self) -> dict[str, dict[str, Any]]:
        """Policies' metrics: SUMMARY.json results, then evaluation JSONs (``<backend>``)."""
        res: dict[str, dict[str, Any]] = {}
        for name, m in (self.summary.get("results") or {}).items():
            if isinstance(m, dict):
                res[f"train-eval: {name}"] = m
        for p, d in self.scanned_json().items():
            if isinstance(d, dict) and isinstance(d.get("metrics"), dict) and "backend" in d:
                m = {k[: -len("_mean")]: v for k, v in d["metrics"].items() if k.endswith("_mean")}
                m.update({k: v for k, v in d["metrics"].items() if k.endswith("_rate")})
                res[f"eval {d.get('backend')}: {p.relative_to(self.exp)}"] = m
        return res

    def metrics(self) -> None:
        """Evaluation metrics table (baselines included) and per-term rewards."""
        res = self._results()
        if not res:
            self.miss("Evaluation", "evaluation results (SUMMARY.json results or an isr eval JSON)")
            self.miss("Per-term rewards", "per-term rewards (needs evaluation results)")
            return
        rows = [[name] + [m.get(k) for k, _ in METRIC_COLUMNS] for name, m in res.items()]
        note = ""
        if not any("random" in n for n in res) or not any("expert" in n for n in res):
            note = '<p class="missing">baselines: random or scripted expert results not found</p>'
            self.missing.append("random/expert baselines")
        if any("targets_found_se" in m for m in res.values()):
            note += (
                "<p>+- s.e.: standard error of the mean targets found over the evaluation's "
                "episodes; a difference smaller than about twice it is not resolved by these "
                "worlds.</p>"
            )
        self.add("Evaluation", _table(["policy"] + [c for _, c in METRIC_COLUMNS], rows) + note)
        terms = sorted({k for m in res.values() for k in m if k.startswith("r/")})
        if not terms:
            self.miss("Per-term rewards", "per-term reward sums (r/<term>) in the results")
            return
        fig, ax = _figure(8, 3.8)
        width = 0.8 / len(res)
        for j, (name, m) in enumerate(res.items()):
            ax.bar(
                np.arange(len(terms)) + j * width,
                [float(m.get(t, np.nan) or 0.0) for t in terms],
                width,
                label=name.replace("train-eval: ", ""),
            )
        ax.set_xticks(np.arange(len(terms)) + 0.4 - width / 2)
        ax.set_xticklabels([t[2:] for t in terms], rotation=20)
        ax.set_ylabel("episode sum (unweighted)")
        ax.legend(fontsize=7)
        self.add("Per-term rewards", _png(fig))

    def parity(self) -> None:
        """Parity checks table."""
        for p, d in self.scanned_json().items():
            if isinstance(d, dict) and "checks" in d and "return_ratio" in d:
                rows = [
                    [
                        c.get("name"),
                        c.get("value"),
                        f"{c.get('op', '')} {c.get('limit', '')}",
                        c.get("passed"),
                    ]
                    for c in d["checks"]
                ]
                where = html.escape(str(p.relative_to(self.exp)))
                body = f"<p>{where}: return ratio {_num(d['return_ratio'])}, "
                body += f"passed: {_num(d.get('passed'))}</p>"
                body += _table(["check", "value", "limit", "passed"], rows)
                self.add("Parity (direct vs full fidelity)", body)
                return
        self.miss(
            "Parity (direct vs full fidelity)",
            "parity report (a JSON with checks and return_ratio)",
        )

    def _trajectories(self) -> tuple[list[np.ndarray], str] | None:
        """Trajectories (xy per drone/episode) from the first bag or eval recording found."""
        bags = sorted(
            {p.parent for p in self.exp.rglob("metadata.yaml")} | set(self.exp.rglob("*.mcap"))
        )
        for b in bags:
            try:
                from isr_px4_eval.evidence.bags import BagSource
                from isr_px4_eval.evidence.recording import T_ODOM
                from isr_sim_bridge.rosmsg import odometry_to_numpy

                src = BagSource(b)
                by: dict[str, list[np.ndarray]] = {}
                for topic, _, msg in src.messages(src.topics_of_type(T_ODOM)):
                    by.setdefault(topic, []).append(odometry_to_numpy(msg)["pos_enu_m"][:2])
                if by:
                    return [np.array(v) for v in by.values()], str(b.relative_to(self.exp))
            except Exception as exc:  # noqa: BLE001 - name it, try the next source
                self.missing.append(f"unreadable bag {b.relative_to(self.exp)}: {exc}")
                continue
        for p in sorted(self.exp.rglob("*.npz")):
            try:
                with np.load(p, allow_pickle=False) as z:
                    pos, length = z["pos_enu_m"], z["length"]
                return [pos[e, : int(length[e]), :2] for e in range(len(length))], str(
                    p.relative_to(self.exp)
                )
            except Exception as exc:  # noqa: BLE001 - zipfile/numpy/OS errors: name it, go on
                why = describe_exception(exc)
                self.missing.append(f"unreadable recording {p.relative_to(self.exp)}: {why}")
                continue
        return None

    def trajectories(self) -> None:
        """Trajectory map and coverage heatmap."""
        got = self._trajectories()
        if got is None:
            self.miss(
                "Trajectory map", "recorded trajectories (a bag or an isr eval --record-dir npz)"
            )
            self.miss("Coverage heatmap", "recorded trajectories")
            return
        trajs, src = got
        fig, ax = _figure(5.5, 5.5)
        for tr in trajs[:64]:
            if len(tr):
                ax.plot(tr[:, 0], tr[:, 1], lw=1)
                ax.plot(tr[-1, 0], tr[-1, 1], "o", ms=3)
        ax.set_aspect("equal")
        ax.set_xlabel("east m")
        ax.set_ylabel("north m")
        ax.set_title(f"trajectories ({len(trajs)}) from {src}", fontsize=9)
        self.add("Trajectory map", _png(fig))
        fp = self._footprint_coverage()
        if fp is not None:
            frac, extent, n_ep, src = fp
            fig, ax = _figure(5.5, 5.0)
            im = ax.imshow(frac, origin="lower", extent=extent, cmap="magma", vmin=0.0, vmax=1.0)
            fig.colorbar(im, ax=ax, label="fraction of episodes")
            ax.set_xlabel("east m")
            ax.set_ylabel("north m")
            ax.set_title(
                f"coverage heatmap: camera footprint, {n_ep} episodes of {src}\n"
                f"mean cell coverage {frac.mean():.1%}",
                fontsize=9,
            )
            self.add("Coverage heatmap", _png(fig))
            return
        allp = np.concatenate([t for t in trajs if len(t)]) if trajs else np.zeros((0, 2))
        fig, ax = _figure(5.5, 5.0)
        if len(allp):
            lo, hi = allp.min(0) - 5, allp.max(0) + 5
            bins = [max(2, int((hi[i] - lo[i]) / 5.0)) for i in range(2)]
            h, xe, ye = np.histogram2d(
                allp[:, 0], allp[:, 1], bins=bins, range=[[lo[0], hi[0]], [lo[1], hi[1]]]
            )
            im = ax.imshow(h.T, origin="lower", extent=(xe[0], xe[-1], ye[0], ye[-1]), cmap="magma")
            fig.colorbar(im, ax=ax, label="steps in cell")
        ax.set_title(
            "coverage heatmap: time spent per 5 m cell\n(no recording with camera geometry found)",
            fontsize=9,
        )
        self.add("Coverage heatmap", _png(fig))

    def _footprint_coverage(
        self, cell_m: float = 2.5
    ) -> tuple[np.ndarray, tuple[float, float, float, float], int, str] | None:
        """Per-cell fraction of episodes whose camera footprint covered the cell (eval npz)."""
        import torch

        from isr_training.task.coverage import (
            camera_corner_rays_body,
            cell_centres,
            cells_in_footprint,
            footprint_corners,
        )

        files = sorted(self.exp.rglob("*.npz"), key=lambda p: (p.stem != "embedded", str(p)))
        for p in files:
            try:
                z = np.load(p, allow_pickle=False)
                fov = z["camera_fov_pitch_deg"]
                rng = float(z["coverage_range_m"])
                x0, y0, sx, sy = (float(v) for v in z["area_xywh_m"])
                pos_all, quat_all, length = z["pos_enu_m"], z["quat_wxyz"], z["length"]
            except (KeyError, OSError, ValueError):
                continue
            g = max(2, int(round(max(sx, sy) / cell_m)))
            centres = cell_centres(x0, y0, sx, sy, g, "cpu")
            rays = camera_corner_rays_body(float(fov[0]), float(fov[1]), float(fov[2]))
            seen_sum = torch.zeros(g * g)
            n_ep = 0
            for e in range(len(length)):
                n = int(length[e])
                if n == 0:
                    continue
                pos = torch.from_numpy(pos_all[e, :n]).float()[None]
                quat = torch.from_numpy(quat_all[e, :n]).float()[None]
                corners = footprint_corners(pos, quat, rays, rng)
                seen = torch.zeros(g * g, dtype=torch.bool)
                for s in range(0, n, 128):  # chunks bound the (steps x cells) memory
                    sl = slice(s, s + 128)
                    seen |= cells_in_footprint(corners[:, sl], pos[:, sl], centres, rng)[0].any(0)
                seen_sum += seen.float()
                n_ep += 1
            if n_ep == 0:
                continue
            frac = (seen_sum / n_ep).reshape(g, g).numpy()
            return frac, (x0, x0 + sx, y0, y0 + sy), n_ep, str(p.relative_to(self.exp))
        return None

    def videos(self) -> None:
        """Embedded (or linked) mp4 files."""
        vids = sorted(self.exp.rglob("*.mp4"))
        if not vids:
            self.miss("Videos", "videos (*.mp4, from isr video)")
            return
        total = sum(v.stat().st_size for v in vids) / 2**20
        embed = total <= self.embed_video_mb
        parts = [
            f"<p>{len(vids)} video(s), {total:.1f} MiB, {'embedded' if embed else 'linked'}</p>"
        ]
        for v in vids:
            if embed:
                src = "data:video/mp4;base64," + base64.b64encode(v.read_bytes()).decode()
            else:
                src = html.escape(os.path.relpath(v, self.out.parent))
            parts.append(
                f'<figure><video controls muted width=720 src="{src}"></video>'
                f"<figcaption>{html.escape(str(v.relative_to(self.exp)))}</figcaption></figure>"
            )
        self.add("Videos", "".join(parts))

    def html(self) -> str:
        """The page."""
        name = self.summary.get("experiment") or self.exp.name
        miss = (
            "<ul>" + "".join(f"<li>{html.escape(m)}</li>" for m in self.missing) + "</ul>"
            if self.missing
            else "<p>nothing: every stage and result was found</p>"
        )
        toc = "".join(
            f'<li><a href="#s{i}">{html.escape(t)}</a></li>'
            for i, (t, _) in enumerate(self.sections)
        )
        body = "".join(
            f'<h2 id="s{i}">{html.escape(t)}</h2>{b}' for i, (t, b) in enumerate(self.sections)
        )
        style = (
            "body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;"
            "margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
            "th{background:#eee}td:first-child{text-align:left}.missing{color:#b00}img{max-width:100%}"
        )
        return (
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>ISR report: {html.escape(name)}</title><style>{style}</style></head><body>"
            f"<h1>ISR experiment report: {html.escape(name)}</h1>"
            f"<p>{html.escape(str(self.exp))}</p><h2>Missing</h2>{miss}<ul>{toc}</ul>{body}"
            "</body></html>"
        )


def make_report(
    exp_dir: str | Path, out: str | Path | None = None, embed_video_mb: float = 25.0
) -> tuple[Path, list[str]]:
    """Write the report; returns (HTML path, what was missing)."""
    exp = Path(exp_dir)
    if not exp.is_dir():
        raise FileNotFoundError(f"experiment directory not found: {exp}")
    out_p = Path(out) if out else exp / "report.html"
    check_output_file(out_p, "-o/--out" if out else "report")
    rep = Report(exp, out_p, embed_video_mb)
    rep.stages()
    rep.learning_curves()
    rep.metrics()
    rep.parity()
    rep.trajectories()
    rep.videos()
    atomic_write_text(out_p, rep.html())
    return out_p, rep.missing
