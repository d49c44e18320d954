"""A separate-process PointCloud2 publisher or subscriber for test_large_clouds.py (not a test module).

    python cloud_peer.py pub TOPIC --sizes 700000 3500000 --reliability {best_effort,reliable}
                         --count 5 --rate 10 --wait-for N
    python cloud_peer.py sub TOPIC --sizes 700000 3500000 --qos best_effort [reliable]

Line protocol on stdout (one line each, flushed): ``matched`` once the peer sees the other side
(the publisher: N subscriptions; the subscriber: a publisher); the publisher then waits for ``go``
on stdin, sends ``count`` clouds of each size in turn at ``rate`` Hz, stays 1 s for repairs and
prints ``{"sent": {size: count}}``; the subscriber counts what arrives until ``stop`` on stdin and
prints ``{"received": {qos: {size: n}}, "latency_ms": {qos: [median, max]}, "bad": [...]}``
(latency: header stamp to callback, one host clock). ``best_effort`` is the clip2 node's LiDAR
input QoS (best effort, keep last 1, volatile), ``reliable`` a reliable keep-last-10 one. The
environment (ROS_DOMAIN_ID, the Fast DDS profile) comes from the parent. Used by
test/ros/test_large_clouds.py and bench/dds_large_clouds.py.
"""
import argparse
import array
import json
import statistics
import sys
import threading
import time

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2, PointField

POINT_STEP = 16  # x, y, z, intensity float32


def _qos(reliable: bool, depth: int) -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, durability=DurabilityPolicy.VOLATILE,
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT)


def _cloud(n_bytes: int) -> PointCloud2:
    msg = PointCloud2()
    msg.fields = [PointField(name=f, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, f in enumerate("xyzi")]
    msg.height, msg.width, msg.point_step = 1, n_bytes // POINT_STEP, POINT_STEP
    msg.row_step, msg.is_dense = msg.width * POINT_STEP, True
    msg.data = array.array("B", bytes(msg.row_step))
    return msg


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()


def publish(node: Node, args) -> None:
    pub = node.create_publisher(PointCloud2, args.topic, _qos(args.reliability == "reliable", 5))
    clouds = {size: _cloud(size) for size in args.sizes}
    if not _wait(lambda: pub.get_subscription_count() >= args.wait_for, 30):
        _say(json.dumps({"error": f"{pub.get_subscription_count()} of {args.wait_for} subscriptions matched"}))
        return
    _say("matched")
    if sys.stdin.readline().strip() != "go":
        return
    period, t_next = 1.0 / args.rate, time.monotonic()
    sent = {}
    for size, msg in clouds.items():
        for i in range(args.count):
            now = time.time()
            msg.header.stamp.sec, msg.header.stamp.nanosec = int(now), int((now % 1) * 1e9)
            msg.header.frame_id = f"{size}/{i}"
            pub.publish(msg)
            sent[size] = sent.get(size, 0) + 1
            t_next += period
            time.sleep(max(0.0, t_next - time.monotonic()))
    time.sleep(1.0)  # a reliable writer repairs lost fragments from its history meanwhile
    _say(json.dumps({"sent": sent}))


def subscribe(node: Node, args) -> None:
    lock = threading.Lock()
    got = {kind: {s: 0 for s in args.sizes} for kind in args.qos}
    bad, latency = [], {kind: [] for kind in args.qos}

    def on_cloud(kind):
        def cb(msg):
            size = int(msg.header.frame_id.split("/")[0])
            t = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            with lock:
                if len(msg.data) != msg.row_step * msg.height or size not in got[kind]:
                    bad.append(f"{kind} {msg.header.frame_id}: {len(msg.data)} bytes")
                    return
                got[kind][size] += 1
                latency[kind].append(1000.0 * (time.time() - t))

        return cb

    for kind in args.qos:  # best_effort: the node's input QoS
        reliable = kind == "reliable"
        node.create_subscription(PointCloud2, args.topic, on_cloud(kind), _qos(reliable, 10 if reliable else 1))
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    spinner = threading.Thread(target=ex.spin, daemon=True)
    spinner.start()
    try:
        if not _wait(lambda: node.count_publishers(args.topic) >= 1, 30):
            _say(json.dumps({"error": "no publisher matched"}))
            return
        _say("matched")
        sys.stdin.readline()  # "stop"
        with lock:
            lat = {k: [round(statistics.median(v), 1), round(max(v), 1)] if v else None for k, v in latency.items()}
            _say(json.dumps({"received": got, "latency_ms": lat, "bad": bad}))
    finally:
        ex.shutdown(timeout_sec=2)  # spin returns; joined so that no thread is left inside rcl at exit
        spinner.join(timeout=2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("role", choices=["pub", "sub"])
    ap.add_argument("topic")
    ap.add_argument("--sizes", type=int, nargs="+", required=True, help="cloud sizes [bytes]")
    ap.add_argument("--reliability", choices=["best_effort", "reliable"], default="best_effort")
    ap.add_argument("--count", type=int, default=5, help="clouds of each size")
    ap.add_argument("--rate", type=float, default=10.0, help="Hz")
    ap.add_argument("--wait-for", type=int, default=1, help="publisher: start once this many subscriptions match")
    ap.add_argument("--qos", nargs="+", choices=["best_effort", "reliable"], default=["best_effort"],
                    help="subscriber: one subscription of each")
    args = ap.parse_args()
    rclpy.init()
    node = Node(f"clip2_cloud_{args.role}")
    try:
        (publish if args.role == "pub" else subscribe)(node, args)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
