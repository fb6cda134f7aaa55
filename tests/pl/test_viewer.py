"""``spade-st view``: the viewer folder of a real slide, opened from disk (file://) and driven in headless Chromium.

The predictions are planted (random values per tile, in the layout ``spade-st predict`` writes), so a tile's
colour on the page can be told from its neighbours'. The page is driven by a script appended to a copy of its
``index.html`` (real events: button click, wheel, typing in the search box, the opacity slider, a click on a
tile), which writes what it saw into the DOM that ``--dump-dom`` prints: no CDP, no server.
"""

from __future__ import annotations

import html
import json
import math
import re
import shutil
import subprocess

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from spade_st.cli import main

from conftest import HER2ST, WSI_SMALL, require

DRIVER = r"""
<script>
(async function () {
  const PLAN = __PLAN__;
  const V = window.SPADE_VIEW, out = { steps: [] };
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const until = async (f) => { for (let i = 0; i < 400 && !f(); i++) await sleep(25); return f(); };
  const $ = (id) => document.getElementById(id);
  const levelLoaded = () => V.requested.filter((u) => u.startsWith("tiles/" + V.level + "/"))
    .every((u) => V.loaded.includes(u) || V.failed.includes(u));
  await until(() => V.ready && V.loaded.length > 0);
  out.start = V.state().level;
  $("zoomin").click();  // one level by the button ...
  await sleep(100);
  V.cx = PLAN.centre[0]; V.cy = PLAN.centre[1];  // pan to the known tile (as a drag would)
  const st = $("stage"), r = st.getBoundingClientRect();  // ... one level by the wheel, at the centre
  st.dispatchEvent(new WheelEvent("wheel", { deltaY: -300, clientX: r.left + r.width / 2,
    clientY: r.top + r.height / 2, bubbles: true, cancelable: true }));
  await sleep(100);
  if (PLAN.search) { $("search").value = PLAN.search; $("search").dispatchEvent(new Event("input")); }
  if (PLAN.select) { $("layer").value = PLAN.select; $("layer").dispatchEvent(new Event("change")); }
  $("opacity").value = String(PLAN.opacity); $("opacity").dispatchEvent(new Event("input"));
  await until(() => V.layer && V.data[V.layer.id] && V.data[V.layer.points]);
  await sleep(100);
  await until(levelLoaded);
  out.state = V.state();
  out.layer = V.layer && V.layer.id;
  out.probes = [];
  for (const p of PLAN.probes) {
    const shown = p.swipe ? p.swipe.under : p.layer;
    if (shown !== V.layer.id) { V.setLayer(shown); await until(() => V.data[shown]); await sleep(100); }
    const s = V.state();  // the screen position of (x, y), computed here, not by the viewer
    const sx = Math.round((p.x - s.cx) * s.scale + s.width / 2), sy = Math.round((p.y - s.cy) * s.scale + s.height / 2);
    if (p.swipe) {  // the swipe line just left (measured shown) or right (predicted shown) of the point
      if (!$("swipe").checked) { $("swipe").checked = true; $("swipe").dispatchEvent(new Event("change")); }
      await until(() => V.data[p.layer]);
      V.swipeX = (sx + p.swipe.offset) / s.width;
      V.setLayer(shown);
      await sleep(100);
    }
    const px = Array.from($("overlay").getContext("2d").getImageData(sx, sy, 1, 1).data);
    st.dispatchEvent(new MouseEvent("mousedown", { clientX: r.left + sx, clientY: r.top + sy, bubbles: true }));
    window.dispatchEvent(new MouseEvent("mouseup", { clientX: r.left + sx, clientY: r.top + sy, bubbles: true }));
    out.probes.push({ layer: p.layer, rgba: px, info: $("info").textContent });
  }
  out.requested = V.requested; out.loaded = V.loaded; out.failed = V.failed;
  out.legend = $("legend").textContent;
  const pre = document.createElement("pre"); pre.id = "spade-test";
  pre.textContent = "RESULT" + JSON.stringify(out) + "END";
  document.body.appendChild(pre);
})();
</script>
"""


