"""Typed pretraining configuration, loaded from YAML and overridden by CLI flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .._atomic import plain
from .._validation import SpadeInputError, coerce_fields, did_you_mean, read_yaml_mapping


@dataclass
class PretrainConfig:
    """Options of ``spade-st pretrain``. Defaults are the paper's (SPADE, arXiv 2506.21857)."""

    data: Path | None = None
    features: Path | None = None  #: FEATS/<encoder>
    out: Path | None = None
    encoder: str | None = None  #: default: read from the feature files
    exclude: list[str] = field(default_factory=list)
    # gene panel
    n_top_genes: int = 50
    gene_mode: str = "log1p"  #: "log1p" (log1p CP10k, by name) or "raw" (raw counts, as the released code)
    # split
    val_fraction: float = 0.1
    group_key: str = "organ"
    # clustering
    k1: int = 16
    experts: int = 16
    kmeans_backend: str = "auto"
    kmeans_niter: int = 50
    kmeans_nredo: int = 5
    small_group: str = "shrink"
    empty_expert: str = "error"
    #: fewest training spots per expert; fewer experts are made when needed. None: the batch size; 0: no rule
    min_expert_spots: int | None = None
    # model and loss
    out_dim: int = 256
    dropout: float = 0.1
    loss: str = "bleep"  #: "bleep" (paper) or "infonce" (L2-normalised, learnable temperature)
    tau: float = 1.0
    tau_r: float = 0.1
    output: str = "spade"  #: "spade" (paper), "residual" (projection + experts) or "concat" ([projection || experts])
    whiten: bool = False  #: whiten the fixed projection of residual/concat outputs (else: unit average variance)
    shared_gene_head: bool = False  #: one gene head for every expert (one shared embedding space)
    gene_smoothing: float = 0.0  #: gene-side input averaged over spots within this many spot pitches (0: off)
    gene_library_size: bool = False  #: the gene head also gets log1p of the spot's library size
    recon_weight: float = 0.0  #: a shared linear decoder predicts the gene input from the image embedding (0: off)
    # optimisation
    lr: float = 1e-4
    weight_decay: float = 1e-2
    epochs: int = 100
    batch_size: int = 512
    early_stop: int | None = None  #: patience in epochs per expert (None: train all epochs)
    seed: int = 42
    device: str | None = None
    store_dtype: str = "float32"
    progress: bool = True
    #: fit the expression head (ridge + prototypes, ``predictor.json``) on the training spots at the end
    predictor: bool = True

    def validate(self, require=("data", "features", "out")) -> PretrainConfig:
        """Check the options (and that the paths in ``require`` are set); returns self."""
        for name in require:
            if getattr(self, name) is None:
                msg = f"pretrain needs --{name} (or '{name}:' in the config file)"
                raise SpadeInputError(msg)
        for name in ("data", "features", "out"):
            if getattr(self, name) is not None:
                setattr(self, name, Path(getattr(self, name)))
        checks = [
            (self.gene_mode in ("log1p", "raw"), "gene_mode must be 'log1p' or 'raw'"),
            (self.loss in ("bleep", "infonce"), "loss must be 'bleep' or 'infonce'"),
            (self.k1 >= 1 and self.experts >= 1, "k1 and experts must be >= 1"),
            (self.epochs >= 1 and self.batch_size >= 2, "epochs >= 1 and batch_size >= 2 are needed"),
            (self.tau > 0 and self.tau_r >= 0, "tau must be > 0 and tau_r >= 0"),
            (0 <= self.dropout < 1, "dropout must be in [0, 1)"),
            (self.output in ("spade", "residual", "concat"), "output must be 'spade', 'residual' or 'concat'"),
            (self.min_expert_spots is None or self.min_expert_spots >= 0, "min_expert_spots must be >= 0"),
            (self.gene_smoothing >= 0, "gene_smoothing must be >= 0 (spot pitches; 0 turns it off)"),
            (self.recon_weight >= 0, "recon_weight must be >= 0 (0 turns the reconstruction term off)"),
        ]
        for ok, msg in checks:
            if not ok:
                raise SpadeInputError(msg)
        return self

    def to_dict(self) -> dict:
        return plain(self)

    def training_key(self) -> dict:
        """The settings a checkpoint must share to be resumed (paths, device and progress may change)."""
        d = self.to_dict()
        for k in ("data", "features", "out", "device", "progress", "predictor"):
            d.pop(k)
        return d


BUILTIN = Path(__file__).resolve().parents[1] / "configs"


def builtin_configs() -> list[str]:
    """Names of the configs shipped with spade-st (``configs/*.yaml``)."""
    return sorted(p.stem for p in BUILTIN.glob("*.yaml"))


def load_config(path: Path | str | None = None, require=("data", "features", "out"), **overrides) -> PretrainConfig:
    """A config from a YAML file or a built-in name (``demo``, ``her2st``, ``spade_hest1k_uni``); unknown keys
    are an error; non-None ``overrides`` are applied on top; the paths in ``require`` must be set."""
    values: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file() and (BUILTIN / f"{p}.yaml").is_file():
            p = BUILTIN / f"{p}.yaml"
        if not p.is_file():
            names = builtin_configs()
            msg = (
                f"config {str(path)!r} is neither a file nor a built-in config{did_you_mean(str(path), names)}; "
                f"built-in: {', '.join(names)}"
            )
            raise SpadeInputError(msg)
        values = coerce_fields(PretrainConfig, read_yaml_mapping(p, "config file"), str(p))
    values |= coerce_fields(PretrainConfig, {k: v for k, v in overrides.items() if v is not None}, "option")
    return PretrainConfig(**values).validate(require)
