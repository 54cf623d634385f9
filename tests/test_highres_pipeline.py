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
