"""High-resolution 3D pipeline (issue 17): the highres profile section, the volume phantom verb, the four tasks,
mask-conditioned sampling into a volume cohort, adherence and regional volumes, the reader study."""
from __future__ import annotations

import pytest

from cardiolab.__main__ import main
from cardiolab.core import CardiolabError
from cardiolab.profiles import get_profile, override

SMOKE = get_profile("smoke")


def test_highres_sizes_per_profile():
    sizes = {name: get_profile(name).highres.size for name in ("smoke", "tiny", "full")}
    assert sizes == {"smoke": (32, 32, 16), "tiny": (128, 128, 64), "full": (512, 512, 256)}


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


def test_bench_refuses_a_size_the_networks_cannot_take(capsys):
    assert main(["bench", "highres", "--size", "100,64,32"]) == 2
    assert "--size 100,64,32" in capsys.readouterr().err
