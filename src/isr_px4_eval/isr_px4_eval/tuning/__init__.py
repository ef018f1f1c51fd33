"""Dynamics tuning: fit the direct (fast-mode) dynamics to PX4 flights or the embedded quadrotor.

What is fitted: the parameters of :class:`~isr_direct_dynamics.DirectDynamicsConfig` that shape
the velocity response: fast time constants (horizontal, vertical, yaw rate), the transport delay,
the slow parallel pole (fraction and time constant, horizontal and vertical) that captures
PX4's "fast rise to ~80 % then slow creep through the velocity integrator" (README of the real
flight, quirk 3), and the vertical-to-horizontal coupling (horizontal acceleration scaled by
``1 + k a_z / g``, fitted together with the slow pole). Velocity limits are not fitted: in the
direct model they are the action scaling (a task choice), and no flight here saturates them
(commands <= 6 m/s, PX4's ``MPC_XY_VEL_MAX`` is 12 m/s).

How: **open-loop replay, batched.** The commanded velocity / yaw-rate sequence of a
:class:`~isr_px4_eval.px4.logs.FlightLog` is cut into windows (``window_s``, default 15 s); each
window's model state starts at the measured velocity, ``burn_in_s`` before the first sample that
is scored (so the slow pole's and the yaw rate's unmeasured states settle), and the model then
runs open loop on the commands only (never on measured velocities: no one-step prediction). The
score is the velocity (and yaw-rate) mean squared error. Every window is one *world* and every
candidate parameter set one *drone* of a single :class:`~isr_direct_dynamics.DirectDynamics`
with per-drone :class:`~isr_direct_dynamics.DirectParams`, so thousands of candidates x all
windows run as one batched rollout. The transport delay is applied by indexing each candidate's
command history (identical to ``delay_steps``, but the history before a window comes from the
log instead of zeros).

Search: **cross-entropy method (CEM) per delay, separable per axis group.** Delays 0 ..
``max_delay_s`` (every grid step) are searched exhaustively; for each delay a Gaussian population
(log time constants, fractions) is sampled, and because the axis groups barely interact in the
direct model (horizontal params only change vx/vy, vertical only vz, yaw only the yaw rate; the
one link is the vertical coupling, a horizontal parameter driven by the candidate's own vertical
response, which converges first), each group keeps its own elites by its own error and its own
full covariance (the fast time constant,
the slow share and the slow time constant are strongly correlated; a diagonal CEM crawls along
that valley). The distribution's mean is always re-evaluated and the best candidate kept, so the
result never gets worse. The delay with the lowest weighted total error wins. No gradients: the
rollout is the model's own code (what training runs), and the integer delay is searched
exhaustively. On synthetic data from the direct model (known parameters, noise) this recovers
every parameter within ~1 % (``test_tuning.py``).

Split of a single flight (:func:`tune_flight`): by default the first half of the valid time is
held out and the second half fitted. In the probe flights that holds out the scripted steps and
fits the random segment (fit on rich excitation, validate on step responses);
``holdout="last"`` fits the beginning instead.

Outputs: :class:`TuningResult` (parameters, per-axis RMSE on the fit part and on a held-out part
for the untuned default config, a plain first-order fit (slow pole off) and the slow-pole fit) and
a ``dynamics_config.yaml`` loadable with ``from_dict(DirectDynamicsConfig, yaml.safe_load(...))``
(:func:`write_dynamics_config`). ``delay_steps`` in that file counts control steps of the
training's control period (``control_dt_s``, default 0.1 s), so the delay is rounded to it.

Modules: :mod:`~isr_px4_eval.tuning.replay` (parameters, settings, windows, the batched replay),
:mod:`~isr_px4_eval.tuning.search` (CEM), :mod:`~isr_px4_eval.tuning.fit` (a flight's tuning and
the tilt drag), :mod:`~isr_px4_eval.tuning.embedded` (the embedded model as a source),
:mod:`~isr_px4_eval.tuning.outputs` (config file and plot).
"""
