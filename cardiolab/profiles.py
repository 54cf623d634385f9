"""The three run profiles (smoke / tiny / full): with their sections (`sections.py`, whose defaults are tiny's), the
only place sizes, steps and cohort sizes live.

smoke: seconds per notebook on 2 CPU cores, for CI and nbval. Numbers it prints mean nothing.
tiny:  the CPU default for `make reproduce`; minutes per model on 2 cores, real (small) results.
full:  the paper's shapes (CardioDiT: 6 slices of 256x256x32 cines -> 8x64x64x8 latents), for a GPU.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from cardiolab.core import RUN_CONFIG, CardiolabError, fingerprint, from_record, project_root, read_json, to_record
# The sections live in sections.py; profiles is where callers find them with the profiles (re-exported).
from cardiolab.sections import (BaselinesConfig, CopyDetectorConfig, DataConfig, DiTConfig, DPConfig, EvalConfig,
                                HighresConfig, LandmarksConfig, MIAConfig, VQGANConfig, runtime, shapes, shaping_fields)

AUDIT_DIR = "audit"               # the audits' folder in a profile's runs (`Profile.audit_dir`)


@dataclass(frozen=True)
class Profile:
    name: str
    data: DataConfig = field(default_factory=DataConfig)
    vqgan: VQGANConfig = field(default_factory=VQGANConfig)
    dit: DiTConfig = field(default_factory=DiTConfig)
    dp: DPConfig = field(default_factory=DPConfig)
    mia: MIAConfig = field(default_factory=MIAConfig)
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    landmarks: LandmarksConfig = field(default_factory=LandmarksConfig)
    copydetector: CopyDetectorConfig = field(default_factory=CopyDetectorConfig)
    highres: HighresConfig = field(default_factory=HighresConfig)
    device: str = runtime("auto")
    num_workers: int = runtime(0)
    # The root's data source (`with_data`): a cohort folder as records name it (`core.to_record`); None = the
    # embedded phantom. A source shapes every model trained on it (`data_shaping`) and has its own cache.
    data_source: str | None = None
    data_layout: str = "acdc"         # the source's layout: acdc | mnms (the phantom is written as acdc)
    # Vendors whose every subject the cache puts in holdout (`with_data`), to test generalisation to a scanner
    # never trained on; () = the plain stratified split of `data.split`.
    holdout_vendor: tuple[str, ...] = ()

    # Where this profile's files live (all git-ignored).
    @property
    def phantom_dir(self) -> Path:
        return project_root() / "data" / "phantom" / self.name

    @property
    def volume_dir(self) -> Path:
        """The whole-heart 3D phantom cohort (volume layout): data/phantom/<profile>-volume."""
        return project_root() / "data" / "phantom" / f"{self.name}-volume"

    @property
    def cache_dir(self) -> Path:
        """The prepared cache of the profile's data source: data/cache/<profile> for the phantom,
        data/cache/<profile>-<folder name>-<id> for another source (`source_key`), so one never overwrites the other."""
        base = project_root() / "data" / "cache"
        if self.data_source is None:
            return base / self.name
        return base / f"{self.name}-{source_key(self.data_source, self.data_layout)}"

    @property
    def data_root(self) -> Path:
        """The cohort folder the profile's data comes from: the data source, else the phantom (data/phantom/<profile>)."""
        return from_record(self.data_source) if self.data_source is not None else self.phantom_dir

    def describe_data(self) -> str:
        """One line naming the data source and its cache, for logs, notebooks and reports."""
        source = (f"{self.data_layout} cohort {self.data_root}" if self.data_source is not None
                  else f"the embedded phantom ({self.phantom_dir})")
        rule = f" (holdout: vendor {', '.join(self.holdout_vendor)})" if self.holdout_vendor else ""
        return f"data: {source} -> cache {self.cache_dir}{rule}"

    @property
    def split_rule(self) -> dict | None:
        """How the cache splits its subjects beyond `data.split`, as its manifest records it and as every model
        trained on it is shaped by it; None for the plain stratified split (what older caches hold too)."""
        return {"holdout_vendor": list(self.holdout_vendor)} if self.holdout_vendor else None

    @property
    def run_dir(self) -> Path:
        return project_root() / "runs" / self.name

    def run(self, name: str) -> Path:
        """The run folder of a model (runs/<profile>/<name>)."""
        return self.run_dir / name

    @property
    def samples_dir(self) -> Path:
        return self.run_dir / "samples"

    def samples(self, name: str) -> Path:
        """The synthetic cohort a generator writes (runs/<profile>/samples/<name>)."""
        return self.samples_dir / name

    @property
    def eval_dir(self) -> Path:
        return self.run_dir / "eval"

    @property
    def figures_dir(self) -> Path:
        return self.run_dir / "figures"

    @property
    def audit_dir(self) -> Path:
        """The privacy audits and their card (runs/<profile>/audit)."""
        return self.run_dir / AUDIT_DIR

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        data=DataConfig(phantom_subjects=10, phantom_size=64, phantom_spacing=3.0, phantom_slices=6,
                        phantom_frames=12, image_size=32, spacing=6.0, slices=4, frames=8),
        vqgan=VQGANConfig(channels=(8, 16), codes=64, code_dim=4, steps=20, batch=4, disc_start=10),
        dit=DiTConfig(hidden=32, depth=2, heads=2, patch=(1, 2, 2, 2), steps=40, batch=4, lr=1e-3,
                      sample_steps=5, n_samples=4),
        dp=DPConfig(batch=4, physical_batch=2, steps=10, lr=1e-3, private_subjects=20, epsilons=(10.0, 1.0),
                    audit_fresh=8, audit_references=4),
        mia=MIAConfig(fresh=8, references=4, reference_subjects=6, reference_steps=10),
        baselines=BaselinesConfig(channels=(8, 16), steps=4, batch=2, lr=1e-3, sample_steps=3, n_samples=2,
                                  pixel_channels=(8, 16), pixel_batch=2, pixel_steps=4, pixel_sample_steps=3),
        # smoke: no domain randomisation: 20 steps only check that things run, and plain frames learn faster
        eval=EvalConfig(seg_channels=(8, 16, 32), seg_steps=20, seg_batch=8, seg_randomise=False, feature_steps=20,
                        feature_dim=16, utility_seeds=2),
        landmarks=LandmarksConfig(channels=(8, 16, 32), sigma_mm=9.0, steps=20, cv_steps=0, batch=8, lr=1e-2,
                                  folds=2),
        copydetector=CopyDetectorConfig(steps=6, batch=4, dim=16, calibration=44, fresh=4, canary_steps=0),
        highres=HighresConfig(size=(32, 32, 16), subjects=6, holdout=0.34, crop=(32, 32, 16), vq_channels=(8, 16),
                              codes=64, code_dim=4, vq_steps=10, vq_lr=1e-3, unet_channels=(16, 32, 32),
                              attention_levels=(False, True, True), ldm_steps=6, ldm_lr=1e-3, cn_steps=6,
                              seg_channels=(8, 16, 32), seg_steps=10, seg_lr=1e-2, batch=2, sample_steps=3,
                              n_samples=2),
    ),
    "tiny": Profile(name="tiny"),
    "full": Profile(
        name="full",
        data=DataConfig(phantom_subjects=200, phantom_size=256, phantom_spacing=1.25, phantom_slices=10,
                        phantom_frames=30, image_size=256, spacing=1.25, slices=6, frames=32),
        # CardioDiT's stage-1 config: widths (128, 256), 2 residual layers, 16384 x 8 codes, LR 5e-5,
        # adversarial weight 0.005 (its 0.002 x LPIPS-squeeze perceptual term needs downloaded weights: none here);
        # its losses and whole slices: no MSE term, no augmentation, no crops (tiny gains, unmeasured at this size)
        vqgan=VQGANConfig(channels=(128, 256), res_blocks=2, codes=16384, code_dim=8, steps=50_000,
                          batch=8, lr=5e-5, disc_start=10_000, disc_weight=0.005, mse_weight=0.0, augment=False,
                          crop=(0, 0, 0)),
        dit=DiTConfig(hidden=768, depth=8, heads=12, patch=(1, 4, 4, 2), steps=200_000, batch=4, lr=1e-4,
                      n_samples=64),
        dp=DPConfig(delta=1e-5, batch=64, physical_batch=16, steps=5000, private_subjects=1000, epsilons=(10.0, 1.0),
                    audit_fresh=1000, audit_references=4),
        mia=MIAConfig(fresh=1000, references=4),
        baselines=BaselinesConfig(channels=(64, 128, 256), steps=200_000, batch=4, lr=1e-4, sample_steps=50,
                                  n_samples=64, pixel_channels=(64, 128, 256), pixel_batch=4, pixel_steps=200_000,
                                  pixel_sample_steps=50),
        eval=EvalConfig(seg_steps=20_000, seg_batch=32, feature_steps=10_000, feature_dim=128, utility_seeds=5),
        landmarks=LandmarksConfig(sigma_mm=3.0, steps=20_000, batch=32, lr=1e-3, folds=4, cv_steps=0),  # 4: seed paper
        copydetector=CopyDetectorConfig(steps=5000, batch=32, dim=128, calibration=142, canary_steps=0),
        # MedLoRD's shapes on one GPU: 512x512x256 CT, 128^3 crops, 16384 x 8 codes, widths 64..512
        highres=HighresConfig(size=(512, 512, 256), subjects=100, holdout=0.2, crop=(128, 128, 128),
                              vq_channels=(64, 128), codes=16384, code_dim=8, vq_steps=100_000, vq_lr=1e-4,
                              unet_channels=(64, 128, 256, 512), res_blocks=2, ldm_steps=200_000, ldm_lr=1e-4,
                              cn_steps=50_000, seg_channels=(32, 64, 128, 256), seg_steps=20_000, batch=1,
                              checkpointing=True, code_chunk=1024, decode_window=(64, 64, 32), n_samples=16),
    ),
}


