"""The training engine: determinism, kill -9 and resume, DDP equivalence, weights_only checkpoints, Opacus."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from cardiolab.core import CardiolabError
from cardiolab.engine import StreamBatchSampler, TrainConfig, Trainer, load_checkpoint, lr_factor, read_metrics, run_status

# A toy job shared by the in-process tests and the subprocesses (kill -9, DDP): dropout and a random
# noise term make the losses depend on the engine's seeding, not only on the data order.
JOB = textwrap.dedent('''
    import os, signal, sys, torch
    from torch import nn
    from torch.utils.data import TensorDataset
    from cardiolab.engine import TrainConfig, Trainer

    def make(run_dir, steps=12, batch=8, noise=True, kill_at=None, ema=0.9):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(40, 6, generator=g)
        y = x @ torch.randn(6, 1, generator=g)
        torch.manual_seed(1)
        net = nn.Sequential(nn.Linear(6, 16), nn.Dropout(0.2 if noise else 0.0), nn.Tanh(), nn.Linear(16, 1))
        opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
        cfg = TrainConfig(steps=steps, batch_size=batch, lr=1e-2, warmup=3, ckpt_every=4, log_every=2, ema_decay=ema)
        tr = Trainer(run_dir, cfg, {"model": net}, {"model": opt}, ema=["model"])

        def step_fn(b, step, tr):
            if kill_at is not None and step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            xb, yb = b
            eps = torch.randn_like(yb) * 0.01 if noise else 0.0
            loss = ((tr.modules["model"](xb) - yb - eps) ** 2).mean()
            tr.backward(loss, "model")
            return {"loss": loss.item()}
        return tr, TensorDataset(x, y), step_fn
''')


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    d = tmp_path_factory.mktemp("job")
    (d / "toyjob.py").write_text(JOB)
    sys.path.insert(0, str(d))
    import toyjob
    yield d, toyjob
    sys.path.remove(str(d))


def _weights(run_dir: Path) -> dict:
    return load_checkpoint(run_dir)["modules"]["model"]


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_losses(job, tmp_path):
    _, toyjob = job
    runs = []
    for name in ("a", "b"):
        tr, data, fn = toyjob.make(tmp_path / name)
        tr.fit(data, fn)
        runs.append([r["loss"] for r in read_metrics(tmp_path / name)])
    assert runs[0] == runs[1]
    assert len(runs[0]) == 6
    assert _equal(_weights(tmp_path / "a"), _weights(tmp_path / "b"))


def test_training_anew_over_a_run_says_so(job, tmp_path, caplog):
    _, toyjob = job
    tr, data, fn = toyjob.make(tmp_path / "run")
    with caplog.at_level("WARNING", logger="cardiolab.engine"):
        tr.fit(data, fn)
    assert "training anew" not in caplog.text               # a new folder: nothing to say (a precision verdict may be)
    tr, data, fn = toyjob.make(tmp_path / "run")
    with caplog.at_level("WARNING", logger="cardiolab.engine"):
        tr.fit(data, fn)
    assert "training anew over the run at step 12" in caplog.text
    assert "--resume" in caplog.text


def test_kill9_then_resume_is_bit_identical(job, tmp_path):
    d, _ = job
    script = "import sys; sys.path.insert(0, {d!r}); import toyjob; tr, data, fn = toyjob.make({run!r}, kill_at={k}); tr.fit(data, fn, resume={r})"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full = subprocess.run([sys.executable, "-c", script.format(d=str(d), run=str(tmp_path / "full"), k=None, r=False)], env=env)
    assert full.returncode == 0
    killed = subprocess.run([sys.executable, "-c", script.format(d=str(d), run=str(tmp_path / "cut"), k=10, r=False)], env=env)
    assert killed.returncode == -9                       # died by SIGKILL after the step-8 checkpoint
    assert json.loads((tmp_path / "cut" / "state.json").read_text())["step"] == 8
    assert run_status(tmp_path / "cut", 12) == "partial"
    resumed = subprocess.run([sys.executable, "-c", script.format(d=str(d), run=str(tmp_path / "cut"), k=None, r=True)], env=env)
    assert resumed.returncode == 0
    assert run_status(tmp_path / "cut", 12) == "finished"
    a, b = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "cut")
    assert _equal(a["modules"]["model"], b["modules"]["model"])
    assert _equal(a["ema"]["model"], b["ema"]["model"])
    assert [r["loss"] for r in read_metrics(tmp_path / "full")] == [r["loss"] for r in read_metrics(tmp_path / "cut")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_ddp_equals_single_process(job, tmp_path):
    d, toyjob = job
    tr, data, fn = toyjob.make(tmp_path / "single", steps=6, noise=False)
    tr.fit(data, fn)
    script = f"import sys; sys.path.insert(0, {str(d)!r}); import toyjob; tr, data, fn = toyjob.make({str(tmp_path / 'ddp')!r}, steps=6, noise=False); tr.fit(data, fn)"
    for attempt in range(3):  # a free port can be taken between probing and binding: retry on a new one
        port = _free_port()
        procs = [subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True, env={
            **os.environ, "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2", "RANK": str(r), "LOCAL_RANK": str(r),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}) for r in range(2)]
        results = [p.communicate(timeout=120) for p in procs]
        if all(p.returncode == 0 for p in procs):
            break
    assert [p.returncode for p in procs] == [0, 0], results[0][1][-2000:] + results[1][1][-2000:]
    single, ddp = _weights(tmp_path / "single"), _weights(tmp_path / "ddp")
    for k in single:
        torch.testing.assert_close(ddp[k], single[k], rtol=1e-5, atol=1e-6)


def test_checkpoint_is_weights_only_and_corruption_is_named(job, tmp_path):
    _, toyjob = job
    tr, data, fn = toyjob.make(tmp_path / "run", steps=4)
    tr.fit(data, fn)
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 4
    assert {"modules", "ema", "optimizers", "config"} <= ckpt.keys()
    assert (tmp_path / "run" / "config.json").exists()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CardiolabError, match="checkpoint.pt"):
        load_checkpoint(tmp_path / "run")
    with pytest.raises(CardiolabError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing")


def test_stream_sampler_splits_global_batches_over_ranks():
    one = list(StreamBatchSampler(10, 4, seed=3, start=0, stop=6))
    two = [list(StreamBatchSampler(10, 4, seed=3, start=0, stop=6, rank=r, world=2)) for r in range(2)]
    assert all(a + b == full for a, b, full in zip(*two, one))
    assert sorted(sum(one[:2], []) + one[2][:2]) == list(range(10))     # each epoch is a permutation
    assert list(StreamBatchSampler(10, 4, seed=3, start=4, stop=6)) == one[4:]  # resumable mid-stream
    with pytest.raises(CardiolabError):
        StreamBatchSampler(10, 3, seed=0, start=0, stop=1, world=2)


def test_lr_schedule_warms_up_then_decays():
    cfg = TrainConfig(steps=100, warmup=10, min_lr_ratio=0.1)
    f = [lr_factor(s, cfg) for s in range(100)]
    assert f[0] == pytest.approx(0.1)
    assert f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    assert f[-1] == pytest.approx(0.1, abs=1e-3)


def test_accepts_opacus_model_optimizer_and_poisson_loader(tmp_path):
    from opacus import PrivacyEngine

    torch.manual_seed(0)
    x, y = torch.randn(64, 5), torch.randn(64, 1)
    net = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 1))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    loader = torch.utils.data.DataLoader(TensorDataset(x, y), batch_size=16)
    engine = PrivacyEngine(accountant="rdp")
    net, opt, loader = engine.make_private(module=net, optimizer=opt, data_loader=loader,
                                           noise_multiplier=1.0, max_grad_norm=1.0,
                                           noise_generator=torch.Generator().manual_seed(0))

    def step_fn(b, step, tr):
        xb, yb = b
        loss = ((tr.modules["model"](xb) - yb) ** 2).mean()
        tr.backward(loss, "model")
        return {"loss": loss.item()}

    tr = Trainer(tmp_path / "dp", TrainConfig(steps=5, batch_size=16, lr=0.1, warmup=1), {"model": net}, {"model": opt})
    tr.fit(loader, step_fn)
    assert tr.step == 5
    assert engine.get_epsilon(delta=1e-5) > 0
    assert set(load_checkpoint(tmp_path / "dp")["modules"]["model"]) == {"0.weight", "0.bias", "2.weight", "2.bias"}


def test_run_status_tells_finished_partial_and_stale(job, tmp_path):
    _, toyjob = job
    tr, data, fn = toyjob.make(tmp_path / "run", steps=4)
    assert run_status(tmp_path / "run", 4) == "fresh"
    tr.config = {"model": {"width": 16, "sizes": (1, 2)}}
    tr.fit(data, fn)
    assert run_status(tmp_path / "run", 4, {"model": {"width": 16, "sizes": (1, 2)}}) == "finished"
    assert run_status(tmp_path / "run", 8, {"model": {"width": 16, "sizes": (1, 2)}}) == "partial"
    assert run_status(tmp_path / "run", 4, {"model": {"width": 32, "sizes": (1, 2)}}) == "fresh"


@pytest.mark.parametrize("model", ["vqgan", "dit", "segmenter", "evaluator"])
def test_train_cli_resolves_every_model(model):
    from cardiolab.tasks import get_task
    assert callable(get_task(model).train)
