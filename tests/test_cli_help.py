"""``spade-st --help`` of every subcommand: every flag explained with its default shown, one device rule, and a
missing model folder named as such."""

from __future__ import annotations

import argparse

import pytest

from spade_st.cli import build_parser, main

_NO_HELP_NEEDED = (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)


def _parsers(parser: argparse.ArgumentParser, name: str = "spade-st"):
    """(name, parser) of ``parser`` and of every subparser below it, depth first."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def _subcommand(*path: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in path:
        (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parser = action.choices[name]
    return parser


def test_every_flag_has_help_and_every_subcommand_shows_defaults():
    parsers = list(_parsers(build_parser()))
    names = {name for name, _ in parsers}
    assert {"spade-st convert her2st", "spade-st convert visium", "spade-st convert anndata"} <= names
    assert "spade-st bench her2st" in names
    missing, plain = [], []
    for name, parser in parsers:
        if name != "spade-st" and not issubclass(parser.formatter_class, argparse.ArgumentDefaultsHelpFormatter):
            plain.append(name)
        for action in parser._actions:
            if isinstance(action, _NO_HELP_NEEDED):
                continue
            if not (action.help or "").strip():
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert not plain, f"subcommands without ArgumentDefaultsHelpFormatter: {plain}"
    assert not missing, f"flags without help: {missing}"
    for name, parser in parsers:  # every help text renders (a stray % would raise here)
        assert parser.format_help(), name


@pytest.mark.parametrize("command", ["extract", "extract-wsi", "pretrain", "embed"])
def test_device_is_chosen_the_same_way_everywhere(command):
    parser = _subcommand(command)
    (device,) = [a for a in parser._actions if "--device" in a.option_strings]
    assert device.default is None
    assert "default: CUDA if available, else CPU" in device.help
    shown = " ".join(parser.format_help().split())
    assert "default: CUDA if available, else CPU" in shown
    assert "(default: None)" not in shown.split("--device", 1)[1].split(" --", 1)[0]


def test_embed_device_default_is_automatic():
    from spade_st.experts.embed import EmbedConfig

    assert EmbedConfig(model="m", features="f", out="o").device is None


def test_embed_with_a_missing_model_folder_says_so(tmp_path, capsys):
    missing = tmp_path / "missing"
    rc = main(["embed", "--model", str(missing), "--features", str(tmp_path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 1
    assert len(lines) == 1, err
    assert "does not exist" in lines[0] and str(missing) in lines[0] and "spade-st pretrain" in lines[0]
    assert not (tmp_path / "o").exists()


def test_every_subcommand_help_has_a_description_and_an_example_on_its_own_line():
    """``spade-st X --help``: a sentence saying what X does, and an example command line below the flags."""
    missing = []
    for name, parser in _parsers(build_parser()):
        if name == "spade-st":
            continue
        text = parser.format_help()
        squeezed = "".join((parser.description or "").split())  # wrapping may split a hyphenated word
        described = bool(squeezed) and squeezed in "".join(text.split())
        example = [line for line in text.splitlines() if f"{line.strip()} ".startswith(name + " ")]
        if not described or "example:" not in text or not example:
            missing.append(name)
    assert not missing, f"subcommands without a description or an example line: {missing}"
