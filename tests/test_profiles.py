"""Profiles: the one place sizes live, and `--set section.field=value` overrides of them."""
from __future__ import annotations

import pytest

from cardiolab.core import CardiolabError
from cardiolab.profiles import PROFILES, get_profile, override


def test_override_parses_by_field_type():
    tiny = get_profile("tiny")
    p = override(tiny, ["vqgan.steps=6000", "vqgan.channels=32,128", "vqgan.lr=1e-4", "dit.amp=off"])
    assert p.vqgan.steps == 6000
    assert p.vqgan.channels == (32, 128)
    assert p.vqgan.lr == 1e-4
    assert p.dit.amp == "off"
    assert p.vqgan.codes == tiny.vqgan.codes
    assert p.data == tiny.data
    assert p.name == "tiny"
    assert PROFILES["tiny"].vqgan.steps == tiny.vqgan.steps, "the registered profile is left alone"
    assert override(tiny, []) == tiny
    assert get_profile(p) is p, "a Profile passes through get_profile unchanged"


@pytest.mark.parametrize("bad, match", [("vqgan.nope=1", "no field 'nope'"), ("steps=3", "section.field"),
                                        ("name.x=1", "section one of"), ("vqgan.steps", "section.field"),
                                        ("vqgan.steps=many", "not a valid int")])
def test_override_rejects_bad_assignments(bad, match):
    with pytest.raises(CardiolabError, match=match):
        override(get_profile("tiny"), [bad])


def test_unknown_profile():
    with pytest.raises(CardiolabError, match="unknown profile"):
        get_profile("huge")
