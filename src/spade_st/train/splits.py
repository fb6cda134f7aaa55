"""Train/validation split: patient-disjoint by group when a group has enough patients, spatial blocks otherwise.

Within each group (organ), whole patients go to validation: the set of patients whose sample count is closest to
``ceil(val_fraction * n)`` (sklearn's rounding of the test side, as the paper's 90/10 split), never more than one
patient's share above it, never a majority of the group, and never every patient. A group with fewer than
:data:`MIN_PATIENTS` patients (or none of whose patient sets fits those rules) keeps every sample in training and
validates on a spatially blocked fraction of each training sample's spots: contiguous cells of a grid over the
spot coordinates, never scattered single spots, so a validation spot's neighbours are mostly validation spots too.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, field

import numpy as np

from .._validation import SpadeInputError

MIN_PATIENTS = 3  #: a group needs this many patients for patient-level validation
BLOCK_GRID = 4  #: spatial validation cells: a BLOCK_GRID x BLOCK_GRID grid over each sample's spots


@dataclass
class Split:
    """Which samples train, validate, or are excluded from every step.

    ``val_blocks`` lists training samples whose spatially blocked ``val_fraction`` of spots validates
    (:meth:`block_mask` gives those spots); ``reasons`` says, per group, what was chosen and why.
    """

    train: list[str]
    val: list[str]
    excluded: list[str] = field(default_factory=list)
    seed: int = 42
    val_fraction: float = 0.1
    val_blocks: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def block_mask(self, sample_id: str, coords: np.ndarray) -> np.ndarray:
        """Boolean mask of ``sample_id``'s spots (rows of ``coords``) that validate; all False if none do."""
        coords = np.asarray(coords, dtype=np.float64)
        if sample_id not in self.val_blocks:
            return np.zeros(len(coords), bool)
        seed = [self.seed, zlib.crc32(sample_id.encode())]  # stable across processes (unlike hash())
        return block_holdout(coords, self.val_fraction, seed)

    def block_barcodes(self, samples) -> dict[str, np.ndarray]:
        """``{sample: barcodes}`` of the spatially blocked validation spots of ``samples`` (id -> HestSample)."""
        return {
            sid: samples[sid].adata.obs_names[self.block_mask(sid, samples[sid].adata.obsm["spatial"])]
            for sid in self.val_blocks
        }


def held_out(split: dict) -> list[str]:
    """Samples a model never trained on (from a saved split): the excluded ones, else the validation samples."""
    return list(split.get("excluded") or split.get("val") or [])


def spatial_blocks(coords: np.ndarray, grid: int = BLOCK_GRID) -> np.ndarray:
    """Cell index (0 .. grid*grid-1) of each spot in a ``grid`` x ``grid`` grid over the spots' bounding box."""
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 2 or coords.shape[1] != 2:
        msg = f"spot coordinates must be (N, 2), got {coords.shape}"
        raise SpadeInputError(msg)
    lo, hi = coords.min(0), coords.max(0)
    span = np.where(hi > lo, hi - lo, 1.0)
    cell = np.minimum(((coords - lo) / span * grid).astype(np.int64), grid - 1)
    return cell[:, 1] * grid + cell[:, 0]


def block_holdout(coords: np.ndarray, fraction: float, seed, grid: int = BLOCK_GRID) -> np.ndarray:
    """Mask of whole grid cells, taken in a seeded order, whose spot count is closest to ``fraction`` of the spots.

    At least one cell is held out and at least one is kept whenever the spots fill two or more cells.
    """
    cells = spatial_blocks(coords, grid)
    ids, counts = np.unique(cells, return_counts=True)
    if len(ids) < 2 or fraction <= 0:
        return np.zeros(len(cells), bool)
    order = np.random.default_rng(seed).permutation(len(ids))
    target = fraction * len(cells)
    taken, n = [], 0
    for j in order[:-1]:  # the last cell in the order always stays in training
        if taken and abs(n + counts[j] - target) >= abs(n - target):
            continue
        taken.append(ids[j])
        n += counts[j]
    return np.isin(cells, taken)


