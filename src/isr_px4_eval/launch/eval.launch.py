"""Full-fidelity evaluation: ``ros2 launch isr_px4_eval eval.launch.py``.

Arguments:
- ``backend``: ``px4`` (the offboard client over uXRCE-DDS, PX4 SITL or hardware), ``direct``
  (the design card's topic graph: ``direct_dynamics_node`` simulates the vehicle,
  ``vehicle:=direct`` or ``quadrotor``, and the evaluation node flies it over
  ``/drone_0/cmd_vel`` and ``/drone_0/odom`` with the same pilot as on PX4) or ``embedded`` (the
  trained policy on the embedded quadrotor + PX4-like cascade, in-process, published live with
  simulated time).
- ``vehicle``: the model of ``direct_dynamics_node`` with ``backend:=direct``.
- ``policy``: the trained policy file or experiment directory (px4 backend: flown through the
  offboard client by ``PolicyPilot``, the ISR task run on PX4's odometry; also ``hover`` |
  ``box``, scripted patterns to check the link).
- ``px4_release``: topic-name preset (1.15, 1.16, 1.17, 1.18, main).
- ``namespace``: PX4 vehicle namespace (``px4_1`` -> ``/px4_1/fmu/...``), "" for none.
- ``emulator``: true starts ``px4_emulator_node`` (rehearsal without PX4; px4 backend only).
- ``camera``: true starts ``sim_bridge_node`` for drone 0 on the world of the first seed
  (camera and detections from the drone's world-frame odometry).
- ``record``: true starts ``ros2 bag record -s mcap`` on the evaluation topics (PX4 topics of
  the release/namespace, odometry, camera, detections, episode metrics) into ``bag_dir``.
- ``seeds``: world seeds (``"100000"``, ``"1,5-7"``); px4: the first one is the pilot's world.
- ``output_dir``: where the node writes ``<backend>_result.json``.
- ``episode_s``: px4 backend, a shorter task episode (0 = the task's 120 s).

Every argument reaches the node as a string (``ParameterValue(..., value_type=str)``: ``1.15``
or ``100000`` would otherwise become a double or an integer). The launch ends when the
evaluation node exits (``OnProcessExit`` -> ``Shutdown``), which also stops and closes the
recording.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import (
    DeclareLaunchArgument,
    ExecuteProcess,
    OpaqueFunction,
    RegisterEventHandler,
    Shutdown,
)
from launch.conditions import IfCondition
from launch.event_handlers import OnProcessExit
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from launch import LaunchDescription

METRICS_TOPIC = "/isr/episode_metrics"
DRONE_TOPICS = [
    "/clock",
    "/tf",
    "/isr/metadata",
    "/isr/step_metrics",
    "/isr/rendered",
    "/drone_0/odom",
    "/drone_0/cmd_vel",
    "/drone_0/camera/image_raw",
    "/drone_0/camera/camera_info",
    "/drone_0/camera/detections",
    "/drone_0/detections",
]


def _record(context):
    """The ros2 bag record action, with topic names of the chosen release and namespace."""
    from isr_px4_eval.px4.topics import px4_topic_names

    if LaunchConfiguration("record").perform(context).lower() not in ("true", "1"):
        return []
    topics = px4_topic_names(
        LaunchConfiguration("px4_release").perform(context),
        LaunchConfiguration("namespace").perform(context),
    ).evaluation_topics()
    bag_dir = LaunchConfiguration("bag_dir").perform(context)
    return [
        ExecuteProcess(
            cmd=[
                "ros2",
                "bag",
                "record",
                "-s",
                "mcap",
                "-o",
                bag_dir,
                METRICS_TOPIC,
                *DRONE_TOPICS,
                *topics,
            ],
            output="screen",
        )
    ]


def _str(name):
    """Launch argument ``name`` as a string parameter (never re-typed by YAML)."""
    return ParameterValue(LaunchConfiguration(name), value_type=str)


def generate_launch_description():
    """The launch description (see the module docstring)."""
    share = get_package_share_directory("isr_px4_eval")
    eval_params = os.path.join(share, "config", "px4_eval.yaml")
    emulator_params = os.path.join(share, "config", "px4_emulator.yaml")
    backend = LaunchConfiguration("backend")
    eval_node = Node(
        package="isr_px4_eval",
        executable="px4_eval_node",
        name="px4_eval",
        output="screen",
        parameters=[
            eval_params,
            {
                "backend": _str("backend"),
                "policy": _str("policy"),
                "px4_release": _str("px4_release"),
                "namespace": _str("namespace"),
                "seeds": _str("seeds"),
                "output_dir": _str("output_dir"),
                "episode_s": ParameterValue(LaunchConfiguration("episode_s"), value_type=float),
                "metrics_topic": METRICS_TOPIC,
            },
        ],
    )
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "backend",
                default_value="px4",
                choices=["px4", "direct", "embedded"],
                description="px4 (offboard over uXRCE-DDS), direct (topic graph) or embedded",
            ),
            DeclareLaunchArgument(
                "policy",
                default_value="box",
                description="policy file or experiment dir (px4: or hover|box)",
            ),
            DeclareLaunchArgument(
                "px4_release",
                default_value="1.15",
                description="topic-name preset: 1.15 1.16 1.17 1.18 main",
            ),
            DeclareLaunchArgument(
                "namespace", default_value="", description="PX4 namespace, e.g. px4_1"
            ),
            DeclareLaunchArgument(
                "emulator",
                default_value="false",
                description="start the PX4 emulator instead of real PX4",
            ),
            DeclareLaunchArgument(
                "camera",
                default_value="false",
                description="start the sim bridge camera for drone 0",
            ),
            DeclareLaunchArgument(
                "record",
                default_value="false",
                description="ros2 bag record -s mcap the evaluation topics",
            ),
            DeclareLaunchArgument(
                "bag_dir", default_value="bags/eval", description="output folder of the recording"
            ),
            DeclareLaunchArgument(
                "seeds", default_value="0", description="world seeds, e.g. 100000 or 1,5-7"
            ),
            DeclareLaunchArgument(
                "episode_s",
                default_value="0.0",
                description="px4: shorter task episode in seconds (0 = the task's)",
            ),
            DeclareLaunchArgument(
                "output_dir",
                default_value="reports/px4_eval",
                description="folder of the result JSON",
            ),
            eval_node,
            RegisterEventHandler(
                OnProcessExit(
                    target_action=eval_node,
                    on_exit=[Shutdown(reason="evaluation finished")],
                )
            ),
            Node(
                package="isr_px4_eval",
                executable="px4_emulator_node",
                name="px4_emulator",
                output="screen",
                parameters=[
                    emulator_params,
                    {
                        "px4_release": _str("px4_release"),
                        # one namespace as a one-element string array ("" = no namespace)
                        "namespaces": ParameterValue(
                            PythonExpression(["['", LaunchConfiguration("namespace"), "']"]),
                            value_type=list[str],
                        ),
                    },
                ],
                condition=IfCondition(
                    PythonExpression(
                        [
                            "'",
                            LaunchConfiguration("emulator"),
                            "' == 'true' and '",
                            backend,
                            "' == 'px4'",
                        ]
                    )
                ),
            ),
            DeclareLaunchArgument(
                "vehicle",
                default_value="direct",
                choices=["direct", "quadrotor"],
                description="direct_dynamics_node's model (backend:=direct)",
            ),
            Node(
                package="isr_direct_dynamics",
                executable="direct_dynamics_node",
                name="direct_dynamics",
                output="screen",
                parameters=[
                    {
                        "num_drones": 1,
                        "model": _str("vehicle"),
                        "spawn_altitude_m": 25.0,
                        "control_dt_s": 0.02,
                    }
                ],
                condition=IfCondition(PythonExpression(["'", backend, "' == 'direct'"])),
            ),
            Node(
                package="isr_sim_bridge",
                executable="sim_bridge_node",
                name="sim_bridge",
                output="screen",
                parameters=[
                    {
                        "num_drones": 1,
                        # its boxes next to its images; /drone_0/detections stays the policy's
                        "detections_topic": "/drone_{i}/camera/detections",
                        # the world of the evaluation: the first of ``seeds`` ("100000-100019")
                        "world_seed": ParameterValue(
                            PythonExpression(
                                [
                                    "int('",
                                    LaunchConfiguration("seeds"),
                                    "'.split(',')[0].split('-')[0])",
                                ]
                            ),
                            value_type=int,
                        ),
                    }
                ],
                condition=IfCondition(LaunchConfiguration("camera")),
            ),
            OpaqueFunction(function=_record),
        ]
    )
