"""ament_python package for clip2 (also pip-installable without ROS).

Installs both Python packages (clip2_core, clip2_ros), the ament index marker, package.xml,
and the launch/config/rviz files into share/clip2_ros so that
``colcon build`` + ``ros2 launch clip2_ros lidar_openvocab.launch.py`` work on a ROS 2 install.
"""
from glob import glob

from setuptools import find_packages, setup

package_name = "clip2_ros"


def _share(subdir: str, pattern: str):
    return (f"share/{package_name}/{subdir}", sorted(glob(f"{subdir}/{pattern}")))


setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(include=["clip2_core", "clip2_core.*", "clip2_ros", "clip2_ros.*"]),
    package_data={"clip2_core": ["encoders/model_configs/*.json", "data/README.md", "data/kitti_000008/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
        _share("launch", "*.launch.py"),
        _share("config", "*.yaml"),
        _share("config", "*.json"),
        _share("config", "*.xml"),  # Fast DDS profiles (clip2_ros.dds, docs/dds.md)
        _share("rviz", "*.rviz"),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="clip2 developers",
    maintainer_email="clip2-dev@users.noreply.github.com",
    description="Open-vocabulary LiDAR perception (CLIP2) for ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "clip2 = clip2_core.cli:main",
            "lidar_openvocab_node = clip2_ros.node:main",
        ],
    },
)
