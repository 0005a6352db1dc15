"""The subject drilldown notebook runs for every subject kind, with its parameters injected the way
papermill does (a cell after the one tagged `parameters`), and draws every figure; it is stored
without outputs."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from reportdata import simulated_store

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "drilldown-subject.ipynb"
FIGURES = 6


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return simulated_store(tmp_path_factory.mktemp("notebook"), hours=24, events_per_hour=1_000)[0]


def inject(nb, **parameters):
    """Papermill's convention: the injected values go in a new cell right after the `parameters` cell."""
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    source = "\n".join(f"{k} = {json.dumps(v)}" for k, v in parameters.items())
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))
    return nb


def test_the_notebook_is_stored_without_outputs_and_has_a_parameters_cell():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and all(f"{k} =" in params[0].source for k in ("db", "since", "subject", "kind"))


@pytest.mark.parametrize("subject,kind", [("github.com", "fqdn"), ("10.244.3.17", "source"),
                                          ("apiudp", "rule"), ("20.103.218.77", "destination")])
def test_the_notebook_draws_every_figure_for_each_subject_kind(db, tmp_path, subject, kind):
    nb = inject(nbformat.read(NOTEBOOK, as_version=4), db=str(db), since="24h", subject=subject, kind=kind)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    printed = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert printed.startswith(f"{kind} {subject}:")
    figures = [o["data"]["application/vnd.plotly.v1+json"] for o in outputs
               if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figures) == FIGURES
    assert any(t.get("y") or t.get("x") for t in figures[0]["data"]), "the timeline has data"
