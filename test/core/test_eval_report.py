"""Worked examples for the recognition report (clip2_core.eval.recognition): the metrics, the
vocabulary files a user passes to ``clip2 eval recognition --vocab``, and the written report."""
import json

import numpy as np
import pytest

from clip2_core.eval.recognition import (VOCABULARIES, RecognitionReport, confusion_metrics, load_vocabulary,
                                         write_report)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# 3 classes, 5 objects; class 2 never occurs in the ground truth but is predicted once:
#   truth 0: predicted 0, 1, 0  -> 2 of 3 right
#   truth 1: predicted 1, 2     -> 1 of 2 right
#   truth 2: no objects         -> accuracy undefined (NaN), left out of the mean
Y_TRUE = [0, 0, 0, 1, 1]
Y_PRED = [0, 1, 0, 1, 2]
CONFUSION = [[2, 1, 0],
             [0, 1, 1],
             [0, 0, 0]]
MEAN_CLASS_ACC = (2 / 3 + 1 / 2) / 2  # 7/12 = 0.5833, not (2/3 + 1/2 + 0) / 3
OVERALL_ACC = 3 / 5


def test_confusion_metrics_worked_example():
    m = confusion_metrics(np.array(Y_TRUE), np.array(Y_PRED), 3)
    assert m["confusion"].tolist() == CONFUSION  # rows = truth, columns = prediction
    assert m["support"].tolist() == [3, 2, 0]
    assert m["per_class_acc"][:2].tolist() == pytest.approx([2 / 3, 1 / 2])
    assert np.isnan(m["per_class_acc"][2])
    assert m["mean_class_acc"] == pytest.approx(MEAN_CLASS_ACC)
    assert m["overall_acc"] == pytest.approx(OVERALL_ACC)


def test_confusion_metrics_edge_cases():
    perfect = confusion_metrics(np.array([2, 0, 1, 2]), np.array([2, 0, 1, 2]), 3)
    assert perfect["confusion"].tolist() == [[1, 0, 0], [0, 1, 0], [0, 0, 2]]
    assert perfect["mean_class_acc"] == 1.0 and perfect["overall_acc"] == 1.0
    # one frequent class right, one rare class wrong: overall flatters, the class mean does not
    skewed = confusion_metrics(np.array([0] * 9 + [1]), np.array([0] * 10), 2)
    assert skewed["overall_acc"] == pytest.approx(0.9) and skewed["mean_class_acc"] == pytest.approx(0.5)
    empty = confusion_metrics(np.array([], dtype=int), np.array([], dtype=int), 2)
    assert empty["confusion"].tolist() == [[0, 0], [0, 0]]
    assert np.isnan(empty["mean_class_acc"]) and np.isnan(empty["overall_acc"])


# ---------------------------------------------------------------------------------------------- vocabularies
def test_named_vocabulary():
    pairs = load_vocabulary("nuscenes10")
    assert len(pairs) == 10 and pairs[0] == ("car", "car")
    assert ("construction_vehicle", "construction vehicle") in pairs and ("traffic_cone", "traffic cone") in pairs
    assert [c for c, _ in pairs] == ["car", "truck", "bus", "trailer", "construction_vehicle", "pedestrian",
                                     "motorcycle", "bicycle", "traffic_cone", "barrier"]
    pairs.append(("tree", "tree"))  # a copy: the registry is not changed by the caller
    assert len(load_vocabulary("nuscenes10")) == 10 == len(VOCABULARIES["nuscenes10"])


def test_json_list_vocabulary(tmp_path):
    f = tmp_path / "v.json"
    f.write_text(json.dumps(["car", "traffic_cone", "construction_vehicle"]))
    assert load_vocabulary(str(f)) == [("car", "car"), ("traffic_cone", "traffic cone"),
                                       ("construction_vehicle", "construction vehicle")]


def test_json_object_vocabulary(tmp_path):
    f = tmp_path / "v.json"
    # {ground-truth label: text given to CLIP}, in file order; the texts are taken as written
    f.write_text(json.dumps({"pedestrian": "person walking", "traffic_cone": "orange_cone", "car": "car"}))
    assert load_vocabulary(str(f)) == [("pedestrian", "person walking"), ("traffic_cone", "orange_cone"), ("car", "car")]


def test_text_vocabulary_with_comments_and_blank_lines(tmp_path):
    f = tmp_path / "v.txt"
    f.write_text("# classes for the parking-lot demo\n\ncar\n  traffic_cone  \n\n# two-wheelers\nbicycle\n")
    assert load_vocabulary(str(f)) == [("car", "car"), ("traffic_cone", "traffic cone"), ("bicycle", "bicycle")]


def test_text_vocabulary_indented_comment(tmp_path):
    f = tmp_path / "v.txt"
    f.write_text("car\n  # not a class\nbus\n")
    assert load_vocabulary(str(f)) == [("car", "car"), ("bus", "bus")]


