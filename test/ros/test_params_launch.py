"""Parameters (YAML + JSON schema), the launch file and the rviz config."""
import ast
import copy
import json
import py_compile
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import rclpy
import yaml
from rclpy.node import Node
from rclpy.parameter import Parameter

from clip2_ros import params as P

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "launch" / "lidar_openvocab.launch.py"
RVIZ = ROOT / "rviz" / "clip2.rviz"


@pytest.fixture
def defaults():
    return P.load_param_file(P.default_param_file())


def test_shipped_yaml_validates_against_schema(defaults):
    doc = yaml.safe_load(P.default_param_file().read_text())
    jsonschema.Draft7Validator.check_schema(P.load_schema())
    jsonschema.validate(doc, P.load_schema())
    P.validate(defaults, require_model=False)
    with pytest.raises(P.ParameterError, match="'model.checkpoint' or 'model.onnx' must be set"):
        P.validate(defaults)
    node = P.node_params(defaults)
    assert node.lidar_topic == "input/points" and [c.name for c in node.cameras] == ["CAM_FRONT"]
    assert node.intensity_field == "intensity"
    assert node.cameras[0].T_lidar_to_cam.shape == (4, 4)
    assert node.cameras[0].intrinsics == "auto"
    # parameter files written before cameras.<NAME>.intrinsics existed still validate: auto
    old = copy.deepcopy(defaults)
    del old["cameras"]["CAM_FRONT"]["intrinsics"]
    P.validate(old, require_model=False)
    assert P.node_params(old).cameras[0].intrinsics == "auto"
    assert dict(P.camera_parameter_names("CAM_X"))["cameras.CAM_X.intrinsics"] == "auto"
    pipe = node.pipeline
    assert set(pipe) == set(P.PIPELINE_KEYS)
    assert pipe["model"]["checkpoint"] is None and pipe["clip"]["weights"] is None
    assert pipe["clip"]["templates"] is None  # [""] = the built-in templates
    assert pipe["clip"]["model"] is None and pipe["model"]["num_threads"] is None  # "" / 0 = defaults
    from clip2_core.pipeline import PipelineConfig

    with pytest.raises(ValueError, match="model.checkpoint or model.onnx"):  # the pipeline agrees on every key
        PipelineConfig.from_dict(pipe)
    cfg = PipelineConfig.from_dict(dict(pipe, model=dict(pipe["model"], checkpoint="/some/ckpt")))
    assert cfg.vocabulary == defaults["vocabulary"] and cfg.segmentation.cluster.tolerance == 0.6
    assert pipe["segmentation"]["cluster"]["tolerance"] == 0.6


def test_rcl_parses_the_shipped_yaml(defaults):
    """The real ROS parameter-file parser (what --params-file and launch use) reads every value."""
    ctx = rclpy.Context()
    rclpy.init(args=["--ros-args", "--params-file", str(P.default_param_file())], context=ctx)
    try:
        node = Node("yaml_probe", context=ctx, automatically_declare_parameters_from_overrides=True)
        flat = P.flatten(defaults)
        got = {name: node.get_parameter(name).value for name in flat}
        for name, value in flat.items():
            v = got[name]
            v = list(v) if not isinstance(v, (str, bool, int, float)) else v
            assert v == value, name
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=ctx)


def test_flatten_unflatten_round_trip(defaults):
    flat = P.flatten(defaults)
    assert flat["segmentation.cluster.min_points"] == 5
    assert flat["cameras.CAM_FRONT.compressed"] is True
    assert P.unflatten(flat) == defaults
    with pytest.raises(P.ParameterError, match="nests under"):
        P.unflatten({"a": 1, "a.b": 2})


def _bad(defaults, edit):
    d = copy.deepcopy(defaults)
    d["model"]["checkpoint"] = "/some/ckpt"
    edit(d)
    with pytest.raises(P.ParameterError) as info:
        P.validate(d)
    return str(info.value)


