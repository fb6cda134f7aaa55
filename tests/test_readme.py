"""The README's her2st walk-through, parsed from the README itself and run on the shared sections."""

from __future__ import annotations

import re
import shlex

from spade_st.cli import main

from conftest import HER2ST, REPO, her2st_args


def _walkthrough() -> list[list[str]]:
    text = (REPO / "README.md").read_text()
    section = text.split("### Walk-through", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    lines = [ln for ln in block.splitlines() if ln.strip()]
    env = dict(ln.split("=", 1) for ln in lines if re.match(r"^[A-Z]+=", ln))
    cmds = []
    for ln in lines:
        if ln.startswith("spade-st "):
            cmds.append(shlex.split(ln)[1:])
    return env, cmds


def test_walkthrough_converts_like_the_tested_converter():
    env, cmds = _walkthrough()
    assert env["D"] == "../shared/data/her2st_subset"
    converts = [c for c in cmds if c[:2] == ["convert", "her2st"]]
    assert [c[c.index("--sample-id") + 1] for c in converts] == ["A1", "B4", "C2", "C3", "C4"]
    for c in converts:
        sid = c[c.index("--sample-id") + 1]
        got = _options([a.replace("$D", str(HER2ST)).replace("$R", "R") for a in c])
        want = _options(her2st_args(sid, "R/data"))  # what the test suite converts the sections with
        scale = float(got.pop("--coord-scale", 1.0)), float(want.pop("--coord-scale", 1.0))
        assert got == want, sid
        assert abs(scale[0] - scale[1]) < 1e-4, sid
        assert got["--patient"] == sid[0]  # serial sections of one patient stay one patient


def _options(args: list[str]) -> dict[str, str]:
    return {a: args[i + 1] for i, a in enumerate(args[:-1]) if a.startswith("--")}


def test_walkthrough_runs_after_conversion(her2st_root, her2st_features, tmp_path, capsys):
    _, cmds = _walkthrough()
    run = tmp_path / "her2st"
    run.mkdir()
    (run / "data").symlink_to(her2st_root)  # converted once per test session with the same arguments
    (run / "features").symlink_to(her2st_features.parent)
    for c in cmds:
        if c[0] == "convert":
            continue
        args = [a.replace("$R", str(run)) for a in c]
        if args[0] == "pretrain":
            args += ["--epochs", "3"]  # shortened; the rest as written
        assert main(args) == 0, args
    err = capsys.readouterr().err
    assert "split [Breast]" in err and "report: drew Routing map" in err
    html = (run / "report.html").read_text()
    assert "Measured vs predicted expression (C4, held out" in html and "Split: trained on" in html
