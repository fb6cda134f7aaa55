"""The SPADE model artefact: stacked expert heads + routing centroids, saved as safetensors + config.json."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import __version__
from .._atomic import atomic_save_safetensors, atomic_write_json
from .._validation import SpadeInputError, require_file
from ..io.runs import ModelLayout
from .heads import StackedHeads
from .loss import INFONCE_INIT_TEMPERATURE
from .router import mix_experts, route_weights

WEIGHTS = ModelLayout.WEIGHTS
CONFIG = ModelLayout.CONFIG
OUTPUTS = ("spade", "residual", "concat")


@dataclass
class SpadeConfig:
    """Everything needed to rebuild and trace a model."""

    encoder: str
    feature_dim: int
    genes: list[str]
    n_experts: int = 16
    k1: int = 16
    out_dim: int = 256
    dropout: float = 0.1
    tau: float = 1.0
    tau_r: float = 0.1
    loss: str = "bleep"
    gene_mode: str = "log1p"
    group_key: str = "organ"
    split: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    version: str = __version__
    #: ``spade`` (the paper: the routed experts' mix); ``residual`` (a fixed projection of the features + the
    #: mix, which starts at zero); ``concat`` ([projection || mix], 2 x out_dim)
    output: str = "spade"
    shared_gene_head: bool = False  #: one gene head for every expert: all image heads align to one gene space
    #: weight of a reconstruction term: one linear decoder, shared by every expert, predicts the gene input from
    #: the image embedding (0: off, the paper). Puts expression in the embedding where a linear probe reads it.
    recon_weight: float = 0.0
    whiten: bool = False  #: the fixed projection of residual/concat outputs was whitened (else unit mean variance)
    projection: str = "pca"  #: how that projection was fitted: "pca" or "expression" (reduced-rank ridge)
    rotate: bool = False  #: that projection was rotated by ``train.projection.rotation(out_dim)``

    @property
    def embed_dim(self) -> int:
        """Width of :meth:`SpadeModel.embed`'s output."""
        return 2 * self.out_dim if self.output == "concat" else self.out_dim


