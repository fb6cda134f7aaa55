"""Typed pretraining configuration, loaded from YAML and overridden by CLI flags."""

from __future__ import annotations

import typing
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path

from .._atomic import plain
from .._validation import SpadeInputError, coerce_value, did_you_mean, read_yaml_mapping
from ..genes.intersection import GeneIntersectionConfig
from ..io.selection import SampleSelection


@dataclass(slots=True)
class ClusteringConfig:
    """Two-stage k-means: the parameters of :class:`~spade_st.experts.TwoStageClustering`, by the same names."""

    k1: int = 16  #: stage-1 clusters per group (organ)
    n_experts: int = 16  #: stage-2 clusters = experts
    backend: str = "auto"  #: k-means backend: "auto", "faiss" or "sklearn"
    niter: int = 50
    nredo: int = 5
    small_group: str = "shrink"
    empty_expert: str = "error"
    #: fewest training spots per expert; fewer experts are made when needed. None: the batch size; 0: no rule
    min_expert_spots: int | None = None


@dataclass(slots=True)
class ModelConfig:
    """Heads, output and loss: fields of :class:`~spade_st.experts.SpadeConfig`, by the same names."""

    out_dim: int = 256
    dropout: float = 0.1
    loss: str = "bleep"  #: "bleep" (paper) or "infonce" (L2-normalised, learnable temperature)
    tau: float = 1.0
    tau_r: float = 0.1
    output: str = "spade"  #: "spade" (paper), "residual" (projection + experts) or "concat" ([projection || experts])
    whiten: bool = False  #: whiten the fixed projection of residual/concat outputs (else: unit average variance)
    #: the fixed projection: "pca" (principal components of the features) or "expression" (the features'
    #: directions that predict the panel expression: reduced-rank ridge on the training spots)
    projection: str = "pca"
    #: rotate that projection by a fixed random orthogonal matrix, so no output dimension is one principal
    #: component: probes that standardise each dimension then keep its variance structure (see projection.rotation)
    rotate: bool = False
    shared_gene_head: bool = False  #: one gene head for every expert (one shared embedding space)
    recon_weight: float = 0.0  #: a shared linear decoder predicts the gene input from the image embedding (0: off)


@dataclass(slots=True)
class OptimConfig:
    """Optimisation: the settings of :class:`~spade_st.train.loop.Trainer`."""

    lr: float = 1e-4
    weight_decay: float = 1e-2
    epochs: int = 100
    batch_size: int = 512
    early_stop: int | None = None  #: patience in epochs per expert (None: train all epochs)


#: the nested sections of :class:`PretrainConfig` (YAML ``samples:``, ``gene_intersection:``, ``clustering:``,
#: ``model:``, ``optim:``)
SECTIONS = {
    "samples": SampleSelection,
    "gene_intersection": GeneIntersectionConfig,
    "clustering": ClusteringConfig,
    "model": ModelConfig,
    "optim": OptimConfig,
}
#: sections that choose the data, not how it is trained: they act through the split and the gene panel (both
#: saved and compared on a rerun), so they stay out of the checkpoint key
DATA_SECTIONS = ("samples", "gene_intersection")
#: flat keys of older config files -> their field now
RENAMED = {"experts": "n_experts", "kmeans_backend": "backend", "kmeans_niter": "niter", "kmeans_nredo": "nredo"}
#: options added after checkpoints existed -> the value that behaves as older versions did (left out of the
#: checkpoint key at that value, so older runs still resume)
ADDED_SINCE = {"projection": "pca", "rotate": False, "hvg_scope": "sample"}


