"""Under ``torchrun`` every rank runs the command, but only rank 0 prints its summary."""

from __future__ import annotations

import pytest

from spade_st.cli import main


@pytest.mark.parametrize("rank", ["0", "1"])
def test_summary_is_printed_on_rank_0_only(synthetic_root, rank, capsys, monkeypatch):
    monkeypatch.setenv("RANK", rank)  # what torchrun sets in each process
    monkeypatch.setenv("WORLD_SIZE", "2")
    for argv in (["check", "--data", str(synthetic_root)], ["encoders"], ["doctor", "--data", str(synthetic_root)]):
        main(argv)
        out = capsys.readouterr().out
        if rank == "0":
            assert out.strip(), argv
        else:
            assert out == "", f"rank 1 printed for {argv}: {out}"


def test_rank_helpers_read_torchruns_rank(monkeypatch, capsys):
    from spade_st._dist import env_rank, is_main, rank0_print

    monkeypatch.delenv("RANK", raising=False)
    assert env_rank() == 0 and is_main()
    monkeypatch.setenv("RANK", "3")
    assert env_rank() == 3 and not is_main()
    rank0_print("hidden")
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("rank", ["0", "1"])
def test_run_dry_run_prints_its_plan_once(synthetic_root, tmp_path, rank, capsys, monkeypatch):
    """``torchrun ... run --dry-run``: the plan is read by every rank and printed by rank 0 alone."""
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("WORLD_SIZE", "2")
    argv = ["run", "--config", "demo", "--data", str(synthetic_root), "--out", str(tmp_path / "run"), "--dry-run"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert ("samples" in out) if rank == "0" else out == "", out


def test_rank0_print_passes_prints_options_on_rank_0(monkeypatch, capsys):
    import sys

    from spade_st._dist import rank0_print

    monkeypatch.setenv("RANK", "0")
    rank0_print("a", "b", sep="-", file=sys.stderr, flush=True)
    got = capsys.readouterr()
    assert got.err == "a-b\n" and got.out == ""
