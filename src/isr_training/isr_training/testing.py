"""Shared sizes for tests and smoke runs of the training pipeline."""

TINY_PIPELINE: tuple[str, ...] = (
    "env.num_worlds=2",
    "env.drones_per_world=2",
    "data.num_worlds=2",
    "env.world.size_x_m=100",
    "env.world.size_y_m=100",
    "env.world.texture_res_m=1.0",
    "env.task.episode_length_s=6",
    "bc.epochs=3",
    "rl.ppo.num_steps=16",
    "rl.ppo.hidden_sizes=[32,32]",
    "rl.ppo.critic_warmup_iterations=1",
    "rl.val_num_worlds=1",
    "eval.num_worlds=2",
    "rl.checkpoint_every_iterations=1",
    "rl.keep_checkpoints=2",
    "progress=false",
)
"""``--set`` overrides of the ``quick`` preset for a pipeline run of seconds (2 worlds x 2 drones,
6 s episodes on 100 x 100 m worlds); add ``rl.ppo.total_timesteps`` and the evaluation cadence."""
