"""Plotly figures in a notebook that still draw once it is exported (nbconvert HTML), with nothing from a CDN.

:func:`offline_charts` (the first code cell of every notebook in ``notebooks/``) makes plotly give each
figure twice: as plotly's JSON (JupyterLab, VS Code and nteract draw it themselves) and as HTML that
calls the plotly.js embedded once in the notebook, which nbconvert's HTML keeps. Plotly's own
`notebook` renderer would load MathJax from a CDN for every figure; this one loads nothing and its
toolbar has no button that links to or sends data to Plotly's cloud (as the report's, report.js).

Export with the exporter this package registers with nbconvert (:mod:`egresslens.nbexport`):
``jupyter nbconvert --to egresslens-html run.ipynb``; its page sends nothing anywhere.
"""

from __future__ import annotations

from typing import Any

RENDERER = "egresslens"
# the charts' toolbar: PNG download, zoom, pan and reset; nothing that links to or sends data to the cloud
# (the options plotly.py knows of report.js's CONFIG; plotly.js leaves the cloud ones off by default)
CONFIG: dict[str, Any] = {
    "displaylogo": False, "responsive": True, "showSendToCloud": False, "plotlyServerURL": "",
    "modeBarButtonsToRemove": ["sendDataToCloud", "editInChartStudio", "lasso2d", "select2d", "toggleSpikelines",
                               "hoverClosestCartesian", "hoverCompareCartesian"],
    "toImageButtonOptions": {"format": "png", "scale": 2},
}


def _renderer():  # noqa: ANN202
    from plotly.io._base_renderers import MimetypeRenderer

    class OfflineRenderer(MimetypeRenderer):
        """text/html of a figure for the plotly.js embedded once by `activate` (no CDN, no MathJax)."""

        def activate(self) -> None:
            from IPython.display import HTML, display
            from plotly.offline import get_plotlyjs

            display(HTML(f'<script type="text/javascript">window.PlotlyConfig = {{MathJaxConfig: "local"}};'
                         f"</script><script type=\"text/javascript\">{get_plotlyjs()}</script>"))

        def to_mimebundle(self, fig_dict: dict) -> dict[str, str]:
            from plotly.io import to_html

            return {"text/html": to_html(fig_dict, config=CONFIG, include_plotlyjs=False, include_mathjax=False,
                                         full_html=False, default_width="100%", default_height=480, validate=False)}

    return OfflineRenderer()


def offline_charts() -> None:
    """Every figure shown from now on: plotly's JSON and HTML that draws offline (see the module)."""
    import plotly.io as pio

    if RENDERER not in pio.renderers:
        pio.renderers[RENDERER] = _renderer()
    pio.renderers.default = f"plotly_mimetype+{RENDERER}"
