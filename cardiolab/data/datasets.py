"""Torch datasets over the prepared cache (`cardiolab.data.prepare`): whole 4D cines or single 2D+t slices.

Smoke and tiny caches are a few MB to tens of MB, so subjects are loaded into memory once; a cache over
`MAX_IN_MEMORY_BYTES` (the full profile: ~60 MB per subject) is read per item, memory-mapped.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import Dataset

from cardiolab.core import MANIFEST, CardiolabError, from_record, read_json
from cardiolab.data.prepare import CACHE_VERSION

SPLITS = ("public", "private", "holdout")
MAX_IN_MEMORY_BYTES = 4 * 2**30
MODES = ("volume", "slice")


def generator_splits(manifest: dict) -> tuple[str, ...]:
    """The splits the generators (VQ-GAN, DiT and the latent models on their latents) train on: public and private
    for the phantom, whose DP side is a second phantom cohort (notebook 06); the public split alone for another data
    source, whose private split is what DP fine-tunes on (`privacy.experiments.private_cohort`)."""
    return ("public",) if manifest.get("profile", {}).get("data_source") else ("public", "private")


def load_manifest(cache_dir: str | os.PathLike) -> dict:
    """`<cache_dir>/manifest.json` as a dict; a missing or foreign file raises CardiolabError naming it.

    Its source["root"] comes back as an absolute path string (`core.from_record`; recorded relative to the root)."""
    path = Path(cache_dir) / MANIFEST
    if not path.exists():
        raise CardiolabError(f"{path}: no prepared cache here (run `python -m cardiolab prepare`)")
    manifest = read_json(path)
    if not isinstance(manifest, dict) or "subjects" not in manifest or "version" not in manifest:
        raise CardiolabError(f"{path}: not a cardiolab cache manifest")
    if manifest["version"] != CACHE_VERSION:
        raise CardiolabError(f"{path}: cache version {manifest['version']}, this cardiolab reads "
                             f"{CACHE_VERSION}; run `python -m cardiolab prepare` again")
    source = manifest.get("source")
    if isinstance(source, dict) and source.get("root"):
        source["root"] = str(from_record(source["root"]))
    return manifest


class CineDataset(Dataset):
    """Prepared cines of one split (or a list of subject ids, or all).

    mode="volume": item = {"image": (1, D, H, W, T) float32, "labels": (D, H, W, T) int64,
                           "label_mask": (T,) bool, "cond": (A,) int64, "index": int}
    mode="slice":  one slice per item, len = subjects x D:
                   {"image": (1, H, W, T), "labels": (H, W, T), "label_mask": (T,), "cond": (A,),
                    "index": int (subject index in this dataset), "slice": int}
    `ids` and `records` (the manifest entries) follow the same subject order as "index".
    """

    def __init__(self, cache_dir: str | os.PathLike, split: str | list[str] | None = None, mode: str = "volume",
                 in_memory: bool | None = None):
        self.cache_dir = Path(cache_dir)
        self.manifest = load_manifest(self.cache_dir)
        if mode not in MODES:
            raise CardiolabError(f"CineDataset: mode {mode!r} is not one of {MODES}")
        self.mode = mode
        self.records = self._select(split)
        self.ids = [r["id"] for r in self.records]
        self.slices = int(self.manifest["slices"])
        if in_memory is None:  # None: in memory unless the selected files are large
            in_memory = sum(self._path(r).stat().st_size for r in self.records) <= MAX_IN_MEMORY_BYTES
        self._data = [self._load(r) for r in self.records] if in_memory else None

    def _select(self, split) -> list[dict]:
        records = self.manifest["subjects"]
        if split is None:
            return list(records)
        if isinstance(split, str):
            if split not in SPLITS:
                raise CardiolabError(f"CineDataset: split {split!r} is not one of {SPLITS} (or a list of ids)")
            wanted = set(self.manifest["splits"][split])
            return [r for r in records if r["id"] in wanted]
        by_id = {r["id"]: r for r in records}
        missing = [s for s in split if s not in by_id]
        if missing:
            raise CardiolabError(f"{self.cache_dir / MANIFEST}: no subjects {missing[:5]}")
        return [by_id[s] for s in split]

    def _path(self, record: dict) -> Path:
        path = self.cache_dir / record["file"]
        if not path.exists():
            raise CardiolabError(f"{path}: listed in the manifest but missing")
        return path

    def _load(self, record: dict, mmap: bool = False) -> dict:
        data = torch.load(self._path(record), map_location="cpu", weights_only=True, mmap=mmap)
        return {"image": data["image"].float(), "labels": data["labels"].long(),
                "label_mask": data["label_mask"].bool(), "cond": data["cond"].long(),
                **({"rvip": data["rvip"].float()} if "rvip" in data else {})}

    def subject(self, i: int) -> dict:
        """Subject i's tensors: image (D, H, W, T) float32, labels (D, H, W, T) int64, label_mask, cond."""
        return self._data[i] if self._data is not None else self._load(self.records[i], mmap=True)

    def __len__(self) -> int:
        return len(self.records) * (self.slices if self.mode == "slice" else 1)

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        if self.mode == "volume":
            d = self.subject(i)
            return {"image": d["image"].unsqueeze(0), "labels": d["labels"], "label_mask": d["label_mask"],
                    "cond": d["cond"], "index": i}
        subject, z = divmod(i, self.slices)
        d = self.subject(subject)
        return {"image": d["image"][z].unsqueeze(0), "labels": d["labels"][z], "label_mask": d["label_mask"],
                "cond": d["cond"], "index": subject, "slice": z}

    def stack(self, key: str = "image") -> torch.Tensor:
        """All subjects' `key` stacked: image -> (N, 1, D, H, W, T), labels -> (N, D, H, W, T), cond -> (N, A)."""
        out = torch.stack([self.subject(i)[key] for i in range(len(self.records))])
        return out.unsqueeze(1) if key == "image" else out
