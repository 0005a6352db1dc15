// Draws every chart from the JSON beside it and wires the copy buttons. Needs nothing from the network.
(function () {
  "use strict";
  // The charts' toolbar: PNG download (drawn in the page, saved by the browser), zoom, pan and reset.
  // Nothing that links to or sends the chart's data to Plotly's cloud (names, addresses and rules stay here).
  var CONFIG = {
    displaylogo: false, responsive: true, showLink: false, showSendToCloud: false, showEditInChartStudio: false,
    showSources: false, linkText: "", plotlyServerURL: "", sendData: false, displayModeBar: true,
    modeBarButtonsToRemove: ["sendDataToCloud", "editInChartStudio", "lasso2d", "select2d", "toggleSpikelines",
                             "hoverClosestCartesian", "hoverCompareCartesian"],
    toImageButtonOptions: { format: "png", scale: 2 }
  };
  function colours() {
    var css = getComputedStyle(document.documentElement);
    return { fg: css.getPropertyValue("--fg").trim() || "#1b1f24", muted: css.getPropertyValue("--muted").trim() || "#57606a",
             bg: css.getPropertyValue("--bg").trim() || "#ffffff", line: css.getPropertyValue("--line").trim() || "#d0d7de" };
  }
  function axisColours(axis, c) {
    if (!axis) { return; }
    axis.color = c.fg;
    axis.linecolor = c.line;
    axis.zerolinecolor = c.line;
    if (axis.title && typeof axis.title === "object") { axis.title.font = { color: c.fg }; }
  }
  function draw() {
    var c = colours();
    var nodes = document.querySelectorAll("div.chart[data-figure]");
    for (var i = 0; i < nodes.length; i++) {
      var div = nodes[i];
      var fig = JSON.parse(document.getElementById(div.getAttribute("data-figure")).textContent);
      var layout = fig.layout || {};
      layout.font = { color: c.fg };
      layout.autosize = true;
      layout.hoverlabel = { bgcolor: c.bg, bordercolor: c.line, font: { color: c.fg } };
      layout.modebar = { bgcolor: "rgba(0,0,0,0)", color: c.muted, activecolor: c.fg };
      if (layout.legend) { layout.legend.font = { color: c.fg }; }
      for (var key in layout) {
        if (/^[xy]axis[0-9]*$/.test(key)) { axisColours(layout[key], c); }
      }
      var config = {};
      for (var k in CONFIG) { config[k] = CONFIG[k]; }
      config.toImageButtonOptions = { format: "png", scale: 2, filename: div.id };
      Plotly.react(div, fig.data || [], layout, config);
    }
  }
  function copy(event) {
    var target = document.getElementById(event.currentTarget.getAttribute("data-copy"));
    if (target && navigator.clipboard) { navigator.clipboard.writeText(target.textContent).catch(function () {}); }
  }
  document.addEventListener("DOMContentLoaded", function () {
    draw();
    var buttons = document.querySelectorAll("button.copy");
    for (var i = 0; i < buttons.length; i++) { buttons[i].addEventListener("click", copy); }
    if (window.matchMedia) {
      var mq = window.matchMedia("(prefers-color-scheme: dark)");
      if (mq.addEventListener) { mq.addEventListener("change", draw); }
    }
    window.addEventListener("beforeprint", function () {
      var details = document.querySelectorAll("details");
      for (var i = 0; i < details.length; i++) { details[i].open = true; }
    });
    document.documentElement.setAttribute("data-charts", String(document.querySelectorAll("div.chart .main-svg").length > 0));
    window.egresslensReportReady = true;
  });
})();
