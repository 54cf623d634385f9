"""The copy-detector task: copy-type augmentations, training through the engine, `audit copies --embedding
copy-detector` end to end on the smoke cache."""
from __future__ import annotations

import json

import pytest
import torch

from cardiolab.__main__ import main
from cardiolab.profiles import get_profile, override
from cardiolab.tasks import get_task

SMOKE = get_profile("smoke")


def test_copy_detector_is_registered_as_a_detector():
    assert get_task("copy-detector").KIND == "detector"


def test_copy_detector_sees_every_slice():
    from cardiolab.tasks.copy_detector import encoder_config

    assert encoder_config(SMOKE).in_slices == SMOKE.data.slices


def test_augment_keeps_shape_and_range():
    from cardiolab.tasks.copy_detector import augment

    x = torch.rand(3, 4, 16, 16, 6) * 2 - 1
    out = augment(x, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert out.abs().max() <= 1.0


def test_augment_is_seeded():
    from cardiolab.tasks.copy_detector import augment

    x = torch.rand(2, 4, 16, 16, 6) * 2 - 1
    a = augment(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, augment(x, generator=torch.Generator().manual_seed(1)))


def test_copydetector_steps_shape_the_weights_and_sampling_fields_do_not():
    task = get_task("copy-detector")
    assert task.shaping(override(SMOKE, ["copydetector.steps=7"])) != task.shaping(SMOKE)
    assert task.shaping(override(SMOKE, ["dit.sample_steps=7"])) == task.shaping(SMOKE)


@pytest.fixture(scope="module")
def detector(smoke_cache, tmp_path_factory):
    from cardiolab.tasks.copy_detector import train

    return train(SMOKE, tmp_path_factory.mktemp("cd") / "copy-detector", cache_dir=smoke_cache)


def test_trained_detector_embeds_one_vector_per_cine(detector):
    from cardiolab.privacy.embeddings import embedder

    e = embedder("copy-detector", SMOKE, detector)(torch.zeros(3, 4, 32, 32, 8))
    assert e.shape == (3, SMOKE.copydetector.dim)


def test_audit_copies_with_the_copy_detector_end_to_end(detector, smoke_cache, tmp_path):
    from cardiolab.privacy.audit import plant_cohort

    plant_cohort(tmp_path / "p", SMOKE, smoke_cache, n_copies=3, n_fresh=2)
    out = tmp_path / "copies.json"
    code = main(["audit", "copies", "--profile", "smoke", "--synthetic", str(tmp_path / "p"), "--train",
                 str(smoke_cache), "--holdout", str(smoke_cache), "--embedding", "copy-detector",
                 "--detector", str(detector), "--json", str(out)])
    assert code == 0
    r = json.loads(out.read_text())
    assert {"threshold", "copy_fraction", "memorized_fraction", "per_synthetic", "planted"} <= set(r)


def test_detector_embedding_is_mirror_invariant(detector):
    from cardiolab.tasks.copy_detector import embed, load

    x = torch.rand(2, 4, 32, 32, 8, generator=torch.Generator().manual_seed(3)) * 2 - 1
    model = load(detector)
    torch.testing.assert_close(embed(model, x), embed(model, x.flip(3)), atol=1e-6, rtol=0)   # float32 blur order


def test_detector_embedding_is_the_projection_of_the_canonically_blurred_cine(detector):
    from cardiolab.tasks.copy_detector import canonical, embed, load

    x = torch.rand(3, 4, 32, 32, 8, generator=torch.Generator().manual_seed(4)) * 2 - 1
    model = load(detector)
    with torch.no_grad():
        z = torch.nn.functional.normalize(model.project(canonical(x)), dim=1)
    assert torch.nn.functional.cosine_similarity(embed(model, x).float(), z).min() > 0.5


def test_canonical_blur_spreads_a_point_in_plane_only_and_keeps_its_mass():
    from cardiolab.tasks.copy_detector import CANONICAL_BLUR, canonical, shaping

    x = torch.zeros(1, 2, 9, 9, 3)
    x[0, 0, 4, 4, 1] = 1.0
    y = canonical(x)
    assert abs(float(y.sum()) - 1.0) < 1e-6
    assert float(y[0, 0, 4, 4, 1]) < 0.2                       # spread over the plane
    assert float(y[0, 1].abs().sum() + y[0, 0, :, :, 0].abs().sum()) == 0.0   # not across slices or frames
    assert shaping(get_profile("smoke"))["canonical_blur"] == CANONICAL_BLUR


def test_augment_without_a_family_never_draws_it():
    from cardiolab.tasks.copy_detector import AUGMENT_FAMILIES, CopyAugment, augment

    x = torch.zeros(4, 2, 16, 16, 4) - 1
    x[:, :, 4:12, 5:11] = torch.linspace(0.1, 0.9, 4)
    only_roll = CopyAugment(p=1.0).without(*(f for f in AUGMENT_FAMILIES if f != "roll"))
    y = augment(x, only_roll, torch.Generator().manual_seed(0))
    assert all(any(torch.allclose(y[i], x[i].roll(r, dims=-1), atol=1e-5) for r in range(-3, 4)) for i in range(4))
    nothing = CopyAugment(p=1.0).without(*AUGMENT_FAMILIES)
    torch.testing.assert_close(augment(x, nothing, torch.Generator().manual_seed(0)), x, atol=1e-5, rtol=0)
    with pytest.raises(Exception, match="unknown augmentation families"):
        CopyAugment().without("vqgan")


def test_leaving_a_family_out_changes_the_shaping():
    from cardiolab.tasks.copy_detector import shaping

    assert shaping(get_profile("smoke"), without=("zoom",))["augment"] != shaping(get_profile("smoke"))["augment"]
