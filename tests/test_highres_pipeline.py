"""High-resolution 3D pipeline: the highres profile section, the volume phantom verb, the four tasks,
mask-conditioned sampling into a volume cohort, adherence and regional volumes, the reader study."""
from __future__ import annotations

import json

import pytest

from cardiolab.__main__ import main
from cardiolab.core import CardiolabError
from cardiolab.profiles import get_profile, override

SMOKE = get_profile("smoke")


def test_highres_sizes_per_profile():
    sizes = {name: get_profile(name).highres.size for name in ("smoke", "tiny", "full")}
    assert sizes == {"smoke": (32, 32, 16), "tiny": (64, 64, 32), "full": (512, 512, 256)}


def test_highres_bool_tuple_override_parses_false():
    p = override(SMOKE, ["highres.attention_levels=false,false,true"])
    assert p.highres.attention_levels == (False, False, True)


def test_highres_attention_levels_must_match_widths():
    with pytest.raises(CardiolabError, match="attention_levels"):
        override(SMOKE, ["highres.attention_levels=false,true"])


def test_phantom_volume_verb_writes_a_cohort_that_check_accepts(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CARDIOLAB_ROOT", str(tmp_path))
    assert main(["phantom", "--kind", "volume", "--profile", "smoke"]) == 0
    root = tmp_path / "data" / "phantom" / "smoke-volume"
    assert len(list(root.glob("volume*"))) == SMOKE.highres.subjects
    assert main(["check", "--layout", "volume", "--profile", "smoke"]) == 0
    assert "OK: 6 subject(s)" in capsys.readouterr().out


def test_phantom_volume_out_and_size(tmp_path):
    import nibabel as nib
    assert main(["phantom", "--kind", "volume", "--out", str(tmp_path / "v"), "--subjects", "1", "--size", "32"]) == 0
    assert nib.load(tmp_path / "v/volume001/volume001_image.nii.gz").shape == (32, 32, 16)


def test_phantom_volume_refuses_cine_options(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CARDIOLAB_ROOT", str(tmp_path))
    assert main(["phantom", "--kind", "volume", "--profile", "smoke", "--frames", "4"]) == 2
    assert "--frames" in capsys.readouterr().err


# ---- tasks --------------------------------------------------------------------------------------------
HIGHRES = ("highres-vqgan", "highres-ldm", "highres-controlnet", "highres-segmenter")


@pytest.mark.parametrize("field", ["highres.amp=off", "highres.checkpointing=true", "highres.code_chunk=16",
                                   "highres.decode_window=2,2,2", "highres.flash_attention=false",
                                   "highres.sample_steps=7", "highres.conditioning_scale=0.5",
                                   "highres.n_samples=9"])
@pytest.mark.parametrize("model", HIGHRES)
def test_highres_switches_shape_no_weights(model, field):
    from cardiolab.tasks import get_task
    task = get_task(model)
    assert task.shaping(override(SMOKE, [field])) == task.shaping(SMOKE)


@pytest.mark.parametrize("model,changed", [("highres-ldm", True), ("highres-controlnet", True),
                                           ("highres-segmenter", False)])
def test_highres_vqgan_codes_reshape_the_stages_above(model, changed):
    from cardiolab.tasks import get_task
    task = get_task(model)
    assert (task.shaping(override(SMOKE, ["highres.codes=32"])) != task.shaping(SMOKE)) == changed


def test_highres_controlnet_r_reshapes_only_the_controlnet():
    from cardiolab.tasks import get_task
    p = override(SMOKE, ["highres.r=1.0"])
    assert get_task("highres-ldm").shaping(p) == get_task("highres-ldm").shaping(SMOKE)
    assert get_task("highres-controlnet").shaping(p) != get_task("highres-controlnet").shaping(SMOKE)


@pytest.fixture(scope="module")
def highres_runs(tmp_path_factory):
    """The four smoke runs (2 steps each) in a temporary CARDIOLAB_ROOT."""
    from cardiolab.tasks import get_task
    root = tmp_path_factory.mktemp("highres")
    mp = pytest.MonkeyPatch()
    mp.setenv("CARDIOLAB_ROOT", str(root))
    p = override(SMOKE, ["highres.vq_steps=2", "highres.ldm_steps=2", "highres.cn_steps=2", "highres.seg_steps=2"])
    runs = {name: get_task(name).ensure(p) for name in HIGHRES}
    yield root, p, runs
    mp.undo()


def test_highres_ensure_trains_each_stage_once(highres_runs):
    from cardiolab.engine import run_status
    from cardiolab.tasks import get_task
    _, p, runs = highres_runs
    assert [run_status(runs[n], 2, {"shaping": get_task(n).shaping(p)}) for n in HIGHRES] == ["finished"] * 4


def test_highres_sample_writes_a_volume_cohort_check_accepts(highres_runs, capsys):
    root, _, runs = highres_runs
    out = root / "synthetic"
    assert main(["sample", "--run", str(runs["highres-controlnet"]), "--mask",
                 str(root / "data/phantom/smoke-volume"), "--out", str(out), "--n", "2"]) == 0
    assert main(["check", "--layout", "volume", "--root", str(out)]) == 0
    assert "OK: 2 subject(s)" in capsys.readouterr().out


def _broken_copy(src, dst, edit):
    import shutil

    import nibabel as nib
    import numpy as np
    shutil.copytree(src, dst)
    path = next(dst.glob("volume001/*_mask.nii.gz"))
    img = nib.load(path)
    data, affine = edit(np.asarray(img.dataobj).astype(np.uint8), img.affine.copy())
    nib.save(nib.Nifti1Image(data, affine), path)
    return dst


def _label9(a, aff):
    a[0, 0, 0] = 9
    return a, aff


def _shape(a, aff):
    return a[:, :, :8].copy(), aff


def _affine(a, aff):
    aff[0, 0] *= 2
    return a, aff


@pytest.mark.parametrize("edit,message", [(_label9, "label values [9]"), (_shape, "does not match"),
                                          (_affine, "affine does not match")])
def test_highres_sample_refuses_a_bad_mask_and_writes_nothing(highres_runs, tmp_path, capsys, edit, message):
    root, _, runs = highres_runs
    bad = _broken_copy(root / "data/phantom/smoke-volume", tmp_path / "bad", edit)
    code = main(["sample", "--run", str(runs["highres-controlnet"]), "--mask", str(bad), "--out",
                 str(tmp_path / "out")])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_highres_sample_refuses_a_negative_conditioning_scale(highres_runs, tmp_path, capsys):
    root, _, runs = highres_runs
    code = main(["sample", "--run", str(runs["highres-controlnet"]), "--conditioning-scale", "-1",
                 "--out", str(tmp_path / "out")])
    assert code == 2
    assert "--conditioning-scale must be >= 0" in capsys.readouterr().err


def test_highres_vqgan_logs_the_spectral_jukebox_term(highres_runs):
    from cardiolab.engine import read_metrics
    _, _, runs = highres_runs
    assert read_metrics(runs["highres-vqgan"])[-1]["spectral"] > 0


def test_highres_vqgan_records_its_holdout_reconstruction(highres_runs):
    from cardiolab.tasks import highres_vqgan
    _, profile, runs = highres_runs
    recorded = json.loads((runs["highres-vqgan"] / "scores.json").read_text())["reconstruction"]
    again = highres_vqgan.reconstruction_metrics(highres_vqgan.load(runs["highres-vqgan"]), profile)
    assert recorded["split"] == "holdout"
    assert recorded["n"] == len(highres_vqgan.hc.load_volumes(profile, "holdout"))
    assert recorded["PSNR"] == pytest.approx(again["PSNR"], abs=1e-4)


# ---- evaluation ------------------------------------------------------------------------------------------
def test_dice_per_label_is_one_on_identical_maps_and_nan_when_absent():
    import numpy as np
    from cardiolab.metrics.volumes import dice_per_label
    a = np.zeros((4, 4, 4), np.uint8)
    a[:2] = 1
    d = dice_per_label(a, a, {1: "aorta", 2: "LA"})
    assert d["aorta"] == 1.0
    assert np.isnan(d["LA"])


def test_relative_volumes_are_shares_of_the_heart():
    import numpy as np
    from cardiolab.metrics.volumes import relative_volumes
    a = np.zeros((4, 4, 4), np.uint8)
    a[0] = 1
    a[1:4] = 2
    assert relative_volumes(a, {1: "aorta", 2: "LA"}) == {"aorta": 0.25, "LA": 0.75}


def test_volume_w1_is_zero_for_equal_cohorts_and_the_shift_otherwise():
    from cardiolab.metrics.volumes import volume_w1
    real = [{"LV": 0.4}, {"LV": 0.5}]
    assert volume_w1(real, real) == {"LV": 0.0}
    assert volume_w1(real, [{"LV": 0.5}, {"LV": 0.6}])["LV"] == pytest.approx(0.1)


def test_evaluate_highres_scores_adherence_and_regional_volumes(highres_runs, tmp_path):
    from cardiolab.evaluation.highres import evaluate_highres
    root, p, runs = highres_runs
    out = tmp_path / "synthetic"
    main(["sample", "--run", str(runs["highres-controlnet"]), "--out", str(out), "--n", "1"])
    result = evaluate_highres(out, profile=p, segmenter_run=runs["highres-segmenter"], out=tmp_path / "e.json")
    assert set(result["adherence"]["dice"]) == {"aorta", "LA", "RA", "myocardium", "LV", "RV", "mean"}
    assert set(result["regional_volumes"]["w1"]) == {"aorta", "LA", "RA", "myocardium", "LV", "RV"}
    assert (tmp_path / "e.json").exists()


def test_evaluate_verb_puts_conditional_and_unconditional_side_by_side(highres_runs, tmp_path, capsys):
    import json
    root, p, runs = highres_runs
    cohorts = {}
    for name, scale in (("cond", "1"), ("uncond", "0")):
        cohorts[name] = tmp_path / name
        main(["sample", "--run", str(runs["highres-controlnet"]), "--out", str(cohorts[name]), "--n", "1",
              "--conditioning-scale", scale])
    capsys.readouterr()
    code = main(["evaluate", "--synthetic", str(cohorts["cond"]), "--unconditional", str(cohorts["uncond"]),
                 "--segmenter", str(runs["highres-segmenter"]), "--json", str(tmp_path / "e.json"),
                 "--profile", "smoke"])
    assert code == 0
    assert "Dice unconditional" in capsys.readouterr().out
    assert set(json.loads((tmp_path / "e.json").read_text())) == {"conditional", "unconditional"}


def test_evaluate_verb_refuses_unconditional_for_cine_cohorts(phantom_root, capsys):
    assert main(["evaluate", "--synthetic", str(phantom_root), "--unconditional", str(phantom_root),
                 "--profile", "smoke"]) == 2
    assert "--unconditional" in capsys.readouterr().err


def test_highres_table_has_one_row_per_structure_and_a_mean():
    from cardiolab.evaluation.highres import highres_table
    one = {"adherence": {"dice": {"LV": 0.9, "RV": 0.5, "mean": 0.7}}, "n_synthetic": 2, "n_real": 3,
           "regional_volumes": {"w1": {"LV": 0.01, "RV": 0.03}}}
    lines = highres_table({"conditional": one, "unconditional": one}).splitlines()
    assert [line.split()[0] for line in lines] == ["structure", "LV", "RV", "mean", "n"]


def _fill(sheet, key, guess_right):
    import csv
    import json
    cases = json.loads(key.read_text())["cases"]
    rows = list(csv.DictReader(sheet.open()))
    for r in rows:
        synthetic = cases[r["case"]]["source"] == "synthetic"
        r["realism"], r["synthetic"] = ("2" if synthetic else "5"), ("yes" if synthetic == guess_right else "no")
    with sheet.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_reader_study_exports_blinded_volume_cases_and_scores_them(highres_runs, tmp_path, capsys):
    import json
    root, _, runs = highres_runs
    synth = tmp_path / "synthetic"
    main(["sample", "--run", str(runs["highres-controlnet"]), "--out", str(synth), "--n", "2"])
    study = tmp_path / "study"
    assert main(["reader-study", "--real", str(root / "data/phantom/smoke-volume"), "--synthetic", str(synth),
                 "--out", str(study), "--n", "2"]) == 0
    names = sorted(p.name for p in (study / "cases").rglob("*.nii.gz"))
    assert names == [f"case00{i}_image.nii.gz" for i in range(1, 5)]
    _fill(study / "score_sheet.csv", study / ".key.json", guess_right=True)
    capsys.readouterr()
    assert main(["reader-study", "--score", str(study / "score_sheet.csv")]) == 0
    result = json.loads((study / "reader_scores.json").read_text())
    assert result["accuracy"] == 1.0
    assert result["realism_mean"] == {"real": 5.0, "synthetic": 2.0}


def test_reader_study_works_for_cine_cohorts(phantom_root, tmp_path):
    study = tmp_path / "study"
    assert main(["reader-study", "--real", str(phantom_root), "--synthetic", str(phantom_root), "--out", str(study),
                 "--n", "1"]) == 0
    assert sorted(p.name for p in (study / "cases").rglob("*.nii.gz")) == ["case001_4d.nii.gz", "case002_4d.nii.gz"]


def test_reader_study_refuses_a_bad_score(tmp_path, phantom_root, capsys):
    study = tmp_path / "study"
    main(["reader-study", "--real", str(phantom_root), "--synthetic", str(phantom_root), "--out", str(study),
          "--n", "1"])
    sheet = study / "score_sheet.csv"
    sheet.write_text("case,realism,synthetic,notes\ncase001,9,yes,\n")
    assert main(["reader-study", "--score", str(sheet)]) == 2
    assert "realism must be 1-5" in capsys.readouterr().err
