"""LazySlide plug-in (extra ``[scverse]``): spade-st encoders and SPADE models inside LazySlide's own steps.

LazySlide (``lazyslide`` 0.13, ``lazyslide-models`` 0.1, ``wsidata`` 0.12) tiles a slide into ``wsi.shapes['tiles']``
and writes a feature table ``wsi.tables['<model>_tiles']`` per vision model. Here:

- :class:`SpadeEncoder` is a LazySlide ``ImageModel``: ``zs.tl.feature_extraction(wsi, SpadeEncoder("efficientnet_lite0"))``
  extracts a registered spade-st encoder's features (local weights, no download) with spade-st's preprocessing.
- :class:`Spade` is a LazySlide ``FeaturePredictionModel`` built from a spade-st model folder:
  ``zs.tl.feature_prediction(wsi, Spade(model_dir))`` writes predicted genes (or, with ``output=``, the SPADE
  embedding or the expert weights) as a table next to the encoder's.
- :func:`predict` writes all three tables; :func:`open_features` opens a slide that ``spade-st extract-wsi``
  tiled and featurised as a WSIData; :func:`write_features` saves a LazySlide feature table as a spade-st /
  TRIDENT feature file, so ``spade-st embed`` and ``spade-st predict`` read it.

LazySlide's tile coordinates are tile top-left corners in level-0 pixels, as are the ``coords`` of spade-st's
feature files; spade-st's AnnData ``obsm['spatial']`` holds the centres (top-left + half the level-0 tile side).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import _keys as K
from ._optional import require
from ._validation import SpadeInputError

_models = require("lazyslide_models", extra="scverse")
from lazyslide_models.base import FeaturePredictionModel, ImageModel  # noqa: E402

#: LazySlide's registry names of encoders whose spade-st name differs (the rest are spelled alike)
LAZYSLIDE_NAMES = {"uni2": "uni2-h"}
#: what :class:`Spade` can write, and the table name each gets (``<name>_<tile_key>``)
OUTPUTS = {"genes": "spade_genes", "embedding": "spade", "experts": "spade_experts"}


def lazyslide_name(encoder: str) -> str:
    """LazySlide's name of a spade-st encoder (``uni2-h`` -> ``uni2``); the name itself where they agree."""
    ours = {v: k for k, v in LAZYSLIDE_NAMES.items()}
    return ours.get(encoder, encoder)


def spade_name(name: str) -> str:
    """spade-st's name of a LazySlide encoder (``uni2`` -> ``uni2-h``)."""
    return LAZYSLIDE_NAMES.get(name, name)