def _chromium() -> str:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip(
            "chromium is not installed here (CI's .ci/run installs Debian's chromium; make test never installs system packages)"
        )
    return chromium


def _browser(url: str, profile, *extra: str) -> subprocess.CompletedProcess:
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
           "--hide-scrollbars", "--window-size=1000,700", "--virtual-time-budget=30000", *extra, url]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


def _drive(page, plan: dict, tmp_path) -> dict:
    """Open a copy of ``page`` with the driver appended, from disk; the driver's findings."""
    test = page.with_name("drive.html")
    test.write_text(page.read_text().replace("</body>", DRIVER.replace("__PLAN__", json.dumps(plan)) + "</body>"))
    for _ in range(3):  # a loaded machine can run out of the virtual-time budget before the tiles decode
        r = _browser(test.as_uri(), tmp_path / ".chromium", "--dump-dom")
        m = re.search(r'<pre id="spade-test">RESULT(.*?)END</pre>', r.stdout, re.S)
        if m:
            return json.loads(html.unescape(m.group(1)))
    raise AssertionError(r.stdout[-500:] + r.stderr[-1500:])


def _planted(xy, side: float, names, genes: int = 4, seed: int = 0) -> ad.AnnData:
    """Predictions in ``predict``'s layout: random values per tile, so each tile's colour is its own."""
    rng = np.random.default_rng(seed)
    n = len(xy)
    a = ad.AnnData(
        X=(rng.random((n, genes)) * 3).astype(np.float32),
        obs=pd.DataFrame(index=pd.Index([str(s) for s in names])),
        var=pd.DataFrame(index=pd.Index(["ERBB2", "GATA3", "KRT5", "ACTB"][:genes])),
    )
    a.var["cv_r"] = np.array([0.31, 0.2, np.nan, 0.05][:genes], np.float32)
    a.obs["tissue_fraction"] = rng.random(n).astype(np.float32)
    a.obs["tile_size"] = np.float32(side)
    a.obsm["spatial"] = np.asarray(xy, float)
    a.obsm["spade_expert_weights"] = rng.dirichlet(np.ones(3), n).astype(np.float32)
    a.uns["spade_prediction"] = {"method": "ridge", "encoder": "efficientnet_lite0", "features": "absent.h5"}
    return a


def _tile_grid(width: int, height: int, side: float) -> np.ndarray:
    xs, ys = np.arange(0, width - side, side), np.arange(0, height - side, side)
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], 1) + side / 2


def _expected_rgb(meta: dict, layer: str, value: float) -> np.ndarray:
    lo, hi = next(ly["clim"] for ly in meta["layers"] if ly["id"] == layer)
    k = min(255, max(0, round((value - lo) / (hi - lo) * 255)))
    from matplotlib import colormaps

    return np.round(np.asarray(colormaps["viridis"](k / 255))[:3] * 255)


def _visible(meta: dict, state: dict) -> set[str]:
    """Tiles of the state's level that cover the screen, computed from the geometry alone."""
    lv = meta["levels"][state["level"]]
    t = meta["tile"] * lv["downsample"]
    x0, x1 = state["cx"] - state["width"] / 2 / state["scale"], state["cx"] + state["width"] / 2 / state["scale"]
    y0, y1 = state["cy"] - state["height"] / 2 / state["scale"], state["cy"] + state["height"] / 2 / state["scale"]
    cols = range(max(0, math.floor(x0 / t)), min(lv["cols"] - 1, math.floor(x1 / t)) + 1)
    rows = range(max(0, math.floor(y0 / t)), min(lv["rows"] - 1, math.floor(y1 / t)) + 1)
    return {f"tiles/{state['level']}/{c}_{r}.jpg" for c in cols for r in rows}


