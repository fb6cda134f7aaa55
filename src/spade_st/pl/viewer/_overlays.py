"""The viewer's overlays: one small ``.js`` file per layer, loaded by a ``<script>`` tag when it is picked.

A page opened from disk (``file://``) cannot ``fetch()`` its own files in Chromium, but it can load scripts:
each file calls ``SPADE_VIEW_DATA(name, payload)``. Numbers travel as base64 of little-endian float32 (values,
positions) or uint8 (the dominant expert), so a 10,000-tile gene is ~53 kB.

Layers (``meta['layers']``, each with its file, colour limits and unit):

* ``pred:<i>``: predicted expression of gene ``i`` of the predictions (``X``: log1p counts per 10k);
* ``meas:<i>``: measured expression of that gene at the sample's spots (with ``--data``, when the slide is one
  of the root's samples): log1p counts per 10k, as the head was fitted on;
* ``routing``: dominant expert per tile (colour) and its weight (``obsm['spade_expert_weights']``, or routed
  with ``--model`` from the tiles' feature file);
* ``obs:<j>``: numeric ``obs`` columns of the predictions (tissue fraction, ...).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np

from ..._atomic import atomic_write_text
from ..._keys import PREDICTED_R

UNIT = "log1p(counts per 10k)"  #: what ``predict`` writes in X and what the head was fitted on


def b64(a: np.ndarray, dtype) -> str:
    """``a`` as base64 of its little-endian bytes in ``dtype``."""
    return base64.b64encode(np.ascontiguousarray(a, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()).decode()


def write_data(path: Path, name: str, payload: dict) -> None:
    """One overlay file: ``SPADE_VIEW_DATA(name, payload);`` written atomically."""
    atomic_write_text(path, f"SPADE_VIEW_DATA({json.dumps(name)},{json.dumps(payload, separators=(',', ':'))});\n")


def limits(v: np.ndarray) -> list[float]:
    """Colour limits of one layer: its own 2nd-98th percentiles (a constant layer gets a tiny range)."""
    v = np.asarray(v, float)
    v = v[np.isfinite(v)]
    if not len(v):
        return [0.0, 1.0]
    a, b = np.percentile(v, [2, 98])
    if b <= a:
        a, b = float(v.min()), float(v.max())
    return [round(float(a), 4), round(float(b) if b > a else float(a) + 1e-3, 4)]


def colormap(name: str) -> str:
    """256 colours of a matplotlib colour map as one hex string (6 characters each)."""
    from matplotlib import colormaps

    rgb = (np.asarray(colormaps[name](np.linspace(0, 1, 256)))[:, :3] * 255).round().astype(int)
    return "".join(f"{r:02x}{g:02x}{b:02x}" for r, g, b in rgb)


def expert_colours(n: int) -> list[str]:
    """One hex colour per expert (tab10, tab20 beyond ten), as the routing map of ``report`` draws them."""
    from matplotlib import colormaps

    cmap = colormaps["tab20" if n > 10 else "tab10"]
    return ["#" + "".join(f"{round(c * 255):02x}" for c in cmap(i % cmap.N)[:3]) for i in range(n)]


def points(xy: np.ndarray, side: float, shape: str, ids) -> dict:
    """Positions (level-0 px) of a layer's tiles or spots, their size and names."""
    xy = np.asarray(xy, np.float64)[:, :2]
    return {"x": b64(xy[:, 0], "f4"), "y": b64(xy[:, 1], "f4"), "side": float(side), "shape": shape,
            "ids": [str(i) for i in ids]}  # fmt: skip


def write_layers(out: Path, pred, side: float, routing: np.ndarray | None, measured) -> dict:
    """Write every overlay file of one slide under ``out/data``; returns the page's ``layers`` and ``points``.

    Parameters
    ----------
    out
        The slide's viewer folder.
    pred
        The predictions (AnnData: ``X`` genes, ``obsm['spatial']`` tile centres in level-0 px, ``var['cv_r']``).
    side
        Tile side in level-0 px.
    routing
        Expert weights (tiles x experts) or None.
    measured
        ``(xy, diameter, barcodes, {gene index: values})`` of the sample's spots, or None.
    """
    data = Path(out) / "data"
    X = np.asarray(pred.X.toarray() if hasattr(pred.X, "toarray") else pred.X, np.float32)
    write_data(data / "points.js", "points:pred", points(pred.obsm["spatial"], side, "square", pred.obs_names))
    cv = pred.var["cv_r"].to_numpy(float) if "cv_r" in pred.var else np.full(pred.n_vars, np.nan)
    layers = []
    for i, g in enumerate(pred.var_names):
        name = f"pred:{i}"
        write_data(data / "genes" / f"g{i:05d}.js", name, {"values": b64(X[:, i], "f4")})
        r = float(cv[i])
        weak = "" if np.isfinite(r) and r >= PREDICTED_R else f", CV r under {PREDICTED_R:g}: not a prediction to read"
        layers.append({"id": name, "kind": "predicted", "gene": str(g), "label": f"{g} (predicted{weak})",
                       "file": f"data/genes/g{i:05d}.js", "points": "points:pred", "clim": limits(X[:, i]),
                       "unit": f"predicted {UNIT}", "cv_r": round(r, 3) if np.isfinite(r) else None})  # fmt: skip
    if measured is not None:
        xy, diameter, barcodes, values = measured
        write_data(data / "measured_points.js", "points:meas", points(xy, diameter, "disc", barcodes))
        for i, v in values.items():
            name = f"meas:{i}"
            write_data(data / "measured" / f"g{i:05d}.js", name, {"values": b64(v, "f4")})
            g = str(pred.var_names[i])
            layers.append({"id": name, "kind": "measured", "gene": g, "label": f"{g} (measured)",
                           "file": f"data/measured/g{i:05d}.js", "points": "points:meas", "clim": limits(v),
                           "unit": f"measured {UNIT}"})  # fmt: skip
    if routing is not None:
        w = np.asarray(routing, np.float32)
        dom = w.argmax(1)
        write_data(data / "routing.js", "routing", {"expert": b64(dom, "u1"), "values": b64(w.max(1), "f4")})
        layers.append({"id": "routing", "kind": "routing", "gene": "", "label": "dominant expert (opacity = weight)",
                       "file": "data/routing.js", "points": "points:pred", "clim": [0.0, 1.0],
                       "unit": "expert weight", "colours": expert_colours(w.shape[1])})  # fmt: skip
    j = 0
    for col in pred.obs.columns:
        v = pred.obs[col]
        if col == "tile_size" or v.dtype.kind not in "fiu":
            continue
        name = f"obs:{j}"
        vals = v.to_numpy(np.float32)
        write_data(data / "obs" / f"o{j:03d}.js", name, {"values": b64(vals, "f4")})
        layers.append({"id": name, "kind": "obs", "gene": str(col), "label": f"{col} (obs)",
                       "file": f"data/obs/o{j:03d}.js", "points": "points:pred", "clim": limits(vals),
                       "unit": str(col)})  # fmt: skip
        j += 1
    files = {"points:pred": "data/points.js"}
    if measured is not None:
        files["points:meas"] = "data/measured_points.js"
    return {"layers": layers, "points": files}