def _as_tensor(tile):
    """A tile as a uint8 (H, W, 3) tensor (a module-level function: DataLoader workers pickle it)."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(np.asarray(tile)[..., :3]))


class SpadeEncoder(ImageModel):
    """A registered spade-st encoder as a LazySlide ``ImageModel`` (its weights from a local path only).

    Parameters
    ----------
    encoder
        A name of ``spade-st encoders`` (``efficientnet_lite0``, ``uni``, ...).
    weights
        Local weights file or Hugging Face snapshot folder (default: the encoder's own location).
    """

    def __init__(self, encoder: str = "efficientnet_lite0", weights: Path | str | None = None):
        from .encoders import create_encoder

        self.model = create_encoder(encoder, weights=weights, device="cpu").eval()
        self._name = lazyslide_name(encoder)

    @property
    def name(self) -> str:
        """The feature table is ``<name>_<tile_key>``: LazySlide's name of the encoder."""
        return self._name

    def get_transform(self):
        """uint8 (H, W, 3) tiles as they come from the slide: the encoder resizes and normalises them itself."""
        return _as_tensor

    def encode_image(self, image):
        return self.model(image)


class Spade(FeaturePredictionModel):
    """A spade-st model folder as a LazySlide ``FeaturePredictionModel``, applied per tile.

    Parameters
    ----------
    model
        A model folder (``spade-st pretrain --out``) or a loaded :class:`~spade_st.experts.SpadeModel`.
    output
        ``genes`` (predicted log1p expression per gene of the expression head; the folder needs one),
        ``embedding`` (the SPADE embedding, columns ``spade_<i>``) or ``experts`` (the routing weights,
        columns ``expert_<e>``).
    genes
        With ``output="genes"``: only these genes (default: every gene of the head).
    """

    needs_coords = False
    whole_slide = False  # SPADE embeds each tile on its own: batching cannot change a value

    def __init__(self, model, output: str = "genes", genes: list[str] | None = None):
        from .tl._embed import _model

        if output not in OUTPUTS:
            msg = f"output must be one of {sorted(OUTPUTS)}, got {output!r}"
            raise SpadeInputError(msg)
        self.model, self.folder = _model(model)
        if output == "genes":
            head = self.model.predictor
            if head is None:
                msg = f"{self.folder or 'the model'} has no expression head; fit one with `spade-st fit-predictor`"
                raise SpadeInputError(msg)
            head.gene_index(genes)  # unknown genes refused here, before LazySlide reads a tile
        self.output, self.genes = output, genes
        self._name = OUTPUTS[output]
        self.features_model_name = lazyslide_name(self.model.config.encoder)

    @property
    def name(self) -> str:
        """The table written is ``<name>_<tile_key>``: ``spade_genes``, ``spade`` or ``spade_experts``."""
        return self._name

    def to(self, device):
        self.model.to(device)
        return self

    def try_compile(self, **compile_kws):
        """Not compiled: SPADE's heads are small, and the model must stay a SpadeModel."""
        return None

    def _adata(self, features):
        import anndata as ad

        x = features.detach().cpu().numpy() if hasattr(features, "detach") else np.asarray(features)
        return ad.AnnData(
            obsm={K.features_key(self.model.config.encoder): np.asarray(x, np.float32)}, shape=(len(x), 0)
        )

    def predict(self, features, coords=None) -> dict[str, np.ndarray]:
        """``{column: (n_tiles,) array}`` for a batch of the encoder's tile features."""
        from . import tl

        a = self._adata(features)
        if self.output == "genes":
            pred = tl.predict_expression(a, self.model, self.genes)
            return {g: np.asarray(pred.X[:, j]) for j, g in enumerate(pred.var_names)}
        tl.embed(a, self.model)
        if self.output == "embedding":
            z = a.obsm[K.SPADE]
            return {f"spade_{i}": z[:, i] for i in range(z.shape[1])}
        w = a.obsm["spade_expert_weights"]
        return {f"expert_{e}": w[:, e] for e in range(w.shape[1])}


def check_tiling(wsi, tile_key: str = "tiles") -> None:
    """Refuse tiles that are not spade-st's patches (224 px at 0.5 µm/px) before any prediction."""
    spec = wsi.tile_spec(tile_key)
    if spec is None:
        msg = f"the slide has no tile spec for {tile_key!r}; tile it with zs.pp.tile_tissues(wsi, 224, mpp=0.5)"
        raise SpadeInputError(msg)
    if wsi.properties.mpp is None:
        msg = (
            "the slide records no µm per pixel, so LazySlide tiled it at level 0 whatever mpp= said; "
            "give it with wsi.set_mpp(µm) and tile it again"
        )
        raise SpadeInputError(msg)
    got = (int(spec.width), int(spec.height), float(spec.mpp))
    if got[0] != K.PATCH_SIZE or got[1] != K.PATCH_SIZE or abs(got[2] / K.PATCH_PIXEL_SIZE_UM - 1) > 0.05:
        msg = (
            f"tiles {tile_key!r} are {got[0]}x{got[1]} px at {got[2]:g} µm/px; SPADE models take "
            f"{K.PATCH_SIZE} px at {K.PATCH_PIXEL_SIZE_UM} µm/px: zs.pp.tile_tissues(wsi, {K.PATCH_SIZE}, mpp={K.PATCH_PIXEL_SIZE_UM})"
        )
        raise SpadeInputError(msg)


def predict(wsi, model, *, feature_key: str | None = None, tile_key: str = "tiles", genes=None, pbar: bool = False):
    """SPADE embedding, expert weights and predicted genes of every tile, as LazySlide tables.

    Parameters
    ----------
    wsi
        A WSIData tiled at 224 px and 0.5 µm/px with the model's encoder features (``<encoder>_<tile_key>``).
    model
        A spade-st model folder or a loaded :class:`~spade_st.experts.SpadeModel`.
    feature_key
        The feature table (default: the model's encoder, by LazySlide's name).
    tile_key
        The tile table.
    genes
        Predict only these genes (default: every gene of the expression head).
    pbar
        LazySlide's progress bars.

    Returns
    -------
    list of str
        The tables written: ``spade_<tile_key>``, ``spade_experts_<tile_key>`` and, where the model has an
        expression head, ``spade_genes_<tile_key>``, whose ``var`` carries the head's ``cv_r`` and ``predicted``.
    """
    import lazyslide as zs

    from .tl._embed import _model

    check_tiling(wsi, tile_key)
    m, _ = _model(model)  # loaded once for the three tables
    outputs = [o for o in OUTPUTS if o != "genes" or m.predictor is not None]
    written = []
    for output in outputs:
        sp = Spade(m, output, genes if output == "genes" else None)
        zs.tl.feature_prediction(wsi, sp, feature_key=feature_key, tile_key=tile_key, pbar=pbar)
        key = f"{sp.name}_{tile_key}"
        if output == "genes":
            _describe_genes(wsi.tables[key], m)
        written.append(key)
    return written


def _describe_genes(table, model) -> None:
    """The head's per-gene ``cv_r`` / ``predicted`` and the model's provenance on LazySlide's gene table (as
    ``tl.predict_expression`` gives them)."""
    from .experts.predictor import PREDICTED_R

    head = model.predictor
    r = head.gene_r()[head.gene_index(list(table.var_names))].astype(np.float32)
    table.var["cv_r"] = r
    table.var["predicted"] = np.isfinite(r) & (r >= PREDICTED_R)
    source = getattr(model, "source", None) or {}
    table.uns["spade_prediction"] = {
        "model": str(source.get("path", "")),
        "model_sha256": str(source.get("sha256", "")),
        "encoder": model.config.encoder,
        "target": head.target,
        "cv_r_floor": PREDICTED_R,
    }


def open_features(slide: Path | str, features: Path | str, *, store: Path | str | None = None, tile_key: str = "tiles"):
    """A slide tiled and featurised by ``spade-st extract-wsi`` as a WSIData: ``shapes[tile_key]`` from the
    file's tiles and the features as ``tables['<encoder>_<tile_key>']`` (LazySlide's encoder name)."""
    require("wsidata", extra="scverse")
    from wsidata import TileSpec, open_wsi
    from wsidata.io import add_features, add_tiles

    from .io.features import feature_encoder, read_features

    fs = read_features(features)
    attrs = fs.attrs
    enc = feature_encoder(features, attrs)
    side = float(attrs.get("patch_size_level0") or 0)
    level0 = attrs.get("level0_pixel_size_um") or (
        10.0 / float(attrs["level0_magnification"]) if attrs.get("level0_magnification") else None
    )
    if fs.coords is None or enc is None or not side or not level0:
        msg = (
            f"{features} is not a slide's feature file from `spade-st extract-wsi` (coords, encoder, "
            "patch_size_level0, level0_pixel_size_um); extract it again"
        )
        raise SpadeInputError(msg)
    wsi = open_wsi(slide, store=str(store) if store is not None else None)
    own = wsi.properties.mpp
    if own is None or abs(float(own) / float(level0) - 1) > 0.01:
        wsi.set_mpp(float(level0))  # extract-wsi was given it (--pixel-size-um, --force-pixel-size): so is LazySlide
    target = float(attrs.get("pixel_size_um") or K.PATCH_PIXEL_SIZE_UM)  # the tiles' µm/px
    spec = TileSpec.from_wsidata(wsi, int(attrs.get("patch_size") or K.PATCH_SIZE), mpp=target, slide_mpp=float(level0))
    if abs(spec.base_width - side) > 1:
        msg = (
            f"{features}: its tiles are {side:g} level-0 px wide, LazySlide's spec for {slide} makes them "
            f"{spec.base_width}; the file was extracted from another slide or at another pixel size"
        )
        raise SpadeInputError(msg)
    xy = np.asarray(fs.coords, np.float64).reshape(len(fs), -1)[:, :2]
    add_tiles(wsi, tile_key, xy, spec, np.zeros(len(xy), dtype=int))
    add_features(
        wsi, key=f"{lazyslide_name(enc)}_{tile_key}", tile_key=tile_key, features=np.asarray(fs.features, np.float32)
    )
    return wsi


def write_features(
    wsi, feature_key: str, path: Path | str, *, tile_key: str = "tiles", encoder: str | None = None
) -> Path:
    """Save LazySlide's feature table ``feature_key`` (e.g. ``efficientnet_lite0`` or ``uni_tiles``) as a
    spade-st / TRIDENT feature file: ``features``, tile top-left ``coords`` and the tiles' level-0 size."""
    from .io.features import FeatureSet
    from .io.features import write_features as write

    key = wsi._check_feature_key(feature_key, tile_key)
    spec = wsi.tile_spec(tile_key)
    name = spade_name(encoder or key.removesuffix(f"_{tile_key}"))
    tiles = wsi.shapes[tile_key]
    xy = tiles.bounds[["minx", "miny"]].to_numpy()
    slide_mpp = wsi.properties.mpp
    if slide_mpp is None or spec.mpp is None:
        msg = "the slide records no µm per pixel, so its tiles' size is unknown; set it with wsi.set_mpp(µm) and tile again"
        raise SpadeInputError(msg)
    attrs = {  # the geometry attributes extract-wsi writes (io.features.GEOMETRY_ATTRS)
        "encoder": name,
        "slide": str(getattr(wsi.reader, "file", "") or ""),
        "patch_size": int(spec.width),
        "patch_size_level0": float(spec.base_width),
        "pixel_size_um": float(spec.mpp),
        "level0_pixel_size_um": float(slide_mpp),
        "level0_magnification": 10.0 / float(slide_mpp),
        "target_magnification": 10.0 / float(spec.mpp),
        "pixel_size_source": "LazySlide",
        "source": f"LazySlide table {key}",
    }
    X = np.asarray(wsi.tables[key].X, np.float32)
    write(path, FeatureSet(features=X, coords=xy.astype(np.int64), attrs=attrs), encoder_name=name)
    return Path(path)


__all__ = [
    "LAZYSLIDE_NAMES",
    "Spade",
    "SpadeEncoder",
    "check_tiling",
    "lazyslide_name",
    "open_features",
    "predict",
    "write_features",
]