def _closest_patient_set(sizes: dict[str, int], target: int, rng) -> list[str] | None:
    """Patients whose total sample count is closest to ``target`` (ties: the larger total), within the rules:
    at most one patient's share above the target, a strict minority of the group, at least one patient kept."""
    n = sum(sizes.values())
    share = n / len(sizes)
    order = [str(p) for p in rng.permutation(sorted(sizes))]
    reach: dict[int, list[str]] = {0: []}  # subset sum -> the first patient set (in seeded order) reaching it
    for p in order:
        for total, members in list(reach.items()):
            t = total + sizes[p]
            if t not in reach and len(members) + 1 < len(sizes):
                reach[t] = [*members, p]
    ok = [t for t in reach if t >= 1 and t <= target + share and 2 * t < n]
    if not ok:
        return None
    best = min(ok, key=lambda t: (abs(t - target), -t))
    return reach[best]


def make_split(
    samples,
    val_fraction: float = 0.1,
    seed: int = 42,
    exclude: list[str] | None = None,
    group_key: str = "organ",
) -> Split:
    """Split samples (objects with ``id``, ``patient`` and ``organ`` or ``meta[group_key]``) into train and val.

    See the module docstring for the rule. Ids in ``exclude`` are removed first. Deterministic given ``seed``.
    """
    if not 0 <= val_fraction < 1:
        msg = f"val_fraction must be in [0, 1), got {val_fraction}"
        raise ValueError(msg)
    exclude = list(exclude or [])
    ids = [s.id for s in samples]
    unknown = sorted(set(exclude) - set(ids))
    if unknown:
        msg = f"--exclude names sample(s) not in the data: {', '.join(unknown)}"
        raise SpadeInputError(msg)
    kept = [s for s in samples if s.id not in set(exclude)]
    if not kept:
        msg = "every sample is excluded: nothing left to train on"
        raise SpadeInputError(msg)
    rng = np.random.default_rng(seed)
    val_patients: set[tuple[str, str]] = set()  # (group, patient): HEST reuses names like "Patient 2" across studies
    blocks: list[str] = []
    reasons: dict[str, str] = {}
    for group in sorted({_group(s, group_key) for s in kept}):
        members = [s for s in kept if _group(s, group_key) == group]
        sizes: dict[str, int] = {}
        for s in members:
            sizes[str(s.patient)] = sizes.get(str(s.patient), 0) + 1
        if val_fraction == 0:
            reasons[group] = "val_fraction is 0: no validation"
            continue
        target = int(np.ceil(val_fraction * len(members)))
        chosen = _closest_patient_set(sizes, target, rng) if len(sizes) >= MIN_PATIENTS else None
        if chosen is not None:
            val_patients.update((group, p) for p in chosen)
            n_val = sum(sizes[p] for p in chosen)
            reasons[group] = (
                f"{len(sizes)} patients, {len(members)} samples: patient(s) {', '.join(sorted(chosen))} "
                f"({n_val} sample(s), target {target}) validate"
            )
            continue
        blocks += [s.id for s in members]
        why = (
            f"only {len(sizes)} patient(s) (< {MIN_PATIENTS})"
            if len(sizes) < MIN_PATIENTS
            else f"no patient set of {len(sizes)} comes near {target} sample(s) without taking the group's majority"
        )
        reasons[group] = (
            f"{why}: every sample trains; {val_fraction:.0%} of each sample's spots in spatial blocks validate"
        )
    val = [s.id for s in kept if (_group(s, group_key), str(s.patient)) in val_patients]
    train = [s.id for s in kept if s.id not in set(val)]
    if not train:
        msg = "the split left no training sample; lower val_fraction"
        raise SpadeInputError(msg)
    return Split(
        train=train,
        val=val,
        excluded=exclude,
        seed=seed,
        val_fraction=val_fraction,
        val_blocks=blocks,
        reasons=reasons,
    )


def _group(sample, key: str) -> str:
    meta = getattr(sample, "meta", None)
    if isinstance(meta, dict) and meta.get(key) is not None:
        return str(meta[key])
    value = getattr(sample, key, None)
    return str(value) if value is not None else "unknown"