@dataclass(slots=True)
class PretrainConfig:
    """Options of ``spade-st pretrain``. Defaults are the paper's (SPADE, arXiv 2506.21857).

    Data, gene and split options sit at the top; ``clustering``, ``model`` and ``optim`` are sections whose
    field names are those of the objects they configure, so each is passed on whole. :meth:`set` takes any
    option by its own name (``k1=8``, ``lr=1e-3``): every name is unique across the sections.
    """

    data: Path | None = None
    features: Path | None = None  #: FEATS/<encoder>
    out: Path | None = None
    encoder: str | None = None  #: default: read from the feature files
    exclude: list[str] = field(default_factory=list)
    #: which samples of the table enter (rules on its columns; default: all), see :mod:`spade_st.io.selection`
    samples: SampleSelection = field(default_factory=SampleSelection)
    #: the paper's greedy gene intersection over the selected samples (``min_genes: 10000``; 0: off)
    gene_intersection: GeneIntersectionConfig = field(default_factory=GeneIntersectionConfig)
    # gene panel and gene-side input
    n_top_genes: int = 50
    #: where each sample's HVGs are chosen: "sample" (its own genes) or "intersection" (the genes every
    #: selected sample has, the paper's)
    hvg_scope: str = "sample"
    gene_mode: str = "log1p"  #: "log1p" (log1p CP10k, by name) or "raw" (raw counts, as the released code)
    gene_smoothing: float = 0.0  #: gene-side input averaged over spots within this many spot pitches (0: off)
    gene_library_size: bool = False  #: the gene head also gets log1p of the spot's library size
    # split
    val_fraction: float = 0.1
    group_key: str = "organ"
    clustering: ClusteringConfig = field(default_factory=ClusteringConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 42
    device: str | None = None
    store_dtype: str = "float32"
    progress: bool = True
    #: fit the expression head (ridge + prototypes, ``predictor.json``) on the training spots at the end
    predictor: bool = True

    @staticmethod
    def option_names() -> list[str]:
        """Every option :meth:`set` takes: the top-level fields and each section's fields."""
        top = [f.name for f in fields(PretrainConfig) if f.name not in SECTIONS]
        return top + [f.name for cls in SECTIONS.values() for f in fields(cls)]

    def set(self, **options) -> PretrainConfig:
        """Set options by name, each where it lives (``set(k1=8, lr=1e-3, out=...)``); returns self.

        Values are converted to the field's type; an unknown name is an error naming the closest one. The
        flat names of older files (``experts``, ``kmeans_backend``, ...) are accepted with a deprecation warning.
        """
        _assign(self, options, "option")
        return self

    def get(self, name: str):
        """The value of option ``name`` (top level or in its section)."""
        section, field_name = _place(name)
        return getattr(self if section is None else getattr(self, section), field_name)

    def validate(self, require=("data", "features", "out")) -> PretrainConfig:
        """Check the options (and that the paths in ``require`` are set); returns self."""
        for name in require:
            if getattr(self, name) is None:
                msg = f"pretrain needs --{name} (or '{name}:' in the config file)"
                raise SpadeInputError(msg)
        for name in ("data", "features", "out"):
            if getattr(self, name) is not None:
                setattr(self, name, Path(getattr(self, name)))
        c, m, o = self.clustering, self.model, self.optim
        checks = [
            (self.gene_mode in ("log1p", "raw"), "gene_mode must be 'log1p' or 'raw'"),
            (self.hvg_scope in ("sample", "intersection"), "hvg_scope must be 'sample' or 'intersection'"),
            (self.gene_intersection.min_genes >= 0, "gene_intersection.min_genes must be >= 0 (0: off)"),
            (m.loss in ("bleep", "infonce"), "loss must be 'bleep' or 'infonce'"),
            (c.k1 >= 1 and c.n_experts >= 1, "k1 and n_experts must be >= 1"),
            (o.epochs >= 1 and o.batch_size >= 2, "epochs >= 1 and batch_size >= 2 are needed"),
            (m.tau > 0 and m.tau_r >= 0, "tau must be > 0 and tau_r >= 0"),
            (0 <= m.dropout < 1, "dropout must be in [0, 1)"),
            (m.output in ("spade", "residual", "concat"), "output must be 'spade', 'residual' or 'concat'"),
            (m.projection in ("pca", "expression"), "projection must be 'pca' or 'expression'"),
            (c.min_expert_spots is None or c.min_expert_spots >= 0, "min_expert_spots must be >= 0"),
            (self.gene_smoothing >= 0, "gene_smoothing must be >= 0 (spot pitches; 0 turns it off)"),
            (m.recon_weight >= 0, "recon_weight must be >= 0 (0 turns the reconstruction term off)"),
        ]
        for ok, msg in checks:
            if not ok:
                raise SpadeInputError(msg)
        return self

    def to_dict(self) -> dict:
        return plain(self)

    def training_key(self) -> dict:
        """The settings a checkpoint must share to be resumed (paths, device and progress may change), flat and
        under the names checkpoints have always been hashed with (``experts``, ``kmeans_backend``, ...), so a
        run started by an earlier version resumes; also what ``config.json["train"]`` records."""
        old_name = {new: old for old, new in RENAMED.items()}
        d = {k: v for k, v in self.to_dict().items() if k not in SECTIONS}
        for section in SECTIONS:
            if section not in DATA_SECTIONS:
                d |= {old_name.get(k, k): v for k, v in plain(getattr(self, section)).items()}
        for k in ("data", "features", "out", "device", "progress", "predictor"):
            d.pop(k)
        for k, before in ADDED_SINCE.items():  # options older runs did not have, at what they did then
            if d.get(k) == before:
                d.pop(k)
        return d


def _place(key: str) -> tuple[str | None, str]:
    """(section or None for the top level, field name) of option ``key``; unknown names raise."""
    name = RENAMED.get(key, key)
    for section, cls in SECTIONS.items():
        if name in {f.name for f in fields(cls)}:
            return section, name
    if name in {f.name for f in fields(PretrainConfig)} and name not in SECTIONS:
        return None, name
    known = PretrainConfig.option_names()
    hint = did_you_mean(key, known + list(RENAMED))
    for old, new in RENAMED.items():  # suggest the current name, never a deprecated one
        hint = hint.replace(f"{old!r}", f"{new!r}")
    msg = f"unknown option {key!r}{hint}; known: {', '.join(sorted(known))}"
    raise SpadeInputError(msg)


def _assign(cfg: PretrainConfig, values: dict, source: str, warn_renamed: bool = True) -> None:
    """Set ``values`` (option name -> value) on ``cfg`` with type conversion; old names warn once."""
    old = sorted(k for k in values if k in RENAMED)
    if old and warn_renamed:
        warnings.warn(
            f"{source}: {', '.join(f'{k!r} is now {RENAMED[k]!r}' for k in old)} (the old names will be removed)",
            FutureWarning,
            stacklevel=3,
        )
    for key, value in values.items():
        try:
            section, name = _place(key)
        except SpadeInputError as err:
            raise SpadeInputError(f"{source}: {err}") from None
        target = cfg if section is None else getattr(cfg, section)
        hint = typing.get_type_hints(type(target))[name]
        setattr(target, name, coerce_value(value, hint, f"{source}: {key}"))


def section_block(block, cls, section: str, source: str) -> dict:
    """YAML section ``section:`` (``block``) checked against dataclass ``cls``: a mapping of its fields only."""
    block = block or {}
    if not isinstance(block, dict):
        msg = f"{source}: '{section}:' must be a mapping of option: value, got {block!r}"
        raise SpadeInputError(msg)
    names = {f.name for f in fields(cls)}
    for key in block:
        if key not in names:
            msg = f"{source}: unknown option {key!r} under '{section}:'{did_you_mean(key, names)}; known: {', '.join(sorted(names))}"
            raise SpadeInputError(msg)
    return block


def _from_mapping(values: dict, source: str) -> PretrainConfig:
    """A config from a YAML mapping: sections as nested mappings; flat section keys (older files) warn."""
    cfg = PretrainConfig()
    flat = {k: v for k, v in values.items() if k not in SECTIONS}
    try:
        where = {k: _place(k)[0] for k in flat}
    except SpadeInputError as err:
        raise SpadeInputError(f"{source}: {err}") from None
    moved = sorted(k for k, section in where.items() if section is not None)
    both = sorted(k for k in moved if isinstance(values.get(where[k]), dict) and RENAMED.get(k, k) in values[where[k]])
    if both:
        msg = f"{source}: {', '.join(both)} given both at the top and under its section; keep one of them"
        raise SpadeInputError(msg)
    if moved:
        warnings.warn(
            f"{source}: flat keys {', '.join(moved)} are deprecated; write them under their section "
            f"({', '.join(f'{where[k]}: {RENAMED.get(k, k)}' for k in moved)})",
            FutureWarning,
            stacklevel=3,
        )
    _assign(cfg, flat, source, warn_renamed=False)  # said above, in one line
    for section, cls in SECTIONS.items():
        if section not in values:
            continue
        _assign(cfg, section_block(values[section], cls, section, source), f"{source}: {section}")
    return cfg


BUILTIN = Path(__file__).resolve().parents[1] / "configs"


def builtin_configs(folder: Path = BUILTIN) -> list[str]:
    """Names of the configs shipped with spade-st (``configs/*.yaml``; fine-tuning's: ``configs/finetune``)."""
    return sorted(p.stem for p in folder.glob("*.yaml"))


def config_path(path: Path | str, kind: str = "config", folder: Path = BUILTIN) -> Path:
    """``path`` as a file, or the built-in config of that name (``folder/<name>.yaml``); else a one-line error."""
    p = Path(path)
    if not p.is_file() and (folder / f"{p}.yaml").is_file():
        p = folder / f"{p}.yaml"
    if not p.is_file():
        names = builtin_configs(folder)
        msg = (
            f"{kind} {str(path)!r} is neither a file nor a built-in config{did_you_mean(str(path), names)}; "
            f"built-in: {', '.join(names)}"
        )
        raise SpadeInputError(msg)
    return p


def load_config(path: Path | str | None = None, require=("data", "features", "out"), **overrides) -> PretrainConfig:
    """A config from a YAML file or a built-in name (``demo``, ``her2st``, ``spade_hest1k_uni``); unknown keys
    are an error; non-None ``overrides`` (options by name, see :meth:`PretrainConfig.set`) are applied on top;
    the paths in ``require`` must be set."""
    cfg = PretrainConfig()
    if path is not None:
        p = config_path(path)
        cfg = _from_mapping(read_yaml_mapping(p, "config file"), str(p))
    _assign(cfg, {k: v for k, v in overrides.items() if v is not None}, "option")
    return cfg.validate(require)
