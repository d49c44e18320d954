"""Large LiDAR clouds between two processes over real DDS reach the node's input QoS (best effort,
keep last 1) with the shipped Fast DDS profile (clip2_ros.dds, docs/dds.md).

Both peers are subprocesses (test/ros/cloud_peer.py) started with ``large_data_env()``: Fast DDS reads
its profile once per process, when the first participant is created, so this process (whose rclpy
context other tests may already have started) could not take it. With Fast DDS defaults at most
one cloud in five arrives in either case (checked by hand; docs/dds.md has the table).
"""
import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from clip2_ros import dds

PEER = Path(__file__).with_name("cloud_peer.py")
SIZES = (700_000, 3_500_000)  # a nuScenes sweep; a 128-beam sweep [bytes]
COUNT = 5  # clouds of each size, at 10 Hz


class Peer:
    """A cloud_peer.py process; its stdout lines are read by a thread into a queue."""

    def __init__(self, args, env):
        self.proc = subprocess.Popen([sys.executable, str(PEER), *args], env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.lines, self.seen = queue.Queue(), []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, want, timeout: float = 30.0) -> str:
        """The next line that is ``want`` (or, for ``"{"``, a JSON line); other lines (logs) are kept."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                raise AssertionError(f"no {want!r} from {self.proc.args[2:4]}; output:\n" + "\n".join(self.seen))
            self.seen.append(line)
            if line == want or (want == "{" and line.startswith("{")):
                return line

    def send(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        """Let the peer exit (after its JSON line, or at EOF on stdin), else kill it; a clean exit also
        removes the process's shared-memory segment, a kill leaves it in /dev/shm."""
        try:
            with contextlib.suppress(OSError):  # BrokenPipeError: it has exited already
                self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def _env() -> dict:
    """This session's environment (ROS_DOMAIN_ID, LOCALHOST discovery from conftest) without any
    profile of the developer's own, then the shipped profile."""
    base = {k: v for k, v in os.environ.items() if k not in (dds.PROFILE_ENV, dds.LEGACY_PROFILE_ENV)}
    env = dds.large_data_env(base)
    assert env[dds.PROFILE_ENV] == str(dds.shipped_profile_path())
    return dict(env, PYTHONUNBUFFERED="1", RCUTILS_LOGGING_BUFFERED_STREAM="0")


@pytest.mark.skipif(not dds.uses_fastdds(), reason="the profile is for Fast DDS; RMW_IMPLEMENTATION is another RMW")
@pytest.mark.parametrize("reliability", ["best_effort", "reliable"])
def test_large_clouds_reach_a_best_effort_depth1_subscription(reliability):
    topic = f"/clip2_test/large_clouds/{reliability}"
    sizes = [str(s) for s in SIZES]
    reliable = reliability == "reliable"
    env = _env()
    qos = ["best_effort", "reliable"] if reliable else ["best_effort"]  # a reliable reader needs a reliable writer
    sub = Peer(["sub", topic, "--sizes", *sizes, "--qos", *qos], env)
    pub = Peer(["pub", topic, "--sizes", *sizes, "--reliability", reliability, "--count", str(COUNT),
                "--rate", "10", "--wait-for", str(len(qos))], env)
    try:
        sub.expect("matched")
        pub.expect("matched")
        time.sleep(0.3)  # both ends matched: give the endpoint locators a moment
        pub.send("go")
        sent = json.loads(pub.expect("{"))["sent"]
        sub.send("stop")
        got = json.loads(sub.expect("{"))
    finally:
        pub.close()
        sub.close()
    report = f"{reliability} publisher, sent {sent}, received {got}"
    assert sent == {s: COUNT for s in sizes}, report
    assert not got["bad"], report
    # best effort may drop a cloud under load (2 CPU cores run both peers); the default drops them all
    assert all(got["received"]["best_effort"][s] >= COUNT - 1 for s in sizes), report
    if reliable:
        assert all(got["received"]["reliable"][s] == COUNT for s in sizes), report


def test_large_data_env_rules(tmp_path):
    shipped = str(dds.shipped_profile_path())
    assert dds.shipped_profile_path().name == dds.LARGE_DATA_PROFILE
    assert dds.shipped_profile_path(dds.UDP_RECEIVER_PROFILE).is_file()
    assert dds.large_data_env({"PATH": "/bin"}) == {"PATH": "/bin", dds.PROFILE_ENV: shipped}
    assert dds.large_data_env({"RMW_IMPLEMENTATION": "rmw_fastrtps_cpp"})[dds.PROFILE_ENV] == shipped
    own = str(tmp_path / "mine.xml")
    for var in (dds.PROFILE_ENV, dds.LEGACY_PROFILE_ENV):  # the user's profile wins
        assert dds.large_data_env({var: own}) == {var: own}
    assert dds.large_data_env({"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}) == {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}
    base = {"A": "1"}
    assert dds.large_data_env(base) is not base and base == {"A": "1"}  # a copy; the input is untouched
    environ = {}
    assert dds.apply_large_data_profile(environ) == shipped and environ == {dds.PROFILE_ENV: shipped}
    assert dds.apply_large_data_profile({dds.LEGACY_PROFILE_ENV: own}) == own
    assert dds.apply_large_data_profile({"RMW_IMPLEMENTATION": "rmw_zenoh_cpp"}) is None
