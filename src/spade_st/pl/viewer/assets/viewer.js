// spade-st slide viewer: a canvas tile viewer with overlays, for pages opened from disk (file://).
// Tiles: tiles/<level>/<col>_<row>.jpg (level 0 = one tile, the last level = full resolution).
// Overlays: data/*.js files that call SPADE_VIEW_DATA(name, payload), loaded by <script> when picked
// (file:// pages cannot fetch()). Coordinates: level-0 pixels; the view is a centre (cx, cy) and a scale
// (screen pixels per level-0 pixel). window.SPADE_VIEW holds the state and what was requested and loaded.
(function () {
  "use strict";
  const M = window.SPADE_VIEW_META;
  const top = M.levels.length - 1;
  const V = {
    requested: [], loaded: [], failed: [], data: {}, layer: null, level: 0, scale: 1,
    cx: M.width / 2, cy: M.height / 2, opacity: 0.6, clim: {}, pinned: null, swipe: false, swipeX: 0.5,
    ready: false, picked: null,
  };
  window.SPADE_VIEW = V;
  const $ = (id) => document.getElementById(id);
  const stage = $("stage"), tilesCv = $("tiles"), overCv = $("overlay");
  const tctx = tilesCv.getContext("2d");
  const octx = overCv.getContext("2d", { willReadFrequently: true });
  const cache = new Map();
  const lut = [];
  for (let i = 0; i < 256; i++) lut.push("#" + M.colormap.substr(6 * i, 6));
  const layers = new Map(M.layers.map((l) => [l.id, l]));

  // ---- overlay data, loaded by <script> tags -------------------------------------------------------
  const waiting = {};
  function bytes(b64) {
    const bin = atob(b64), u = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) u[i] = bin.charCodeAt(i);
    return u;
  }
  function decode(p) {
    const o = Object.assign({}, p);
    for (const k of ["x", "y", "values"]) if (p[k]) o[k] = new Float32Array(bytes(p[k]).buffer);
    if (p.expert) o.expert = bytes(p.expert);
    return o;
  }
  window.SPADE_VIEW_DATA = function (name, payload) {
    V.data[name] = decode(payload);
    (waiting[name] || []).forEach((f) => f());
    delete waiting[name];
  };
  function load(name, file, then) {
    if (V.data[name]) return then();
    if (waiting[name]) return void waiting[name].push(then);
    waiting[name] = [then];
    const s = document.createElement("script");
    s.src = file;
    s.onerror = () => { $("info").textContent = "could not load " + file; };
    document.head.appendChild(s);
  }
  function loadLayer(lay, then) {
    load(lay.points, M.points[lay.points], () => load(lay.id, lay.file, then));
  }

  // ---- geometry --------------------------------------------------------------------------------------
  const W = () => tilesCv.width, H = () => tilesCv.height;
  const toScreen = (x, y) => [(x - V.cx) * V.scale + W() / 2, (y - V.cy) * V.scale + H() / 2];
  const toSlide = (sx, sy) => [(sx - W() / 2) / V.scale + V.cx, (sy - H() / 2) / V.scale + V.cy];
  function fitScale() { return Math.min(W() / M.width, H() / M.height); }
  // the coarsest level whose pixels are no larger than a screen pixel (the full resolution beyond that)
  function autoLevel() {
    for (let l = 0; l <= top; l++) if (M.levels[l].downsample <= (1 / V.scale) * (1 + 1e-9)) return l;
    return top;
  }
  function clampScale(s) { return Math.max(fitScale() / 4, Math.min(8, s)); }
  function zoomAt(factor, sx, sy) {
    const [x, y] = toSlide(sx, sy);
    V.scale = clampScale(V.scale * factor);
    V.cx = x - (sx - W() / 2) / V.scale;
    V.cy = y - (sy - H() / 2) / V.scale;
    schedule();
  }
  V.toScreen = toScreen;
  V.state = () => ({ level: V.level, scale: V.scale, cx: V.cx, cy: V.cy, width: W(), height: H() });

  // ---- drawing ---------------------------------------------------------------------------------------
  let pending = false;
  function schedule() {
    if (pending) return;
    pending = true;
    setTimeout(() => { pending = false; draw(); }, 10);
  }
  function tile(l, c, r) {
    const key = l + "/" + c + "_" + r;
    let img = cache.get(key);
    if (!img) {
      const url = "tiles/" + key + ".jpg";
      img = new Image();
      img.onload = () => { V.loaded.push(url); schedule(); };
      img.onerror = () => { V.failed.push(url); };
      img.src = url;
      V.requested.push(url);
      cache.set(key, img);
    }
    return img;
  }
  function drawLevel(l) {
    const L = M.levels[l], d = L.downsample, t = M.tile * d;
    const [x0, y0] = toSlide(0, 0), [x1, y1] = toSlide(W(), H());
    const c0 = Math.max(0, Math.floor(x0 / t)), c1 = Math.min(L.cols - 1, Math.floor(x1 / t));
    const r0 = Math.max(0, Math.floor(y0 / t)), r1 = Math.min(L.rows - 1, Math.floor(y1 / t));
    for (let r = r0; r <= r1; r++) {
      for (let c = c0; c <= c1; c++) {
        const img = tile(l, c, r);
        if (!img.complete || !img.naturalWidth) continue;
        const [sx, sy] = toScreen(c * t, r * t);
        const w = img.naturalWidth * d * V.scale, h = img.naturalHeight * d * V.scale;
        tctx.drawImage(img, Math.floor(sx), Math.floor(sy), Math.ceil(w + sx - Math.floor(sx)) + 1,
          Math.ceil(h + sy - Math.floor(sy)) + 1);
      }
    }
  }
  function colour(lay, d, i) {
    if (lay.kind === "routing") return lay.colours[d.expert[i]];
    const [lo, hi] = V.clim[lay.id] || lay.clim;
    const k = Math.round(((d.values[i] - lo) / (hi - lo || 1)) * 255);
    return lut[Math.max(0, Math.min(255, k))];
  }
  function paint(lay, clipLeft, clipRight) {
    const d = V.data[lay.id], p = V.data[lay.points];
    if (!d || !p) return;
    const half = (p.side / 2) * V.scale;
    octx.save();
    octx.beginPath();
    octx.rect(clipLeft, 0, clipRight - clipLeft, H());
    octx.clip();
    for (let i = 0; i < p.x.length; i++) {
      const [sx, sy] = toScreen(p.x[i], p.y[i]);
      if (sx + half < clipLeft || sx - half > clipRight || sy + half < 0 || sy - half > H()) continue;
      if (!Number.isFinite(d.values[i])) continue;
      octx.fillStyle = colour(lay, d, i);
      octx.globalAlpha = lay.kind === "routing" ? V.opacity * (0.25 + 0.75 * d.values[i]) : V.opacity;
      if (p.shape === "disc") {
        octx.beginPath();
        octx.arc(sx, sy, half, 0, 2 * Math.PI);
        octx.fill();
      } else {
        const x0 = Math.round(sx - half), y0 = Math.round(sy - half);  // neighbours share their edges
        octx.fillRect(x0, y0, Math.round(sx + half) - x0, Math.round(sy + half) - y0);
      }
    }
    octx.restore();
  }
  function partner(lay) {  // the measured layer of a predicted gene, for the swipe
    return M.layers.find((l) => l.kind === "measured" && l.gene === lay.gene);
  }
  function drawOverlay() {
    octx.clearRect(0, 0, W(), H());
    const lay = V.layer;
    $("swipeline").hidden = true;
    if (!lay) return;
    const other = lay.kind === "predicted" && V.swipe ? partner(lay) : null;
    if (other && V.data[other.id]) {
      const x = V.swipeX * W();
      paint(lay, 0, x);
      paint(other, x, W());
      $("swipeline").hidden = false;
      $("swipeline").style.left = x - 1 + "px";
    } else {
      paint(lay, 0, W());
    }
  }
  function draw() {
    const w = stage.clientWidth, h = stage.clientHeight;
    for (const cv of [tilesCv, overCv]) if (cv.width !== w || cv.height !== h) { cv.width = w; cv.height = h; }
    V.level = V.pinned === null ? autoLevel() : V.pinned;
    tctx.fillStyle = "#fff";
    tctx.fillRect(0, 0, w, h);
    drawLevel(0);  // one small tile under everything: no blank squares while finer tiles load
    if (V.level > 0) drawLevel(V.level);
    drawOverlay();
    $("levelpin").value = V.pinned === null ? "auto" : String(V.pinned);
    $("levelpin").options[0].textContent = "auto (level " + V.level + ")";
  }

  // ---- legend and info -------------------------------------------------------------------------------
  const fmt = (v) => (Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(3));
  function legend() {
    const lay = V.layer, bar = $("colorbar").getContext("2d");
    $("legend").hidden = !lay;
    if (!lay) return;
    const r = lay.cv_r === undefined ? "" : lay.cv_r === null ? " · CV r n/a" : " · CV r " + lay.cv_r.toFixed(2);
    $("legendtitle").textContent = lay.label + r;
    const routing = lay.kind === "routing";
    $("colorbar").hidden = routing;
    $("ticks").hidden = routing;
    $("experts").innerHTML = "";
    if (routing) {
      lay.colours.forEach((c, e) => {
        const s = document.createElement("span");
        s.innerHTML = '<i style="background:' + c + '"></i>expert ' + e;
        $("experts").appendChild(s);
      });
    } else {
      for (let i = 0; i < 256; i++) { bar.fillStyle = lut[i]; bar.fillRect(i, 0, 1, 12); }
      const [lo, hi] = V.clim[lay.id] || lay.clim;
      $("tlo").textContent = fmt(lo);
      $("tmid").textContent = fmt((lo + hi) / 2);
      $("thi").textContent = fmt(hi);
      $("vmin").value = lo;
      $("vmax").value = hi;
    }
    const other = V.swipe && lay.kind === "predicted" ? partner(lay) : null;
    const [lo2, hi2] = other ? V.clim[other.id] || other.clim : [0, 0];
    $("unit").textContent = lay.unit + (other ? "; right of the line: " + other.label + " on its own scale, " +
      fmt(lo2) + " to " + fmt(hi2) + " " + other.unit : "");
  }
  function describe(x, y) {  // the tile (or spot) under level-0 point (x, y) of the shown layer
    const lay = V.layer || layers.get("pred:0");
    const p = lay && V.data[lay.points];
    if (!p) return null;
    const half = p.side / 2;
    let best = -1, bestD = Infinity;
    for (let i = 0; i < p.x.length; i++) {
      const dx = Math.abs(p.x[i] - x), dy = Math.abs(p.y[i] - y);
      const inside = p.shape === "disc" ? dx * dx + dy * dy <= half * half : dx <= half && dy <= half;
      if (inside && dx + dy < bestD) { best = i; bestD = dx + dy; }
    }
    if (best < 0) return null;
    const um = M.pixel_size_um;
    let text = p.ids[best] + " · x " + (p.x[best] * um).toFixed(1) + " µm, y " + (p.y[best] * um).toFixed(1) + " µm";
    const d = lay && V.data[lay.id];
    if (d && lay.kind === "routing") {
      text += " · expert " + d.expert[best] + ", weight " + d.values[best].toFixed(2);
    } else if (d) {
      text += " · " + lay.label + ": " + d.values[best].toFixed(3) + " " + lay.unit;
    }
    return { index: best, id: p.ids[best], text: text };
  }
  V.describe = describe;
  function showInfo(sx, sy, sticky) {
    const [x, y] = toSlide(sx, sy);
    const hit = describe(x, y);
    if (sticky) V.picked = hit;
    const shown = hit || V.picked;
    $("info").textContent = shown ? shown.text : "x " + (x * M.pixel_size_um).toFixed(1) + " µm, y " +
      (y * M.pixel_size_um).toFixed(1) + " µm";
  }

  // ---- controls --------------------------------------------------------------------------------------
  function setLayer(id) {
    const lay = layers.get(id) || null;
    V.layer = lay;
    $("layer").value = lay ? lay.id : "";
    $("swipebox").hidden = !(lay && lay.kind === "predicted" && partner(lay));
    legend();
    if (!lay) return schedule();
    loadLayer(lay, () => {
      const other = partner(lay);
      if (V.swipe && other) loadLayer(other, schedule);
      schedule();
    });
  }
  V.setLayer = setLayer;
  function buildControls() {
    $("name").textContent = M.name + " (" + M.slide + ")";
    const sel = $("layer");
    sel.appendChild(new Option("no overlay", ""));
    for (const l of M.layers) {
      const r = l.cv_r === undefined || l.cv_r === null ? "" : " · r " + l.cv_r.toFixed(2);
      sel.appendChild(new Option(l.label + r, l.id));
    }
    sel.addEventListener("change", () => setLayer(sel.value));
    $("search").addEventListener("input", () => {
      const q = $("search").value.trim().toLowerCase();
      let first = null;
      for (const o of sel.options) {
        o.hidden = q !== "" && o.value !== "" && o.textContent.toLowerCase().indexOf(q) < 0;
        if (!o.hidden && o.value && first === null) first = o.value;
      }
      if (q && first !== null && (!V.layer || sel.selectedOptions[0].hidden)) setLayer(first);
    });
    $("opacity").addEventListener("input", () => { V.opacity = parseFloat($("opacity").value); schedule(); });
    const clim = () => {
      if (!V.layer) return;
      const lo = parseFloat($("vmin").value), hi = parseFloat($("vmax").value);
      if (Number.isFinite(lo) && Number.isFinite(hi) && hi > lo) { V.clim[V.layer.id] = [lo, hi]; legend(); schedule(); }
    };
    $("vmin").addEventListener("change", clim);
    $("vmax").addEventListener("change", clim);
    $("reset").addEventListener("click", () => { if (V.layer) delete V.clim[V.layer.id]; legend(); schedule(); });
    $("swipe").addEventListener("change", () => { V.swipe = $("swipe").checked; if (V.layer) setLayer(V.layer.id); });
    const pin = $("levelpin");
    pin.appendChild(new Option("auto", "auto"));
    for (const L of M.levels) pin.appendChild(new Option("level " + L.level + " (1/" + L.downsample + ")", String(L.level)));
    pin.addEventListener("change", () => { V.pinned = pin.value === "auto" ? null : parseInt(pin.value, 10); schedule(); });
    $("zoomin").addEventListener("click", () => zoomAt(2, W() / 2, H() / 2));
    $("zoomout").addEventListener("click", () => zoomAt(0.5, W() / 2, H() / 2));
    stage.addEventListener("wheel", (e) => {
      e.preventDefault();
      const r = stage.getBoundingClientRect();
      zoomAt(Math.pow(2, -e.deltaY / 300), e.clientX - r.left, e.clientY - r.top);
    }, { passive: false });
    let drag = null;
    stage.addEventListener("mousedown", (e) => {
      const r = stage.getBoundingClientRect();  // on the swipe line: move the line, elsewhere: pan
      const onLine = !$("swipeline").hidden && Math.abs(e.clientX - r.left - V.swipeX * W()) < 6;
      drag = { x: e.clientX, y: e.clientY, moved: false, swipe: onLine };
    });
    window.addEventListener("mouseup", (e) => {
      if (drag && !drag.moved) { const r = stage.getBoundingClientRect(); showInfo(e.clientX - r.left, e.clientY - r.top, true); }
      drag = null;
    });
    window.addEventListener("mousemove", (e) => {
      const r = stage.getBoundingClientRect();
      if (drag) {
        const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
        if (Math.abs(dx) + Math.abs(dy) > 2) drag.moved = true;
        if (drag.swipe) {
          V.swipeX = Math.max(0, Math.min(1, (e.clientX - r.left) / W()));
        } else {
          V.cx -= dx / V.scale;
          V.cy -= dy / V.scale;
        }
        drag.x = e.clientX;
        drag.y = e.clientY;
        schedule();
      } else if (e.target === overCv || e.target === tilesCv) {
        showInfo(e.clientX - r.left, e.clientY - r.top, false);
      }
    });
    window.addEventListener("resize", schedule);
    if (window.ResizeObserver) new ResizeObserver(schedule).observe(stage);
  }
  // #level=3&x=1200&y=800&gene=ERBB2&opacity=0.5&swipe=0.5 (x, y in µm): a view to come back to, or to share
  function fromHash() {
    const h = new URLSearchParams(location.hash.replace(/^#/, ""));
    if (h.has("level")) V.scale = 1 / M.levels[Math.max(0, Math.min(top, parseInt(h.get("level"), 10)))].downsample;
    if (h.has("x")) V.cx = parseFloat(h.get("x")) / M.pixel_size_um;
    if (h.has("y")) V.cy = parseFloat(h.get("y")) / M.pixel_size_um;
    if (h.has("opacity")) { V.opacity = parseFloat(h.get("opacity")); $("opacity").value = V.opacity; }
    if (h.has("swipe")) { V.swipe = $("swipe").checked = true; V.swipeX = parseFloat(h.get("swipe")); }
    const g = (h.get("gene") || "").toLowerCase();
    const lay = h.has("layer") ? layers.get(h.get("layer")) : M.layers.find((l) => l.kind === "predicted" && l.gene.toLowerCase() === g);
    return lay ? lay.id : "";
  }
  buildControls();
  tilesCv.width = overCv.width = stage.clientWidth;
  tilesCv.height = overCv.height = stage.clientHeight;
  V.scale = fitScale();
  const first = fromHash();
  load("points:pred", M.points["points:pred"], () => {});  // hover shows tile ids with no overlay picked
  setLayer(first);
  draw();
  V.ready = true;
})();
