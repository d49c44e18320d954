"""``clip2 bag play`` (clip2_ros.player): a converted bag published over real rclpy/DDS and received
by a subscriber: every message of every playable topic arrives, in bag order, with the stored bytes."""
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message

from clip2_core.cli import main as clip2_main


@pytest.fixture(scope="module")
def bag(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("player")
    assert clip2_main(["synth", "--out", str(root / "w"), "--scenes", "1", "--seconds", "1", "--seed", "4",
                       "--no-progress"]) == 0
    assert clip2_main(["bag", "from-nuscenes", "--dataroot", str(root / "w"), "--version", "v1.0-synth", "--all",
                       "--cameras", "CAM_FRONT", "--out", str(root / "bags"), "--no-progress"]) == 0
    (scene,) = [p for p in (root / "bags").iterdir() if p.is_dir()]
    return scene


def _bag_messages(path: Path):
    from rosbags.rosbag2 import Reader

    with Reader(path) as r:
        return [(c.topic, c.msgtype, t, bytes(raw)) for c, t, raw in r.messages()]


class Recorder(Node):
    def __init__(self, context, topics):
        super().__init__("clip2_player_probe", context=context)
        self.lock = threading.Lock()
        self.got = {t: [] for t in topics}
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=200, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
        for topic, cls in topics.items():
            self.create_subscription(cls, topic, self._cb(topic), qos)

    def _cb(self, topic):
        def cb(msg):
            with self.lock:
                self.got[topic].append(msg)

        return cb


def test_player_publishes_every_playable_message(bag, ros_context, wait_for):
    from clip2_ros.player import BagPlayer, PlayConfig, message_class

    stored = _bag_messages(bag)
    types = {t: mt for t, mt, _, _ in stored}
    playable = {t: message_class(mt) for t, mt in types.items() if message_class(mt) is not None}
    assert {"/LIDAR_TOP", "/CAM_FRONT/image_rect_compressed", "/CAM_FRONT/camera_info", "/gt/markers"} <= set(playable)
    rec = Recorder(ros_context, {t: c for t, c in playable.items() if t != "/tf_static"})
    ex = SingleThreadedExecutor(context=ros_context)
    ex.add_node(rec)
    th = threading.Thread(target=ex.spin, daemon=True)
    th.start()
    player = BagPlayer(PlayConfig(bag=bag, rate=2.0, clock=True, start_delay=1.0), context=ros_context)
    try:
        t0 = time.monotonic()
        stats = player.play()
        wall = time.monotonic() - t0
    finally:
        player.destroy_node()
    expected = {t: sum(1 for s in stored if s[0] == t) for t in playable}
    assert stats.published == expected
    assert set(stats.skipped_topics) == set(types) - set(playable)  # e.g. tf2_msgs where it is not installed
    # half speed of a ~1 s bag: playback cannot be faster than the bag time / rate
    assert wall >= stats.bag_seconds / 2.0 and stats.bag_seconds > 0.5
    assert wait_for(lambda: all(len(rec.got[t]) == expected[t] for t in rec.got), timeout=30)
    ex.shutdown(timeout_sec=5)
    th.join(timeout=5)
    for topic in rec.got:  # same messages, same order (compared as messages: CDR padding bytes are arbitrary)
        sent = [deserialize_message(raw, playable[topic]) for t, _, _, raw in stored if t == topic]
        assert len(sent) == len(rec.got[topic]) and all(a == b for a, b in zip(sent, rec.got[topic])), topic
    stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in rec.got["/LIDAR_TOP"]]
    assert stamps == sorted(stamps) and np.all(np.diff(stamps) > 0)
    rec.destroy_node()


def test_player_errors(bag, tmp_path):
    from clip2_ros.player import PlayConfig

    with pytest.raises(FileNotFoundError, match="not a rosbag2 folder"):
        PlayConfig(bag=tmp_path).check()
    with pytest.raises(ValueError, match="--rate must be > 0"):
        PlayConfig(bag=bag, rate=0).check()
    assert clip2_main(["bag", "play", str(tmp_path)]) == 2
    assert clip2_main(["bag", "play", str(bag), "--topics", "/no_such_topic"]) == 2


def test_a_blocking_before_publish_shifts_the_schedule_instead_of_bursting(bag, ros_context):
    """Lockstep replay holds the player in before_publish: the messages after a hold keep the bag's
    spacing (a player racing to catch up would publish them all at once)."""
    from clip2_ros.player import BagPlayer, PlayConfig

    player = BagPlayer(PlayConfig(bag=bag, rate=1.0, start_delay=0.0, topics=["/LIDAR_TOP"]), context=ros_context)
    pub_times, bag_ns = [], []
    held = 0.4

    def before(topic, t_ns):
        if len(bag_ns) == 3:
            time.sleep(held)

    def after(topic, t_ns, t_mono):
        bag_ns.append(t_ns)
        pub_times.append(t_mono)

    try:
        stats = player.play(on_publish=after, before_publish=before)
    finally:
        player.destroy_node()
    assert stats.published["/LIDAR_TOP"] == len(pub_times) > 6
    wall_gaps = np.diff(pub_times)
    bag_gaps = np.diff(bag_ns) * 1e-9
    assert wall_gaps[2] >= held + bag_gaps[2] - 0.02  # the hold itself
    # afterwards: the bag's spacing again (not a burst of late messages)
    assert np.all(wall_gaps[3:] >= bag_gaps[3:] - 0.02), (wall_gaps, bag_gaps)
