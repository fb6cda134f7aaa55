"""The README's her2st walk-through, parsed from the README itself and run on the shared sections."""

from __future__ import annotations

import re
import shlex

import pytest

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


def _setup_block() -> str:
    section = (REPO / "README.md").read_text().split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def test_setup_says_how_to_reach_the_cli_before_using_it():
    """After ``make demo`` a fresh shell has no ``spade-st`` on PATH: the block activates .venv (or names
    .venv/bin/spade-st) before its first ``spade-st`` line."""
    lines = [ln.split("#", 1)[0].strip() for ln in _setup_block().splitlines()]
    reach = [i for i, ln in enumerate(lines) if ln in ("source .venv/bin/activate", ". .venv/bin/activate")]
    uses = [i for i, ln in enumerate(lines) if re.match(r"(\.venv/bin/)?spade-st\b", ln)]
    assert uses, "the set-up block never shows the CLI"
    for i in uses:
        assert lines[i].startswith(".venv/bin/spade-st") or (reach and reach[0] < i), lines[i]


def test_setup_names_the_folder_the_demo_writes():
    make = (REPO / "Makefile").read_text()
    out = re.search(r"^DEMO_OUT \?= (\S+)$", make, re.M).group(1)
    demo_rule = re.search(r"^demo:.*\n\t(.*)$", make, re.M).group(1)
    assert re.search(r"spade-st demo --out \$\(DEMO_OUT\)", demo_rule), demo_rule
    report = (REPO / "src" / "spade_st" / "pl" / "report.py").read_text()
    html = re.search(r'out = run / "(report\.html)"', report).group(1)
    text = (REPO / "README.md").read_text().split("## Set-up", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"([\w./-]+)/report\.html", text))
    assert named == {out}, f"the set-up names {named} as the demo's folder; the Makefile writes {out}"
    assert f"{out}/{html}" in text
    block = "\n".join(ln.split("#", 1)[0] for ln in _setup_block().splitlines())
    for path in re.findall(r"spade-st \w+ (?:--data )?(\S+)", block):
        assert path == out or path.startswith(out + "/"), path  # commands on the demo's own output


def _subcommands() -> dict[str, set[str]]:
    import argparse

    from spade_st.cli import build_parser

    def choices(parser):
        return next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})

    return {name: set(choices(sub)) for name, sub in choices(build_parser()).items()}


def test_every_command_the_readme_shows_is_a_real_subcommand():
    text = (REPO / "README.md").read_text()
    commands = _subcommands()
    used = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for ln in block.splitlines():
            m = re.match(r"\s*(?:\.venv/bin/)?spade-st\s+([a-z][\w-]*)(?:\s+([a-z][\w-]*))?", ln)
            if not m:
                continue
            sub, second = m.groups()
            used.append(sub)
            assert sub in commands, f"README runs `spade-st {sub}`: not a subcommand ({sorted(commands)})"
            if commands[sub]:  # convert <format>, bench <name>
                assert second in commands[sub], f"`spade-st {sub} {second}`: not one of {sorted(commands[sub])}"
    assert {"demo-data", "extract", "pretrain", "report", "check"} <= set(used)


def test_setup_line_reaches_the_cli_in_a_fresh_shell():
    """The README's `source .venv/bin/activate` line, in a new shell with a bare PATH, puts spade-st on PATH."""
    import subprocess

    venv = REPO / ".venv" / "bin" / "activate"
    if not venv.is_file():
        pytest.skip("no .venv in the repository (make test / make demo creates it)")
    text = (REPO / "README.md").read_text()
    line = next(ln.split("#")[0].strip() for ln in text.splitlines() if ln.startswith("source .venv"))
    r = subprocess.run(
        ["bash", "-c", f"{line} && spade-st --help"],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "HOME": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and "usage: spade-st" in r.stdout, r.stderr[-500:]