def _tile_error(folder, wsi, level: int, col: int, row: int, shift: int = 0) -> float:
    """Mean absolute difference between a pyramid tile and the slide region it shows (``shift``: the region
    that many tiles to the right), resized as the level is. JPEG at quality 85 alone gives ~6 on this H&E."""
    from PIL import Image

    meta = json.loads((folder / "view.json").read_text())
    d, t = meta["levels"][level]["downsample"], meta["tile"]
    with Image.open(folder / "tiles" / str(level) / f"{col}_{row}.jpg") as im:
        tile = np.asarray(im.convert("RGB"), float)
    h, w = tile.shape[:2]
    region = wsi.read_region(((col + shift) * t * d, row * t * d), 0, (w * d, h * d))
    want = np.asarray(Image.fromarray(region).resize((w, h), Image.Resampling.BOX), float)
    return float(np.abs(tile - want).mean())


def _check_drive(got: dict, meta: dict, pred, probes: list[dict], opacity: float) -> None:
    assert got["state"]["level"] == got["start"] + 2  # zoomed in two levels
    d, per_screen_px = meta["levels"][got["state"]["level"]]["downsample"], 1 / got["state"]["scale"]
    assert d <= per_screen_px * (1 + 1e-9) < 2 * d  # the coarsest level at least as sharp as the screen
    want = _visible(meta, got["state"])
    assert want and want <= set(got["requested"]) and want <= set(got["loaded"]), sorted(want - set(got["loaded"]))
    mine = {u for u in got["requested"] if u.startswith(f"tiles/{got['state']['level']}/")}
    assert mine == want  # that level's tiles, and only those on screen
    levels = {int(u.split("/")[1]) for u in got["requested"]}
    assert levels <= {0, got["start"], got["start"] + 1, got["start"] + 2} and not got["failed"]
    for p, seen in zip(probes, got["probes"], strict=True):
        rgba = np.asarray(seen["rgba"], float)
        assert rgba[3] == pytest.approx(opacity * 255, abs=2)
        np.testing.assert_allclose(rgba[:3], _expected_rgb(meta, p["layer"], p["value"]), atol=3)
        assert p["id"] in seen["info"] and "µm" in seen["info"], seen["info"]
        x_um = float(np.float32(p["x"])) * meta["pixel_size_um"]  # positions travel as float32
        shown = p.get("shown_value", p["value"])  # the info line gives the value of the layer picked
        assert f"x {x_um:.1f} µm" in seen["info"] and f"{shown:.3f}" in seen["info"], seen["info"]


def test_viewer_of_a_real_slide_in_headless_chromium(tmp_path, capsys):
    slide = require(WSI_SMALL / "cmu-1-small-region.svs")
    from spade_st.io.wsi import open_wsi

    with open_wsi(slide) as w:
        width, height, px = *w.dimensions, w.pixel_size_um
    side = 224 * 0.5 / px
    xy = _tile_grid(width, height, side)
    pred = _planted(xy, side, [f"tile_{i}" for i in range(len(xy))])
    (tmp_path / "pred").mkdir()
    pred.write_h5ad(tmp_path / "pred" / "cmu-1-small-region.h5ad")
    view = tmp_path / "view"
    args = ["view", "--wsi", str(slide), "--predictions", str(tmp_path / "pred"), "--out", str(view)]
    assert main(args) == 0
    page = view / "cmu-1-small-region" / "index.html"
    meta = json.loads((page.parent / "view.json").read_text())
    assert len(meta["levels"]) == 5 and meta["levels"][-1]["width"] == width
    assert {ly["id"] for ly in meta["layers"]} >= {"pred:0", "pred:3", "routing", "obs:0"}
    i = int(np.argmin(np.abs(xy - [width * 0.5, height * 0.4]).sum(1)))  # a tile near the middle
    j = i + 1  # and its right-hand neighbour (another random value)
    probes = [{"layer": "pred:2", "x": xy[k, 0], "y": xy[k, 1], "id": f"tile_{k}", "value": float(pred.X[k, 2])}
              for k in (i, j)]  # fmt: skip
    plan = {"centre": list(xy[i]), "search": "krt", "opacity": 0.8, "probes": probes}
    got = _drive(page, plan, tmp_path)
    assert got["layer"] == "pred:2"  # the search picked KRT5
    assert "predicted log1p(counts per 10k)" in got["legend"] and "CV r n/a" in got["legend"]
    assert "KRT5 (predicted, CV r under 0.1: not a prediction to read)" in got["legend"]  # its CV r is NaN
    _check_drive(got, meta, pred, probes, 0.8)


