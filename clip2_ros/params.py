"""Node parameters: the YAML file is the single source of truth, the JSON schema validates it.

ROS 2 parameters are flat and typed, so the nested YAML (``/**: ros__parameters: ...``) is
flattened into dotted names (``segmentation.cluster.tolerance``) for declaration and unflattened
back into the nested dict that the schema and :class:`clip2_core.pipeline.PipelineConfig` read.

Cameras cannot be a list of dicts in ROS parameters; they are ``cameras.names: [CAM_FRONT, ...]``
plus one group per name: ``cameras.CAM_FRONT.image_topic``, ``.compressed``,
``.camera_info_topic``, ``.intrinsics`` (``auto`` | ``P`` | ``K``: which CameraInfo matrix),
``.frame_id``, ``.T_lidar_to_cam`` (16 numbers, row-major).

Empty strings stand for "not set" (ROS parameters have no null) and ``clip.templates: [""]``
for "the encoder's training templates, else the built-in set" (ROS parameter files cannot hold
empty lists).

Nothing here imports rclpy: these functions are shared by the node, the tests and the docs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from clip2_core.vlm import template_problem

PACKAGE = "clip2_ros"
PARAM_FILE_NAME = "lidar_openvocab.param.yaml"
SCHEMA_FILE_NAME = "lidar_openvocab.schema.json"
# Parameters that rclpy itself declares or that ROS tooling may pass; never reported as unknown.
RESERVED_PREFIXES = ("use_sim_time", "qos_overrides.", "start_type_description_service")
# Parameters that may change while the node runs; everything else is read-only.
DYNAMIC_PARAMETERS = ("vocabulary", "clip.templates")
# Keys of the nested dict that belong to the pipeline (PipelineConfig.from_dict); the rest are the node's.
PIPELINE_KEYS = (
    "segmentation",
    "model",
    "clip",
    "vocabulary",
    "score_threshold",
    "unknown_threshold",
    "ensemble",
    "ensemble_weight",
    "max_clusters",
    "shape_correction",
    "top_k",
)
# Defaults for a camera group whose name is not in the default YAML: "" / [] fail validation
# with a message naming the parameter to set.
CAMERA_DEFAULTS: Dict[str, Any] = {
    "image_topic": "",
    "compressed": False,
    "camera_info_topic": "",
    "intrinsics": "auto",
    "frame_id": "",
    "T_lidar_to_cam": [],
}


class ParameterError(ValueError):
    """Invalid node parameters; the message names every offending parameter."""


def config_dir() -> Path:
    """The first of :func:`clip2_ros.resources.config_dirs` that holds the node's parameter file (else the source tree's)."""
    from clip2_ros.resources import config_dirs

    for d in config_dirs():
        if (d / PARAM_FILE_NAME).is_file():
            return d
    return Path(__file__).resolve().parent.parent / "config"


def default_param_file() -> Path:
    return config_dir() / PARAM_FILE_NAME


def schema_file() -> Path:
    return config_dir() / SCHEMA_FILE_NAME


def load_param_file(path: str | Path, node_name: str = "/**") -> Dict[str, Any]:
    """The nested ``ros__parameters`` of ``node_name`` (``/**`` by default) from a ROS 2 param YAML."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"parameter file {p} does not exist")
    doc = yaml.safe_load(p.read_text())
    if not isinstance(doc, dict):
        raise ParameterError(f"{p}: expected a mapping '<node name>: ros__parameters: ...' at the top")
    for key in (node_name, "/**"):
        if key in doc:
            section = doc[key]
            if not isinstance(section, dict) or "ros__parameters" not in section:
                raise ParameterError(f"{p}: section '{key}' has no 'ros__parameters'")
            return section["ros__parameters"]
    raise ParameterError(f"{p}: no section for node '{node_name}' or '/**' (found {sorted(doc)})")


def flatten(nested: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists are leaves)."""
    out: Dict[str, Any] = {}
    for k, v in nested.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, name + "."))
        else:
            out[name] = v
    return out


def unflatten(flat: Mapping[str, Any]) -> Dict[str, Any]:
    """``{"a.b": 1}`` -> ``{"a": {"b": 1}}``; raises ParameterError on a leaf/group clash."""
    out: Dict[str, Any] = {}
    for name in sorted(flat):
        parts = name.split(".")
        node = out
        for part in parts[:-1]:
            nxt = node.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ParameterError(f"parameter '{name}' nests under '{part}', which is a value, not a group")
            node = nxt
        if isinstance(node.get(parts[-1]), dict):
            raise ParameterError(f"parameter '{name}' is a value but also a group of other parameters")
        node[parts[-1]] = _plain(flat[name])
    return out


def _plain(v: Any) -> Any:
    """ROS parameter values (array.array, numpy) -> JSON types."""
    if isinstance(v, (list, tuple)) or hasattr(v, "tolist"):
        v = v.tolist() if hasattr(v, "tolist") else list(v)
        return [_plain(x) for x in v]
    return v


def load_schema() -> Dict[str, Any]:
    return json.loads(schema_file().read_text())


def validate(nested: Mapping[str, Any], schema: Optional[Mapping[str, Any]] = None, require_model: bool = True) -> None:
    """Validate nested ``ros__parameters`` against the schema and the cross-field rules.

    ``require_model``: an encoder (``model.checkpoint`` or ``model.onnx``) must be named — true
    for a node about to start; the shipped defaults name none. Raises ParameterError listing
    every problem as ``parameter 'a.b.c': <what is wrong>``.
    """
    import jsonschema

    schema = schema if schema is not None else load_schema()
    doc = {"/**": {"ros__parameters": dict(nested)}}
    validator = jsonschema.Draft7Validator(schema)
    problems: List[str] = []
    for err in sorted(validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path]):
        path = [str(p) for p in err.absolute_path][2:]  # drop "/**", "ros__parameters"
        problems.append(_describe(err, path))
    if not problems:
        problems.extend(_cross_checks(nested))
    if not problems and require_model and not (nested["model"]["checkpoint"] or nested["model"]["onnx"]):
        problems.append(
            "parameter 'model.checkpoint' or 'model.onnx' must be set: the trained point encoder "
            "(a clip2 checkpoint directory, or its ONNX export)"
        )
    if problems:
        raise ParameterError("invalid parameters:\n  " + "\n  ".join(problems))


def _describe(err, path: List[str]) -> str:
    # turn list indices into "name[i]" and unknown keys into their full names
    name = ""
    for p in path:
        name = f"{name}[{p}]" if p.isdigit() else (f"{name}.{p}" if name else p)
    if err.validator == "additionalProperties":
        extra = [k for k in err.instance if k not in err.schema.get("properties", {})]
        full = [f"{name}.{k}" if name else k for k in extra]
        return f"unknown parameter(s) {full}"
    if err.validator == "required":
        missing = [k for k in err.validator_value if k not in err.instance]
        full = [f"{name}.{k}" if name else k for k in missing]
        return f"missing parameter(s) {full}"
    what = name or "<root>"
    msg = err.message
    if err.validator == "minLength" and err.instance == "":
        msg = "must be set (it is empty)"
    elif err.validator == "minItems" and err.instance == []:
        msg = "must be set (it is an empty list)"
    return f"parameter '{what}': {msg}"


def _cross_checks(nested: Mapping[str, Any]) -> List[str]:
    problems = []
    cams = nested.get("cameras", {})
    if cams.get("enabled"):
        for name in cams.get("names", []):
            if name not in cams:
                problems.append(f"parameter 'cameras.{name}': camera '{name}' is listed in cameras.names but has no settings")
                continue
            T = np.asarray(cams[name]["T_lidar_to_cam"], dtype=np.float64).reshape(4, 4)
            if not np.allclose(T[3], [0, 0, 0, 1]):
                problems.append(f"parameter 'cameras.{name}.T_lidar_to_cam': last row must be 0 0 0 1, got {T[3].tolist()}")
            elif not np.allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-3):
                problems.append(f"parameter 'cameras.{name}.T_lidar_to_cam': the 3x3 block is not a rotation")
    for t in nested.get("clip", {}).get("templates", []):
        why = template_problem(t) if t else None
        if why:
            problems.append(f"parameter 'clip.templates': template {t!r} {why}")
    seg = nested.get("segmentation", {}).get("cluster", {})
    if "min_points" in seg and "max_points" in seg and seg["min_points"] > seg["max_points"]:
        problems.append("parameter 'segmentation.cluster.min_points': larger than max_points")
    return problems


def validate_vocabulary(vocabulary: Any) -> List[str]:
    """A run-time vocabulary update: a non-empty list of distinct, non-blank strings (else ParameterError)."""
    vocab = _plain(vocabulary)
    if not isinstance(vocab, list) or not vocab or not all(isinstance(v, str) for v in vocab):
        raise ParameterError(f"parameter 'vocabulary' must be a non-empty list of strings, got {vocabulary!r}")
    if any(not v.strip() for v in vocab):
        raise ParameterError("parameter 'vocabulary': labels must not be blank")
    if len(set(vocab)) != len(vocab):
        raise ParameterError(f"parameter 'vocabulary': duplicate labels in {vocab}")
    return list(vocab)


def validate_templates(templates: Any) -> Optional[List[str]]:
    """A run-time templates update; returns None for ``[""]`` (the built-in set)."""
    t = _plain(templates)
    if not isinstance(t, list) or not t or not all(isinstance(x, str) for x in t):
        raise ParameterError(f"parameter 'clip.templates' must be a non-empty list of strings, got {templates!r}")
    t = [x for x in t if x]
    for x in t:
        why = template_problem(x)
        if why:
            raise ParameterError(f"parameter 'clip.templates': template {x!r} {why}")
    return t or None


@dataclass
class CameraParams:
    name: str  # e.g. "CAM_FRONT"
    image_topic: str
    compressed: bool  # CompressedImage instead of Image
    camera_info_topic: str
    frame_id: str  # optical frame for tf2 ("" = the image header frame)
    T_lidar_to_cam: np.ndarray  # (4, 4) float64 LiDAR -> camera optical frame (fallback when tf2 has none)
    # CameraInfo matrix for the pinhole model: "P" (rectified images), "K" (raw), "auto" (P when the
    # image topic is rectified, e.g. image_rect*, and P is set; else K). See conversions.intrinsics_source.
    intrinsics: str = "auto"


@dataclass
class NodeParams:
    """What the node itself needs, plus the pipeline's nested config dict."""

    lidar_topic: str
    lidar_frame_id: str  # "" = the cloud header frame
    intensity_field: str  # PointField used as intensity ("" = none)
    intensity_max: Optional[float]  # the sensor's intensity full scale; None = the encoder's training scale
    cameras: List[CameraParams]  # empty when cameras are disabled
    max_time_offset: float  # [s]
    use_tf: bool
    tf_fixed_frame: str  # world-fixed tf frame (odom) for ego-motion compensation; "" = latest transform only
    publish_points: bool
    publish_vision_msgs: bool
    warn_throttle_s: float
    pipeline: Dict[str, Any] = field(default_factory=dict)  # nested dict for PipelineConfig.from_dict
    accumulate: Any = None  # clip2_core.accumulate.AccumulateConfig
    pose_topic: str = ""  # geometry_msgs/PoseStamped of the LiDAR frame per sweep ("" = tf2)


def pipeline_dict(nested: Mapping[str, Any]) -> Dict[str, Any]:
    """The pipeline's part of the parameters, with ROS stand-ins turned into None ("" paths, [""] templates)."""
    out = json.loads(json.dumps({k: _plain(nested[k]) for k in PIPELINE_KEYS if k in nested}))
    model = out.get("model", {})
    for k in ("checkpoint", "onnx"):
        if model.get(k) == "":
            model[k] = None
    if model.get("num_threads") == 0:
        model["num_threads"] = None
    clip = out.get("clip", {})
    for k in ("model", "weights", "model_config_file", "cache_dir"):
        if clip.get(k) == "":
            clip[k] = None
    if "templates" in clip:
        clip["templates"] = validate_templates(clip["templates"])
    return out


def node_params(nested: Mapping[str, Any]) -> NodeParams:
    """Validated nested parameters -> NodeParams (call :func:`validate` first)."""
    from clip2_core.accumulate import AccumulateConfig

    acc = nested["accumulate"]
    cams = nested["cameras"]
    cameras = []
    if cams["enabled"]:
        for name in cams["names"]:
            c = cams[name]
            cameras.append(
                CameraParams(
                    name=name,
                    image_topic=c["image_topic"],
                    compressed=bool(c["compressed"]),
                    camera_info_topic=c["camera_info_topic"],
                    frame_id=c["frame_id"],
                    T_lidar_to_cam=np.asarray(c["T_lidar_to_cam"], dtype=np.float64).reshape(4, 4),
                    intrinsics=c.get("intrinsics", CAMERA_DEFAULTS["intrinsics"]),
                )
            )
    return NodeParams(
        lidar_topic=nested["lidar"]["topic"],
        lidar_frame_id=nested["lidar"]["frame_id"],
        intensity_field=nested["lidar"]["intensity_field"],
        intensity_max=float(nested["lidar"]["intensity_max"]) or None,
        cameras=cameras,
        max_time_offset=float(nested["max_time_offset"]),
        use_tf=bool(nested["use_tf"]),
        tf_fixed_frame=str(nested["tf_fixed_frame"]),
        publish_points=bool(nested["publish"]["points"]),
        publish_vision_msgs=bool(nested["publish"]["vision_msgs"]),
        warn_throttle_s=float(nested["warn_throttle_s"]),
        pipeline=pipeline_dict(nested),
        accumulate=AccumulateConfig(sweeps=int(acc["sweeps"]), max_age=float(acc["max_age"]),
                                    min_range=float(acc["min_range"])),
        pose_topic=str(acc["pose_topic"]),
    )


def camera_parameter_names(name: str) -> List[Tuple[str, Any]]:
    """(dotted name, default) of one camera group."""
    return [(f"cameras.{name}.{k}", v) for k, v in CAMERA_DEFAULTS.items()]
