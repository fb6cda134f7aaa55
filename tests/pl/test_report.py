"""The demo run's HTML report: all pictures present, opened once in headless Chromium."""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import subprocess
import threading

import pytest

from spade_st.cli import main

HARNESS = """<!DOCTYPE html><html><body><div id="result">pending</div>
<iframe id="f" src="report.html" width="1200" height="800"></iframe>
<script>
// poll: the report is loaded and every <img> is complete; decoded = has real pixel dimensions
const timer = setInterval(() => {
  const doc = document.getElementById('f').contentDocument;
  if (!doc || doc.readyState !== 'complete' || doc.URL.indexOf('report.html') < 0) return;
  const imgs = Array.from(doc.images);
  if (!imgs.every(i => i.complete)) return;
  clearInterval(timer);
  const decoded = imgs.filter(i => i.naturalWidth > 0 && i.naturalHeight > 0).length;
  document.getElementById('result').textContent = `images=${imgs.length} decoded=${decoded}`;
}, 50);
</script></body></html>"""


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    # 64 spots: 6 training samples give 384 spots, enough for two experts of at least 128
    assert main(["demo", "--out", str(out), "--samples", "8", "--spots", "64", "--epochs", "3"]) == 0
    return out


def test_report_contents(demo_run):
    html = (demo_run / "report.html").read_text()
    for title in (
        "Routing map",
        "UMAP coloured by expert",
        "UMAP coloured by sample",
        "silhouette by expert",
        "Measured vs predicted expression",
        "Few-shot curves",
        "Clustering QC",
        "Versions",
    ):
        assert title in html, title
    assert 'src="http' not in html and "<script" not in html  # self-contained, nothing fetched
    assert len(re.findall(r'src="data:image/png;base64,', html)) >= 6
    assert "in this 2-d UMAP" in html and "-d embedding" in html  # which space each silhouette is of
    assert "<h2>Warnings</h2>" in html  # the listed ones, else "no warnings recorded"
    md = (demo_run / "report.md").read_text()
    assert "![Routing map" in md and "## Warnings" in md


def test_report_in_headless_chromium(demo_run):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip(
            "chromium is not installed here (CI's .ci/run installs Debian's chromium; make test never installs system packages)"
        )
    (demo_run / "harness.html").write_text(HARNESS)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(demo_run))

    class Quiet(handler.func):
        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(demo_run)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/harness.html"
        cmd = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-quic",
            f"--user-data-dir={demo_run / '.chromium'}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=60000",
            "--dump-dom",
            url,
        ]
        for _ in range(3):  # a loaded machine can run out of the virtual-time budget before images decode
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
            if re.search(r"images=\d+", r.stdout):
                break
    finally:
        srv.shutdown()
    m = re.search(r"images=(\d+) decoded=(\d+)", r.stdout)
    assert m, r.stdout[:300]
    n, decoded = int(m.group(1)), int(m.group(2))
    assert n >= 6 and decoded == n
    console_errors = [ln for ln in r.stderr.splitlines() if "CONSOLE" in ln and ("report.html" in ln or "Error" in ln)]
    assert not console_errors, console_errors


def test_report_finds_parts_by_flags_and_says_what_it_skipped(demo_run, tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert main(["report", str(elsewhere)]) == 1  # nothing under the default names: not a run, nothing written
    err = capsys.readouterr().err
    assert "is not a run folder" in err and "--model" in err and not (elsewhere / "report.html").exists()
    assert main(["report", str(elsewhere), "--model", str(demo_run / "model")]) == 0  # one part named: drawn
    err = capsys.readouterr().err
    assert "report: skipped every embedding figure" in err and "pass --embeddings" in err
    assert "Not drawn" in (elsewhere / "report.html").read_text()
    enc = next((demo_run / "features").iterdir())
    flags = ["--data", demo_run / "data", "--model", demo_run / "model", "--embeddings", demo_run / "embeddings"]
    assert main(["report", str(elsewhere), *map(str, flags), "--features", str(enc)]) == 0
    err = capsys.readouterr().err
    assert "report: drew Routing map" in err and "report: drew UMAP coloured by sample" in err
    html = (elsewhere / "report.html").read_text()
    assert "Data: " in html and "(synthetic;" in html and "Split: trained on" in html
    # the island number of the raw features (--features was found), unless one expert owns every spot
    assert "raw features" in html or "every spot has the same dominant expert" in html


def test_report_lists_the_runs_warnings_or_says_there_were_none(tmp_path):
    import json

    from spade_st.pl.report import write_report

    run = tmp_path / "run"
    (run / "results").mkdir(parents=True)
    (run / "results" / "t.csv").write_text("metric,value\nr,0.5\n")
    write_report(run)
    html, md = (run / "report.html").read_text(), (run / "report.md").read_text()
    assert "<h2>Warnings</h2>\n<p>no warnings recorded</p>" in html and "## Warnings\n\nno warnings recorded" in md
    rows = [
        {"stage": "extract", "category": "DataWarning", "message": "A1: patches upsampled 6.4x <coarse>"},
        {"stage": "pretrain", "category": "UserWarning", "message": "expert 3: 95 % of its spots from one sample"},
    ]
    (run / "warnings.json").write_text(json.dumps(rows))
    write_report(run)
    html, md = (run / "report.html").read_text(), (run / "report.md").read_text()
    assert "<li>extract: A1: patches upsampled 6.4x &lt;coarse&gt;</li>" in html  # escaped
    assert "<li>pretrain: expert 3: 95 % of its spots from one sample (UserWarning)</li>" in html
    assert "- extract: A1: patches upsampled 6.4x <coarse>" in md and "no warnings recorded" not in md


def test_demo_stage_keeps_its_warnings_for_the_report(tmp_path, capsys):
    import warnings

    from spade_st import demo
    from spade_st._validation import DataWarning
    from spade_st._warnlog import read_warnings

    def stage():
        warnings.warn("a counts table kept 80 % of its rows", DataWarning, stacklevel=1)
        return 7

    log: list[str] = []
    assert demo._stage(log, "demo-data", stage, tmp_path) == 7
    assert log[0].startswith("demo-data: ") and "[demo] demo-data done" in capsys.readouterr().out
    got = read_warnings(tmp_path)
    assert got == [{"stage": "demo-data", "category": "DataWarning", "message": "a counts table kept 80 % of its rows"}]
    demo._stage(log, "quiet", lambda: None, tmp_path)  # a stage without warnings adds nothing
    assert read_warnings(tmp_path) == got