DATA_ENV, LAYOUT_ENV = "CARDIOLAB_DATA", "CARDIOLAB_LAYOUT"   # the root's data source when no --data is given
HOLDOUT_ENV = "CARDIOLAB_HOLDOUT_VENDOR"                       # its split rule when no --holdout-vendor is given
LAYOUTS = ("acdc", "mnms")


def source_key(source: str, layout: str) -> str:
    """The cache-folder suffix of a data source: its folder name (letters, digits, - and _) and a short id of the
    recorded path and layout, e.g. "ACDC-3f2a9c1b": two folders of one name never share a cache."""
    name = "".join(c if c.isalnum() or c in "-_" else "-" for c in Path(source).name).strip("-") or "data"
    return f"{name}-{fingerprint({'source': source, 'layout': layout})[:8]}"


def with_data(profile: Profile, data: str | os.PathLike | None = None, layout: str | None = None,
              holdout_vendor: str | Sequence[str] | None = None) -> Profile:
    """`profile` reading the cohort folder `data` in `layout` (acdc | mnms) instead of the phantom.

    data None: $CARDIOLAB_DATA (and $CARDIOLAB_LAYOUT), else the profile as it is (the phantom by default).
    layout None: $CARDIOLAB_LAYOUT, else acdc. The folder is recorded relative to the root when under it.
    holdout_vendor: vendors ("A" or "A,B", as the source names them) whose subjects all go to the holdout split,
    checked against the cohort when it is prepared; None: $CARDIOLAB_HOLDOUT_VENDOR, else the profile's; "": none.
    """
    if holdout_vendor is None:
        holdout_vendor = os.environ.get(HOLDOUT_ENV)
    if holdout_vendor is not None:
        names = holdout_vendor.split(",") if isinstance(holdout_vendor, str) else holdout_vendor
        profile = dataclasses.replace(profile, holdout_vendor=tuple(sorted({str(v).strip() for v in names} - {""})))
    if data is None or str(data) == "":
        data = os.environ.get(DATA_ENV) or None
        layout = layout or os.environ.get(LAYOUT_ENV) or None
    if data is None:
        return profile
    layout = layout or "acdc"
    if layout not in LAYOUTS:
        raise CardiolabError(f"--layout {layout!r} (or ${LAYOUT_ENV}): choose one of {', '.join(LAYOUTS)}")
    path = Path(data).expanduser()
    if not path.is_dir():
        raise CardiolabError(f"{path}: no such data folder (--data / ${DATA_ENV})")
    return dataclasses.replace(profile, data_source=to_record(path), data_layout=layout)


