"""Shared fixtures: paths to the real data in ../shared/data and small converted roots."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SPADE_ST_SHARED_DATA", REPO.parent / "shared" / "data"))
HER2ST = SHARED / "her2st_subset"
SQUIDPY = SHARED / "squidpy_visium_crop"
WSI_SMALL = SHARED / "wsi_small"
HEST_TABLE = SHARED / "hest_metadata" / "HEST_v1_1_0.csv"

#: (section, image file, µm/px of that image, coordinate scale, spots matched)
HER2ST_SECTIONS = {
    "A1": ("A1_HE_image_dark.png", 3.185, 2000 / 6954, 346),
    "B4": ("B4_BT10737_D2_HE.jpg", 0.687, 1.0, 283),
    "C2": ("C2_5714_HE_BT_C2.jpg", 0.687, 1.0, 187),
    "C3": ("C3_5714_HE_BT_D1.jpg", 0.687, 1.0, 180),
    "C4": ("C4_5714_HE_BT_D2.jpg", 0.687, 1.0, 184),
}


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not found at {path} (set SPADE_ST_SHARED_DATA)")
    return path


def extract_cli(root, out, encoder: str = "efficientnet_lite0", *extra: str) -> int:
    """``spade-st extract`` through ``main`` (as a user runs it)."""
    from spade_st.cli import main

    return main(["extract", "--data", str(root), "--encoder", encoder, "--out", str(out), *extra])


def run_cli(args, env: dict | None = None, nproc: int = 0, port: int = 29500, one_thread: bool = True):
    """``spade-st ARGS`` in a fresh process (under torchrun with ``nproc`` ranks when given); returns the result."""
    launcher = [sys.executable]
    if nproc:
        launcher += ["-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", str(port)]
    full_env = {**os.environ, **({"OMP_NUM_THREADS": "1"} if one_thread else {}), **(env or {})}
    return subprocess.run(
        [*launcher, "-m", "spade_st.cli", *[str(a) for a in args]],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=300,
    )


def her2st_args(section: str, out: Path) -> list[str]:
    img, px, scale, _ = HER2ST_SECTIONS[section]
    args = [
        "convert",
        "her2st",
        "--counts",
        str(HER2ST / "counts" / f"{section}.tsv.gz"),
        "--spots",
        str(HER2ST / "spots" / f"{section}_selection.tsv"),
        "--image",
        str(HER2ST / "images" / img),
        "--sample-id",
        section,
        "--pixel-size-um",
        str(px),
        "--coord-scale",
        str(scale),
        "--patient",
        section[0],
        "--out",
        str(out),
    ]
    if section == "A1":
        args += ["--labels", str(HER2ST / "labels" / "A1_labeled_coordinates.tsv")]
    return args



def readme_blocks(section: str, lang: str) -> list[str]:
    """The ``lang`` code blocks of the README section whose heading is ``section`` (up to the next heading)."""
    import re

    text = (REPO / "README.md").read_text()
    body = re.split(r"\n#+ ", text.split(f"\n{section}\n", 1)[1], maxsplit=1)[0]
    return re.findall(rf"```{lang}\n(.*?)```", body, re.S)


def with_values(code: str, **values) -> str:
    """``code`` with its ``NAME = ...`` (or ``A, B = ...``) lines giving the tests' values; each name must be set there."""
    lines, done = [], set()
    for ln in code.splitlines():
        names = [n.strip() for n in ln.split("=", 1)[0].split(",")] if "=" in ln and not ln.startswith(" ") else []
        if names and all(n in values for n in names):
            lines.append(f"{', '.join(names)} = {', '.join(repr(str(values[n])) for n in names)}")
            done.update(names)
        else:
            lines.append(ln)
    missing = set(values) - done
    assert not missing, f"the README block no longer sets {sorted(missing)}"
    return "\n".join(lines) + "\n"

@pytest.fixture(scope="session")
def her2st_root(tmp_path_factory) -> Path:
    """All five real her2st sections converted through the CLI (once per test session)."""
    from spade_st.cli import main

    require(HER2ST)
    root = tmp_path_factory.mktemp("her2st") / "root"
    for s in HER2ST_SECTIONS:
        assert main(her2st_args(s, root)) == 0
    return root


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A small synthetic HEST root (3 samples x 60 spots)."""
    from spade_st.datasets import synthetic

    root = tmp_path_factory.mktemp("syn") / "root"
    synthetic(out=root, samples=3, spots=60, genes=60, seed=1, progress=False)
    return root


@pytest.fixture(scope="session")
def her2st_features(her2st_root, tmp_path_factory) -> Path:
    """efficientnet_lite0 features of the five real sections (once per test session)."""
    out = tmp_path_factory.mktemp("feats")
    assert extract_cli(str(her2st_root), str(out), "efficientnet_lite0", "--batch-size", "16") == 0
    return out / "efficientnet_lite0"


#: fixtures that convert or run something big: a test that uses one is ``slow`` (left out of the inner loop)
SLOW_FIXTURES = {"her2st_root", "her2st_features", "demo_run", "real_feats", "her2st_model", "lite0_model"}


def pytest_collection_modifyitems(config, items):
    """Mark every test that needs a slow fixture as ``slow``: ``pytest -m "not slow"`` is the inner loop."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)



@pytest.fixture
def one_torch_thread():
    """Torch on one thread for the test: tiny models trained one bag per step (ABMIL, survival) spend most of
    a step in thread hand-offs on two cores, and run ~2x faster on one."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
