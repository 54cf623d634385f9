"""Subject attributes (Info.cfg) <-> integer codes, the conditioning a generator sees.

Each field is a small categorical with an explicit "unknown" class, so ACDC (no age/sex), M&Ms (no
height/weight for some sites) and phantoms share one code space. A DiT adds one more "null" class per
field for classifier-free guidance; `decode` reads that null class as unknown.

    codes = encode({"Group": "DCM", "Height": 181, "Weight": 92})   # array([1, 2, 3, 2, 2])
    decode(codes)  # {"Group": "DCM", "Height": 187.0, "Weight": 95.0}: representative values
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cardiolab.core import CardiolabError

UNKNOWN = "unknown"


@dataclass(frozen=True)
class Field:
    """One categorical attribute.

    key: the Info.cfg key it is read from (aliases: other keys tried in order, e.g. M&Ms 'Pathology').
    classes: class names; the last one is always 'unknown'.
    edges: bin edges for numeric fields (len(classes) - 2 of them); None for named fields.
    values: a representative value per known class, written into a synthetic Info.cfg by `decode`.
    """

    name: str
    key: str
    classes: tuple[str, ...]
    edges: tuple[float, ...] | None = None
    values: tuple = ()
    aliases: tuple[str, ...] = ()

    @property
    def cardinality(self) -> int:
        return len(self.classes)

    @property
    def unknown(self) -> int:
        return len(self.classes) - 1


# ACDC groups; M&Ms pathologies map onto them where they are the same disease (see GROUP_ALIASES).
FIELDS: tuple[Field, ...] = (
    Field("group", "Group", ("NOR", "DCM", "HCM", "MINF", "ARV", UNKNOWN),
          values=("NOR", "DCM", "HCM", "MINF", "ARV"), aliases=("Pathology",)),
    Field("sex", "Sex", ("M", "F", UNKNOWN), values=("M", "F")),
    # Bins keep each class populated in ACDC/M&Ms-sized cohorts (adults, roughly 20-85 years).
    Field("age", "Age", ("<40", "40-59", "60+", UNKNOWN), edges=(40.0, 60.0), values=(30.0, 50.0, 70.0)),
    Field("height", "Height", ("<165cm", "165-179cm", "180+cm", UNKNOWN), edges=(165.0, 180.0),
          values=(158.0, 172.0, 187.0)),
    Field("weight", "Weight", ("<65kg", "65-84kg", "85+kg", UNKNOWN), edges=(65.0, 85.0),
          values=(57.0, 75.0, 95.0)),
)

GROUP_ALIASES = {
    "NOR": "NOR", "NORMAL": "NOR",
    "DCM": "DCM", "DILATED": "DCM",
    "HCM": "HCM", "HYPERTROPHIC": "HCM",
    "MINF": "MINF", "MI": "MINF",
    "ARV": "ARV", "ARVC": "ARV",
}
SEX_ALIASES = {"M": "M", "MALE": "M", "F": "F", "FEMALE": "F", "W": "F"}


def cardinalities() -> list[int]:
    """Number of classes of each field (unknown included, the DiT's null class not)."""
    return [f.cardinality for f in FIELDS]


def _lookup(info: dict, field: Field):
    lowered = {str(k).lower(): v for k, v in info.items()}
    for key in (field.key, *field.aliases):
        value = lowered.get(key.lower())
        if value is not None and str(value).strip() not in ("", "nan", "None"):
            return value
    return None


def _number(value) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) or x <= 0 else x


def encode_field(field: Field, value) -> int:
    """One raw Info.cfg value -> class index (unknown when missing or unreadable)."""
    if value is None:
        return field.unknown
    if field.edges is None:
        aliases = GROUP_ALIASES if field.name == "group" else SEX_ALIASES
        name = aliases.get(str(value).strip().upper())
        return field.classes.index(name) if name else field.unknown
    x = _number(value)
    if x is None:
        return field.unknown
    if field.name == "height" and x < 3.0:
        x *= 100.0  # some sites give metres
    return int(np.searchsorted(field.edges, x, side="right"))


def encode(info: dict) -> np.ndarray:
    """Info.cfg dict (keys case-insensitive: Group/Pathology, Sex, Age, Height, Weight) -> (A,) int64."""
    return np.array([encode_field(f, _lookup(info, f)) for f in FIELDS], dtype=np.int64)


def decode(codes) -> dict:
    """(A,) codes -> Info.cfg attributes with a representative value per known class.

    Unknown (and the DiT's null class, index == cardinality) fields are left out, except Group,
    which Info.cfg always has ('UNKNOWN'). encode(decode(c)) == c with null read as unknown.
    """
    codes = np.asarray(codes).reshape(-1)
    if codes.shape[0] != len(FIELDS):
        raise CardiolabError(f"attribute codes: expected {len(FIELDS)} values, got {codes.shape[0]}")
    info = {}
    for field, c in zip(FIELDS, codes.tolist()):
        if not 0 <= c <= field.cardinality:
            raise CardiolabError(f"attribute codes: {field.name} code {c} outside 0..{field.cardinality}")
        if c < field.unknown:
            info[field.key] = field.values[c]
        elif field.name == "group":
            info[field.key] = "UNKNOWN"
    return info


def describe(codes) -> dict:
    """(A,) codes -> {field name: class name}, for tables and plots."""
    codes = np.asarray(codes).reshape(-1)
    return {f.name: f.classes[min(int(c), f.unknown)] for f, c in zip(FIELDS, codes)}


def raw_attributes(info: dict) -> dict:
    """The raw attribute values the manifest keeps (None where missing): Group, Height, Weight, Age, Sex."""
    out = {}
    for f in FIELDS:
        v = _lookup(info, f)
        out[f.key] = v.item() if isinstance(v, np.generic) else v
    return out
