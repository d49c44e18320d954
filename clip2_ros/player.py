"""``clip2 bag play``: an rclpy rosbag2 player, for machines without ``ros2 bag``.

Reads a rosbag2 folder (MCAP or sqlite3) with ``rosbags`` and publishes every message as it is
stored (the CDR bytes, never deserialised) at its original timing, or faster / slower by a rate
factor, optionally looping and publishing ``/clock`` (``rosgraph_msgs/Clock``, the bag time) for
nodes running with ``use_sim_time``. Topics whose message type is not importable here (e.g.
``tf2_msgs`` without a ROS install) are skipped and reported.

QoS: ``/tf_static`` is published reliable + transient-local (depth 1) so late subscribers get it;
every other topic reliable, keep-last ``depth`` (a reliable publisher also serves best-effort
subscriptions such as the node's sensor-data LiDAR input).
"""
from __future__ import annotations

import importlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy


def message_class(msgtype: str):
    """The rclpy message class of ``pkg/msg/Name``, or None when that package is not importable."""
    try:
        pkg, kind, name = msgtype.split("/")
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
    except (ValueError, ImportError, AttributeError):
        return None


@dataclass
class PlayConfig:
    bag: Path  # rosbag2 folder (metadata.yaml + .mcap / .db3)
    rate: float = 1.0  # playback speed factor (2 = twice as fast)
    loop: bool = False  # start again at the end (until stopped)
    clock: bool = False  # publish /clock with the bag time
    topics: Optional[Sequence[str]] = None  # only these topics (None: all)
    depth: int = 10  # publisher history depth
    start_delay: float = 0.5  # [s] wait for subscriptions to match before the first message

    def check(self) -> None:
        if not self.rate > 0:
            raise ValueError(f"--rate must be > 0, got {self.rate}")
        if not (Path(self.bag) / "metadata.yaml").is_file():
            raise FileNotFoundError(f"{self.bag} is not a rosbag2 folder (no metadata.yaml)")


@dataclass
class PlayStats:
    published: Dict[str, int] = field(default_factory=dict)  # topic -> messages published
    skipped_topics: Dict[str, str] = field(default_factory=dict)  # topic -> why it is not played
    loops: int = 0
    seconds: float = 0.0  # wall time of playback
    bag_seconds: float = 0.0  # bag time covered (one pass)


class BagPlayer(Node):
    """Publishes one bag; build after ``rclpy.init``, then call :meth:`play` (no spinning needed)."""

    def __init__(self, config: PlayConfig, node_name: str = "clip2_bag_player", **kwargs):
        super().__init__(node_name, **kwargs)
        from rosbags.rosbag2 import Reader

        config.check()
        self.config = config
        self.reader = Reader(config.bag)
        self.reader.open()
        self.stats = PlayStats()
        self._topic_publishers = {}
        wanted = set(config.topics) if config.topics else None
        if wanted:
            missing = sorted(wanted - {c.topic for c in self.reader.connections})
            if missing:
                self.reader.close()
                raise ValueError(f"topics not in {config.bag}: {missing}")
        self.connections = []
        for c in self.reader.connections:
            if wanted is not None and c.topic not in wanted:
                continue
            cls = message_class(c.msgtype)
            if cls is None:
                self.stats.skipped_topics[c.topic] = f"message type {c.msgtype} is not importable here"
                continue
            if c.topic not in self._topic_publishers:
                self._topic_publishers[c.topic] = self.create_publisher(cls, c.topic, self._qos(c.topic))
            self.connections.append(c)
        if not self.connections:
            self.reader.close()
            raise ValueError(f"nothing to play in {config.bag} (skipped: {self.stats.skipped_topics})")
        self._clock_pub = None
        if config.clock:
            from rosgraph_msgs.msg import Clock

            self._clock_pub = self.create_publisher(Clock, "/clock", 10)

    def _qos(self, topic: str) -> QoSProfile:
        if topic == "/tf_static":
            return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                              durability=DurabilityPolicy.TRANSIENT_LOCAL)
        return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self.config.depth,
                          reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)

    def _publish_clock(self, t_ns: int) -> None:
        from rosgraph_msgs.msg import Clock

        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = divmod(int(t_ns), 1_000_000_000)
        self._clock_pub.publish(msg)

    def publisher(self, topic: str):
        """The rclpy publisher of a played topic (KeyError when it is not played)."""
        return self._topic_publishers[topic]

    def play(self, stop: Optional[threading.Event] = None,
             on_publish: Optional[Callable[[str, int, float], None]] = None,
             before_publish: Optional[Callable[[str, int], None]] = None) -> PlayStats:
        """Publish the bag (again while ``loop``) until its end or ``stop`` is set.

        ``on_publish(topic, bag_time_ns, monotonic_s)`` runs right after each message is published.
        ``before_publish(topic, bag_time_ns)`` runs when a message is due and may block (lockstep
        playback waits there for the node); the time it blocks shifts the rest of the schedule, so
        playback resumes at its rate instead of racing to catch up.
        """
        stop = stop or threading.Event()
        if self.config.start_delay > 0:
            stop.wait(self.config.start_delay)
        t_wall0 = time.monotonic()
        rate = float(self.config.rate)
        while not stop.is_set():
            t_first = None
            last = None
            for conn, t_ns, raw in self.reader.messages(connections=self.connections):
                if stop.is_set():
                    break
                if t_first is None:
                    t_first, t_pass = t_ns, time.monotonic()
                delay = t_pass + (t_ns - t_first) * 1e-9 / rate - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    break
                if before_publish is not None:
                    t_hold = time.monotonic()
                    before_publish(conn.topic, t_ns)
                    t_pass += time.monotonic() - t_hold
                    if stop.is_set():
                        break
                if self._clock_pub is not None:
                    self._publish_clock(t_ns)
                self._topic_publishers[conn.topic].publish(bytes(raw))
                if on_publish is not None:
                    on_publish(conn.topic, t_ns, time.monotonic())
                self.stats.published[conn.topic] = self.stats.published.get(conn.topic, 0) + 1
                last = t_ns
            if t_first is not None and last is not None:
                self.stats.bag_seconds = (last - t_first) * 1e-9
            self.stats.loops += 1
            if not self.config.loop:
                break
        self.stats.seconds = time.monotonic() - t_wall0
        return self.stats

    def destroy_node(self) -> None:
        try:
            self.reader.close()
        except Exception:  # already closed
            pass
        super().destroy_node()


def format_stats(stats: PlayStats) -> List[str]:
    lines = [f"played {sum(stats.published.values())} messages in {stats.seconds:.1f} s "
             f"({stats.loops} pass{'es' if stats.loops != 1 else ''}, {stats.bag_seconds:.1f} s of bag time each)"]
    lines += [f"  {t:<40} {n}" for t, n in sorted(stats.published.items())]
    lines += [f"  skipped {t}: {why}" for t, why in sorted(stats.skipped_topics.items())]
    return lines
