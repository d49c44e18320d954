"""Start the clip2 open-vocabulary LiDAR node, and rviz2 with the clip2 view.

    ros2 launch clip2_ros lidar_openvocab.launch.py
    ros2 launch clip2_ros lidar_openvocab.launch.py lidar_topic:=/velodyne_points rviz:=false \
        params_file:=/path/to/my.param.yaml use_sim_time:=true

Arguments: params_file, use_sim_time, lidar_topic (remaps the node's input/points), rviz,
rviz_config, log_level. Uses only the public launch / launch_ros API (and ament_index_python,
which launch_ros itself uses to find packages).

``rviz:=true`` (the default) on a machine without rviz2 (a car's computer, a container) starts the
node alone and says so, instead of failing after the node has started and leaving it running
without launch. The node is required: when it exits, launch shuts everything down.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, LogInfo, OpaqueFunction, Shutdown
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

PACKAGE = "clip2_ros"


def generate_launch_description():
    share = FindPackageShare(PACKAGE)
    params_file = LaunchConfiguration("params_file")
    use_sim_time = LaunchConfiguration("use_sim_time")
    lidar_topic = LaunchConfiguration("lidar_topic")
    rviz = LaunchConfiguration("rviz")
    rviz_config = LaunchConfiguration("rviz_config")
    log_level = LaunchConfiguration("log_level")
    sim_time = ParameterValue(use_sim_time, value_type=bool)

    arguments = [
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([share, "config", "lidar_openvocab.param.yaml"]),
            description="node parameters (validated against config/lidar_openvocab.schema.json)",
        ),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (bag replay)"),
        DeclareLaunchArgument(
            "lidar_topic", default_value="/LIDAR_TOP", description="PointCloud2 input (remaps input/points)"
        ),
        DeclareLaunchArgument("rviz", default_value="true", description="also start rviz2"),
        DeclareLaunchArgument(
            "rviz_config",
            default_value=PathJoinSubstitution([share, "rviz", "clip2.rviz"]),
            description="rviz2 display configuration",
        ),
        DeclareLaunchArgument("log_level", default_value="info", description="node log level"),
    ]
    node = Node(
        package=PACKAGE,
        executable="lidar_openvocab_node",
        name="lidar_openvocab_node",
        output="screen",
        emulate_tty=True,
        parameters=[params_file, {"use_sim_time": sim_time}],
        remappings=[("input/points", lidar_topic)],
        arguments=["--ros-args", "--log-level", log_level],
        on_exit=Shutdown(reason="lidar_openvocab_node exited"),
    )

    def viewer(context):
        """rviz2 when asked for and installed; a log line when asked for but missing."""
        if not IfCondition(rviz).evaluate(context):
            return []
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix

        try:
            get_package_prefix("rviz2")
        except (PackageNotFoundError, OSError):  # OSError: no AMENT_PREFIX_PATH at all
            return [LogInfo(msg="rviz2 is not installed: the node runs without it (pass rviz:=false to silence this)")]
        return [Node(
            package="rviz2",
            executable="rviz2",
            name="rviz2",
            output="screen",
            arguments=["-d", rviz_config],
            parameters=[{"use_sim_time": sim_time}],
            condition=IfCondition(rviz),
        )]

    return LaunchDescription([*arguments, node, OpaqueFunction(function=viewer)])
