"""The node as a process (what the console script / launch file runs): start-up errors and Ctrl-C."""
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from clip2_ros import params as P


def _write_params(path, overrides):
    nested = P.load_param_file(P.default_param_file())
    flat = P.flatten(nested)
    flat.update(overrides)
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": P.unflatten(flat)}}))
    return path


def _start(params_file, **env):
    return subprocess.Popen(
        [sys.executable, "-m", "clip2_ros.node", "--ros-args", "--params-file", str(params_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, RCUTILS_LOGGING_BUFFERED_STREAM="0", PYTHONUNBUFFERED="1", **env),
    )


def _read_until_ready(proc, timeout=90.0):
    """The node's log lines up to and including "ready" (or up to EOF / the timeout)."""
    lines = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # readline returns at each log line or at EOF
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "]: ready" in line:
            break
    return lines


def test_executor_choice():
    from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor

    from clip2_ros.node import DEFAULT_EXECUTOR, make_executor

    import rclpy

    assert DEFAULT_EXECUTOR == "single"  # measured: BENCHMARKS.md, issue 14
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        for kind, cls in (("single", SingleThreadedExecutor), ("multi", MultiThreadedExecutor)):
            ex = make_executor(kind, context=ctx)
            assert isinstance(ex, cls)
            ex.shutdown()
        with pytest.raises(ValueError, match="CLIP2_EXECUTOR"):
            make_executor("threads", context=ctx)
    finally:
        rclpy.shutdown(context=ctx)


def test_unknown_executor_exits_with_a_clear_message(tmp_path):
    proc = _start(_write_params(tmp_path / "p.yaml", {}), CLIP2_EXECUTOR="threads")
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    assert "CLIP2_EXECUTOR must be one of single|multi" in out


def test_bad_parameters_exit_with_a_clear_message(tmp_path):
    params = _write_params(tmp_path / "bad.yaml", {"model.backend": "cuda", "score_threshold": 2.0})
    proc = _start(params)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    assert "parameter 'model.backend'" in out and "parameter 'score_threshold'" in out


def test_ctrl_c_shuts_down_cleanly(tmp_path, node_model):
    overrides = dict(node_model[0])
    overrides.update({"cameras.enabled": False, "lidar.topic": "/clip2_test/process/points"})
    proc = _start(_write_params(tmp_path / "ok.yaml", overrides))
    lines = []
    try:
        lines = _read_until_ready(proc)
        assert any("listening on /clip2_test/process/points" in x for x in lines), "".join(lines)
        assert "]: ready" in lines[-1], "".join(lines)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, "".join(lines) + rest
    assert "Traceback" not in rest, rest


def test_random_clip_is_refused_at_start_up(tmp_path, node_model):
    """The shared test model's CLIP is random: without clip.allow_random the node does not start."""
    overrides = dict(node_model[0])
    overrides.update({"cameras.enabled": False, "clip.allow_random": False})
    proc = _start(_write_params(tmp_path / "random.yaml", overrides))
    out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 1, out
    fatal = [ln for ln in out.splitlines() if "cannot start" in ln]
    assert len(fatal) == 1 and "RANDOM weights" in fatal[0] and "clip.allow_random: true" in fatal[0], out
    assert "Traceback" not in out


@pytest.mark.parametrize("signals", [("SIGINT", "SIGINT"), ("SIGTERM",)], ids=["double-sigint", "sigterm"])
def test_signals_with_sweeps_in_flight_stop_cleanly(signals, tmp_path, node_model, ros_context):
    """What ``ros2 launch`` does on a terminal Ctrl-C: the whole process group gets SIGINT and launch
    forwards one more. With sweeps arriving, the node exits 0 with no traceback and no warning
    about a publisher whose context is gone; SIGTERM likewise."""
    import threading

    import numpy as np
    import rclpy

    from clip2_core.datasets.synth.sweep import make_sweep
    from clip2_ros.conversions import array_to_pointcloud2, seconds_to_stamp
    from sensor_msgs.msg import PointCloud2

    topic = f"/clip2_test/signals_{signals[-1].lower()}_{len(signals)}/points"
    overrides = dict(node_model[0])
    overrides.update({"cameras.enabled": False, "lidar.topic": topic})
    scene = make_sweep(3)
    msg = array_to_pointcloud2(scene.points, ("x", "y", "z", "intensity", "ring"), frame_id="lidar",
                               dtypes={"ring": np.uint16})
    pub_node = rclpy.create_node("clip2_signals_publisher", context=ros_context)
    pub = pub_node.create_publisher(PointCloud2, topic, 5)
    stop = threading.Event()

    def flood():
        t = 100.0
        while not stop.is_set():
            t += 0.05
            msg.header.stamp = seconds_to_stamp(t)
            pub.publish(msg)
            stop.wait(0.05)

    proc = _start(_write_params(tmp_path / "sig.yaml", overrides))
    lines = []
    th = threading.Thread(target=flood, daemon=True)
    try:
        lines = _read_until_ready(proc)
        assert "]: ready" in lines[-1], "".join(lines)
        th.start()
        t_end = time.monotonic() + 30
        while pub.get_subscription_count() == 0 and time.monotonic() < t_end:
            time.sleep(0.05)
        time.sleep(1.5)  # frames being processed
        for i, name in enumerate(signals):
            if i:
                time.sleep(0.02)
            proc.send_signal(getattr(signal, name))
        rest, _ = proc.communicate(timeout=30)
    finally:
        stop.set()
        if th.is_alive():
            th.join(timeout=5)
        if proc.poll() is None:
            proc.kill()
        pub_node.destroy_node()
    out = "".join(lines) + rest
    assert proc.returncode == 0, out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out
    assert "context is invalid" not in out and "callback_error" not in out and "frame skipped" not in out, out

