"""The interactive workbooks: every notebook in notebooks/ runs top to bottom, headless.

Each is executed with nbclient in a fresh kernel (the venv's ``python3`` kernelspec), from
notebooks/ as its working directory, against the real lab VM — no user, so widgets keep their
initial values and callbacks run only where a cell calls them. A cell that raises fails the
test with the cell and its traceback. The notebooks are committed without outputs; the executed
copy goes to the test's tmp_path, never back into notebooks/. A VM a notebook leaves running
is caught by conftest's end-of-session check (the kernel inherits the suite's TMPDIR).
"""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
CELL_TIMEOUT = 600          # seconds per cell: a cold boot or a gdb attach under TCG is slow
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
# Notebooks whose headless run must leave a figure: in a cell's output or in an Output widget.
MUST_PLOT = {"01-vcpu-loop.ipynb"}


def notebooks() -> list[Path]:
    return sorted(p for p in NOTEBOOKS.glob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def outputs(nb) -> list[dict]:
    """Every output of an executed notebook: the cells' and those captured by Output widgets."""
    found = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    for model in state.values():
        if model.get("model_name") == "OutputModel":
            found += model.get("state", {}).get("outputs", [])
    return found


def test_notebooks_are_committed_without_outputs():
    for path in notebooks():
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        dirty = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
                 and (cell.get("outputs") or cell.get("execution_count") is not None)]
        assert not dirty, f"{path.name}: cells {dirty} carry outputs (clear them before committing)"
        assert WIDGET_STATE not in json.dumps(nb.metadata), f"{path.name}: saved widget state"


def test_there_is_something_to_run():
    assert notebooks(), f"no notebooks under {NOTEBOOKS}"


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.name)
def test_notebook_runs_headless(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    try:
        client.execute()
    except CellExecutionError as exc:
        pytest.fail(f"{path.name} failed:\n{exc}", pytrace=False)
    finally:
        nbformat.write(nb, tmp_path / path.name)     # for a look at what it did
    errors = [o for o in outputs(nb) if o.get("output_type") == "error"]
    assert not errors, f"{path.name}: error outputs {[(e['ename'], e['evalue']) for e in errors]}"
    if path.name in MUST_PLOT:
        images = [o for o in outputs(nb) if "image/png" in o.get("data", {})]
        assert images, f"{path.name} drew no figure"
