"""Notebook hygiene: what every tutorial notebook must keep so it reads well and runs headless (nbval, papermill)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))
IMPORT_LINE = re.compile(r"^\s*(import |from \S+ import |print\(f\"cardiolab |$|\))")
WORKSHOP = re.compile(r"\b(wave \d|stop \d+|stops \d+|issue \d+)", re.IGNORECASE)
FIGURE = re.compile(r"\b(save_figure|save_gif)\(|^\s*fig\s*=", re.M)   # a code cell that makes a figure
READING = "What you should see"


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def _source(cell: dict) -> str:
    return "".join(cell["source"])


def test_there_are_nine_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS] == [f"{i:02d}" for i in range(1, 10)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_one_parameters_cell_that_sets_the_profile(path):
    tagged = [c for c in _cells(path) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    assert re.search(r"^profile\s*=", _source(tagged[0]), re.M)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_outputs_are_stripped(path):
    executed = [i for i, c in enumerate(_cells(path)) if c["cell_type"] == "code"
                and (c.get("outputs") or c.get("execution_count") is not None)]
    assert executed == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_logic_lives_in_the_library(path):
    """No def or class, and no code cell over 15 lines (import cells aside): longer code belongs in cardiolab."""
    code = [(i, _source(c)) for i, c in enumerate(_cells(path)) if c["cell_type"] == "code"]
    defs = [i for i, src in code if re.search(r"^\s*(def|class) ", src, re.M)]
    long = [i for i, src in code
            if len(src.splitlines()) > 15 and not all(IMPORT_LINE.match(line) for line in src.splitlines())]
    assert defs == []
    assert long == []


def figures_left_unread(cells: list[dict]) -> list[int]:
    """Indices of the code cells that make a figure and are not followed by a markdown cell that starts with
    "What you should see" (what a reader should look for in it)."""
    follows = cells[1:] + [None]
    return [i for i, (c, nxt) in enumerate(zip(cells, follows))
            if c["cell_type"] == "code" and FIGURE.search(_source(c))
            and not (nxt and nxt["cell_type"] == "markdown" and _source(nxt).lstrip().startswith(READING))]


def test_the_reading_rule_catches_a_figure_left_unread():
    fig = {"cell_type": "code", "source": ["fig = plots.cine_montage(x)\n", "save_figure(fig, path)"]}
    gif = {"cell_type": "code", "source": ["display(Image(filename=str(save_gif(x, path))))"]}
    table = {"cell_type": "code", "source": ["table.round(2)"]}
    reading = {"cell_type": "markdown", "source": ["What you should see: bright walls."]}
    heading = {"cell_type": "markdown", "source": ["## Next\n", "What you should see later"]}
    assert figures_left_unread([fig, reading, gif, reading, table]) == []
    assert figures_left_unread([fig, heading]) == [0]
    assert figures_left_unread([fig, gif, reading]) == [0]
    assert figures_left_unread([table, fig]) == [1]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_figure_says_what_you_should_see(path):
    cells = _cells(path)
    assert any(c["cell_type"] == "code" and FIGURE.search(_source(c)) for c in cells)   # each notebook plots
    assert figures_left_unread(cells) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_closing_cell_says_what_was_made(path):
    tail = [_source(c) for c in _cells(path)[-2:] if c["cell_type"] == "markdown"]
    assert any(re.match(r"## (Done|Cleanup)", src) for src in tail)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_workshop_words(path):
    """Readers meet the field's words, not the project's history (waves, stops, issue numbers)."""
    found = [m.group(0) for c in _cells(path) for m in WORKSHOP.finditer(_source(c))]
    assert found == []


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.name[:2] != "09"], ids=lambda p: p.stem)
def test_the_data_source_comes_in_through_the_parameters(path):
    """Every cine notebook takes the root's data source as papermill parameters (data_dir, layout: what
    `notebooks --data DIR --layout L` passes), applies them to its profile and prints the cache it reads."""
    cells = _cells(path)
    (params,) = [_source(c) for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert re.search(r"^data_dir\s*=", params, re.M)
    assert re.search(r"^layout\s*=", params, re.M)
    code = "\n".join(_source(c) for c in cells if c["cell_type"] == "code")
    assert re.search(r"with_data\(get_profile\(profile\), data_dir, layout\)", code)
    assert "describe_data()" in code
