"""Fast-mode training: ``ros2 launch isr_training fast_train.launch.py``.

Arguments: ``num_drones`` (drones per world, 0 = the config's), ``config`` (training config
YAML, "" = none), ``preset`` (quick | standard), ``record`` (true: ``ros2 bag record -s mcap`` of
the progress topic and the live view into ``bags/fast_train``), ``view`` (true: the trainer
publishes a throttled live view of the first training world's drones (``/drone_<i>/odom``,
``/tf``, ``/clock``) and ``sim_bridge_node`` renders their camera views and detections from it:
watch training in RViz or Foxglove; the training loop itself never waits for a topic).

The launch ends when the trainer exits (``OnProcessExit`` -> ``Shutdown``), which also stops and
closes the recording.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, ExecuteProcess, RegisterEventHandler, Shutdown
from launch.conditions import IfCondition
from launch.event_handlers import OnProcessExit
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchDescription

PROGRESS_TOPIC = "/isr/training_progress"
VIEW_TOPICS = [f"/drone_{i}/{t}" for i in range(4) for t in ("odom", "detections")] + [
    "/clock",
    "/drone_0/camera/image_raw",
    "/drone_0/camera/camera_info",
    "/tf",
]


def generate_launch_description():
    """The launch description (see the module docstring)."""
    params = os.path.join(get_package_share_directory("isr_training"), "config", "trainer.yaml")
    trainer = Node(
        package="isr_training",
        executable="trainer_node",
        name="trainer",
        output="screen",
        parameters=[
            params,
            {
                "num_drones": ParameterValue(LaunchConfiguration("num_drones"), value_type=int),
                "config": ParameterValue(LaunchConfiguration("config"), value_type=str),
                "preset": ParameterValue(LaunchConfiguration("preset"), value_type=str),
                "progress_topic": PROGRESS_TOPIC,
                "view_drones": ParameterValue(
                    PythonExpression(["4 if '", LaunchConfiguration("view"), "' == 'true' else 0"]),
                    value_type=int,
                ),
            },
        ],
    )
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "num_drones", default_value="0", description="drones per world (0 = the config's)"
            ),
            DeclareLaunchArgument(
                "config",
                default_value="",
                description="training config YAML (as isr train --config)",
            ),
            DeclareLaunchArgument(
                "preset", default_value="quick", description="training preset: quick or standard"
            ),
            DeclareLaunchArgument(
                "view",
                default_value="true",
                description="live view of 4 training drones (odometry, tf, camera via sim_bridge)",
            ),
            DeclareLaunchArgument(
                "record",
                default_value="false",
                description="record the progress topic with ros2 bag (mcap)",
            ),
            trainer,
            Node(
                package="isr_sim_bridge",
                executable="sim_bridge_node",
                name="sim_bridge",
                output="screen",
                parameters=[{"num_drones": 4, "world_seed": 0, "resolution": "training"}],
                condition=IfCondition(LaunchConfiguration("view")),
            ),
            RegisterEventHandler(
                OnProcessExit(target_action=trainer, on_exit=[Shutdown(reason="training finished")])
            ),
            ExecuteProcess(
                cmd=[
                    "ros2",
                    "bag",
                    "record",
                    "-s",
                    "mcap",
                    "-o",
                    "bags/fast_train",
                    PROGRESS_TOPIC,
                    *VIEW_TOPICS,
                ],
                output="screen",
                condition=IfCondition(LaunchConfiguration("record")),
            ),
        ]
    )
