"""The drilldown notebook runs top to bottom against a real store and draws its plotly figures."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from egresslens import store
from egresslens.simulate import write, generate
from egresslens.ingest import ingest_files

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "drilldown.ipynb"


def test_drilldown_notebook_executes(tmp_path, monkeypatch):
    scenario = generate(hours=3, events_per_hour=2_000, seed=5, start=datetime(2026, 3, 2))
    write(scenario, tmp_path / "logs", fmt="structured", layout="storage")
    db = tmp_path / "s.duckdb"
    con = store.connect(db)
    ingest_files(con, [p for p in (tmp_path / "logs").iterdir() if p.is_dir()])
    con.close()
    monkeypatch.setenv("EGRESSLENS_DB", str(db))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    figures = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(figures) == 2
    assert figures[0]["data"]["application/vnd.plotly.v1+json"]["data"], "the denied-per-hour chart has data"
