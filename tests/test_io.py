"""Readers (ACDC, M&Ms, M&Ms-2), validation of broken files, and the `check` CLI."""
from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cardiolab.profiles import get_profile
from cardiolab.__main__ import main
from cardiolab.core import CardiolabError
from cardiolab.io.acdc import find_subjects, read_acdc, read_subject
from cardiolab.io.cohort import Subject, make_affine, write_subject
from cardiolab.io.layouts import detect_layout, read_cohort, validate_cohort, validate_subject_dir
from cardiolab.io.mnms import MNMS_TO_CANONICAL, read_mnms
from cardiolab.io.validate import Problem

SHAPE = (12, 10, 3, 6)  # X, Y, Z, T


def make_subject(sid: str = "patient001", seed: int = 0, ed: int = 0, es: int = 3, series: bool = False,
                 group: str = "NOR") -> Subject:
    rng = np.random.default_rng(seed)
    image = rng.normal(size=SHAPE).astype(np.float32)
    labels = rng.integers(0, 4, size=SHAPE).astype(np.uint8)
    return Subject(id=sid, image=image, affine=make_affine((1.5, 1.25, 8.0)), frame_ms=40.0, ed=ed, es=es,
                   labels={ed: labels[..., ed], es: labels[..., es]},
                   label_series=labels if series else None,
                   info={"Group": group, "Height": 172.5, "Weight": 70.0})


def write_cohort(root: Path, n: int = 2, **kw) -> list[Path]:
    return [write_subject(root, make_subject(f"patient{i + 1:03d}", seed=i, **kw)) for i in range(n)]


def save(array: np.ndarray, path: Path, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(array, make_affine((1.5, 1.25, 8.0)) if affine is None else affine), path)
    return path


def assert_same(a: Subject, b: Subject) -> None:
    assert a.id == b.id
    assert (a.ed, a.es) == (b.ed, b.es)
    assert a.frame_ms == b.frame_ms
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_allclose(a.affine, b.affine)
    assert sorted(a.labels) == sorted(b.labels)
    for frame in a.labels:
        np.testing.assert_array_equal(a.labels[frame], b.labels[frame])
    assert (a.label_series is None) == (b.label_series is None)
    if a.label_series is not None:
        np.testing.assert_array_equal(a.label_series, b.label_series)
    assert a.info == b.info


# --- ACDC: round trip and root styles ------------------------------------------------------------

@pytest.mark.parametrize("series", [False, True])
def test_acdc_round_trip(tmp_path, series):
    subject = make_subject(series=series)
    write_subject(tmp_path, subject)
    (back,) = list(read_acdc(tmp_path))
    assert_same(subject, back)
    assert back.image.dtype == np.float32
    assert back.labels[0].dtype == np.uint8
    assert back.spacing == pytest.approx((1.5, 1.25, 8.0))
    assert validate_cohort(tmp_path) == []


def test_acdc_root_styles(tmp_path):
    flat = tmp_path / "flat"
    write_cohort(flat, 3)
    split = tmp_path / "acdc"
    write_subject(split / "training", make_subject("patient001"))
    write_subject(split / "training", make_subject("patient002", seed=1))
    write_subject(split / "testing", make_subject("patient101", seed=2))
    assert [s.id for s in read_acdc(flat)] == ["patient001", "patient002", "patient003"]
    assert [s.id for s in read_cohort(split, "acdc")] == ["patient001", "patient002", "patient101"]
    # a nested download (database/training/...) and a hidden half-written temp folder
    write_subject(tmp_path / "zip" / "database" / "training", make_subject("patient007"))
    write_subject(tmp_path / "zip" / ".patient008.tmp", make_subject("patient008"))
    assert [d.name for d in find_subjects(tmp_path / "zip")[0]] == ["patient007"]
    assert detect_layout(flat) == "acdc"


# --- ACDC: every broken input gives a problem naming the file --------------------------------------

def _truncate(folder: Path) -> Path:
    path = folder / f"{folder.name}_4d.nii.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _three_d(folder: Path) -> Path:
    return save(np.zeros(SHAPE[:3], np.float32), folder / f"{folder.name}_4d.nii.gz")


def _nan(folder: Path) -> Path:
    image = np.zeros(SHAPE, np.float32)
    image[1, 2, 0, 3] = np.nan
    image[0, 0, 0, 0] = np.inf
    return save(image, folder / f"{folder.name}_4d.nii.gz")


def _label5(folder: Path) -> Path:
    labels = np.zeros(SHAPE[:3], np.uint8)
    labels[2, 2, 1] = 5
    return save(labels, folder / f"{folder.name}_frame01_gt.nii.gz")


