"""nuScenes detection metrics from nuscenes-devkit itself (``DetectionEval``), on any set of scenes.

The devkit evaluates a *split*: one of its predefined ones, or a custom one read from
``<dataroot>/<version>/splits.json``. A replay covers whichever scenes were played, so
:func:`devkit_view` builds a small dataroot *view* in the output folder: the version's tables as
symbolic links (copies where links are not possible) plus a ``splits.json`` naming the played
scenes as the split :data:`REPLAY_SPLIT`. The user's dataroot is never written to, and anyone can
rerun the devkit on the view by hand::

    from nuscenes import NuScenes
    from nuscenes.eval.detection.config import config_factory
    from nuscenes.eval.detection.evaluate import DetectionEval
    nusc = NuScenes(version, dataroot=VIEW)
    DetectionEval(nusc, config_factory("detection_cvpr_2019"), "submission.json", REPLAY_SPLIT, OUT).main()
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from pathlib import Path
from typing import Dict, Optional, Sequence

REPLAY_SPLIT = "clip2_replay"
DEVKIT_CONFIG = "detection_cvpr_2019"  # the nuScenes detection benchmark's configuration


def devkit_view(dataroot: Path, version: str, scenes: Sequence[str], out: Path) -> Path:
    """``out`` as a dataroot whose ``<version>/`` links the tables of ``dataroot`` and whose
    ``splits.json`` holds ``{REPLAY_SPLIT: scenes}``, with the other folders of ``dataroot``
    (maps/, samples/, sweeps/) linked; returns ``out``."""
    src = Path(dataroot) / version
    if not src.is_dir():
        raise FileNotFoundError(f"no table folder {src} (needed to score with the nuScenes devkit)")
    vdir = Path(out) / version
    if vdir.exists():
        shutil.rmtree(vdir)
    vdir.mkdir(parents=True)
    for table in sorted(src.glob("*.json")):
        if table.name == "splits.json":
            continue
        try:
            os.symlink(table.resolve(), vdir / table.name)
        except OSError:  # no symlinks here: copy
            shutil.copyfile(table, vdir / table.name)
    (vdir / "splits.json").write_text(json.dumps({REPLAY_SPLIT: list(scenes)}, indent=1))
    for entry in sorted(Path(dataroot).iterdir()):  # maps/ (the devkit opens the map masks), samples/, sweeps/
        if entry.name == version or (Path(out) / entry.name).exists() or not entry.is_dir():
            continue
        try:
            os.symlink(entry.resolve(), Path(out) / entry.name, target_is_directory=True)
        except OSError:
            if entry.name == "maps":
                shutil.copytree(entry, Path(out) / entry.name)
    return Path(out)


def run_detection_eval(nusc, submission: Path, out_dir: Path, config: str = DEVKIT_CONFIG) -> Dict[str, object]:
    """Run the devkit's ``DetectionEval`` on ``submission`` over the :data:`REPLAY_SPLIT` of ``nusc``
    (a ``NuScenes`` on a :func:`devkit_view`, see :func:`load_nusc_view`); writes the devkit's
    ``metrics_summary.json`` / ``metrics_details.json`` into ``out_dir`` and returns the summary
    (``mean_ap``, ``label_aps`` per class and distance threshold, ``tp_errors``, ``nd_score``, ...).
    """
    from nuscenes.eval.detection.config import config_factory
    from nuscenes.eval.detection.evaluate import DetectionEval

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.redirect_stderr(io.StringIO()):
        evaluator = DetectionEval(nusc, config_factory(config), str(submission), REPLAY_SPLIT, str(out_dir), verbose=False)
    with contextlib.redirect_stderr(io.StringIO()):  # its progress bars, even with verbose=False
        metrics, details = evaluator.evaluate()
    summary = json.loads(json.dumps(metrics.serialize()))  # plain dicts, string keys ("0.5", ...)
    (out_dir / "metrics_summary.json").write_text(json.dumps(summary, indent=1))
    (out_dir / "metrics_details.json").write_text(json.dumps(details.serialize(), indent=1))
    summary["eval_config"] = config
    return summary


def load_nusc_view(dataroot: Path, version: str, scenes: Sequence[str], out: Path, verbose: bool = False):
    """``NuScenes`` on a fresh :func:`devkit_view` (quiet)."""
    from nuscenes import NuScenes

    view = devkit_view(dataroot, version, scenes, out)
    with contextlib.redirect_stdout(io.StringIO()):
        return NuScenes(version=version, dataroot=str(view), verbose=verbose)


def lidar_to_global(nusc, lidar_sd_token: str):
    """(4, 4) LIDAR_TOP -> global at a LiDAR sample_data (its calibrated_sensor and ego pose)."""
    from clip2_core.datasets.nuscenes import pose_matrix

    sd = nusc.get("sample_data", lidar_sd_token)
    return pose_matrix(nusc.get("ego_pose", sd["ego_pose_token"])) @ pose_matrix(
        nusc.get("calibrated_sensor", sd["calibrated_sensor_token"]))


def dataroot_of_bag(bag_root: Path) -> Optional[Path]:
    """The dataroot recorded by ``clip2 bag from-nuscenes`` in the bag folder's summary.json, if any."""
    for p in (Path(bag_root), Path(bag_root).parent):
        s = p / "summary.json"
        if s.is_file():
            try:
                d = json.loads(s.read_text()).get("dataroot")
            except (OSError, ValueError):
                return None
            return Path(d) if d else None
    return None
