"""ROS test setup: real rclpy, DDS kept on this host, one ROS domain per test session.

The environment is set before rclpy initialises: ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST and a
ROS_DOMAIN_ID derived from the pid, so parallel sessions on one machine do not hear each other.
"""
import os
import threading
import time

import pytest

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_DOMAIN_ID"] = str(os.getpid() % 100 + 1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

rclpy = pytest.importorskip("rclpy", reason="needs rclpy (ROS 2 wheels or a ROS 2 install)")


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


class Spinner:
    """A MultiThreadedExecutor spinning the given nodes in a background thread."""

    def __init__(self, context, *nodes, threads: int = 4):
        from rclpy.executors import MultiThreadedExecutor

        self.executor = MultiThreadedExecutor(num_threads=threads, context=context)
        for n in nodes:
            self.executor.add_node(n)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def stop(self):
        self.executor.shutdown(timeout_sec=5.0)
        self.thread.join(timeout=5.0)


@pytest.fixture
def wait_for():
    """The polling helper: ``wait_for(predicate, timeout=20, on_tick=None) -> bool``."""
    return _wait_for


@pytest.fixture
def spin(ros_context):
    """``spin(*nodes)`` starts an executor thread for the nodes; all are stopped at teardown."""
    started = []

    def start(*nodes, threads: int = 4):
        s = Spinner(ros_context, *nodes, threads=threads)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


# ---------------------------------------------------------------------------------------------- model
TINY_CLIP_NAME = "clip2-ros-test-tiny"
TINY_CLIP_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="session")
def tiny_model_files(tmp_path_factory):
    """A tiny open_clip architecture (random weights, saved as a file) and a pointnet2-tiny-v1
    checkpoint recording that CLIP — loaded by the node through the same paths as real weights.

    Returns a dict of node parameter overrides (model.*, clip.*).
    """
    import json

    import open_clip
    import torch
    from safetensors.torch import save_file

    from clip2_core.checkpoint import save_checkpoint
    from clip2_core.encoders import create_point_encoder
    from clip2_core.vlm import FrozenCLIP, VLMConfig

    root = tmp_path_factory.mktemp("ros_model")
    cfg_file = root / f"{TINY_CLIP_NAME}.json"
    cfg_file.write_text(json.dumps(TINY_CLIP_CFG))
    open_clip.add_model_config(cfg_file)
    torch.manual_seed(7)
    clip_model = open_clip.create_model(TINY_CLIP_NAME, pretrained=None)
    weights = root / "tiny_clip.safetensors"
    save_file({k: v.contiguous() for k, v in clip_model.state_dict().items()}, str(weights))
    clip = FrozenCLIP(VLMConfig(model=TINY_CLIP_NAME, pretrained=str(weights), model_config_file=str(cfg_file)))
    torch.manual_seed(0)
    encoder = create_point_encoder("pointnet2-tiny-v1").eval()
    ckpt = save_checkpoint(root / "encoder", encoder, encoder.config, clip=clip.identity)
    return {
        "model.checkpoint": str(ckpt),
        "model.backend": "torch",
        "clip.model": TINY_CLIP_NAME,
        "clip.weights": str(weights),
        "clip.model_config_file": str(cfg_file),
    }


@pytest.fixture(scope="module")
def node_model_parameters(tiny_model_files):
    """rclpy Parameters naming the test encoder and CLIP for a LidarOpenVocabNode."""
    from rclpy.parameter import Parameter

    return [Parameter(k, value=v) for k, v in tiny_model_files.items()]
