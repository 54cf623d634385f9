"""Controllability: sample per conditioned group from a (tiny, 2-step) DiT, segment, one row per group."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from cardiolab.core import CardiolabError


@pytest.fixture(scope="module")
def tiny_dit(fake_stage1, tmp_path_factory):
    from cardiolab.profiles import get_profile
    from cardiolab.tasks import dit

    out = tmp_path_factory.mktemp("ctl") / "dit"
    with pytest.MonkeyPatch.context() as mp:
        # the run's root (its cache manifest gives the sample geometry) for training and sampling alike: a run
        # records its sources relative to the root it was made in
        mp.setenv("CARDIOLAB_ROOT", str(fake_stage1["root"]))
        yield dit.train(get_profile("smoke"), out=out, steps=2, latents=fake_stage1["latents"])


def test_group_codes_fix_the_group_and_draw_the_rest_from_training_rows(tiny_dit):
    from cardiolab.evaluation.controllability import group_codes
    from cardiolab.core import read_json
    from cardiolab.data import attributes

    conf = read_json(tiny_dit / "config.json")
    codes = group_codes(conf, "DCM", 5, seed=1)
    assert codes.shape == (5, len(attributes.FIELDS))
    assert set(codes[:, 0].tolist()) == {attributes.FIELDS[0].classes.index("DCM")}
    rows = {tuple(r[1:]) for r in conf["train_cond"]}
    assert all(tuple(c[1:].tolist()) in rows for c in codes)
    with pytest.raises(CardiolabError, match="group 'XYZ'"):
        group_codes(conf, "XYZ", 1)


def test_controllability_returns_one_row_per_group(tiny_dit, tmp_path):
    from cardiolab.evaluation.controllability import MEASURES, controllability, expected_orderings
    from cardiolab.models.segmenter import Segmenter, SegmenterConfig
    from cardiolab.profiles import get_profile

    torch.manual_seed(0)
    seg = Segmenter(SegmenterConfig(channels=(8, 16)))                  # untrained: shape of the result only
    table = controllability(tiny_dit, get_profile("smoke"), groups=("NOR", "DCM", "HCM", "ARV"), n=2, steps=2,
                            seg_model=seg, out=tmp_path / "groups")
    assert list(table["group"]) == ["NOR", "DCM", "HCM", "ARV"]
    assert list(table["n"]) == [2, 2, 2, 2]
    assert {f"{m}_mean" for m in MEASURES} <= set(table.columns)
    assert (tmp_path / "groups" / "DCM" / "samples.json").exists()
    checks = expected_orderings(table)
    assert list(checks["group"]) == ["DCM", "HCM", "ARV"]


def test_expected_orderings_on_a_made_up_table():
    from cardiolab.evaluation.controllability import expected_orderings

    table = pd.DataFrame({"group": ["NOR", "DCM", "HCM", "ARV"], "EF_mean": [60.0, 30.0, 65.0, 55.0],
                          "LV_mass_mean": [100.0, 110.0, 150.0, 95.0], "RV_EF_mean": [55.0, 50.0, 58.0, 35.0]})
    assert list(expected_orderings(table)["holds"]) == [True, True, True]
    assert expected_orderings(table[table.group != "HCM"])["holds"].tolist()[1] is None
