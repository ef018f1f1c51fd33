"""The whole pipeline: ``ros2 launch launch/isr_pipeline.launch.py stage:=train|eval``.

``stage:=train`` includes ``isr_training/fast_train.launch.py`` (fast mode, no PX4);
``stage:=eval`` includes ``isr_px4_eval/eval.launch.py`` (full fidelity: PX4 or the embedded
model). The stages run one after the other by design (evaluation needs the trained policy), so
this file starts one of them; every other argument is forwarded.
"""

from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription


def _is(stage):
    return IfCondition(PythonExpression(["'", LaunchConfiguration("stage"), f"' == '{stage}'"]))


def generate_launch_description():
    lc = LaunchConfiguration
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "stage",
                default_value="train",
                choices=["train", "eval"],
                description="train (fast mode) or eval (full fidelity)",
            ),
            DeclareLaunchArgument("num_drones", default_value="0"),
            DeclareLaunchArgument("config", default_value=""),
            DeclareLaunchArgument("preset", default_value="quick"),
            DeclareLaunchArgument("record", default_value="false"),
            DeclareLaunchArgument("backend", default_value="embedded"),
            DeclareLaunchArgument("policy", default_value="box"),
            DeclareLaunchArgument("px4_release", default_value="1.15"),
            DeclareLaunchArgument("namespace", default_value=""),
            DeclareLaunchArgument("emulator", default_value="false"),
            IncludeLaunchDescription(
                PythonLaunchDescriptionSource(
                    PathJoinSubstitution(
                        [FindPackageShare("isr_training"), "launch", "fast_train.launch.py"]
                    )
                ),
                launch_arguments={
                    "num_drones": lc("num_drones"),
                    "config": lc("config"),
                    "preset": lc("preset"),
                    "record": lc("record"),
                }.items(),
                condition=_is("train"),
            ),
            IncludeLaunchDescription(
                PythonLaunchDescriptionSource(
                    PathJoinSubstitution(
                        [FindPackageShare("isr_px4_eval"), "launch", "eval.launch.py"]
                    )
                ),
                launch_arguments={
                    "backend": lc("backend"),
                    "policy": lc("policy"),
                    "px4_release": lc("px4_release"),
                    "namespace": lc("namespace"),
                    "emulator": lc("emulator"),
                    "record": lc("record"),
                }.items(),
                condition=_is("eval"),
            ),
        ]
    )
