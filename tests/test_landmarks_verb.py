"""The `landmarks` verb (cardiolab.evaluation.rvip + cli/landmarks.py): every slice and frame in voxel and world
coordinates, scoring against RVIP masks, and bad input that exits 2 without writing JSON."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from cardiolab.evaluation import rvip
from cardiolab.__main__ import main
from cardiolab.data.phantom import read_rvip
from cardiolab.data.prepare import prepare_subject
from cardiolab.io.acdc import read_subject
from cardiolab.io.nifti import save_nifti
from cardiolab.profiles import get_profile
from cardiolab.tasks import landmarks as task


@pytest.fixture(scope="module")
def run(smoke_cache, tmp_path_factory):
    return task.train(get_profile("smoke"), out=tmp_path_factory.mktemp("lmrun") / "landmarks", steps=2,
                      cache_dir=smoke_cache,
                      evaluate_on=None)


def _verb(run, root, out, *extra):
    return main(["landmarks", "--profile", "smoke", "--run", str(run), "--root", str(root), "--json", str(out),
                 *extra])


def test_json_lists_every_slice_and_frame(run, phantom_root, tmp_path):
    assert _verb(run, phantom_root, tmp_path / "lm.json", "--threshold", "0") == 0
    out = json.loads((tmp_path / "lm.json").read_text())
    subject = out["subjects"][0]
    assert len(subject["points"]) == 6 * 10                       # conftest phantom: 6 slices, 10 frames


def test_world_is_the_affine_of_voxel(run, phantom_root, tmp_path):
    _verb(run, phantom_root, tmp_path / "lm.json", "--threshold", "0")
    subject = json.loads((tmp_path / "lm.json").read_text())["subjects"][0]
    affine = read_subject(phantom_root / subject["id"]).affine
    p = subject["points"][7]["anterior"]
    np.testing.assert_allclose(p["world"], (affine @ [*p["voxel"], 1.0])[:3], atol=1e-2)


def test_nothing_found_gives_null_points(run, phantom_root, tmp_path):
    _verb(run, phantom_root, tmp_path / "lm.json", "--threshold", "0.9999")
    subject = json.loads((tmp_path / "lm.json").read_text())["subjects"][0]
    assert all(r[k]["voxel"] is None for r in subject["points"] for k in ("anterior", "inferior"))


def test_detect_subject_maps_back_to_native_truth(phantom_root, monkeypatch):
    """A detector that returns the truth in the prepared grid gives the phantom truth back in native voxels."""
    folder = phantom_root / "patient001"
    subject, truth = read_subject(folder), read_rvip(folder)
    geometry = rvip._native_geometry(get_profile("smoke"), subject)
    cached = prepare_subject(subject, geometry, truth)[0]["rvip"].numpy()
    monkeypatch.setattr(task, "predict", lambda model, image: (cached, np.ones(cached.shape[:3])))
    got = rvip.detect_subject(None, subject, get_profile("smoke"))["points"]
    assert np.nanmax(np.abs(got - truth)) < 0.5


def _write_masks(root, truth_dir, ids, frame=0):
    for sid in ids:
        subject = read_subject(root / sid)
        pts = read_rvip(root / sid)[:, frame]                          # (Z, 2, 2)
        mask = np.zeros(subject.image.shape[:3], np.uint8)
        for z in range(len(pts)):
            for j in range(2):
                if not np.isnan(pts[z, j]).any():
                    x, y = np.round(pts[z, j]).astype(int)
                    mask[x, y, z] = j + 1
        save_nifti(truth_dir / sid / f"{sid}_frame{frame + 1:02d}_rvip.nii.gz", mask, subject.affine)


def test_truth_masks_score_a_perfect_detector_zero(phantom_root, tmp_path):
    _write_masks(phantom_root, tmp_path, ["patient001"])
    subject = read_subject(phantom_root / "patient001")
    points = np.round(read_rvip(phantom_root / "patient001"))
    result = {"id": "patient001", "points": points, "native_spacing": subject.spacing[:2],
              "shape": subject.image.shape[:2]}
    scores = rvip.score_masks([result], tmp_path)
    assert scores["summary"]["slices"]["points"]["median"] == 0.0


def test_truth_option_adds_scores(run, phantom_root, tmp_path):
    _write_masks(phantom_root, tmp_path / "truth", ["patient001", "patient002"])
    assert _verb(run, phantom_root, tmp_path / "lm.json", "--truth", str(tmp_path / "truth")) == 0
    scores = json.loads((tmp_path / "lm.json").read_text())["scores"]
    assert scores["n_subjects"] == 2


def _fails_cleanly(capsys, code, out):
    err = capsys.readouterr().err.strip().splitlines()
    return code == 2 and len(err) == 1 and not out.exists()


def test_truncated_nifti_exits_2_without_json(run, phantom_root, tmp_path, capsys):
    root = tmp_path / "root"
    shutil.copytree(phantom_root / "patient001", root / "patient001")
    f = root / "patient001" / "patient001_4d.nii.gz"
    f.write_bytes(f.read_bytes()[:2000])
    assert _fails_cleanly(capsys, _verb(run, root, tmp_path / "lm.json"), tmp_path / "lm.json")


def test_not_a_landmark_run_exits_2_without_json(smoke_cache, phantom_root, tmp_path, capsys):
    code = _verb(smoke_cache, phantom_root, tmp_path / "lm.json")
    assert _fails_cleanly(capsys, code, tmp_path / "lm.json")


def test_negative_sigma_exits_2_without_json(run, phantom_root, tmp_path, capsys):
    code = _verb(run, phantom_root, tmp_path / "lm.json", "--set", "landmarks.sigma_mm=-1")
    assert _fails_cleanly(capsys, code, tmp_path / "lm.json")