def test_rerun_reuses_finished_levels_and_redoes_a_damaged_one(tmp_path, capsys):
    slide = require(WSI_SMALL / "cmu-1-small-region.svs")
    pred = _planted(np.array([[500.0, 500.0], [724.0, 500.0]]), 224.0, ["tile_0", "tile_1"])
    (tmp_path / "pred").mkdir()
    pred.write_h5ad(tmp_path / "pred" / "cmu-1-small-region.h5ad")
    args = ["view", "--wsi", str(slide), "--predictions", str(tmp_path / "pred"), "--out", str(tmp_path / "v")]
    assert main(args) == 0
    assert "5 levels (5 written, 0 already finished)" in capsys.readouterr().err
    tiles = tmp_path / "v" / "cmu-1-small-region" / "tiles"
    before = {p: p.stat().st_mtime_ns for p in tiles.rglob("*.jpg")}
    (tiles / "3" / "1_1.jpg").unlink()  # a damaged level
    assert main(args) == 0
    assert "5 levels (1 written, 4 already finished)" in capsys.readouterr().err
    after = {p: p.stat().st_mtime_ns for p in tiles.rglob("*.jpg")}
    assert set(after) == set(before)
    assert all(after[p] == t for p, t in before.items() if p.parent.name != "3")  # the others untouched
    assert not list(tiles.glob(".tmp-*"))
    from spade_st.io.wsi import open_wsi

    with open_wsi(slide) as w:  # full resolution, and a level halved from it (2 x 2 tiles of the one above)
        assert _tile_error(tiles.parent, w, 4, 3, 5) < 8 and _tile_error(tiles.parent, w, 3, 1, 2) < 8
        assert _tile_error(tiles.parent, w, 4, 3, 5, shift=1) > 20  # the check tells a neighbouring tile apart


def test_bad_input_is_one_line_before_any_work(tmp_path, capsys):
    slide = require(WSI_SMALL / "tcga-cr-7395-01a-01-ts1.svs")  # records no pixel size
    (tmp_path / "pred").mkdir()
    pred = _planted(np.array([[500.0, 500.0]]), 224.0, ["tile_0"])
    pred.write_h5ad(tmp_path / "pred" / "tcga-cr-7395-01a-01-ts1.h5ad")
    out = tmp_path / "v"
    base = ["view", "--predictions", str(tmp_path / "pred"), "--out", str(out)]
    cases = [
        ([*base, "--wsi", str(slide)], "pass --pixel-size-um"),
        ([*base, "--wsi", str(slide), "--sample", "other"], "no predictions for ['other']"),
        ([*base, "--wsi", str(slide), "--pixel-size-um", "0.5", "--model", str(tmp_path)], "is not a model folder"),
        (["predict", "--model", str(tmp_path), "--features", str(tmp_path), "--out", str(out), "--view", str(out)],
         "pass --wsi"),
    ]  # fmt: skip
    for argv, said in cases:
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and said in err, err
        assert not out.exists()


