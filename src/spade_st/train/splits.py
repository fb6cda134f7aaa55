"""Sample-level train/val split: stratified by organ, patient-disjoint, seeded; exclusions kept out."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from .._validation import SpadeInputError


@dataclass
class Split:
    """Which samples train, validate, or are excluded from every step."""

    train: list[str]
    val: list[str]
    excluded: list[str] = field(default_factory=list)
    seed: int = 42
    val_fraction: float = 0.1

    def to_dict(self) -> dict:
        return asdict(self)


def make_split(
    samples,
    val_fraction: float = 0.1,
    seed: int = 42,
    exclude: list[str] | None = None,
) -> Split:
    """Split samples (objects with ``id``, ``organ``, ``patient``) into train and val.

    Within each organ, whole patients go to validation (in a seeded random order) until at least
    ``ceil(val_fraction * n_organ_samples)`` samples are there; an organ with one patient stays in train (as the
    released code does with one-sample organs). No patient is in both. Ids in ``exclude`` are removed first.
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
    val_patients: set[str] = set()
    for organ in sorted({s.organ for s in kept}):
        members = [s for s in kept if s.organ == organ]
        patients = sorted({s.patient for s in members})
        if len(patients) < 2:
            continue
        target = int(np.ceil(val_fraction * len(members)))  # as sklearn's train_test_split rounds the test side
        n_val = sum(1 for s in members if s.patient in val_patients)
        for p in rng.permutation(patients):
            if n_val >= target:
                break
            if p in val_patients or all(s.patient in val_patients or s.patient == p for s in members):
                continue  # keep at least one training patient per organ
            val_patients.add(str(p))
            n_val += sum(1 for s in members if s.patient == p)
    train = [s.id for s in kept if s.patient not in val_patients]
    val = [s.id for s in kept if s.patient in val_patients]
    if not train:
        msg = "the split left no training sample; lower val_fraction"
        raise SpadeInputError(msg)
    return Split(train=train, val=val, excluded=exclude, seed=seed, val_fraction=val_fraction)
