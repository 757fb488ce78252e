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
  // A/B listening ([data-ab]: a button and two audio elements): the switch hands the position and the
  // playing state from the audible element to the other, so both are heard at the same place.
  function ab(box) {
    var players = box.querySelectorAll("audio");
    var button = box.querySelector("button");
    if (players.length !== 2 || !button) { return; }
    button.addEventListener("click", function () {
      var on = players[0].hidden ? players[1] : players[0];
      var off = on === players[0] ? players[1] : players[0];
      var playing = !on.paused;
      off.currentTime = on.currentTime;
      on.pause();
      on.hidden = true;
      off.hidden = false;
      if (playing) { off.play(); }
      box.setAttribute("data-ab-playing", off.id);
      button.textContent = "Playing " + off.getAttribute("data-ab-name") + ". Switch to " +
        on.getAttribute("data-ab-name");
    });
  }
  document.addEventListener("DOMContentLoaded", function () {
    var figures = document.querySelectorAll("[data-figure]");
    for (var i = 0; i < figures.length; i++) { draw(figures[i]); }
    var boxes = document.querySelectorAll("[data-ab]");
    for (var j = 0; j < boxes.length; j++) { ab(boxes[j]); }
  });
})();