def data_shaping(profile: Profile, cache: str | os.PathLike | None = None) -> dict:
    """The part of a run's shaping that names its training data: the profile's data settings, its data source
    when not the phantom, plus the cache folder when it is not the profile's own (a run on another cohort never
    passes for the profile's run)."""
    out = {"data": shaping_fields(profile.data)}
    if profile.data_source is not None:
        out["source"] = {"root": profile.data_source, "layout": profile.data_layout}
    if profile.split_rule is not None:        # another split, other training subjects; absent: older runs stay current
        out["split_rule"] = profile.split_rule
    if cache is not None and Path(cache).resolve() != profile.cache_dir.resolve():
        out["cache"] = to_record(cache)       # relative to the root: a copied root keeps its runs current
    return out


def get_profile(name: Profile | str | None = None) -> Profile:
    """Look a profile up by name; None reads $CARDIOLAB_PROFILE (default 'tiny'); a Profile is returned as is.

    A profile looked up by name reads the root's data source from $CARDIOLAB_DATA when set (`with_data`)."""
    if isinstance(name, Profile):
        return name
    name = name or os.environ.get("CARDIOLAB_PROFILE", "tiny")
    try:
        return with_data(PROFILES[name])
    except KeyError:
        raise CardiolabError(f"unknown profile {name!r}: choose one of {', '.join(PROFILES)}") from None


