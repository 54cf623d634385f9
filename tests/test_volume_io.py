"""The volume layout: round trip, and one problem line naming the file for every kind of broken input."""
from __future__ import annotations

import json

import numpy as np
import pytest

from cardiolab.core import CardiolabError
from cardiolab.data.phantom3d import generate_volume_cohort, make_volume
from cardiolab.io.nifti import save_nifti
from cardiolab.io.volume import (LABELS, VolumeSubject, read_volume_cohort, scan_volume_cohort,
                                 write_volume_subject)

SMOKE = (32, 32, 16)


def _cohort(root, n=2):
    return generate_volume_cohort(root, n, seed=0, size=SMOKE)


def test_round_trip(tmp_path):
    subjects = [make_volume(i, size=SMOKE) for i in range(2)]
    for s in subjects:
        write_volume_subject(tmp_path, s)
    back = list(read_volume_cohort(tmp_path))
    assert [b.id for b in back] == [s.id for s in subjects]
    for s, b in zip(subjects, back):
        np.testing.assert_array_equal(b.image, s.image)
        np.testing.assert_array_equal(b.mask, s.mask)
        np.testing.assert_allclose(b.affine, s.affine)
    assert b.mask.dtype == np.uint8
    assert json.loads((tmp_path / "labels.json").read_text()) == {str(k): v for k, v in LABELS.items()}
    assert scan_volume_cohort(tmp_path) == []


def test_writer_refuses_bad_mask(tmp_path):
    s = make_volume(0, size=SMOKE)
    s.mask[0, 0, 0] = 9
    with pytest.raises(CardiolabError, match=r"\[9\] outside 0-6"):
        write_volume_subject(tmp_path, s)
    with pytest.raises(CardiolabError, match="mask shape"):
        write_volume_subject(tmp_path, VolumeSubject("x", s.image, s.mask[:-1], s.affine))
    assert list(tmp_path.iterdir()) == []            # nothing half-written


def _label9(folder):
    path = folder / f"{folder.name}_mask.nii.gz"
    s = make_volume(0, size=SMOKE)
    mask = s.mask.copy()
    mask[3, 3, 3] = 9
    save_nifti(path, mask, s.affine)
    return path


def _other_shape(folder):
    path = folder / f"{folder.name}_mask.nii.gz"
    save_nifti(path, np.zeros((32, 32, 8), np.uint8), np.diag([6.0, 6.0, 10.0, 1.0]))
    return path


def _other_affine(folder):
    path = folder / f"{folder.name}_mask.nii.gz"
    save_nifti(path, np.zeros(SMOKE, np.uint8), np.diag([6.0, 6.0, 12.0, 1.0]))
    return path


def _nan(folder):
    path = folder / f"{folder.name}_image.nii.gz"
    img = make_volume(0, size=SMOKE).image
    img[1, 2, 3] = np.nan
    save_nifti(path, img, np.diag([6.0, 6.0, 10.0, 1.0]))
    return path


def _truncated(folder):
    path = folder / f"{folder.name}_image.nii.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _no_mask(folder):
    path = folder / f"{folder.name}_mask.nii.gz"
    path.unlink()
    return path


def _no_image(folder):
    (folder / f"{folder.name}_image.nii.gz").unlink()
    return folder


def _no_labels(folder):
    path = folder.parent / "labels.json"
    path.unlink()
    return path


def _bad_labels(folder):
    path = folder.parent / "labels.json"
    path.write_text(json.dumps({"0": "background", "1": "RV"}))
    return path


BROKEN = {
    "label 9": (_label9, "label values [9] outside 0-6"),
    "other shape": (_other_shape, "shape (32, 32, 8) does not match"),
    "other affine": (_other_affine, "affine does not match"),
    "NaN voxels": (_nan, "1 NaN/Inf voxels"),
    "truncated": (_truncated, "unreadable NIfTI"),
    "missing mask": (_no_mask, "file not found"),
    "missing image": (_no_image, "volume001_image.nii.gz (file not found)"),
    "missing labels.json": (_no_labels, "file not found"),
    "labels.json keys": (_bad_labels, "must map the labels 0-6"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_inputs_one_line_naming_the_file(tmp_path, case):
    breaker, expected = BROKEN[case]
    root = tmp_path / "cohort"
    folder = _cohort(root)[0]
    bad = breaker(folder)
    problems = scan_volume_cohort(root)
    assert len(problems) == 1, [str(p) for p in problems]
    assert problems[0].path == bad
    assert expected in problems[0].message
    assert "\n" not in str(problems[0])
    with pytest.raises(CardiolabError, match=bad.name):
        list(read_volume_cohort(root))


def test_empty_and_missing_root(tmp_path):
    (tmp_path / "empty").mkdir()
    messages = [p.message for p in scan_volume_cohort(tmp_path / "empty")]
    assert any("no subject folders" in m for m in messages)
    assert "not a folder" in scan_volume_cohort(tmp_path / "missing")[0].message


def test_volume_is_a_registered_layout(tmp_path):
    """check --layout volume and detection go through the one layout registry."""
    from cardiolab.__main__ import main
    from cardiolab.data.phantom3d import generate_volume_cohort
    from cardiolab.io.layouts import LAYOUTS, detect_layout
    assert "volume" in LAYOUTS
    generate_volume_cohort(tmp_path / "v", 2, size=(32, 32, 16))
    assert detect_layout(tmp_path / "v") == "volume"
    assert main(["check", "--root", str(tmp_path / "v"), "--layout", "volume"]) == 0