def test_viewer_of_a_her2st_section_with_measured_expression(her2st_root, tmp_path, capsys):
    """The her2st JPEG as the slide (sample C4 of the root): predicted tiles, and the measured spots."""
    image = require(HER2ST / "images" / "C4_5714_HE_BT_D2.jpg")
    sample = ad.read_h5ad(her2st_root / "st" / "C4.h5ad")
    side = 224 * 0.5 / 0.687
    pred = _planted(sample.obsm["spatial"], side, sample.obs_names, seed=1)
    (tmp_path / "pred").mkdir()
    pred.write_h5ad(tmp_path / "pred" / "C4.h5ad")
    view = tmp_path / "view"
    argv = ["view", "--wsi", str(image), "--sample", "C4", "--pixel-size-um", "0.687"]
    assert main([*argv, "--predictions", str(tmp_path / "pred"), "--data", str(her2st_root), "--out", str(view)]) == 0
    page = view / "C4" / "index.html"
    meta = json.loads((page.parent / "view.json").read_text())
    b4 = HER2ST / "images" / "B4_BT10737_D2_HE.jpg"  # another section's image, of another size
    other = ["view", "--wsi", str(b4), "--sample", "C4", "--pixel-size-um", "0.687"]
    capsys.readouterr()
    assert main([*other, "--predictions", str(tmp_path / "pred"), "--data", str(her2st_root), "--out", str(view)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "its spots would be misplaced" in err and "wsis/C4.tif" in err, err
    from spade_st.io.wsi import open_wsi

    with open_wsi(image, pixel_size_um=0.687) as w:  # levels too large to hold are cut from strips of the image
        lv5 = meta["levels"][5]
        assert meta["levels"][6]["width"] == w.dimensions[0] and lv5["width"] * lv5["height"] > 16_000_000
        assert _tile_error(page.parent, w, 6, 20, 21) < 8 and _tile_error(page.parent, w, 5, 9, 11) < 8
    assert "meas:0" in {ly["id"] for ly in meta["layers"]}  # ERBB2 is measured in C4
    from spade_st.genes import expression_target

    measured = expression_target(sample, ["ERBB2"])[:, 0]
    k = int(np.argsort(measured)[len(measured) // 2])  # a spot of middling ERBB2
    x, y = sample.obsm["spatial"][k]
    probes = [
        {"layer": "pred:0", "x": x, "y": y, "id": str(sample.obs_names[k]), "value": float(pred.X[k, 0])},
        {"layer": "meas:0", "x": x, "y": y, "id": str(sample.obs_names[k]), "value": float(np.float32(measured[k]))},
    ]
    swipe = [  # predicted left of the swipe line, measured right of it
        {**probes[1], "swipe": {"under": "pred:0", "offset": -20}, "shown_value": probes[0]["value"]},
        {**probes[0], "swipe": {"under": "pred:0", "offset": 20}},
    ]
    probes += swipe
    got = _drive(page, {"centre": [x, y], "select": "pred:0", "opacity": 0.7, "probes": probes}, tmp_path)
    _check_drive(got, meta, pred, probes, 0.7)


def test_report_links_the_shown_sections_viewer(tmp_path, monkeypatch):
    from spade_st.pl import report

    run = tmp_path / "run"
    (run / "results").mkdir(parents=True)
    (run / "results" / "t.csv").write_text("metric,value\nr,0.5\n")
    png = run / "figures" / "routing_map.png"
    png.parent.mkdir()
    from PIL import Image

    Image.new("RGB", (4, 4)).save(png)

    def figures(cfg, fig_dir, shown=None):
        shown.append("C4")
        return {"Routing map: dominant expert per spot": png, "Clustering QC": png}, []

    monkeypatch.setattr(report, "make_figures", figures)
    report.write_report(run)
    assert "zoomable viewer" not in (run / "report.html").read_text()  # no viewer folder: no link
    (run / "view" / "C4").mkdir(parents=True)
    (run / "view" / "C4" / "index.html").write_text("<html></html>")
    report.write_report(run)
    html_text, md = (run / "report.html").read_text(), (run / "report.md").read_text()
    assert html_text.count('<a href="view/C4/index.html">open C4 in the zoomable viewer</a>') == 1
    assert "[open C4 in the zoomable viewer](view/C4/index.html)" in md