# ---- a run's profile: resolved once (CLI, notebook parameters), recorded with the run -------------------------
PROFILE_KEY = "resolved_profile"   # a run's config entry: the whole profile it was trained with (`--set` included)


def profile_record(profile: Profile) -> dict:
    """What a run records of its profile: the name and the resolved settings (`run_profile` reads them back)."""
    return {"profile": profile.name, PROFILE_KEY: profile.to_dict()}


def run_profile(run: str | os.PathLike | dict) -> Profile:
    """The profile a run was trained with, as resolved then (`--set`, data source): from its config (a dict or the
    run folder's config.json). A run recorded before runs kept their profile is looked up by its profile's name."""
    conf = run if isinstance(run, dict) else read_json(Path(run) / RUN_CONFIG)
    if isinstance(conf.get(PROFILE_KEY), dict):
        return profile_from_dict(conf[PROFILE_KEY])
    return get_profile(conf.get("profile"))


def profile_from_dict(d: dict) -> Profile:
    """The Profile of `Profile.to_dict()` (JSON lists back to tuples); a field this version does not know is
    ignored and one the record lacks keeps its default, so older records still load."""
    base = PROFILES.get(d.get("name"), PROFILES["tiny"])
    values = {}
    for f in dataclasses.fields(Profile):
        if f.name not in d:
            continue
        default = getattr(base, f.name)
        if dataclasses.is_dataclass(default):
            known = {g.name: getattr(default, g.name) for g in dataclasses.fields(default)}
            values[f.name] = dataclasses.replace(default, **{k: tuple(v) if isinstance(known[k], tuple) else v
                                                             for k, v in d[f.name].items() if k in known})
        else:
            values[f.name] = tuple(d[f.name]) if isinstance(getattr(base, f.name), tuple) else d[f.name]
    return dataclasses.replace(base, **values)


def override(profile: Profile, assignments: list[str]) -> Profile:
    """A copy of `profile` with "section.field=value" assignments applied, e.g. "vqgan.steps=6000".

    Values are parsed by the field's current type; tuples take comma-separated items ("vqgan.channels=32,128").
    """
    sections = [f.name for f in dataclasses.fields(profile) if dataclasses.is_dataclass(getattr(profile, f.name))]
    for item in assignments:
        key, sep, value = item.partition("=")
        section, _, name = key.strip().partition(".")
        if not sep or section not in sections:
            raise CardiolabError(f"--set {item!r}: expected section.field=value, section one of {', '.join(sections)}")
        part = getattr(profile, section)
        fields = [f.name for f in dataclasses.fields(part)]
        if name not in fields:
            raise CardiolabError(f"--set {item!r}: {section} has no field {name!r}; it has {', '.join(fields)}")
        old = getattr(part, name)
        try:
            new = (tuple(_parse(type(old[0]), v) for v in value.split(",")) if isinstance(old, tuple)
                   else _parse(type(old), value))
        except ValueError:
            raise CardiolabError(f"--set {item!r}: {value!r} is not a valid {type(old).__name__}") from None
        profile = dataclasses.replace(profile, **{section: dataclasses.replace(part, **{name: new})})
    return profile


def _parse(kind: type, text: str):
    """One --set value by its field's type; bools from true/false/1/0/yes/no (bool("false") would be True)."""
    if kind is bool:
        if text.lower() not in ("1", "true", "yes", "0", "false", "no"):
            raise ValueError(text)
        return text.lower() in ("1", "true", "yes")
    return kind(text.strip())