def test_errors_name_the_parameter(defaults):
    """One bad value, one message line: the parameter's name and what is wrong with it."""
    rot = np.eye(4)
    rot[0, 0] = 2.0
    cases = [
        (lambda d: d["model"].update(backend="cuda"),
         "parameter 'model.backend': 'cuda' is not one of ['auto', 'tensorrt', 'onnxruntime', 'torch']"),
        (lambda d: d.update(score_threshold=1.5), "parameter 'score_threshold': 1.5 is greater than the maximum of 1"),
        (lambda d: d.update(vocabulary=[]), "parameter 'vocabulary': must be set (it is an empty list)"),
        (lambda d: d.update(vocabulary=["car", "car"]), "parameter 'vocabulary': ['car', 'car'] has non-unique elements"),
        (lambda d: d["cameras"]["CAM_FRONT"].update(T_lidar_to_cam=[1.0] * 12),
         f"parameter 'cameras.CAM_FRONT.T_lidar_to_cam': {[1.0] * 12} is too short"),
        (lambda d: d["cameras"]["CAM_FRONT"].update(T_lidar_to_cam=rot.reshape(-1).tolist()),
         "parameter 'cameras.CAM_FRONT.T_lidar_to_cam': the 3x3 block is not a rotation"),
        (lambda d: d["clip"].update(templates=["a photo of a thing"]),
         "parameter 'clip.templates': template 'a photo of a thing' has no '{}' for the label"),
        (lambda d: d["cameras"].update(names=["CAM_FRONT", "CAM_BACK"]),
         "parameter 'cameras.CAM_BACK': camera 'CAM_BACK' is listed in cameras.names but has no settings"),
        (lambda d: d["segmentation"]["cluster"].update(min_points="five"),
         "parameter 'segmentation.cluster.min_points': 'five' is not of type 'integer'"),
        (lambda d: d["cameras"]["CAM_FRONT"].update(intrinsics="Q"),
         "parameter 'cameras.CAM_FRONT.intrinsics': 'Q' is not one of ['auto', 'P', 'K']"),
    ]
    for edit, line in cases:
        assert _bad(defaults, edit).splitlines() == ["invalid parameters:", f"  {line}"]
    msg = _bad(defaults, lambda d: d["segmentation"]["cluster"].update(tolerence=0.5))
    assert "unknown parameter(s) ['segmentation.cluster.tolerence']" in msg
    msg = _bad(defaults, lambda d: d["cameras"]["CAM_FRONT"].update(image_topic=""))
    assert "parameter 'cameras.CAM_FRONT.image_topic': must be set" in msg
    # two bad values: both reported, not just the first
    two = _bad(defaults, lambda d: (d.update(score_threshold=1.5), d["model"].update(backend="cuda")))
    assert {"  parameter 'score_threshold': 1.5 is greater than the maximum of 1",
            "  parameter 'model.backend': 'cuda' is not one of ['auto', 'tensorrt', 'onnxruntime', 'torch']"} \
        <= set(two.splitlines())


def test_runtime_vocabulary_and_template_checks():
    assert P.validate_vocabulary(["car", "tree"]) == ["car", "tree"]
    for bad in [[], "car", ["car", " "], ["a", "a"], [1, 2]]:
        with pytest.raises(P.ParameterError):
            P.validate_vocabulary(bad)
    assert P.validate_templates([""]) is None
    assert P.validate_templates(["a {}."]) == ["a {}."]
    with pytest.raises(P.ParameterError, match="has no"):
        P.validate_templates(["no placeholder"])
    # accepted by a bare "{} in template" check, refused by the text-bank build: refused up front
    for bad, why in [("{} and {}", "exactly one"), ("a {0}.", "exactly one"), ("a {name}.", "exactly one"),
                     ("a {} {", "not a format string"), ("a {:d}.", "cannot take a label")]:
        with pytest.raises(P.ParameterError, match=why):
            P.validate_templates(["a {}.", bad])
    assert P.validate_templates(["a {{literal}} {}."]) == ["a {{literal}} {}."]


def test_node_rejects_bad_parameters_before_loading_a_model(ros_context):
    from clip2_ros.node import LidarOpenVocabNode

    cases = [
        ([Parameter("score_treshold", value=0.5)], "unknown parameter(s) ['score_treshold']"),
        ([Parameter("model.backend", value="gpu")], "parameter 'model.backend'"),
        ([Parameter("cameras.names", value=["CAM_LEFT"])], "parameter 'cameras.CAM_LEFT.image_topic': must be set"),
        ([Parameter("max_clusters", value=0)], "parameter 'max_clusters'"),
        ([Parameter("cameras.CAM_FRONT.intrinsics", value="Q")],
         "parameter 'cameras.CAM_FRONT.intrinsics': 'Q' is not one of ['auto', 'P', 'K']"),
        ([Parameter("cameras.names", value=["CAM_FRONT", "CAM_BACK"]),
          Parameter("cameras.CAM_BACK.image_topic", value="/CAM_BACK/image_rect"),
          Parameter("cameras.CAM_BACK.camera_info_topic", value="/CAM_BACK/camera_info"),
          Parameter("cameras.CAM_BACK.T_lidar_to_cam", value=np.eye(4).reshape(-1).tolist()),
          Parameter("cameras.CAM_BACK.intrinsics", value="k")],
         "parameter 'cameras.CAM_BACK.intrinsics': 'k' is not one of ['auto', 'P', 'K']"),
    ]
    for overrides, expected in cases:
        with pytest.raises(P.ParameterError) as info:
            LidarOpenVocabNode(context=ros_context, parameter_overrides=overrides)
        assert expected in str(info.value)


