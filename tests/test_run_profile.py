"""The profile is resolved once (CLI --profile / --set, resolved in `main`) and recorded with each run; sampling
a run uses the profile it was trained with, so a --set given at training time is not lost."""
import argparse
import json

import pytest

from cardiolab.__main__ import build_parser, main
from cardiolab.core import RUN_CONFIG
from cardiolab.profiles import PROFILE_KEY, get_profile, override, profile_from_dict, run_profile


@pytest.fixture(scope="module")
def ddpm_run(tmp_path_factory, smoke_cache):
    """A 2-step pixel ddpm run trained through the CLI with --set on its sampling settings."""
    run = tmp_path_factory.mktemp("ddpm") / "run"
    assert main(["train", "ddpm", "--profile", "smoke", "--cache", str(smoke_cache), "--steps", "2", "--out", str(run),
                 "--set", "baselines.pixel_sample_steps=2", "--set", "baselines.n_samples=1"]) == 0
    return run


def test_a_run_records_its_resolved_profile(ddpm_run):
    conf = json.loads((ddpm_run / RUN_CONFIG).read_text())
    assert conf["profile"] == "smoke"
    assert conf[PROFILE_KEY]["baselines"]["pixel_sample_steps"] == 2
    want = override(get_profile("smoke"), ["baselines.pixel_sample_steps=2", "baselines.n_samples=1"])
    assert run_profile(ddpm_run) == want


def test_sampling_a_run_keeps_its_training_set_and_takes_its_own(ddpm_run, tmp_path):
    assert main(["sample", "--profile", "smoke", "--run", str(ddpm_run), "--out", str(tmp_path / "a")]) == 0
    drawn = json.loads((tmp_path / "a" / "samples.json").read_text())
    assert (drawn["n"], drawn["steps"]) == (1, 2)             # the run's --set, not smoke's 2 studies x 3 steps
    assert main(["sample", "--profile", "smoke", "--run", str(ddpm_run), "--out", str(tmp_path / "b"),
                 "--set", "baselines.pixel_sample_steps=1"]) == 0
    drawn = json.loads((tmp_path / "b" / "samples.json").read_text())
    assert (drawn["n"], drawn["steps"]) == (1, 1)             # this command's --set on top of the run's


def test_a_run_from_before_records_only_a_name():
    assert run_profile({"profile": "smoke"}) == get_profile("smoke")


def test_a_recorded_profile_round_trips_through_json():
    profile = override(get_profile("tiny"), ["vqgan.crop=32,32,0", "dit.depth=3", "highres.decode_window=4,4,4"])
    assert profile_from_dict(json.loads(json.dumps(profile.to_dict()))) == profile
    old = json.loads(json.dumps(profile.to_dict()))
    del old["dit"]["depth"]                                   # a record without a field keeps the default
    old["dit"]["retired"] = 1                                 # and one with a field no longer there loads
    assert profile_from_dict(old).dit.depth == get_profile("tiny").dit.depth


def _verbs(parser: argparse.ArgumentParser):
    """(name, parser) of every verb and sub-verb."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield name, sub
                yield from ((f"{name} {n}", s) for n, s in _verbs(sub))


def test_every_verb_with_a_profile_takes_set():
    verbs = {name: {o for a in sub._actions for o in a.option_strings} for name, sub in _verbs(build_parser())}
    with_profile = {name for name, options in verbs.items() if "--profile" in options}
    assert {"train", "sample", "evaluate", "landmarks", "encode", "prepare"} <= with_profile
    lacking = {name for name in with_profile if "--set" not in verbs[name]}
    assert lacking <= {"notebooks", "bench"}                  # they hand the profile on by name (papermill, bench)


def test_a_bad_set_is_one_line_naming_the_field(capsys):
    assert main(["models", "--profile", "smoke", "--set", "dit.nope=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "dit has no field 'nope'" in err