def test_vocabulary_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"vocabulary 'nuscenes11' is neither one of \['nuscenes10', 'sunrgbd10'\] nor a file"):
        load_vocabulary("nuscenes11")
    with pytest.raises(FileNotFoundError, match="neither one of"):
        load_vocabulary(str(tmp_path / "missing.json"))
    cases = {
        "one.json": (json.dumps(["car"]), "a vocabulary needs at least 2 names"),
        "empty.json": (json.dumps({}), "a vocabulary needs at least 2 names"),
        "one.txt": ("# only one\ncar\n\n", "a vocabulary needs at least 2 names"),
        "scalar.json": (json.dumps("car"), "expected a JSON list or object"),
        "number.json": ("3", "expected a JSON list or object"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=message) as info:
            load_vocabulary(str(tmp_path / name))
        assert str(info.value).startswith(str(tmp_path / name)), name  # the message names the file
    (tmp_path / "broken.json").write_text('["car", ')
    with pytest.raises(ValueError):  # json.JSONDecodeError: a ValueError, so the CLI answers in one line
        load_vocabulary(str(tmp_path / "broken.json"))


# ---------------------------------------------------------------------------------------------- the written report
WARNING = "CLIP weights are RANDOM: these numbers check the machinery, they are not zero-shot results"
Y_ENS = [0, 0, 0, 1, 1]  # the ensemble gets the two point-only mistakes right


def _report(ensemble: bool, warning: bool) -> RecognitionReport:
    meta = {"objects": 5, "min_points": 5, "ensemble_weight": 0.5 if ensemble else None, "ground_removed": True,
            "objects_with_image_crop": 3 if ensemble else 0, "clip": {"model": "clip2-test-tiny", "pretrained": "w"},
            "random_clip": warning, "backend": "torch", "encoder": "pointnet2-tiny-v1", "templates": ["a {}."]}
    if warning:
        meta["warning"] = WARNING
    return RecognitionReport(
        classes=["car", "pedestrian", "traffic_cone"],
        texts=["car", "pedestrian", "traffic cone"],
        point=confusion_metrics(np.array(Y_TRUE), np.array(Y_PRED), 3),
        ensemble=confusion_metrics(np.array(Y_TRUE), np.array(Y_ENS), 3) if ensemble else None,
        meta=meta,
    )


def _is_png(path):
    from PIL import Image

    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as im:
        w, h = im.size
    assert w > 100 and h > 100


def test_write_report_with_ensemble_and_warning(tmp_path):
    paths = write_report(_report(ensemble=True, warning=True), tmp_path / "out", title="Recognition: synth val")
    out = tmp_path / "out"
    assert paths == {"json": out / "report.json", "md": out / "report.md", "confusion": out / "confusion.png",
                     "confusion_ensemble": out / "confusion_ensemble.png"}
    data = json.loads((out / "report.json").read_text())
    assert data["classes"] == ["car", "pedestrian", "traffic_cone"]
    assert data["texts"] == ["car", "pedestrian", "traffic cone"]
    point = data["point"]
    assert point["confusion"] == CONFUSION
    assert point["mean_class_acc"] == pytest.approx(MEAN_CLASS_ACC) and point["overall_acc"] == pytest.approx(OVERALL_ACC)
    assert point["per_class_acc"] == {"car": pytest.approx(2 / 3), "pedestrian": 0.5, "traffic_cone": None}  # NaN -> null
    assert point["support"] == {"car": 3, "pedestrian": 2, "traffic_cone": 0}
    ens = data["ensemble"]
    assert ens["confusion"] == [[3, 0, 0], [0, 2, 0], [0, 0, 0]]
    assert ens["per_class_acc"] == {"car": 1.0, "pedestrian": 1.0, "traffic_cone": None}
    assert ens["mean_class_acc"] == 1.0 and ens["overall_acc"] == 1.0
    assert data["meta"]["warning"] == WARNING and data["meta"]["objects"] == 5

    md = (out / "report.md").read_text().splitlines()
    assert md[0] == "# Recognition: synth val"
    assert f"> **{WARNING}**" in md
    assert "Objects: 5 (GT crops with >= 5 points); encoder pointnet2-tiny-v1 on torch; CLIP clip2-test-tiny." in md
    table = md[md.index("| class | text | objects | point top-1 | ensemble top-1 |"):]
    assert table[1:5] == ["|---|---|---|---|---|",
                          "| car | car | 3 | 0.667 | 1.000 |",
                          "| pedestrian | pedestrian | 2 | 0.500 | 1.000 |",
                          "| traffic_cone | traffic cone | 0 | - | - |"]
    assert "**Mean class accuracy (point): 0.5833**, overall 0.6000" in md
    assert "**Mean class accuracy (point + image, w=0.5): 1.0000**, overall 1.0000 (3 objects had a camera crop)" in md
    _is_png(out / "confusion.png")
    _is_png(out / "confusion_ensemble.png")


def test_write_report_point_only_without_warning(tmp_path):
    paths = write_report(_report(ensemble=False, warning=False), tmp_path)
    assert set(paths) == {"json", "md", "confusion"}
    assert not (tmp_path / "confusion_ensemble.png").exists()
    _is_png(tmp_path / "confusion.png")
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["ensemble"] is None and "warning" not in data["meta"]
    assert data["point"]["per_class_acc"]["traffic_cone"] is None
    md = (tmp_path / "report.md").read_text().splitlines()
    assert md[0] == "# Recognition"
    assert not any(ln.startswith(">") for ln in md)  # no warning line
    i = md.index("| class | text | objects | point top-1 |")
    assert md[i + 1:i + 5] == ["|---|---|---|---|",
                               "| car | car | 3 | 0.667 |",
                               "| pedestrian | pedestrian | 2 | 0.500 |",
                               "| traffic_cone | traffic cone | 0 | - |"]
    assert not any("point + image" in ln for ln in md)
    # written twice into the same folder: replaced, not appended to
    write_report(_report(ensemble=False, warning=False), tmp_path)
    assert (tmp_path / "report.md").read_text().splitlines() == md
