// Draws every chart from the JSON beside it and wires the copy buttons. Needs nothing from the network.
(function () {
  "use strict";
  function colours() {
    var css = getComputedStyle(document.documentElement);
    return { fg: css.getPropertyValue("--fg").trim() || "#1b1f24" };
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
      Plotly.react(div, fig.data || [], layout, { displaylogo: false, responsive: true });
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
