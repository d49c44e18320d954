"""``clip2 bag from-nuscenes`` on a tiny synthetic world, read back by two independent readers.

Expected values come straight from the dataroot's JSON tables and files (not from the code
under test): per-topic counts = the scene's sample_data rows per channel, stamps = their
timestamps, PointCloud2 bytes = the .pcd.bin, CompressedImage bytes = the JPEG. The bags are
read completely with rosbags (Reader + deserialize_cdr) and with the mcap library
(make_reader + mcap_ros2's DecoderFactory), and messages are deserialised by rclpy's own
typesupport, as ``ros2 bag play`` would publish them.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import yaml

from clip2_core.geometry import invert_transform, make_transform, quaternion_to_matrix

VERSION = "v1.0-synth"
CAMERAS = ("CAM_FRONT", "CAM_BACK")


def _main(argv):
    from clip2_core.cli import main

    return main(argv)


# ---------------------------------------------------------------------------------------------- the dataset, from its files
class Tables:
    """The scenes of a dataroot as plain JSON rows (the reference the bags are checked against)."""

    def __init__(self, root: Path):
        self.root = root
        t = {n: json.loads((root / VERSION / f"{n}.json").read_text())
             for n in ("scene", "sample", "sample_data", "calibrated_sensor", "sensor", "ego_pose")}
        sensor = {s["token"]: s for s in t["sensor"]}
        self.cs = {c["token"]: c for c in t["calibrated_sensor"]}
        self.channel_of_cs = {c["token"]: sensor[c["sensor_token"]]["channel"] for c in t["calibrated_sensor"]}
        self.samples = {s["token"]: s for s in t["sample"]}
        self.ego = {e["token"]: e for e in t["ego_pose"]}
        self.scenes = {s["name"]: s for s in t["scene"]}
        self.sample_data = t["sample_data"]

    def scene_samples(self, scene: str):
        out, tok = [], self.scenes[scene]["first_sample_token"]
        while tok:
            out.append(self.samples[tok])
            tok = self.samples[tok]["next"]
        return out

    def scene_sd(self, scene: str, keyframes_only: bool = False):
        """channel -> sample_data rows of the scene (sample_token in the scene), by timestamp."""
        toks = {s["token"] for s in self.scene_samples(scene)}
        out = defaultdict(list)
        for sd in self.sample_data:
            if sd["sample_token"] in toks and (sd["is_key_frame"] or not keyframes_only):
                out[self.channel_of_cs[sd["calibrated_sensor_token"]]].append(sd)
        for v in out.values():
            v.sort(key=lambda r: r["timestamp"])
        return out

    def keyframe_sd(self, sample):
        """channel -> the keyframe sample_data of a sample."""
        return {self.channel_of_cs[sd["calibrated_sensor_token"]]: sd for sd in self.sample_data
                if sd["sample_token"] == sample["token"] and sd["is_key_frame"]}


def _pose(rec):
    return make_transform(quaternion_to_matrix(rec["rotation"], scalar_first=True), rec["translation"])


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from clip2_core.datasets.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("bag_world") / "synth"
    generate(SynthConfig(out=root, scenes=2, seconds=1.0, seed=5, cameras=CAMERAS, workers=2), progress=False)
    return root


@pytest.fixture(scope="module")
def tables(world) -> Tables:
    return Tables(world)


@pytest.fixture(scope="module")
def mcap_out(world, tmp_path_factory):
    """Both scenes, default options (MCAP, every sweep, every camera), through the CLI."""
    out = tmp_path_factory.mktemp("bags") / "bags"
    rc = _main(["bag", "from-nuscenes", "--dataroot", str(world), "--version", VERSION, "--all", "--out", str(out),
                "--no-progress"])
    assert rc == 0
    return out


def _expected_counts(tables: Tables, scene: str, keyframes_only: bool = False, cameras=CAMERAS):
    sds = tables.scene_sd(scene, keyframes_only)
    written = [sd for ch in ("LIDAR_TOP", *cameras) for sd in sds[ch]]
    counts = {"/LIDAR_TOP": len(sds["LIDAR_TOP"]), "/LIDAR_TOP/pose": len(sds["LIDAR_TOP"]), "/tf_static": 1,
              "/tf": len({tables.ego[sd["ego_pose_token"]]["timestamp"] for sd in written}),
              "/gt/markers": len(tables.scene_samples(scene))}
    for cam in cameras:
        counts[f"/{cam}/image_rect_compressed"] = len(sds[cam])
        counts[f"/{cam}/camera_info"] = len(sds[cam])
    return counts, sds


def _read_rosbags(bag: Path):
    """[(topic, msgtype, bag time ns, message)] of every message, plus the connections."""
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    out = []
    with Reader(bag) as reader:
        conns = list(reader.connections)
        for conn, t_ns, raw in reader.messages():
            out.append((conn.topic, conn.msgtype, t_ns, store.deserialize_cdr(raw, conn.msgtype), bytes(raw)))
    return out, conns


def _stamp_ns(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


# ---------------------------------------------------------------------------------------------- tests
def test_layout_and_summary(mcap_out, tables):
    assert sorted(p.name for p in mcap_out.iterdir()) == ["scene-0001", "scene-0002", "summary.json"]
    assert not mcap_out.with_name("bags.partial").exists()
    summary = json.loads((mcap_out / "summary.json").read_text())
    assert summary["format"] == "clip2.bag_summary/v1" and summary["storage"] == "mcap"
    assert summary["totals"]["skipped_missing"] == summary["totals"]["skipped_bad"] == 0
    for scene in ("scene-0001", "scene-0002"):
        bag = mcap_out / scene
        assert sorted(p.name for p in bag.iterdir()) == sorted(
            ["metadata.yaml", f"{scene}.mcap", "gt.json", "lidar_openvocab.param.yaml"])
        expected, _ = _expected_counts(tables, scene)
        row = next(r for r in summary["scenes"] if r["scene"] == scene)
        assert row["messages"] == expected
        meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        assert meta["version"] == 9 and meta["storage_identifier"] == "mcap"
        assert meta["relative_file_paths"] == [f"{scene}.mcap"]
        assert {t["topic_metadata"]["name"]: t["message_count"] for t in meta["topics_with_message_count"]} == expected


@pytest.mark.parametrize("scene", ["scene-0001", "scene-0002"])
def test_rosbags_reads_back_every_message(mcap_out, tables, world, scene):
    expected, sds = _expected_counts(tables, scene)
    msgs, conns = _read_rosbags(mcap_out / scene)
    assert dict(Counter(m[0] for m in msgs)) == expected
    # every connection carries its ros2msg definition; /tf_static is offered transient local
    for c in conns:
        assert c.msgdef.data and c.ext.serialization_format == "cdr" and c.digest.startswith("RIHS01_")
    qos = {c.topic: c.ext.offered_qos_profiles[0] for c in conns}
    assert qos["/tf_static"].durability.name == "TRANSIENT_LOCAL" and qos["/tf_static"].depth == 1
    assert qos["/LIDAR_TOP"].durability.name == "VOLATILE"
    # bag time == header stamp == dataset timestamp (us -> ns), in time order
    times = [m[2] for m in msgs]
    assert times == sorted(times)
    by_topic = defaultdict(list)
    for topic, _, t_ns, msg, raw in msgs:
        if topic != "/tf_static" and hasattr(msg, "header"):
            assert _stamp_ns(msg.header) == t_ns
        by_topic[topic].append((t_ns, msg, raw))
    lidar = sds["LIDAR_TOP"]
    assert [t for t, _, _ in by_topic["/LIDAR_TOP"]] == [sd["timestamp"] * 1000 for sd in lidar]
    for (t_ns, msg, _), sd in zip(by_topic["/LIDAR_TOP"], lidar):
        assert msg.header.frame_id == "LIDAR_TOP"
        assert [f.name for f in msg.fields] == ["x", "y", "z", "intensity", "ring"]
        assert {f.datatype for f in msg.fields} == {7} and msg.point_step == 20 and not msg.is_bigendian
        assert msg.data.tobytes() == (world / sd["filename"]).read_bytes()
    for cam in CAMERAS:
        imgs, infos = by_topic[f"/{cam}/image_rect_compressed"], by_topic[f"/{cam}/camera_info"]
        assert [t for t, _, _ in imgs] == [t for t, _, _ in infos] == [sd["timestamp"] * 1000 for sd in sds[cam]]
        for (_, img, _), (_, info, _), sd in zip(imgs, infos, sds[cam]):
            assert img.format == "jpeg" and img.header.frame_id == info.header.frame_id == cam
            assert img.data.tobytes() == (world / sd["filename"]).read_bytes()
            K = np.asarray(tables.cs[sd["calibrated_sensor_token"]]["camera_intrinsic"])
            assert np.array_equal(info.k.reshape(3, 3), K) and np.array_equal(info.p.reshape(3, 4)[:, :3], K)
            assert (info.width, info.height) == (sd["width"], sd["height"]) and not info.d.any()
    # /tf: map -> base_link at every distinct ego pose of the written sample_data
    written = [sd for ch in ("LIDAR_TOP", *CAMERAS) for sd in sds[ch]]
    poses = {tables.ego[sd["ego_pose_token"]]["timestamp"]: tables.ego[sd["ego_pose_token"]] for sd in written}
    assert [t for t, _, _ in by_topic["/tf"]] == [ts * 1000 for ts in sorted(poses)]
    for t_ns, msg, _ in by_topic["/tf"]:
        (tf,) = msg.transforms
        assert (tf.header.frame_id, tf.child_frame_id) == ("map", "base_link")
        pose = poses[t_ns // 1000]
        tr, q = tf.transform.translation, tf.transform.rotation
        assert np.allclose([tr.x, tr.y, tr.z], pose["translation"])
        assert np.allclose([q.w, q.x, q.y, q.z], pose["rotation"])
    # /LIDAR_TOP/pose: the sensor in map at each sweep (ego pose x calibrated_sensor), the sweep's stamp
    from clip2_core.datasets.nuscenes import pose_matrix
    from scipy.spatial.transform import Rotation

    assert [t for t, _, _ in by_topic["/LIDAR_TOP/pose"]] == [t for t, _, _ in by_topic["/LIDAR_TOP"]]
    for (t_ns, msg, _), sd in zip(by_topic["/LIDAR_TOP/pose"], sds["LIDAR_TOP"]):
        T = pose_matrix(tables.ego[sd["ego_pose_token"]]) @ pose_matrix(tables.cs[sd["calibrated_sensor_token"]])
        p, q = msg.pose.position, msg.pose.orientation
        assert msg.header.frame_id == "map" and np.allclose([p.x, p.y, p.z], T[:3, 3])
        assert np.allclose(Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix(), T[:3, :3], atol=1e-9)
    # /tf_static: base_link -> every sensor of the first keyframe, from calibrated_sensor
    ((t_static, static, _),) = by_topic["/tf_static"]
    assert t_static == times[0]
    first = tables.keyframe_sd(tables.scene_samples(scene)[0])
    assert sorted(tf.child_frame_id for tf in static.transforms) == sorted(first)
    for tf in static.transforms:
        cs = tables.cs[first[tf.child_frame_id]["calibrated_sensor_token"]]
        assert tf.header.frame_id == "base_link"
        tr = tf.transform.translation
        assert np.allclose([tr.x, tr.y, tr.z], cs["translation"])


def test_ground_truth_markers_and_json(mcap_out, tables, world):
    from clip2_core.datasets.nuscenes import NuScenesReader
    from clip2_core.types import boxes_to_array

    scene = "scene-0001"
    reader = NuScenesReader(world, VERSION, scenes=[scene], class_map="long_tail", cameras=(), load_images=False)
    gt = json.loads((mcap_out / scene / "gt.json").read_text())
    assert gt["format"] == "clip2.bag_gt/v1" and gt["frame_id"] == "LIDAR_TOP"
    samples = tables.scene_samples(scene)
    assert [k["sample_token"] for k in gt["keyframes"]] == [s["token"] for s in samples]
    msgs, _ = _read_rosbags(mcap_out / scene)
    markers = [(t, m) for topic, _, t, m, _ in msgs if topic == "/gt/markers"]
    assert len(markers) == len(samples)
    for kf, s, (t_ns, arr) in zip(gt["keyframes"], samples, markers):
        sd = tables.keyframe_sd(s)["LIDAR_TOP"]
        assert kf["stamp_ns"] == t_ns == sd["timestamp"] * 1000
        boxes = reader.gt_boxes(sd["token"])
        assert len(boxes) > 0
        assert np.allclose(np.asarray(kf["boxes"]), boxes_to_array(boxes))
        assert kf["labels"] == [b.label for b in boxes]
        assert kf["num_lidar_pts"] == [b.attributes["num_lidar_pts"] for b in boxes]
        assert arr.markers[0].action == 3  # DELETEALL
        cubes = [m for m in arr.markers if m.ns == "gt"]
        texts = [m for m in arr.markers if m.ns == "gt_labels"]
        assert len(cubes) == len(texts) == len(boxes)
        for m, box, txt in zip(cubes, kf["boxes"], texts):
            assert m.header.frame_id == "LIDAR_TOP" and m.type == 1
            assert np.allclose([m.pose.position.x, m.pose.position.y, m.pose.position.z], box[:3])
            assert np.allclose([m.scale.x, m.scale.y, m.scale.z], box[3:6])
            q = m.pose.orientation
            assert np.isclose(np.arctan2(2 * q.w * q.z, 1 - 2 * q.z * q.z), np.arctan2(np.sin(box[6]), np.cos(box[6])))
        assert [t.text for t in texts] == kf["labels"]


def test_mcap_library_decodes_every_message(mcap_out, tables, world):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    scene = "scene-0002"
    expected, sds = _expected_counts(tables, scene)
    counts = Counter()
    lidar_files = iter(sds["LIDAR_TOP"])
    front_files = iter(sds["CAM_FRONT"])
    types = {"/LIDAR_TOP": "sensor_msgs/msg/PointCloud2", "/LIDAR_TOP/pose": "geometry_msgs/msg/PoseStamped",
             "/tf": "tf2_msgs/msg/TFMessage",
             "/tf_static": "tf2_msgs/msg/TFMessage", "/gt/markers": "visualization_msgs/msg/MarkerArray",
             **{f"/{c}/image_rect_compressed": "sensor_msgs/msg/CompressedImage" for c in CAMERAS},
             **{f"/{c}/camera_info": "sensor_msgs/msg/CameraInfo" for c in CAMERAS}}
    with open(mcap_out / scene / f"{scene}.mcap", "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        assert reader.get_header().profile == "ros2"
        for schema, channel, message, decoded in reader.iter_decoded_messages(log_time_order=True):
            assert schema.encoding == "ros2msg" and channel.message_encoding == "cdr"
            assert schema.name == types[channel.topic]
            counts[channel.topic] += 1
            assert message.log_time == message.publish_time
            if channel.topic == "/LIDAR_TOP":
                sd = next(lidar_files)
                assert message.log_time == sd["timestamp"] * 1000 == _stamp_ns(decoded.header)
                assert bytes(decoded.data) == (world / sd["filename"]).read_bytes()
            elif channel.topic == "/CAM_FRONT/image_rect_compressed":
                sd = next(front_files)
                assert decoded.format == "jpeg" and bytes(decoded.data) == (world / sd["filename"]).read_bytes()
    assert dict(counts) == expected


def test_rclpy_deserialises_what_ros2_bag_play_would_publish(mcap_out, world, tables):
    """The stored CDR bytes through rclpy's typesupport, then the node's own conversions."""
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CameraInfo, CompressedImage, PointCloud2
    from visualization_msgs.msg import MarkerArray

    from clip2_ros.conversions import camera_info_to_intrinsics, compressed_image_to_rgb, pointcloud2_to_array

    scene = "scene-0001"
    _, sds = _expected_counts(tables, scene)
    msgs, _ = _read_rosbags(mcap_out / scene)
    first = {}
    for topic, _, _, _, raw in msgs:
        first.setdefault(topic, raw)
    cloud = deserialize_message(first["/LIDAR_TOP"], PointCloud2)
    pts, names = pointcloud2_to_array(cloud)
    assert names == ("x", "y", "z", "intensity", "ring")
    ref = np.fromfile(world / sds["LIDAR_TOP"][0]["filename"], dtype=np.float32).reshape(-1, 5)
    assert pts.shape == ref.shape and np.array_equal(pts, ref)
    img = deserialize_message(first["/CAM_FRONT/image_rect_compressed"], CompressedImage)
    assert bytes(img.data) == (world / sds["CAM_FRONT"][0]["filename"]).read_bytes()
    assert compressed_image_to_rgb(img).shape == (900, 1600, 3)
    K, size = camera_info_to_intrinsics(deserialize_message(first["/CAM_FRONT/camera_info"], CameraInfo))
    assert size == (1600, 900)
    assert np.array_equal(K, tables.cs[sds["CAM_FRONT"][0]["calibrated_sensor_token"]]["camera_intrinsic"])
    arr = deserialize_message(first["/gt/markers"], MarkerArray)
    assert arr.markers[0].action == 3 and len(arr.markers) > 1


def _installed_type_hash(msgtype: str):
    pkg, _, name = msgtype.split("/")
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    for prefix in prefixes:
        f = Path(prefix) / "share" / pkg / "msg" / f"{name}.json"
        if f.is_file():
            hashes = json.loads(f.read_text())["type_hashes"]
            return next(h["hash_string"] for h in hashes if h["type_name"] == msgtype)
    return None


def test_type_hashes_match_the_installed_ros_messages(mcap_out):
    _, conns = _read_rosbags(mcap_out / "scene-0001")
    checked = 0
    for c in conns:
        installed = _installed_type_hash(c.msgtype)
        if installed is not None:  # tf2_msgs is not among the pip-installed ROS packages
            assert c.digest == installed, c.msgtype
            checked += 1
    assert checked > 0, "no installed ROS message type descriptions (share/<pkg>/msg/*.json) found"


def test_params_file_validates_and_matches_calibration(mcap_out, tables):
    from clip2_ros.params import default_param_file, flatten, load_param_file, node_params, validate

    scene = "scene-0001"
    nested = load_param_file(mcap_out / scene / "lidar_openvocab.param.yaml")
    validate(nested, require_model=False)
    assert nested["lidar"]["topic"] == "/LIDAR_TOP" and nested["lidar"]["intensity_max"] == 255.0
    assert nested["cameras"]["names"] == list(CAMERAS) and nested["cameras"]["enabled"] is True
    assert nested["model"]["checkpoint"] == nested["model"]["onnx"] == ""
    # every other key keeps the shipped default
    default = flatten(load_param_file(default_param_file()))
    ours = flatten(nested)
    changed = {k for k in ours if k.startswith("cameras.") or k in ("lidar.topic", "tf_fixed_frame", "accumulate.pose_topic")}
    assert ours["accumulate.pose_topic"] == "/LIDAR_TOP/pose"  # sweeps can be accumulated without tf2
    assert {k: v for k, v in ours.items() if k not in changed} == {k: v for k, v in default.items()
                                                                   if k not in changed and not k.startswith("cameras.")}
    assert nested["tf_fixed_frame"] == "map"  # the bag's /tf: map -> base_link
    first = tables.keyframe_sd(tables.scene_samples(scene)[0])
    T_ego_lidar = _pose(tables.cs[first["LIDAR_TOP"]["calibrated_sensor_token"]])
    params = node_params(nested)
    assert [c.name for c in params.cameras] == list(CAMERAS)
    for cam in params.cameras:
        assert cam.compressed and cam.frame_id == cam.name
        assert cam.image_topic == f"/{cam.name}/image_rect_compressed" and cam.camera_info_topic == f"/{cam.name}/camera_info"
        T_ego_cam = _pose(tables.cs[first[cam.name]["calibrated_sensor_token"]])
        assert np.allclose(cam.T_lidar_to_cam, invert_transform(T_ego_cam) @ T_ego_lidar, atol=1e-8)


def test_sqlite3_keyframes_one_camera(world, tables, tmp_path):
    out = tmp_path / "kf"
    rc = _main(["bag", "from-nuscenes", "--dataroot", str(world), "--version", VERSION, "--scene", "scene-0002",
                "--out", str(out), "--storage", "sqlite3", "--sweeps", "keyframes", "--cameras", "CAM_BACK",
                "--no-progress"])
    assert rc == 0
    bag = out / "scene-0002"
    assert (bag / "scene-0002.db3").is_file() and not list(bag.glob("*.mcap"))
    expected, sds = _expected_counts(tables, "scene-0002", keyframes_only=True, cameras=("CAM_BACK",))
    assert expected["/LIDAR_TOP"] == len(tables.scene_samples("scene-0002"))
    msgs, _ = _read_rosbags(bag)
    assert dict(Counter(m[0] for m in msgs)) == expected
    assert [t for topic, _, t, _, _ in msgs if topic == "/LIDAR_TOP"] == [sd["timestamp"] * 1000 for sd in sds["LIDAR_TOP"]]
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["storage_identifier"] == "sqlite3" and meta["version"] == 9


def _config(world, out, **kw):
    from clip2_ros.bag import BagConfig

    return BagConfig(dataroot=world, version=VERSION, out=out, **kw)


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_interrupted_conversion_leaves_no_output(world, tables, tmp_path, exc):
    from clip2_ros.bag import convert

    out = tmp_path / "bags"
    stop_at = sum(_expected_counts(tables, "scene-0001")[0].values()) + 5  # inside the second scene's bag
    seen = []

    def boom(topic):
        seen.append(topic)
        if len(seen) == stop_at:
            raise exc("stop")

    with pytest.raises(exc):
        convert(_config(world, out), progress=False, on_message=boom)
    assert len(seen) == stop_at
    assert not out.exists() and not (tmp_path / "bags.partial").exists()


def test_stale_partial_existing_output_and_overwrite(world, tmp_path, capsys):
    from clip2_ros.bag import convert

    out = tmp_path / "bags"
    stale = tmp_path / "bags.partial" / "scene-0001"
    stale.mkdir(parents=True)
    (stale / "metadata.yaml").write_text("half-written\n")
    summary = convert(_config(world, out, scenes=["scene-0001"], cameras=()), progress=False)
    assert not (tmp_path / "bags.partial").exists()
    assert summary["scenes"][0]["messages"]["/LIDAR_TOP"] > 0
    assert [p.name for p in (out / "scene-0001").glob("*.mcap")] == ["scene-0001.mcap"]
    # a complete output is refused unless --overwrite, and then replaced whole
    argv = ["bag", "from-nuscenes", "--dataroot", str(world), "--version", VERSION, "--scene", "scene-0002",
            "--out", str(out), "--no-progress"]
    assert _main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("clip2 bag: error: ") and "--overwrite" in err and "\n" not in err
    assert _main(argv + ["--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["scene-0002", "summary.json"]
    # a folder that is not ours is never replaced
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not an output of clip2 bag"):
        convert(_config(world, foreign, overwrite=True), progress=False)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_missing_and_bad_files_are_skipped_and_counted(world, tables, tmp_path):
    from clip2_ros.bag import convert

    root = tmp_path / "damaged"
    shutil.copytree(world, root)
    _, sds = _expected_counts(tables, "scene-0001")
    sweeps = [sd for sd in sds["LIDAR_TOP"] if not sd["is_key_frame"]]
    (root / sweeps[1]["filename"]).unlink()  # missing sweep
    (root / sweeps[3]["filename"]).write_bytes(b"\x00" * 7)  # not whole points
    (root / sds["CAM_FRONT"][0]["filename"]).unlink()  # missing image
    (root / sds["CAM_BACK"][1]["filename"]).write_bytes(b"not a jpeg")
    out = tmp_path / "bags"
    summary = convert(_config(root, out, scenes=["scene-0001"]), progress=False)
    assert summary["totals"]["skipped_missing"] == 2 and summary["totals"]["skipped_bad"] == 2
    reasons = {s["filename"]: s["reason"] for s in summary["scenes"][0]["skipped"]}
    assert reasons[sweeps[1]["filename"]] == "missing" and reasons[sweeps[3]["filename"]].startswith("bad:")
    assert json.loads((out / "summary.json").read_text())["totals"] == summary["totals"]
    msgs, _ = _read_rosbags(out / "scene-0001")
    counts = Counter(m[0] for m in msgs)
    assert counts["/LIDAR_TOP"] == len(sds["LIDAR_TOP"]) - 2
    assert counts["/CAM_FRONT/image_rect_compressed"] == counts["/CAM_FRONT/camera_info"] == len(sds["CAM_FRONT"]) - 1
    assert counts["/CAM_BACK/image_rect_compressed"] == len(sds["CAM_BACK"]) - 1
    lidar_t = {t for topic, _, t, _, _ in msgs if topic == "/LIDAR_TOP"}
    assert sweeps[1]["timestamp"] * 1000 not in lidar_t and sweeps[3]["timestamp"] * 1000 not in lidar_t
    # no /tf for the ego pose of a skipped file
    gone = {sweeps[1]["token"], sweeps[3]["token"], sds["CAM_FRONT"][0]["token"], sds["CAM_BACK"][1]["token"]}
    written = [sd for ch in ("LIDAR_TOP", *CAMERAS) for sd in sds[ch] if sd["token"] not in gone]
    tf_t = [t for topic, _, t, _, _ in msgs if topic == "/tf"]
    assert tf_t == sorted({tables.ego[sd["ego_pose_token"]]["timestamp"] * 1000 for sd in written})


def test_one_line_errors(world, tmp_path, capsys):
    base = ["bag", "from-nuscenes", "--version", VERSION, "--out", str(tmp_path / "o"), "--no-progress"]
    cases = [
        (["--dataroot", str(world), "--scene", "scene-9999"], "unknown scene(s) ['scene-9999']"),
        (["--dataroot", str(tmp_path / "nowhere"), "--all"], "does not exist"),
        (["--dataroot", str(world), "--all", "--cameras", "CAM_LEFT_EAR"], "CAM_LEFT_EAR"),
    ]
    broken = tmp_path / "broken"
    (broken / VERSION).mkdir(parents=True)
    for t in ("scene", "sample"):
        shutil.copy(world / VERSION / f"{t}.json", broken / VERSION)
    cases.append((["--dataroot", str(broken), "--all"], "lacks nuScenes table(s)"))
    hostile = tmp_path / "hostile"  # a dataset whose scene name would put its bag outside --out
    shutil.copytree(world / VERSION, hostile / VERSION)
    for entry in world.iterdir():
        if entry.name != VERSION:
            (hostile / entry.name).symlink_to(entry)
    scenes = json.loads((hostile / VERSION / "scene.json").read_text())
    scenes[0]["name"] = "../escape"
    (hostile / VERSION / "scene.json").write_text(json.dumps(scenes))
    cases.append((["--dataroot", str(hostile), "--all"], "cannot name a folder"))
    for extra, needle in cases:
        assert _main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("clip2 bag: error: ") and needle in err and "\n" not in err, err
        assert not (tmp_path / "o").exists()
    with pytest.raises(SystemExit) as e:
        _main(["bag", "--help"])
    assert e.value.code == 0
    assert "from-nuscenes" in capsys.readouterr().out


def test_bag_module_needs_no_rclpy():
    code = ("import sys; import clip2_core.cli.bag; assert 'rosbags' not in sys.modules; "
            "import clip2_ros.bag; assert 'rclpy' not in sys.modules and 'sensor_msgs' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
