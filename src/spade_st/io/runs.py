"""Paths of what spade-st writes: a model (pretraining output) folder and a run folder (``spade-st demo``,
``report``). Every module takes these names from here; the data side is :class:`~spade_st.io.layout.Layout`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelLayout:
    """A pretraining output folder: the model artefact plus what trained it (resumable stages)."""

    root: Path

    WEIGHTS = "model.safetensors"
    CONFIG = "config.json"
    HEAD_WEIGHTS = "predictor.safetensors"
    HEAD_CONFIG = "predictor.json"

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    weights = property(lambda self: self.root / self.WEIGHTS)
    config = property(lambda self: self.root / self.CONFIG)
    head_weights = property(lambda self: self.root / self.HEAD_WEIGHTS)
    head_config = property(lambda self: self.root / self.HEAD_CONFIG)
    split = property(lambda self: self.root / "split.json")
    panel = property(lambda self: self.root / "panel.json")
    store = property(lambda self: self.root / "store")
    clustering = property(lambda self: self.root / "clustering.npz")
    clustering_qc = property(lambda self: self.root / "clustering_qc.csv")
    choose_k = property(lambda self: self.root / "choose_k.csv")
    history = property(lambda self: self.root / "history.csv")
    checkpoints = property(lambda self: self.root / "checkpoints")
    pretrain_config = property(lambda self: self.root / "pretrain_config.json")
    cohort = property(lambda self: self.root / "cohort.json")

    @property
    def prepared(self) -> list[Path]:
        """What :func:`spade_st.train.pretrain.prepare` leaves for training."""
        return [self.split, self.panel, self.store, self.clustering]


@dataclass(frozen=True)
class RunLayout:
    """A run folder as ``spade-st demo`` writes it and ``spade-st report`` reads it by default."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    data = property(lambda self: self.root / "data")
    model = property(lambda self: self.root / "model")
    embeddings = property(lambda self: self.root / "embeddings")
    results = property(lambda self: self.root / "results")
    figures = property(lambda self: self.root / "figures")
    report_html = property(lambda self: self.root / "report.html")
    report_md = property(lambda self: self.root / "report.md")

    def features(self, encoder: str | None = None) -> Path:
        """``RUN/features`` (the ``--out`` of extract) or ``RUN/features/<encoder>``."""
        return self.root / "features" / encoder if encoder else self.root / "features"
