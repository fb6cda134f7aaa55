"""The model's expression head: predicted log expression of a gene list from SPADE embeddings, stored beside the
model (``predictor.safetensors`` + ``predictor.json``) so a slide that was never sequenced can be mapped from
the model folder alone.

Two methods, both sized independently of the number of training spots:

- ``ridge``: a ridge regression from the embedding (:meth:`SpadeModel.embed`) to each gene, penalty chosen by
  leave-samples-out CV (each sample its own fold, at most 10 folds), stored as weights (embed_dim x genes).
- ``knn``: expression prototypes: k-means centres of the training spots' latent embeddings
  (``embed(latent=True)``, the space the contrastive loss shaped) with the mean expression of their spots; a
  tile gets the mean of its ``k`` most similar prototypes (dot product, as BLEEP's retrieval).

The target is ``log1p`` of counts per 10k (library size over all of a spot's genes), by gene name.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import _keys as K
from .._atomic import atomic_save_safetensors, atomic_write_json
from .._validation import SpadeInputError, did_you_mean
from ..io.runs import ModelLayout

WEIGHTS = ModelLayout.HEAD_WEIGHTS
CONFIG = ModelLayout.HEAD_CONFIG
METHODS = ("ridge", "knn")
TARGET = "log1p(counts per 10k)"
PREDICTED_R = K.PREDICTED_R


@dataclass
class ExpressionPredictor:
    """Weights of both methods plus how they were fitted (``info``: alpha, spots, samples, model hash...)."""

    genes: list[str]
    weight: np.ndarray  #: (embed_dim, G) ridge weights on the embedding
    bias: np.ndarray  #: (G,)
    keys: np.ndarray  #: (P, out_dim) prototype centres in the latent space
    values: np.ndarray  #: (P, G) mean target of each prototype's spots
    k: int = 8  #: prototypes averaged per tile by ``knn``
    target: str = TARGET
    info: dict = field(default_factory=dict)
    #: per gene, the ridge's Pearson r on held-out training samples at the chosen alpha (None: not measured,
    #: e.g. a constant gene, or a head written before it was recorded)
    cv_r: list | None = None

    def gene_r(self) -> np.ndarray:
        """(G,) cross-validated r of each gene, NaN where unknown."""
        if self.cv_r is None:
            return np.full(len(self.genes), np.nan)
        return np.array([np.nan if v is None else float(v) for v in self.cv_r])

    def best_genes(self, n: int) -> list[str]:
        """The ``n`` genes with the highest cross-validated r (NaN last, then head order)."""
        r = self.gene_r()
        order = np.lexsort((np.arange(len(r)), -np.nan_to_num(r, nan=-np.inf)))
        return [self.genes[i] for i in order[:n]]

    def gene_index(self, genes=None) -> np.ndarray:
        """Columns of ``genes`` (case-insensitive; all genes when None); an unknown gene is an error."""
        if genes is None:
            return np.arange(len(self.genes))
        from ..genes.symbols import match_names

        pos = {g: i for i, g in enumerate(self.genes)}
        out = []
        for g, name in zip(genes, match_names(genes, self.genes), strict=True):
            if name is None:
                msg = (
                    f"gene {g!r} is not in this model's expression head ({len(self.genes)} genes){did_you_mean(g, self.genes)}; "
                    "refit it with more genes: spade-st fit-predictor --genes ..."
                )
                raise SpadeInputError(msg)
            out.append(pos[name])
        return np.asarray(out, dtype=np.int64)

    def predict(self, embeddings: np.ndarray, latent: np.ndarray | None = None, method: str = "ridge", genes=None):
        """Predicted expression (N, len(genes)) float32.

        ``embeddings``: :meth:`SpadeModel.embed` output (``ridge``); ``latent``: ``embed(latent=True)`` (``knn``;
        the same array unless the model's output is ``concat``).
        """
        cols = self.gene_index(genes)
        if method == "ridge":
            x = np.asarray(embeddings, np.float64)
            if x.ndim != 2 or x.shape[1] != self.weight.shape[0]:
                msg = f"embeddings have shape {x.shape}; the expression head takes {self.weight.shape[0]} columns"
                raise SpadeInputError(msg)
            if not np.isfinite(x).all():
                bad = int((~np.isfinite(x).all(1)).sum())
                msg = f"{bad} of {len(x)} embedding rows hold NaN or Inf; re-extract the features they came from"
                raise SpadeInputError(msg)
            return (x @ self.weight[:, cols] + self.bias[cols]).astype(np.float32)
        if method == "knn":
            from ..genes.ridge import knn_expression

            q = np.asarray(embeddings if latent is None else latent, np.float32)
            if q.ndim != 2 or q.shape[1] != self.keys.shape[1]:
                msg = f"latent embeddings have shape {q.shape}; the prototypes have {self.keys.shape[1]} columns"
                raise SpadeInputError(msg)
            return knn_expression(q, self.keys, self.values[:, cols], k=self.k).astype(np.float32)
        msg = f"unknown prediction method {method!r}; choose from {METHODS}"
        raise SpadeInputError(msg)

    def save(self, folder: Path | str) -> Path:
        """Write ``predictor.safetensors`` then ``predictor.json`` into the model folder (atomically)."""
        import torch

        folder = Path(folder)
        tensors = {
            k: torch.as_tensor(np.ascontiguousarray(getattr(self, k), np.float32))
            for k in ("weight", "bias", "keys", "values")
        }
        from ..encoders.weights import sha256_file

        atomic_save_safetensors(folder / WEIGHTS, tensors, {"format": "pt"})
        meta = {k: v for k, v in asdict(self).items() if k not in tensors}
        meta["info"] = dict(meta["info"]) | {"weights_sha256": sha256_file(folder / WEIGHTS)}
        atomic_write_json(folder / CONFIG, meta)  # last: it names the weights it belongs to
        return folder

    @classmethod
    def load(cls, folder: Path | str) -> ExpressionPredictor:
        """Read the expression head of a model folder; a folder without one says how to add it."""
        from safetensors.numpy import load_file

        folder = Path(folder)
        if not (folder / CONFIG).is_file() or not (folder / WEIGHTS).is_file():
            msg = (
                f"model {folder} has no expression head ({CONFIG}); add one with "
                f"`spade-st fit-predictor --model {folder} --data ROOT --features FEATS/<encoder>`"
            )
            raise SpadeInputError(msg)
        from ..encoders.weights import sha256_file

        meta = json.loads((folder / CONFIG).read_text())
        want = meta.get("info", {}).get("weights_sha256")
        if want and sha256_file(folder / WEIGHTS) != want:
            msg = (
                f"{folder / WEIGHTS} is not the file {CONFIG} was written with (an interrupted refit?); "
                f"rerun `spade-st fit-predictor --model {folder} ...`"
            )
            raise SpadeInputError(msg)
        arrays = load_file(str(folder / WEIGHTS))
        head = cls(**meta, **{k: arrays[k] for k in ("weight", "bias", "keys", "values")})
        g = len(head.genes)
        if head.weight.shape[1] != g or head.bias.shape != (g,) or head.values.shape != (len(head.keys), g):
            msg = f"{folder / WEIGHTS} does not match the {g} genes of {CONFIG}; refit with `spade-st fit-predictor`"
            raise SpadeInputError(msg)
        return head