class SpadeModel(nn.Module):
    """Mixture of data experts over frozen patch features.

    ``embed(features)`` routes each feature row over the stage-1 centroids and returns the weighted sum of
    the experts' image heads (N, out_dim). ``embed_genes(expression)`` gives the gene-side embedding.
    """

    def __init__(self, config: SpadeConfig, centroids: np.ndarray | torch.Tensor, centroid_expert):
        super().__init__()
        self.config = config
        c = torch.as_tensor(np.asarray(centroids, dtype=np.float32))
        if c.ndim != 2 or c.shape[1] != config.feature_dim:
            msg = f"centroids have shape {tuple(c.shape)}, expected (K, {config.feature_dim})"
            raise SpadeInputError(msg)
        ce = torch.as_tensor(np.asarray(centroid_expert, dtype=np.int64))
        if ce.shape != (c.shape[0],) or ce.min() < 0 or ce.max() >= config.n_experts:
            msg = (
                f"centroid->expert map must be {c.shape[0]} integers in [0, {config.n_experts}), got {tuple(ce.shape)}"
            )
            raise SpadeInputError(msg)
        #: the expression head (:class:`~spade_st.experts.predictor.ExpressionPredictor`), when the folder has one
        self.predictor = None
        self.register_buffer("centroids", c)
        self.register_buffer("centroid_expert", ce)
        E, d = config.n_experts, config.out_dim
        if config.output not in OUTPUTS:
            msg = f"output must be one of {OUTPUTS}, got {config.output!r}"
            raise SpadeInputError(msg)
        self.image_heads = StackedHeads(E, config.feature_dim, d, config.dropout)
        self.gene_heads = StackedHeads(1 if config.shared_gene_head else E, len(config.genes), d, config.dropout)
        if config.recon_weight > 0:  # (1, ...) parameters: shared by every expert
            self.decoder_w = nn.Parameter(torch.zeros(1, d, len(config.genes)))
            self.decoder_b = nn.Parameter(torch.zeros(1, 1, len(config.genes)))
        if config.output != "spade":  # x -> (x - mean) @ weight, set by set_projection (fitted on training spots)
            self.register_buffer("proj_mean", torch.zeros(config.feature_dim))
            self.register_buffer("proj_weight", torch.zeros(config.feature_dim, d))
        if config.loss == "infonce":
            self.logit_scale = nn.Parameter(torch.full((E,), float(np.log(1 / INFONCE_INIT_TEMPERATURE))))

    @property
    def device(self) -> torch.device:
        return self.centroids.device

    def set_projection(self, mean, weight) -> None:
        """Set the fixed projection of ``residual``/``concat`` outputs: ``(x - mean) @ weight``."""
        with torch.no_grad():
            self.proj_mean.copy_(torch.as_tensor(np.asarray(mean, np.float32)))
            self.proj_weight.copy_(torch.as_tensor(np.asarray(weight, np.float32)))

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The fixed projection of feature rows (..., D) -> (..., out_dim)."""
        return (x - self.proj_mean) @ self.proj_weight

    def image_side(self, feats: torch.Tensor, experts=None) -> torch.Tensor:
        """Training-time image embeddings of each expert's own batch (A, B, D) -> (A, B, out_dim)."""
        z = self.image_heads(feats, experts)
        return z + self.project(feats) if self.config.output == "residual" else z

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The shared linear decoder's gene input prediction from image embeddings (..., out_dim) -> (..., G)."""
        return z @ self.decoder_w[0] + self.decoder_b[0]

    def gene_side(self, genes: torch.Tensor, experts=None) -> torch.Tensor:
        """Training-time gene embeddings of each expert's own batch (A, B, G) -> (A, B, out_dim)."""
        if not self.config.shared_gene_head:
            return self.gene_heads(genes, experts)
        a, b, g = genes.shape
        return self.gene_heads(genes.reshape(1, a * b, g)).reshape(a, b, -1)

    def _check_features(self, features, encoder: str | None) -> torch.Tensor:
        if encoder is not None and encoder != self.config.encoder:
            msg = f"this model was trained on {self.config.encoder!r} features, got {encoder!r} features"
            raise SpadeInputError(msg)
        x = torch.as_tensor(np.asarray(features) if not isinstance(features, torch.Tensor) else features)
        if x.ndim != 2 or x.shape[1] != self.config.feature_dim:
            msg = (
                f"features have shape {tuple(x.shape)}; this model routes {self.config.feature_dim}-d "
                f"{self.config.encoder} features"
            )
            raise SpadeInputError(msg)
        return x

    @torch.inference_mode()
    def route(self, features, tau_r: float | None = None, topk: int | None = None, encoder: str | None = None):
        """Expert weights α (N, E) as NumPy."""
        x = self._check_features(features, encoder).to(self.device, torch.float32)
        tau = self.config.tau_r if tau_r is None else tau_r
        return route_weights(x, self.centroids, self.centroid_expert, self.config.n_experts, tau, topk).cpu().numpy()

    @torch.inference_mode()
    def embed(
        self,
        features,
        batch_size: int = 8192,
        tau_r: float | None = None,
        topk: int | None = None,
        encoder: str | None = None,
        return_weights: bool = False,
        latent: bool = False,
    ):
        """SPADE embeddings (N, ``config.embed_dim``) float32 of feature rows (N, feature_dim).

        ``latent=True`` gives the embedding in the space shared with :meth:`embed_genes` (what the loss
        aligned): the same as the output except for ``output="concat"``, whose fixed projection half is left out.
        """
        was_training = self.training
        self.eval()
        x_all = self._check_features(features, encoder)
        tau = self.config.tau_r if tau_r is None else tau_r
        concat = self.config.output == "concat" and not latent
        out = np.empty((len(x_all), self.config.embed_dim if concat else self.config.out_dim), np.float32)
        wts = np.empty((len(x_all), self.config.n_experts), np.float32) if return_weights else None
        for i in range(0, len(x_all), batch_size):
            x = x_all[i : i + batch_size].to(self.device, torch.float32)
            a = route_weights(x, self.centroids, self.centroid_expert, self.config.n_experts, tau, topk)
            z = mix_experts(self.image_heads, x, a, sparse=topk is not None)
            if self.config.output == "residual":
                z = z + self.project(x)
            elif concat:
                z = torch.cat([self.project(x), z], dim=1)
            out[i : i + len(x)] = z.cpu().numpy()
            if wts is not None:
                wts[i : i + len(x)] = a.cpu().numpy()
        self.train(was_training)
        return (out, wts) if return_weights else out

    def gene_panel(self):
        """The :class:`~spade_st.genes.GenePanel` that turns a sample's raw counts into this model's gene input
        (``panel.transform(adata)``, for :meth:`embed_genes`)."""
        from ..genes import GenePanel

        return GenePanel(genes=list(self.config.genes), mode=self.config.gene_mode)

    @torch.inference_mode()
    def embed_genes(self, expression, features=None, batch_size: int = 8192) -> np.ndarray:
        """Gene-side embeddings (N, out_dim) of panel expression (N, n_genes), as fed in training.

        Routed by the spots' image ``features`` when given (the expert that would own the spot), else the
        mean over experts.
        """
        self.eval()
        g_all = torch.as_tensor(np.asarray(expression, dtype=np.float32))
        if g_all.ndim != 2 or g_all.shape[1] != len(self.config.genes):
            msg = f"expression has shape {tuple(g_all.shape)}; this model's panel has {len(self.config.genes)} genes"
            raise SpadeInputError(msg)
        alpha = None
        if features is not None and not self.config.shared_gene_head:
            alpha = torch.as_tensor(self.route(features))
        out = np.empty((len(g_all), self.config.out_dim), np.float32)
        E = self.config.n_experts
        for i in range(0, len(g_all), batch_size):
            g = g_all[i : i + batch_size].to(self.device)
            if self.config.shared_gene_head:
                out[i : i + len(g)] = self.gene_heads.forward_all(g)[0].cpu().numpy()
                continue
            a = (
                alpha[i : i + batch_size].to(self.device)
                if alpha is not None
                else torch.full((len(g), E), 1.0 / E, device=self.device)
            )
            out[i : i + len(g)] = mix_experts(self.gene_heads, g, a).cpu().numpy()
        return out

    # ---- artefact -------------------------------------------------------------------------------------
    def save_pretrained(self, folder: Path | str) -> Path:
        """Write ``model.safetensors`` then ``config.json`` (each atomically) into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        atomic_save_safetensors(folder / WEIGHTS, tensors, {"format": "pt", "spade_st_version": __version__})
        atomic_write_json(folder / CONFIG, asdict(self.config))
        return folder

    @classmethod
    def from_pretrained(
        cls, folder: Path | str, device: str | torch.device = "cpu", load_head: bool = True
    ) -> SpadeModel:
        """Load a model folder; any missing, unexpected or mis-shaped tensor is an error. ``load_head=False`` leaves
        its expression head unread (``fit-predictor`` replacing a stale one)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        folder = Path(folder)
        cfg_path, w_path = folder / CONFIG, folder / WEIGHTS
        if not folder.is_dir():
            what = "is a file, not a folder" if folder.exists() else "does not exist"
            msg = f"model folder {folder} {what}; pass the --out folder of `spade-st pretrain`"
            raise FileNotFoundError(msg)
        for p in (cfg_path, w_path):
            require_file(p, f"{p.name} of model folder {folder}", "a spade-st model is model.safetensors + config.json")
        try:
            raw = json.loads(cfg_path.read_text())
            known = set(SpadeConfig.__dataclass_fields__)
            unknown = sorted(set(raw) - known)
            if unknown:
                msg = f"{cfg_path} has unknown field(s) {unknown}; written by a newer spade-st?"
                raise SpadeInputError(msg)
            config = SpadeConfig(**raw)
        except (json.JSONDecodeError, TypeError) as err:
            msg = f"cannot read {cfg_path}: {err}"
            raise SpadeInputError(msg) from err
        try:
            sd = load_file(str(w_path))
        except (SafetensorError, OSError) as err:
            msg = f"cannot read {w_path}: {err}; the file is truncated or not safetensors"
            raise SpadeInputError(msg) from err
        if "centroids" not in sd or "centroid_expert" not in sd:
            msg = f"{w_path} lacks the routing tensors (centroids, centroid_expert)"
            raise SpadeInputError(msg)
        model = cls(config, sd["centroids"].numpy(), sd["centroid_expert"].numpy())
        own = model.state_dict()
        missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
        bad = sorted(k for k in set(own) & set(sd) if own[k].shape != sd[k].shape)
        if missing or unexpected or bad:
            msg = (
                f"{w_path} does not match {cfg_path}: missing {missing[:3]}, unexpected {unexpected[:3]}, "
                f"wrong shape {bad[:3]}"
            )
            raise SpadeInputError(msg)
        model.load_state_dict(sd, strict=True)
        from ..encoders.weights import sha256_file
        from . import predictor as head

        model.source = {"path": str(folder), "sha256": sha256_file(w_path)}  # named in what it writes

        if load_head and (folder / head.CONFIG).is_file():
            model.predictor = head.ExpressionPredictor.load(folder)
            fitted_for = model.predictor.info.get("model_sha256")
            if fitted_for and fitted_for != model.source["sha256"]:
                msg = (
                    f"the expression head in {folder} was fitted for another model (model.safetensors changed); "
                    f"refit it: spade-st fit-predictor --model {folder} --data ROOT --features FEATS/<encoder>"
                )
                raise SpadeInputError(msg)
        return model.to(device).eval()
