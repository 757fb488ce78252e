/* jndqa report pages: draw the Plotly figures embedded as JSON next to each [data-figure]
   element; a figure's "click" says what a click does ("link": open customdata, "seek": play
   the audio element named by "audio" from customdata seconds). No network access. */
(function () {
  "use strict";
  function draw(el) {
    var fig = JSON.parse(document.getElementById(el.getAttribute("data-figure")).textContent);
    Plotly.newPlot(el, fig.data, fig.layout, { responsive: true, displaylogo: false });
    if (fig.click === "link") {
      el.on("plotly_click", function (ev) {
        var url = ev.points[0].customdata;
        if (typeof url === "string" && url) { window.location.href = url; }
      });
    } else if (fig.click === "seek") {
      el.on("plotly_click", function (ev) {
        var audio = document.getElementById(fig.audio);
        var t = ev.points[0].customdata;
        if (audio && typeof t === "number") { audio.currentTime = t; audio.play(); }
      });
    }
  }
  document.addEventListener("DOMContentLoaded", function () {
    var figures = document.querySelectorAll("[data-figure]");
    for (var i = 0; i < figures.length; i++) { draw(figures[i]); }
  });
})();