# ---------------------------------------------------------------------------------------------- launch / rviz
def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _name(func):
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def _module_constants(tree):
    return {
        t.id: n.value.value
        for n in tree.body if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)
        for t in n.targets if isinstance(t, ast.Name)
    }


def test_launch_file_structure():
    py_compile.compile(str(LAUNCH), doraise=True)
    tree = ast.parse(LAUNCH.read_text())
    modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    modules |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert modules and all(m.split(".")[0] in ("launch", "launch_ros", "ament_index_python") for m in modules), modules
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
    declared = {
        c.args[0].value for c in _calls(tree)
        if _name(c.func) == "DeclareLaunchArgument" and c.args and isinstance(c.args[0], ast.Constant)
    }
    assert {"params_file", "use_sim_time", "lidar_topic", "rviz"} <= declared
    used = {
        c.args[0].value for c in _calls(tree)
        if _name(c.func) == "LaunchConfiguration" and c.args and isinstance(c.args[0], ast.Constant)
    }
    assert used <= declared, f"LaunchConfiguration of undeclared arguments: {used - declared}"
    nodes = [c for c in _calls(tree) if _name(c.func) == "Node"]
    kw = [{k.arg: k.value for k in n.keywords} for n in nodes]
    execs = {k["executable"].value for k in kw}
    assert execs == {"lidar_openvocab_node", "rviz2"}
    ours = next(k for k in kw if k["executable"].value == "lidar_openvocab_node")
    consts = _module_constants(tree)
    package = ours["package"]
    package = consts[package.id] if isinstance(package, ast.Name) else package.value
    assert package == "clip2_ros" and "parameters" in ours and "remappings" in ours
    assert _name(ours["on_exit"].func) == "Shutdown"  # the node is required: its exit ends the launch
    viewer = next(k for k in kw if k["executable"].value == "rviz2")
    assert _name(viewer["condition"].func) == "IfCondition"
    # rviz2 is started from an OpaqueFunction that first looks it up (missing: a LogInfo, not a failure)
    opaque = [c for c in _calls(tree) if _name(c.func) == "OpaqueFunction"]
    assert len(opaque) == 1 and any(_name(c.func) == "get_package_prefix" for c in _calls(tree))
    assert any(_name(c.func) == "LogInfo" for c in _calls(tree))
    # files the launch file refers to exist in the package share layout (installed by setup.py data_files)
    joined = [
        [a.value for a in c.args[0].elts if isinstance(a, ast.Constant)]
        for c in _calls(tree) if _name(c.func) == "PathJoinSubstitution"
    ]
    for parts in joined:
        assert (ROOT.joinpath(*parts)).is_file(), parts


def test_rviz_config_shows_the_node_outputs():
    cfg = yaml.safe_load(RVIZ.read_text())
    displays = cfg["Visualization Manager"]["Displays"]
    by_class = {}
    for d in displays:
        by_class.setdefault(d["Class"], []).append(d)
    topics = {d["Topic"]["Value"] for d in displays if "Topic" in d}
    assert "/lidar_openvocab_node/detections/markers" in topics
    assert "/lidar_openvocab_node/detections/points" in topics
    assert by_class["rviz_default_plugins/MarkerArray"] and by_class["rviz_default_plugins/Image"]
    assert len(by_class["rviz_default_plugins/PointCloud2"]) == 2
    assert cfg["Visualization Manager"]["Global Options"]["Fixed Frame"]
    # the detected-points display colours by a field the node publishes
    from clip2_ros.markers import LABELLED_CLOUD_DTYPE

    det = next(d for d in by_class["rviz_default_plugins/PointCloud2"] if "detections" in d["Topic"]["Value"])
    assert det["Channel Name"] in LABELLED_CLOUD_DTYPE.names
    json.dumps(cfg)  # plain data only
