"""Benchmark: which Fast DDS setting lets large PointCloud2 messages reach a best-effort subscription
in another process (docs/dds.md has the results and the explanation).

    python bench/dds_large_clouds.py [--count 20] [--json out.json] [--only SUBSTRING]

Each case is two fresh processes (test/ros/cloud_peer.py) on this host: a publisher (best effort
or reliable, keep last 5) sending ``count`` clouds of one size at ``rate`` Hz, and a subscriber
(best effort keep last 1, the clip2 node's LiDAR input QoS, or reliable keep last 10), each with
its own Fast DDS setting, a ROS_DOMAIN_ID of its own (60-90, in turn) and the given discovery
range. Printed: delivered/sent and the header-stamp-to-callback latency (median, max) per case,
as a markdown table ("no match": the peers did not discover each other within 40 s). Settings:
``default`` (nothing set), ``shipped`` (config/fastdds_large_data.xml), ``udp_receiver``
(config/fastdds_udp_receiver.xml), ``LARGE_DATA`` (FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA).
About 7 s per case, two processes at a time.
"""
from __future__ import annotations

import argparse
import itertools
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PEER = REPO / "test" / "ros" / "cloud_peer.py"
MB = 1_000_000

# (discovery range, size MB, publisher QoS, subscriber QoS, publisher setting, subscriber setting, rate Hz)
LOCAL, SUBNET, BE, REL = "LOCALHOST", "SUBNET", "best_effort", "reliable"
CASES = (
    [(LOCAL, mb, pq, BE, "default", "default", 10) for mb in (0.48, 0.7, 2, 4) for pq in (BE, REL)]
    + [(LOCAL, mb, REL, REL, "default", "default", 10) for mb in (0.7, 2, 4)]
    + [(LOCAL, mb, pq, sq, "shipped", "shipped", 10) for mb in (0.7, 2, 4) for pq, sq in ((BE, BE), (REL, BE), (REL, REL))]
    + [(LOCAL, mb, pq, BE, "shipped", "default", 10) for mb in (0.7, 2, 4) for pq in (BE, REL)]
    + [(LOCAL, mb, pq, BE, "default", s, 10) for s in ("shipped", "udp_receiver") for mb in (0.7, 4) for pq in (BE, REL)]
    + [(LOCAL, mb, BE, BE, "LARGE_DATA", "LARGE_DATA", 10) for mb in (0.7, 4)]
    + [(LOCAL, mb, pq, BE, "shipped", "shipped", 20) for mb in (2, 4) for pq in (BE, REL)]
    + [(SUBNET, mb, BE, BE, "default", "default", 10) for mb in (0.7, 4)]
    + [(SUBNET, 4, pq, BE, ps, ss, 10) for ps, ss in (("shipped", "default"), ("default", "shipped"),
                                                     ("default", "udp_receiver"), ("LARGE_DATA", "LARGE_DATA"),
                                                     ("LARGE_DATA", "default")) for pq in (BE, REL)]
    + [(SUBNET, 0.7, BE, BE, "default", "udp_receiver", 10), (SUBNET, 4, BE, BE, "default", "udp_receiver", 20),
       (SUBNET, 4, BE, BE, "shipped", "shipped", 20)]
)


def setting_env(setting: str, discovery_range: str, domain: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FASTDDS_", "FASTRTPS_"))}
    env.update(ROS_AUTOMATIC_DISCOVERY_RANGE=discovery_range, ROS_DOMAIN_ID=str(domain), PYTHONUNBUFFERED="1")
    if setting == "shipped":
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(REPO / "config" / "fastdds_large_data.xml")
    elif setting == "udp_receiver":
        env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(REPO / "config" / "fastdds_udp_receiver.xml")
    elif setting == "LARGE_DATA":
        env["FASTDDS_BUILTIN_TRANSPORTS"] = "LARGE_DATA"
    elif setting != "default":
        raise ValueError(f"unknown setting {setting!r}")
    return env


def _line(proc, want: str, timeout: float = 40.0) -> str:
    """The next stdout line equal to ``want`` (or starting with ``{`` for ``"{"``); logs are skipped."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        line = line.strip()
        if line == want or (want == "{" and line.startswith("{")):
            return line
    raise RuntimeError(f"no {want!r} from {proc.args[2]}")


def run_case(case, domain: int, count: int) -> dict:
    rng, mb, pq, sq, ps, ss, rate = case
    size, topic = str(int(mb * MB)), "/clip2_bench/cloud"
    popen = dict(stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
    sub = subprocess.Popen([sys.executable, str(PEER), "sub", topic, "--sizes", size, "--qos", sq],
                           env=setting_env(ss, rng, domain), **popen)
    pub = subprocess.Popen([sys.executable, str(PEER), "pub", topic, "--sizes", size, "--reliability", pq,
                            "--count", str(count), "--rate", str(rate)], env=setting_env(ps, rng, domain), **popen)
    try:
        try:
            _line(sub, "matched")
            _line(pub, "matched")
        except RuntimeError:  # e.g. LARGE_DATA on one side only: the two never discover each other
            return dict(range=rng, mb=mb, pub_qos=pq, sub_qos=sq, pub_setting=ps, sub_setting=ss, rate=rate,
                        received=0, sent=0, latency_ms_median=None, latency_ms_max=None, matched=False)
        time.sleep(0.3)
        pub.stdin.write("go\n")
        pub.stdin.flush()
        sent = json.loads(_line(pub, "{", timeout=count / rate + 30))["sent"][size]
        sub.stdin.write("stop\n")
        sub.stdin.flush()
        got = json.loads(_line(sub, "{"))
    finally:
        for p in (pub, sub):  # a clean exit removes the process's /dev/shm segment; a kill leaves it behind
            try:
                with contextlib.suppress(OSError):  # BrokenPipeError: it has exited already
                    p.stdin.close()  # a peer still waiting for "go" / "stop" reads EOF and exits
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
    lat = got["latency_ms"][sq]
    return dict(range=rng, mb=mb, pub_qos=pq, sub_qos=sq, pub_setting=ps, sub_setting=ss, rate=rate,
                received=got["received"][sq][size], sent=sent,
                latency_ms_median=lat and lat[0], latency_ms_max=lat and lat[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=20, help="clouds per case")
    ap.add_argument("--only", default="", help="run the cases whose row contains this text (e.g. SUBNET)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    domains = itertools.cycle(range(60, 91))
    rows = []
    print("| range | MB | Hz | publisher QoS | subscriber QoS | publisher setting | subscriber setting "
          "| delivered | latency median / max [ms] |")
    print("|---|---|---|---|---|---|---|---|---|")
    for case in CASES:
        if args.only and args.only not in " ".join(map(str, case)):
            continue
        r = run_case(case, next(domains), args.count)
        rows.append(r)
        lat = "-" if r["latency_ms_median"] is None else f"{r['latency_ms_median']:.1f} / {r['latency_ms_max']:.1f}"
        delivered = f"{r['received']}/{r['sent']}" if r.get("matched", True) else "no match"
        print(f"| {r['range']} | {r['mb']} | {r['rate']} | {r['pub_qos']} | {r['sub_qos']} | {r['pub_setting']} "
              f"| {r['sub_setting']} | {delivered} | {lat} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
