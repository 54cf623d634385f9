"""`sample` and `train` verbs on bad input: exit 2, one line naming the path or field, no output folder;
`sample --mask DIR` reaches mask-to-image and is refused by generators that take no masks."""
import json

import pytest

from cardiolab.__main__ import main
from cardiolab.profiles import get_profile


@pytest.fixture(scope="module")
def m2i_run(tmp_path_factory, smoke_cache):
    """A 2-step pixel mask-to-image run (family ddpm) on the smoke cache, and a 2-subject mask cohort at its
    geometry (the cache's own images and label series)."""
    from cardiolab.data.cines import cohort_geometry
    from cardiolab.io.cohort import write_cines
    from cardiolab.profiles import get_profile, override
    from cardiolab.tasks import mask_to_image
    from cardiolab.tasks.common import cache_labels, pixel_record

    root = tmp_path_factory.mktemp("m2i")
    profile = override(get_profile("smoke"), ["baselines.family=ddpm"])
    run = mask_to_image.train(profile, out=root / "m2i", steps=2, cache_dir=smoke_cache)
    record = pixel_record(smoke_cache)
    labels, _ = cache_labels(smoke_cache, record["ids"][:2])
    masks = write_cines(root / "masks", record["latents"][:2, 0], cohort_geometry(smoke_cache), labels=labels)
    return {"run": run, "masks": masks}


def _broken_copy(src, dst, damage):
    """A copy of the cohort `src` at `dst` whose first subject's label series is damaged by damage(path)."""
    import shutil

    shutil.copytree(src, dst)
    first = sorted(p for p in dst.iterdir() if p.is_dir())[0]
    path = first / f"{first.name}_4d_gt.nii.gz"
    damage(path)
    return path


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _label_five(path):
    import nibabel as nib
    import numpy as np

    img = nib.load(str(path))
    data = np.asarray(img.dataobj).copy()
    data[0, 0, 0, 0] = 5
    nib.save(nib.Nifti1Image(data, img.affine, img.header), str(path))


def test_sample_an_unknown_run_exits_2_without_output(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["sample", "--profile", "smoke", "--run", str(tmp_path / "nope"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "nope" in err
    assert not out.exists()


@pytest.mark.parametrize("damage", [_truncate, _label_five], ids=["truncated", "label5"])
def test_sample_mask_with_a_broken_label_file_names_it(damage, m2i_run, tmp_path, capsys):
    bad = _broken_copy(m2i_run["masks"], tmp_path / "masks", damage)
    out = tmp_path / "out"
    code = main(["sample", "--profile", "smoke", "--run", str(m2i_run["run"]), "--n", "1", "--steps", "1",
                 "--mask", str(tmp_path / "masks"), "--out", str(out), "--device", "cpu"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert bad.name in err
    assert not out.exists()


def test_sample_mask_conditions_mask_to_image(m2i_run, tmp_path):
    out = tmp_path / "out"
    assert main(["sample", "--profile", "smoke", "--run", str(m2i_run["run"]), "--n", "2", "--steps", "1",
                 "--mask", str(m2i_run["masks"]), "--out", str(out), "--device", "cpu"]) == 0
    assert json.loads((out / "samples.json").read_text())["masks"] == str(m2i_run["masks"])


def test_sample_mask_is_refused_by_a_generator_without_masks(tmp_path, capsys, fake_stage1):
    from cardiolab.tasks import ldm

    run = ldm.train(get_profile("smoke"), out=tmp_path / "ldm", steps=1, latents=fake_stage1["latents"],
                    cache_dir=fake_stage1["cache_dir"])
    capsys.readouterr()
    out = tmp_path / "out"
    assert main(["sample", "--profile", "smoke", "--run", str(run), "--mask", str(tmp_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: sample ldm: --mask is not an option of this model"
    assert not out.exists()


def test_train_with_a_bad_set_value_names_the_field(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("CARDIOLAB_ROOT", str(tmp_path))
    assert main(["train", "flow", "--profile", "smoke", "--set", "baselines.steps=x"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "baselines.steps" in err
    assert not (tmp_path / "runs").exists()


def test_one_seed_gives_identical_arrays(m2i_run, tmp_path):
    import numpy as np

    from cardiolab.io.acdc import read_acdc

    def draw(folder, seed):
        out = tmp_path / folder
        assert main(["sample", "--profile", "smoke", "--run", str(m2i_run["run"]), "--n", "2", "--steps", "2",
                     "--seed", str(seed), "--mask", str(m2i_run["masks"]), "--out", str(out), "--device", "cpu"]) == 0
        return np.stack([np.asarray(s.image) for s in read_acdc(out)])

    a, b, c = draw("a", 0), draw("b", 0), draw("c", 1)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


# ---- never a silent NaN: a diverged training and NaN weights stop the verbs ------------------------------
def test_train_that_diverges_exits_1_with_one_line(tmp_path, capsys, fake_stage1):
    out = tmp_path / "flow"
    code = main(["train", "flow", "--profile", "smoke", "--out", str(out), "--steps", "20",
                 "--latents", str(fake_stage1["latents"]), "--cache", str(fake_stage1["cache_dir"]),
                 "--set", "baselines.lr=1e30", "--set", "baselines.amp=off"])
    errors = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines() if "error" in line]
    assert code == 1
    assert len(errors) == 1                          # beside the progress bar: one line
    assert "training diverged at step" in errors[0]
    assert str(out) in errors[0]


def test_sample_from_nan_weights_writes_nothing(tmp_path, capsys, fake_stage1):
    import torch

    from cardiolab.tasks import flow

    run = flow.train(get_profile("smoke"), out=tmp_path / "flow", steps=1, latents=fake_stage1["latents"],
                     cache_dir=fake_stage1["cache_dir"])
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    for part in ("modules", "ema"):
        first = next(iter(ckpt[part]["model"]))
        ckpt[part]["model"][first].view(-1)[0] = float("nan")
    torch.save(ckpt, run / "checkpoint.pt")
    capsys.readouterr()
    out = tmp_path / "out"
    assert main(["sample", "--profile", "smoke", "--run", str(run), "--n", "2", "--steps", "2", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "NaN or inf" in err
    assert "checkpoint.pt" in err
    assert not out.exists()


def test_nan_latents_are_refused_not_snapped_to_a_code(fake_stage1):
    import torch

    from cardiolab.core import CardiolabError
    from cardiolab.tasks.vqgan import decode_latents, load

    vq = load(fake_stage1["vqgan_run"])
    z = torch.randn(2, 4, 3, 4, 4, 2)
    z[1, 0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(CardiolabError, match="1 of 2 latents hold NaN"):
        decode_latents(vq, z)
