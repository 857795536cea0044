"""Cross-dataset evaluation through the label mappings: `edge-fer eval --label-set dataset` on
real SFEW faces stored under another vocabulary (contempt and no neutral; 3 valence groups),
with the bundled model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from paths import SHARED

from edge_fer import labels as L

SFEW = SHARED / "data" / "sfew_train"
pytestmark = pytest.mark.shared("data/sfew_train")


def build(root: Path, renames: dict[str, str], per_class: int) -> dict[str, int]:
    """Copy the first `per_class` SFEW faces of each source class into root/<new name>/;
    returns the number of files per new folder."""
    counts: dict[str, int] = {}
    for src, dst in renames.items():
        d = root / dst
        d.mkdir(parents=True, exist_ok=True)
        for f in sorted((SFEW / src).glob("*.png"))[:per_class]:
            shutil.copy(f, d / f.name)
            counts[dst] = counts.get(dst, 0) + 1
    return counts


def run_eval(capsys, *argv) -> tuple[int, str, str]:
    from edge_fer.cli.main import main

    rc = main(["eval", "--latency-samples", "0", "--tta", "none", "--no-progress", *argv])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def eval_dataset_vocabulary(capsys, data: Path, out_json: Path) -> tuple[dict, str]:
    """`edge-fer eval --label-set dataset` on `data`, which must succeed: its JSON report and
    stdout."""
    rc, out, err = run_eval(
        capsys, "--data", str(data), "--label-set", "dataset", "--json", str(out_json)
    )
    assert rc == 0, err
    return json.loads(out_json.read_text()), out


def test_mapping_synonyms_and_partial_groups() -> None:
    assert L.mapping(("Anger", "joy", "scared"), L.FER2013) == {
        "Anger": "angry",
        "joy": "happy",
        "scared": "fear",
    }
    # a dataset holding only two of the three groups still receives every class by valence
    m = L.mapping(L.FER2013, ("negative", "positive"))
    assert m["sad"] == "negative" and m["happy"] == "positive" and m["neutral"] is None
    assert L.shared_vocabulary(("angry", "contempt", "happy"), L.FER2013) == ("angry", "happy")
    assert L.shared_vocabulary(("cat", "dog"), L.FER2013) == ()


def test_contempt_no_neutral(tmp_path, capsys) -> None:
    data = tmp_path / "other"
    counts = build(
        data,
        {"angry": "anger", "disgust": "contempt", "happy": "joy", "sad": "sad",
         "surprise": "surprised", "fear": "fear"},
        per_class=6,
    )  # fmt: skip
    # without a choice of vocabulary: one line that names the way out
    rc, _, err = run_eval(capsys, "--data", str(data))
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "contempt have no counterpart" in err and "--label-set dataset" in err

    rep, out = eval_dataset_vocabulary(capsys, data, tmp_path / "rep.json")
    v = rep["vocabulary"]
    assert v["mode"] == "dataset"
    assert v["compared"] == ["angry", "fear", "happy", "sad", "surprise"]  # FER2013 order
    assert v["model_classes_dropped"] == ["disgust", "neutral"]
    assert v["model_classes_merged"] == {}
    assert v["dataset_classes_without_counterpart"] == {"contempt": counts["contempt"]}
    assert v["excluded_faces"] == counts["contempt"] == rep["dropped"]
    assert rep["n"] == sum(counts.values()) - counts["contempt"]
    assert "compared  angry, fear, happy, sad, surprise" in out
    assert f"contempt: no counterpart, {counts['contempt']} faces excluded" in out
    assert "disgust, neutral dropped" in out

    # the numbers are the classifier's own predictions restricted to the compared classes
    from edge_fer.classify import Classifier
    from edge_fer.data import load_dataset

    fs = load_dataset(data, cache=False)
    keep = np.array([fs.classes[y] != "contempt" for y in fs.labels])
    with Classifier.load(threads=1, tta="none") as clf:
        probs = clf.predict(fs.images[keep])
        cols = [clf.classes.index(c) for c in v["compared"]]
    pred = np.array(v["compared"])[probs[:, cols].argmax(1)]
    truth = np.array([fs.classes[y] for y in fs.labels[keep]])
    assert rep["accuracy"] == pytest.approx(float((pred == truth).mean()))


def test_three_groups(tmp_path, capsys) -> None:
    data = tmp_path / "valence"
    groups = {"happy": "positive", "neutral": "neutral", "surprise": "neutral",
              "angry": "negative", "sad": "negative"}  # fmt: skip
    build(data, groups, per_class=4)
    rep, out = eval_dataset_vocabulary(capsys, data, tmp_path / "rep.json")
    v = rep["vocabulary"]
    assert v["compared"] == ["negative", "neutral", "positive"]
    assert v["model_classes_merged"] == {
        "negative": ["angry", "disgust", "fear", "sad"],
        "neutral": ["surprise", "neutral"],
    }
    assert v["model_classes_renamed"] == {"happy": "positive"}
    assert v["dataset_classes_without_counterpart"] == {} and rep["dropped"] == 0
    assert rep["n"] == 20
    assert [rep["per_class"][g]["support"] for g in ("negative", "neutral", "positive")] == [
        8,
        8,
        4,
    ]
    assert "negative <- angry + disgust + fear + sad (merged)" in out


def test_the_classes_scored_are_told_apart_from_the_vocabulary(tmp_path, capsys) -> None:
    """--label-set fer2013 on valence groups: only neutral maps onto FER2013's classes, so
    only neutral faces are scored, and the summary says so (before: 'compared angry, ...
    neutral (7 classes)' beside a macro-F1 that was neutral's F1 alone)."""
    data = tmp_path / "valence"
    build(data, {"happy": "positive", "neutral": "neutral", "sad": "negative"}, per_class=4)
    rc, out, err = run_eval(capsys, "--data", str(data), "--label-set", "fer2013",
                            "--json", str(tmp_path / "rep.json"))  # fmt: skip
    assert rc == 0, err
    rep = json.loads((tmp_path / "rep.json").read_text())
    v = rep["vocabulary"]
    assert v["compared"] == list(L.FER2013) and rep["n"] == 4
    assert v["compared_without_faces"] == [c for c in L.FER2013 if c != "neutral"]
    assert rep["macro_f1"] == pytest.approx(rep["per_class"]["neutral"]["f1"])
    assert "scored    neutral (1 of 7: no test face of angry, disgust," in out
    # every class with faces: no such line
    build(tmp_path / "all", {c: c for c in L.FER2013}, per_class=2)
    rep, out = eval_dataset_vocabulary(capsys, tmp_path / "all", tmp_path / "all.json")
    assert rep["vocabulary"]["compared_without_faces"] == [] and "scored " not in out


def test_a_label_set_name_is_read_as_eval_reads_it_in_python(tmp_path, capsys) -> None:
    """`evaluate()` strips and lowercases a label set's name; the CLI lowercased it only, so
    `--label-set " fer2013"` (a name pasted with its space) was an unknown label set."""
    data = tmp_path / "valence"
    build(data, {"happy": "positive", "neutral": "neutral", "sad": "negative"}, per_class=2)
    rc, out, err = run_eval(capsys, "--data", str(data), "--label-set", " FER2013 ")
    assert rc == 0, err
    assert "scored    neutral (1 of 7" in out


def test_no_shared_class(tmp_path, capsys) -> None:
    data = tmp_path / "pets"
    build(data, {"happy": "cat", "sad": "dog"}, per_class=2)
    rc, _, err = run_eval(capsys, "--data", str(data), "--label-set", "dataset")
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "vocabulary mismatch" in err and "cat, dog" in err


def test_one_class_to_compare_is_refused(tmp_path, capsys) -> None:
    """contempt and sad under --label-set dataset leave sad alone: every face's probability
    renormalised onto it (before: accuracy and macro-F1 1.0000)."""
    data = tmp_path / "ch"
    build(data, {"disgust": "contempt", "sad": "sad"}, per_class=3)
    rc, _, err = run_eval(capsys, "--data", str(data), "--label-set", "dataset")
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "only one class to compare (sad)" in err
    rc, _, err = run_eval(capsys, "--data", str(data), "--classes", "sad")
    assert rc == 2 and "only one class to compare (sad)" in err


def test_classes_the_dataset_lacks_are_not_reported_as_without_counterpart(
    tmp_path, capsys
) -> None:
    """Folders of four FER2013 classes: disgust, fear and neutral are the model's classes
    dropped, not dataset classes "with no counterpart, 0 faces excluded" (before: both)."""
    data = tmp_path / "four"
    build(data, {c: c for c in ("angry", "happy", "sad", "surprise")}, per_class=2)
    rep, out = eval_dataset_vocabulary(capsys, data, tmp_path / "four.json")
    v = rep["vocabulary"]
    assert v["model_classes_dropped"] == ["disgust", "fear", "neutral"]
    assert v["dataset_classes_without_counterpart"] == {}
    assert "no counterpart" not in out
