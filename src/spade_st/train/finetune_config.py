"""The options of ``spade-st finetune``: one dataclass, loaded from YAML, overridden by flags, checked first."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field, fields
from pathlib import Path

from .._validation import SpadeInputError, coerce_value, did_you_mean, read_yaml_mapping
from ..genes.intersection import GeneIntersectionConfig
from ..io.selection import SampleSelection

METHODS = ("auto", "blocks", "lora")
LOSSES = ("bleep", "infonce")


@dataclass
class FinetuneConfig:
    """Fine-tuning a registered encoder against spot expression (see :func:`spade_st.train.finetune.finetune`).

    Parameters
    ----------
    data, out
        HEST-layout root; the encoder folder to write (``extract --encoder finetuned:OUT`` reads it).
    encoder, weights, arch
        A registered encoder, its local weights (default: as ``extract``), architecture overrides (tests).
    samples, gene_intersection, hvg_scope
        The cohort exactly as a pretraining config with the same values makes it (YAML ``samples:`` rules on the
        sample table, the greedy ``gene_intersection:`` with ``min_genes``, HVGs chosen per sample or
        within the intersection); default: every sample of the root, each sample's own HVGs. Give fine-tuning
        and pretraining the same three (and ``exclude``, ``val_fraction``, ``group_key``, ``seed``) and they
        draw the same patient-disjoint split.
    exclude, val_fraction, group_key, seed
        The patient-disjoint split, exactly as ``pretrain`` makes it (``make_split``); ``seed`` also seeds
        the heads, LoRA, each epoch's order, views and dropout.
    permute_expression
        The ST-free control: expression rows permuted across the spots of each section.
    method
        ``blocks`` (CNNs: the last ``train_blocks`` blocks), ``lora`` (ViTs), ``auto`` (blocks where the
        encoder has a block rule, else LoRA).
    views
        Dihedral views of each patch: 1 (as is), 2 (+ mirrored), 4 (the four quarter turns), 8 (all eight);
        each epoch gives each spot one view at random. On the cached path the prefix is computed once per view.
    cache_prefix, cache_dir
        Compute the frozen prefix once and memory-map it (default folder ``OUT/cache``); False runs the whole
        network every epoch (needed for ``jitter``).
    jitter
        Colour jitter strength (brightness, contrast, saturation factors in [1 - j, 1 + j]); whole network only.
    loss, tau, recon_weight
        ``bleep`` (SPADE's soft-target loss at temperature ``tau``, on unnormalised embeddings) or ``infonce``
        (CLIP's: L2-normalised embeddings, one-hot targets, a learnable temperature starting at 0.07, as
        ``pretrain --loss infonce``); ``recon_weight`` adds a linear reconstruction of the expression.
    """

    data: Path | None = None
    out: Path | None = None
    encoder: str = "efficientnet_lite0"
    weights: Path | None = None
    arch: dict = field(default_factory=dict)
    samples: SampleSelection = field(default_factory=SampleSelection)
    gene_intersection: GeneIntersectionConfig = field(default_factory=GeneIntersectionConfig)
    hvg_scope: str = "sample"
    exclude: list[str] = field(default_factory=list)
    val_fraction: float = 0.1
    group_key: str = "organ"
    seed: int = 42
    permute_expression: bool = False
    n_top_genes: int = 50
    method: str = "auto"
    train_blocks: int = 2
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_targets: list[str] = field(default_factory=lambda: ["qkv", "proj", "fc1", "fc2"])
    views: int = 8
    cache_prefix: bool = True
    cache_dir: Path | None = None
    jitter: float = 0.0
    out_dim: int = 256
    dropout: float = 0.1
    loss: str = "bleep"
    tau: float = 1.0
    recon_weight: float = 0.0
    lr: float = 1e-3
    encoder_lr: float = 1e-4
    weight_decay: float = 1e-2
    epochs: int = 20
    batch_size: int = 128
    early_stop: int = 5
    device: str | None = None
    progress: bool = True

    #: fields that say where things are or how they are shown, not what is trained (left out of the record)
    LOCAL = ("out", "cache_dir", "device", "progress")
    #: options added after fine-tuned folders existed: left out of the record at these values (keys unchanged)
    ADDED_SINCE: typing.ClassVar[dict] = {"loss": "bleep", "gene_intersection": {"min_genes": 0}, "hvg_scope": "sample"}

    def resolved_method(self) -> str:
        """``blocks`` or ``lora`` (``auto`` resolved by the encoder's family)."""
        if self.method != "auto":
            return self.method
        from ..encoders.finetuned import is_finetuned
        from ..encoders.partial import has_units

        return "blocks" if not is_finetuned(self.encoder) and has_units(self.encoder) else "lora"

    def validate(self, need_out: bool = True) -> FinetuneConfig:
        """Check every option before any work; one-line errors that say the fix (``need_out=False``: a dry
        run, which writes nothing)."""
        checks = [
            (self.data is not None, "finetune needs --data ROOT (a HEST-layout root)"),
            (self.out is not None or not need_out, "finetune needs --out DIR (the encoder folder to write)"),
            (self.method in METHODS, f"method must be one of {METHODS}, got {self.method!r}"),
            (self.views in (1, 2, 4, 8), f"views must be 1, 2, 4 or 8, got {self.views}"),
            (self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}"),
            (self.batch_size >= 2, f"batch_size must be >= 2 (a contrastive batch), got {self.batch_size}"),
            (0 <= self.val_fraction < 1, f"val_fraction must be in [0, 1), got {self.val_fraction}"),
            (self.train_blocks >= 1, f"train_blocks must be >= 1, got {self.train_blocks}"),
            (self.lora_rank >= 1, f"lora_rank must be >= 1, got {self.lora_rank}"),
            (0 <= self.jitter < 1, f"jitter must be in [0, 1), got {self.jitter}"),
            (self.recon_weight >= 0, f"recon_weight must be >= 0, got {self.recon_weight}"),
            (self.loss in LOSSES, f"loss must be one of {LOSSES}, got {self.loss!r}"),
            (self.hvg_scope in ("sample", "intersection"), "hvg_scope must be 'sample' or 'intersection'"),
            (self.gene_intersection.min_genes >= 0, "gene_intersection.min_genes must be >= 0 (0: off)"),
            (self.early_stop >= 0, f"early_stop must be >= 0 (0: off), got {self.early_stop}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise SpadeInputError(msg)
        method = self.resolved_method()
        if self.jitter > 0 and method == "blocks" and self.cache_prefix:
            msg = "colour jitter needs the whole network each epoch: set cache_prefix: false (or jitter: 0)"
            raise SpadeInputError(msg)
        from ..encoders.finetuned import is_finetuned

        if is_finetuned(self.encoder):
            msg = f"fine-tune the base encoder, not {self.encoder}: pass its registered name (spade-st encoders)"
            raise SpadeInputError(msg)
        if method == "blocks":
            from ..encoders.partial import has_units

            if not has_units(self.encoder):
                msg = f"encoder {self.encoder!r} has no block rule for method 'blocks'; use method: lora"
                raise SpadeInputError(msg)
        return self

    def record(self) -> dict:
        """The options that decide the result (JSON-ready): what ``config.json`` and the checkpoint key hold."""
        from .._atomic import plain

        d = plain(self)
        for k in self.LOCAL:
            d.pop(k, None)
        if not self.samples.active:  # (folders made before these options existed keep their key)
            d.pop("samples")
        for name, default in self.ADDED_SINCE.items():
            if d.get(name) == default:
                d.pop(name)
        return d | {"method": self.resolved_method()}


def load_finetune_config(path=None, **flags) -> FinetuneConfig:
    """A :class:`FinetuneConfig` from YAML ``path`` (optional) with ``flags`` (None: not given) on top.

    ``path``: a YAML file or a built-in name (``configs/finetune/<name>.yaml``, e.g. ``finetune_hest1k_uni``).
    Unknown keys and values of the wrong type are one-line errors with a did-you-mean, before any work.
    """
    from .config import BUILTIN, config_path, section_block

    names = {f.name: f for f in fields(FinetuneConfig)}
    source = str(config_path(path, "finetune config", BUILTIN / "finetune")) if path is not None else "finetune option"
    values = dict(read_yaml_mapping(Path(source), "finetune config")) if path is not None else {}
    values |= {k: v for k, v in flags.items() if v is not None}
    unknown = sorted(set(values) - set(names))
    if unknown:
        msg = f"unknown finetune option {unknown[0]!r}{did_you_mean(unknown[0], names)}"
        raise SpadeInputError(msg)
    hints = typing.get_type_hints(FinetuneConfig)
    sections = {"samples": SampleSelection, "gene_intersection": GeneIntersectionConfig}
    out = {
        k: v if k == "arch" or k in sections else coerce_value(v, hints[k], f"finetune option {k}")
        for k, v in values.items()
    }
    for name, cls in sections.items():
        if name in out and not isinstance(out[name], cls):
            block = section_block(out[name], cls, name, source)
            rules = typing.get_type_hints(cls)
            out[name] = cls(**{k: coerce_value(v, rules[k], f"{source}: {name}: {k}") for k, v in block.items()})
    return FinetuneConfig(**out)
