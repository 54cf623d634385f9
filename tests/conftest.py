"""Shared fixtures: a small phantom cohort on disk that any test can read (generated once per session)."""
from __future__ import annotations

from cardiolab.profiles import get_profile
import pytest

# Small but anatomically complete: 48 px x 4 mm = the 192 mm field of view of the tiny profile.
PHANTOM_KW = dict(size=48, spacing=4.0, slices=6, frames=10)
PHANTOM_SUBJECTS = 6      # groups cycle NOR, DCM, HCM, MINF, ARV, NOR: every group at least once


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory):
    """A 6-subject phantom cohort in the ACDC layout (patient001..patient006, seed 0) with
    phantom_truth.json and cohort.json; 48x48 px at 4 mm, 6 slices, 10 frames. Treat it as read-only."""
    from cardiolab.data.phantom import generate_cohort

    root = tmp_path_factory.mktemp("phantom")
    generate_cohort(root, PHANTOM_SUBJECTS, seed=0, **PHANTOM_KW)
    return root


@pytest.fixture(scope="session")
def fake_stage1(tmp_path_factory):
    """What the stages before a latent generator write, tiny and untrained: a VQ-GAN run (channels (8, 16),
    4 code dims), a cache manifest (6 subjects, 2 holdout; no image files) and latents.pt with latents
    (6, 4, 3, 4, 4, 2) and scale 2. Returns {"root", "latents", "cache_dir", "vqgan_run"}. Read-only."""
    import dataclasses

    import torch

    from cardiolab.core import write_json
    from cardiolab.data.attributes import cardinalities
    from cardiolab.data.prepare import CACHE_VERSION
    from cardiolab.models.vqgan import VQGAN, VQConfig

    root = tmp_path_factory.mktemp("stage1")
    torch.manual_seed(0)
    vq_cfg = VQConfig(channels=(8, 16), codes=16, code_dim=4)
    vq_run = root / "vqgan"
    vq_run.mkdir(parents=True)
    torch.save({"step": 0, "modules": {"model": VQGAN(vq_cfg).state_dict()}, "ema": {}, "optimizers": {},
                "config": {"vqgan": dataclasses.asdict(vq_cfg), "dead_after": 100}}, vq_run / "checkpoint.pt")
    ids = [f"patient{i:03d}" for i in range(1, 7)]
    splits = {sid: ("holdout" if i >= 4 else "public") for i, sid in enumerate(ids)}
    cache = root / "data" / "cache" / "smoke"
    write_json(cache / "manifest.json", {"version": CACHE_VERSION, "subjects": [
        {"id": sid, "split": splits[sid], "spacing": [6.0, 6.0, 10.0 + i], "frame_ms": 40.0, "es": 3 + (i == 1)}
        for i, sid in enumerate(ids)]})
    cond = torch.stack([torch.randint(0, n, (len(ids),)) for n in cardinalities()], 1)
    latents = root / "latents.pt"
    torch.save({"latents": torch.randn(len(ids), 4, 3, 4, 4, 2), "cond": cond, "ids": ids, "splits": splits,
                "scale": 2.0, "vqgan_run": str(vq_run)}, latents)
    return {"root": root, "latents": latents, "cache_dir": cache, "vqgan_run": vq_run}


@pytest.fixture(scope="session")
def smoke_cache(phantom_root, tmp_path_factory):
    """The shared phantom prepared at the smoke profile's geometry (32 px, 4 slices, 8 frames). Read-only."""
    from cardiolab.data.prepare import prepare

    out = tmp_path_factory.mktemp("cache") / "smoke"
    prepare(phantom_root, "acdc", get_profile("smoke"), out)
    return out


@pytest.fixture
def fake_cpu(monkeypatch, tmp_path_factory):
    """fake_cpu(avx512_bf16, amx): make this process look like a CPU of that kind to `core.cpu_features`,
    whatever the machine or the emulation settings (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA) it runs under.
    Precision verdicts measured meanwhile stay in the test (they describe a CPU that is not this one)."""
    import torch

    from cardiolab import engine

    monkeypatch.setattr(engine.precision, "_VERDICTS", {})
    monkeypatch.setattr(engine.precision, "_remember", lambda key, verdict: engine.precision._VERDICTS.__setitem__(key, verdict))

    def fake(avx512_bf16: bool, amx: bool) -> None:
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
        monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
        monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    return fake
