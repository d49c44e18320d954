"""ROS test setup: real rclpy, DDS kept on this host, one ROS domain per test session.

The environment is set before rclpy initialises: ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a
ROS_DOMAIN_ID derived from the pid, so parallel sessions on one machine do not hear each other.
"""
import os
import time

import pytest

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_DOMAIN_ID"] = str(os.getpid() % 100 + 1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from clip2_ros.dds import apply_large_data_profile  # noqa: E402

apply_large_data_profile()  # before any participant of this process exists: big clouds get through (docs/dds.md)

import rclpy  # noqa: E402  (requirements/ros.txt: the ROS 2 wheels, or a ROS 2 install)


def pytest_collection_modifyitems(items):
    for item in items:
        if "test/ros" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.ros)


@pytest.fixture(scope="session")
def ros_context():
    """An initialised rclpy context for the whole session (shut down at the end)."""
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.try_shutdown(context=ctx)


def _wait_for(predicate, timeout: float = 20.0, interval: float = 0.02, on_tick=None) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; ``on_tick`` runs each poll."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if on_tick is not None:
            on_tick()
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


@pytest.fixture
def wait_for():
    """The polling helper: ``wait_for(predicate, timeout=20, on_tick=None) -> bool``."""
    return _wait_for


# ---------------------------------------------------------------------------------------------- model
@pytest.fixture(scope="session")
def node_model(trained_tiny_model):
    """Node parameter overrides (dotted name -> value) running the shared trained tiny model
    (test/conftest.py: a pointnet2-tiny-v1 encoder trained by our trainer on synthetic proxies
    against a tiny random CLIP), and its vocabulary."""
    m = trained_tiny_model
    params = {
        "model.checkpoint": str(m.checkpoint),
        "model.backend": "torch",
        "clip.model": m.clip.name,
        "clip.weights": str(m.clip.weights_file),
        "clip.model_config_file": str(m.clip.config_file),
        "clip.allow_random": True,
        "vocabulary": list(m.vocabulary),
    }
    return params, list(m.vocabulary)