def _shape_mismatch(folder: Path) -> Path:
    return save(np.zeros((SHAPE[0] + 1, *SHAPE[1:3]), np.uint8), folder / f"{folder.name}_frame04_gt.nii.gz")


def _affine_mismatch(folder: Path) -> Path:
    return save(np.zeros(SHAPE[:3], np.uint8), folder / f"{folder.name}_frame04_gt.nii.gz",
                affine=make_affine((2.0, 1.25, 8.0)))


def _info(text: str):
    def edit(folder: Path) -> Path:
        path = folder / "Info.cfg"
        path.write_text(text)
        return path
    return edit


def _no_info(folder: Path) -> Path:
    (folder / "Info.cfg").unlink()
    return folder / "Info.cfg"


def _garbage(folder: Path) -> Path:
    path = folder / f"{folder.name}_frame01_gt.nii.gz"
    path.write_bytes(gzip.compress(b"not a nifti header" * 40))
    return path


def _binary_info(folder: Path) -> Path:
    path = folder / "Info.cfg"
    path.write_bytes(b"\xff\xfe\x00\x81garbage\x00")
    return path


BROKEN = {
    "truncated gzip": (_truncate, "unreadable NIfTI (EOFError"),
    "not a nifti": (_garbage, "unreadable NIfTI"),
    "3D cine": (_three_d, "expected a 4D image"),
    "NaN voxels": (_nan, "2 NaN/Inf voxels"),
    "label 5": (_label5, "label values [5] outside"),
    "shape mismatch": (_shape_mismatch, "shape (13, 10, 3) does not match"),
    "affine mismatch": (_affine_mismatch, "affine does not match"),
    "missing ED": (_info("ES: 4\nGroup: NOR\nNbFrame: 6\n"), "missing key ED"),
    "garbled ES": (_info("ED: 1\nES: four\nGroup: NOR\nNbFrame: 6\n"), "ES is not an integer: 'four'"),
    "garbled line": (_info("ED: 1\nES: 4\nNbFrame: 6\nthis is not a key value line\n"), "expected 'Key: value'"),
    "ED=0": (_info("ED: 0\nES: 4\nGroup: NOR\nNbFrame: 6\n"), "ED=0 outside 1..6"),
    "ES>NbFrame": (_info("ED: 1\nES: 7\nGroup: NOR\nNbFrame: 6\n"), "ES=7 outside 1..6"),
    "NbFrame mismatch": (_info("ED: 1\nES: 4\nGroup: NOR\nNbFrame: 9\n"), "NbFrame=9 but patient001_4d.nii.gz has 6"),
    "Height text": (_info("ED: 1\nES: 4\nHeight: tall\nNbFrame: 6\n"), "Height is not a number"),
    "Info.cfg missing": (_no_info, "Info.cfg missing"),
    "Info.cfg binary": (_binary_info, "unreadable (UnicodeDecodeError"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_acdc_broken_inputs(tmp_path, case):
    breaker, expected = BROKEN[case]
    root = tmp_path / "cohort"
    folder = write_cohort(root, 2)[0]
    bad_path = breaker(folder)

    problems = validate_cohort(root)
    assert problems, case
    assert all(isinstance(p, Problem) for p in problems)
    assert any(p.path == bad_path and expected in p.message for p in problems), [str(p) for p in problems]
    assert str(problems[0]).startswith(f"{problems[0].path}: ")
    assert validate_subject_dir(folder) == problems        # the other subject is clean
    assert validate_subject_dir(root / "patient002") == []
    with pytest.raises(CardiolabError, match=str(bad_path.name)):
        list(read_acdc(root))
    with pytest.raises(CardiolabError) as err:
        read_subject(folder)
    assert expected in str(err.value)


def test_acdc_empty_and_half_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (problem,) = validate_cohort(empty)
    assert problem.path == empty
    assert "no subject folders found" in problem.message
    with pytest.raises(CardiolabError, match="no subject folders"):
        list(read_acdc(empty))
    assert "not a folder" in str(validate_cohort(tmp_path / "missing")[0])

    root = tmp_path / "half"
    folder = write_cohort(root, 2)[1]
    (folder / "patient002_4d.nii.gz").unlink()
    (problem,) = validate_cohort(root)
    assert problem.path == folder
    assert "patient002_4d.nii.gz" in problem.message


def test_acdc_stray_label_frame(tmp_path):
    folder = write_cohort(tmp_path, 1)[0]
    (folder / "patient001_frame04_gt.nii.gz").rename(folder / "patient001_frame05_gt.nii.gz")
    (problem,) = validate_cohort(tmp_path)
    assert problem.path.name == "patient001_frame05_gt.nii.gz"
    assert "ES=4" in problem.message


# --- M&Ms and M&Ms-2 --------------------------------------------------------------------------

MNMS_CSV = (",External code,VendorName,Vendor,Centre,ED,ES,Age,Pathology,Sex,Height,Weight\n"
            "0,A0S9V9,Siemens,A,1,0,3,67,HCM,M,172,80\n"
            "1,B1C2D3,Philips,B,2,1,4,45,NOR,F,,61.5\n")


def make_mnms(root: Path, gt_value: int = 1) -> dict[str, np.ndarray]:
    """M&Ms fixture: two labelled subjects under Training/Labeled and Testing; gt only at the CSV's ED/ES."""
    rng = np.random.default_rng(0)
    (root).mkdir(parents=True)
    (root / "211230_M&Ms_Dataset_information.csv").write_text(MNMS_CSV)
    gts = {}
    for code, part, ed, es in (("A0S9V9", "Training/Labeled", 0, 3), ("B1C2D3", "Testing", 1, 4)):
        folder = root / part / code
        folder.mkdir(parents=True)
        gt = np.zeros(SHAPE, np.uint8)
        for frame in (ed, es):
            gt[2:6, 2:6, :, frame] = 2          # M&Ms MYO ring
            gt[3:5, 3:5, :, frame] = gt_value   # M&Ms LV (1)
            gt[8:10, 2:6, :, frame] = 3         # M&Ms RV
        save(rng.normal(size=SHAPE).astype(np.float32), folder / f"{code}_sa.nii.gz")
        save(gt, folder / f"{code}_sa_gt.nii.gz")
        gts[code] = gt
    return gts


def test_mnms_reader_maps_labels(tmp_path):
    gts = make_mnms(tmp_path / "OpenDataset")
    assert detect_layout(tmp_path / "OpenDataset") == "mnms"
    assert validate_cohort(tmp_path / "OpenDataset", "mnms") == []
    subjects = {s.id: s for s in read_mnms(tmp_path / "OpenDataset")}
    assert sorted(subjects) == ["A0S9V9", "B1C2D3"]
    s = subjects["B1C2D3"]
    assert (s.ed, s.es) == (1, 4)
    assert sorted(s.labels) == [1, 4]
    assert s.image.shape == SHAPE
    gt = gts["B1C2D3"][..., 1]
    lab = s.labels[1]
    np.testing.assert_array_equal(lab[gt == 1], 3)   # M&Ms LV -> canonical LV
    np.testing.assert_array_equal(lab[gt == 2], 2)   # MYO stays
    np.testing.assert_array_equal(lab[gt == 3], 1)   # M&Ms RV -> canonical RV
    np.testing.assert_array_equal(lab[gt == 0], 0)
    assert s.info["Group"] == "NOR"
    assert s.info["Vendor"] == "B"
    assert s.info["Weight"] == 61.5
    assert "Height" not in s.info  # empty in the CSV
    assert subjects["A0S9V9"].info["Group"] == "HCM"
    assert list(MNMS_TO_CANONICAL) == [0, 3, 2, 1]


def test_mnms_broken_inputs(tmp_path):
    root = tmp_path / "mnms"
    make_mnms(root, gt_value=5)
    problems = [str(p) for p in validate_cohort(root, "mnms")]
    assert len(problems) == 2
    assert all("_sa_gt.nii.gz: label values [5] outside" in p for p in problems)
    with pytest.raises(CardiolabError, match="A0S9V9_sa_gt.nii.gz"):
        list(read_mnms(root))

    root = tmp_path / "mnms_csv"
    make_mnms(root)
    csv = root / "211230_M&Ms_Dataset_information.csv"
    csv.write_text(MNMS_CSV.replace("B1C2D3,Philips,B,2,1,4", "B1C2D3,Philips,B,2,1,9"))
    (problem,) = validate_cohort(root, "mnms")
    assert problem.path == csv
    assert "subject B1C2D3: ES=9 outside 0..5" in problem.message
    csv.write_text(MNMS_CSV.replace("B1C2D3,Philips,B,2,1,4", "B1C2D3,Philips,B,2,2,4"))   # ED on an unlabelled frame
    (problem,) = validate_cohort(root, "mnms")
    assert problem.path.name == "B1C2D3_sa_gt.nii.gz"
    assert "no labels at frame 2 (ED from" in problem.message
    csv.write_text(MNMS_CSV.splitlines()[0] + "\n" + MNMS_CSV.splitlines()[1] + "\n")
    (problem,) = validate_cohort(root, "mnms")
    assert problem.path == csv
    assert "no row for subject B1C2D3" in problem.message
    csv.unlink()
    (problem,) = validate_cohort(root, "mnms")
    assert problem.path == root
    assert "no information CSV" in problem.message
    with pytest.raises(CardiolabError, match="no information CSV"):
        list(read_mnms(root))


def test_mnms2_reader(tmp_path):
    root = tmp_path / "MnM2"
    (root / "dataset" / "001").mkdir(parents=True)
    (root / "dataset_information.csv").write_text("SUBJECT_CODE,DISEASE,VENDOR,SCANNER\n1,DLV,SIEMENS,Avanto\n")
    folder = root / "dataset" / "001"
    rng = np.random.default_rng(1)
    cine = rng.normal(size=SHAPE).astype(np.float32)
    save(cine, folder / "001_SA_CINE.nii.gz")
    for phase, frame in (("ED", 0), ("ES", 2)):
        gt = np.zeros(SHAPE[:3], np.uint8)
        gt[3:5, 3:5, :] = 1
        gt[8, 8, 1] = 3
        save(cine[..., frame], folder / f"001_SA_{phase}.nii.gz")
        save(gt, folder / f"001_SA_{phase}_gt.nii.gz")
    save(rng.normal(size=(12, 10, 1, 6)).astype(np.float32), folder / "001_LA_CINE.nii.gz")
    assert validate_cohort(root, "mnms") == []
    (s,) = list(read_cohort(root, "mnms"))
    assert (s.id, s.ed, s.es) == ("001", 0, 2)
    assert s.info["Group"] == "DLV"
    assert s.info["Vendor"] == "SIEMENS"
    assert s.labels[2][3, 3, 0] == 3
    assert s.labels[2][8, 8, 1] == 1   # LV and RV swapped to canonical
    (folder / "001_SA_ES.nii.gz").unlink()
    (problem,) = validate_cohort(root, "mnms")
    assert problem.path == folder
    assert "001_SA_ES.nii.gz" in problem.message


# --- check CLI -----------------------------------------------------------------------------------

def test_check_cli_exit_codes(tmp_path, capsys):
    root = tmp_path / "cohort"
    folders = write_cohort(root, 2)
    assert main(["check", "--root", str(root), "--layout", "acdc"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [f"OK: 2 subject(s) under {root} (acdc layout), no problems"]

    _nan(folders[0])
    _info("ED: 0\nES: 4\nGroup: NOR\nNbFrame: 6\n")(folders[1])
    assert main(["check", "--root", str(root)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0] == f"{folders[0] / 'patient001_4d.nii.gz'}: 2 NaN/Inf voxels"
    assert out[1] == f"{folders[1] / 'Info.cfg'}: ED=0 outside 1..6 (6 frames)"
    assert out[-1].startswith("FAILED: 2 problem(s) in 2 file(s); 2 subject folder(s)")
    assert len(out) == 3

    assert main(["check", "--root", str(tmp_path / "nowhere")]) == 1
    assert "not a folder" in capsys.readouterr().out

    make_mnms(tmp_path / "mnms")
    assert main(["check", "--root", str(tmp_path / "mnms")]) == 0   # layout detected
    assert capsys.readouterr().out.startswith("OK: 2 subject(s)")
    assert main(["function", "--root", str(tmp_path / "mnms"), "--json", str(tmp_path / "f.json")]) == 0
    assert "HCM (n=1)" in capsys.readouterr().out


def test_check_cli_subprocess_no_traceback(tmp_path):
    folder = write_cohort(tmp_path, 1)[0]
    _truncate(folder)
    run = subprocess.run([sys.executable, "-m", "cardiolab", "check", "--root", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert "patient001_4d.nii.gz: unreadable NIfTI (EOFError" in run.stdout
    assert "Traceback" not in run.stdout + run.stderr


def test_acdc_unscaled_sform_uses_pixdim(tmp_path):
    """Real ACDC files carry an unscaled sform beside the right qform; spacing must come from the qform."""
    folder = write_cohort(tmp_path, 1)[0]
    qform = np.diag([-1.5, -1.25, 8.0, 1.0])
    for path in folder.glob("*.nii.gz"):
        img = nib.load(path)
        fixed = nib.Nifti1Image(np.asarray(img.dataobj), None, img.header)
        fixed.header.set_qform(qform, code=1)
        fixed.header.set_sform(np.diag([-1.0, -1.0, 1.0, 1.0]), code=1)
        nib.save(fixed, path)
        assert np.allclose(nib.load(path).affine, np.diag([-1.0, -1.0, 1.0, 1.0]))  # what nibabel would use
    assert validate_cohort(tmp_path) == []
    (subject,) = list(read_acdc(tmp_path))
    assert subject.spacing == pytest.approx((1.5, 1.25, 8.0))
    np.testing.assert_allclose(subject.affine, qform)
    assert subject.frame_ms == 40.0


# --- ED and ES labels come in pairs; prepare validates like check --------------------------------------

@pytest.mark.parametrize("missing", ["ED", "ES"])
def test_check_reports_a_missing_phase_label(tmp_path, missing):
    folder = write_cohort(tmp_path, 1)[0]
    frame = 1 if missing == "ED" else 4          # make_subject: ED frame 0, ES frame 3 (1-based 1 and 4)
    (folder / f"patient001_frame{frame:02d}_gt.nii.gz").unlink()
    (problem,) = validate_cohort(tmp_path)
    assert problem.path.name == f"patient001_frame{frame:02d}_gt.nii.gz"
    assert f"is {missing} in Info.cfg" in problem.message


def test_prepare_runs_checks_validation_before_writing(tmp_path):
    from cardiolab.data.prepare import prepare
    folder = write_cohort(tmp_path / "cohort", 2)[1]
    vol = nib.load(folder / "patient002_frame01.nii.gz")
    save(np.full(vol.shape, np.inf, np.float32), folder / "patient002_frame01.nii.gz", vol.affine)
    with pytest.raises(CardiolabError, match="patient002_frame01.nii.gz: .*NaN/Inf"):
        prepare(tmp_path / "cohort", "acdc", get_profile("smoke"), tmp_path / "cache")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort"]


def test_a_killed_writer_leaves_no_temporary_behind(tmp_path):
    from cardiolab.core import atomic_path
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)                                     # a process that has exited
    (tmp_path / f".cache.{pid}.abc").mkdir()                  # what a kill -9 during prepare leaves
    (tmp_path / f".cache.{os.getpid()}.live").mkdir()         # a writer still running: kept
    with atomic_path(tmp_path / "cache") as tmp:
        tmp.mkdir()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".cache.{os.getpid()}.live", "cache"]


def test_samples_record_reads_a_sampled_cohorts_record(tmp_path):
    from cardiolab.core import write_json
    from cardiolab.io.cohort import SAMPLES_JSON, samples_record

    assert samples_record(tmp_path) == {}                      # real data: no record
    write_json(tmp_path / SAMPLES_JSON, {"task": "dit", "seed": 3})
    assert samples_record(tmp_path) == {"task": "dit", "seed": 3}


# ---- a collapsed generator's cohort does not pass check --------------------------------------------------
def test_check_reports_constant_images_and_identical_subjects(tmp_path):
    import numpy as np

    from cardiolab.io.cohort import write_cines
    from cardiolab.io.layouts import scan_cohort

    geometry = {"spacing": (3.0, 3.0, 10.0), "frame_ms": 40.0, "es": 3}
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (3, 2, 8, 8, 6)).astype(np.float32)
    assert scan_cohort(write_cines(tmp_path / "ok", images, geometry)) == (3, [])

    same = images.copy()
    same[2] = same[0]
    n, problems = scan_cohort(write_cines(tmp_path / "same", same, geometry))
    assert n == 3
    assert [str(p) for p in problems] == [f"{tmp_path / 'same' / 'synth0003'}: voxel-identical to "
                                          f"{tmp_path / 'same' / 'synth0001'}"]

    flat = images.copy()
    flat[1] = 0.25
    n, problems = scan_cohort(write_cines(tmp_path / "flat", flat, geometry))
    assert len(problems) == 1
    assert "synth0002_4d.nii.gz: constant image" in str(problems[0])


def test_the_cohort_writer_refuses_nan_images(tmp_path):
    import numpy as np

    from cardiolab.core import CardiolabError
    from cardiolab.io.cohort import write_cines

    images = np.zeros((2, 2, 8, 8, 6), np.float32)
    images[1, 0, 0, 0, 0] = np.nan
    with pytest.raises(CardiolabError, match="1 of 2 images hold NaN or inf; nothing written"):
        write_cines(tmp_path / "bad", images, {"spacing": (3.0, 3.0, 10.0), "frame_ms": 40.0, "es": 3})
    assert not (tmp_path / "bad").exists()
