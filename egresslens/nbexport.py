"""`jupyter nbconvert --to egresslens-html NOTEBOOK`: nbconvert's HTML page, with nothing loaded from a CDN.

nbconvert's own HTML loads require.js, MathJax and mermaid from a CDN. This exporter (registered with
nbconvert by the package's entry point) uses the lab template without them and adds a
Content-Security-Policy that allows no request at all: the notebook's charts (drawn by the plotly.js
:func:`egresslens.notebook.offline_charts` embeds) still draw, and the page sends nothing anywhere.
"""

from __future__ import annotations

from importlib import resources

from nbconvert.exporters import HTMLExporter
from traitlets import default

CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data: blob:; "
       "font-src data:; connect-src 'none'; base-uri 'none'; form-action 'none'; frame-src 'none'; object-src 'none'")


class OfflineHTMLExporter(HTMLExporter):
    """HTML that draws the notebook's plotly charts offline and sends nothing anywhere."""

    export_from_notebook = "HTML (EgressLens, offline)"

    @default("template_name")
    def _template_name_default(self) -> str:
        return "egresslens"

    @default("extra_template_basedirs")
    def _extra_template_basedirs_default(self) -> list[str]:
        return [str(resources.files("egresslens") / "data" / "nbconvert")]

    def _init_resources(self, resources_):  # noqa: ANN001, ANN202
        out = super()._init_resources(resources_)
        out["egresslens_csp"] = CSP
        return out
