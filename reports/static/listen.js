/* jndqa listening test (docs/listen.md): runs the test embedded in the page (#test), offline from
   disk or served by `jndqa listen serve`. Results: one row per answer in the canonical ratings
   format, downloaded as CSV and, when served over HTTP, posted to api/results. No other network. */
(function () {
  "use strict";
  var test = JSON.parse(document.getElementById("test").textContent);
  var rows = [];
  var listener = "";
  var LISTENER = /^[A-Za-z0-9_.@ \-]{1,64}$/;
  var panel = document.getElementById("trial");
  var players = [];

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined) { e.textContent = text; }
    return e;
  }
  function stopAll() { players.forEach(function (a) { a.pause(); }); }
  function player(src, loop) {
    var a = new Audio(src);
    a.preload = "auto";
    a.loop = !!loop;
    players.push(a);
    return a;
  }
  // A play button; with `group`, switching to it hands the playing position over (seamless A/B).
  function playButton(label, audio, group) {
    var b = el("button", { type: "button", "class": "play" }, label);
    b.addEventListener("click", function () {
      var current = group ? group.current : null;
      var t = current && !current.paused ? current.currentTime : null;
      stopAll();
      document.querySelectorAll("button.play").forEach(function (x) { x.classList.remove("playing"); });
      if (t !== null && isFinite(t)) { audio.currentTime = Math.min(t, audio.duration || t); } else { audio.currentTime = 0; }
      audio.play();
      b.classList.add("playing");
      if (group) { group.current = audio; }
    });
    return b;
  }
  function record(ref, file, score, scale, item, condition, trial, t0) {
    rows.push({ ref: ref, test: file, score: score, scale: scale, item: item, condition: condition,
               trial: String(trial), time_ms: Math.max(0, Math.round(performance.now() - t0)) });
  }
  function show(nodes, data) {
    panel.textContent = "";
    Object.keys(panel.dataset).forEach(function (k) { delete panel.dataset[k]; });
    Object.keys(data || {}).forEach(function (k) { panel.dataset[k] = data[k]; });
    nodes.forEach(function (n) { panel.appendChild(n); });
  }

  // ------------------------------------------------------------------ jnd: 1-up/1-down staircases
  function runJnd(done) {
    var s = 0;
    var catchWrong = 0, catchTotal = 0;
    function staircase() {
      if (s >= test.trials.length) { return done(catchTotal ? "Catch trials called different: " + catchWrong +
        " of " + catchTotal + (catchWrong * 100 > 25 * catchTotal ? " (flagged: more than 25 %)" : "") : ""); }
      var st = test.trials[s];
      var k = st.levels.length - 1, n = 0, total = st.trials + st.catch.length;
      function trial() {
        if (n >= total) { s += 1; return staircase(); }
        var isCatch = st.catch.indexOf(n) >= 0;
        var file = isCatch ? st.reference : st.levels[k].file;
        var a = player(st.reference), b = player(file), t0 = performance.now();
        function answer(different) {
          stopAll();
          record(st.reference, file, different ? 1 : 0, "jnd", st.item, isCatch ? "catch" : st.levels[k].condition,
                 st.id + "-" + (n + 1), t0);
          if (isCatch) { catchTotal += 1; catchWrong += different ? 1 : 0; }
          else { k = Math.min(Math.max(k + (different ? -1 : 1), 0), st.levels.length - 1); }
          n += 1;
          trial();
        }
        var same = el("button", { type: "button", "class": "answer", "data-answer": "same" }, "Same");
        var diff = el("button", { type: "button", "class": "answer", "data-answer": "different" }, "Different");
        same.addEventListener("click", function () { answer(false); });
        diff.addEventListener("click", function () { answer(true); });
        var seq = el("button", { type: "button", "class": "play" }, "Play A then B");
        seq.addEventListener("click", function () {
          stopAll(); a.currentTime = 0; b.currentTime = 0;
          a.onended = function () { setTimeout(function () { b.play(); }, 400); };
          a.play();
        });
        show([el("p", { "class": "progress" }, "Staircase " + (s + 1) + " of " + test.trials.length + ", trial " +
                 (n + 1) + " of " + total), seq, playButton("A", a), playButton("B", b),
              el("p", {}, "Are A and B the same?"), same, diff],
             { item: st.item, severity: isCatch ? "0" : String(st.levels[k].severity), "catch": isCatch ? "1" : "0",
               family: st.family });
      }
      trial();
    }
    staircase();
  }

  // ------------------------------------------------------------------ mushra: BS.1534-3 trials
  function runMushra(done) {
    var i = 0;
    function trial() {
      if (i >= test.trials.length) { return done(""); }
      var tr = test.trials[i], t0 = performance.now(), group = { current: null };
      var nodes = [el("p", { "class": "progress" }, "Trial " + (i + 1) + " of " + test.trials.length + ": " + tr.item)];
      nodes.push(playButton("Reference", player(tr.reference, true), group));
      var sliders = [];
      tr.stimuli.forEach(function (st, j) {
        var row = el("div", { "class": "stimulus", "data-key": st.key });
        var slider = el("input", { type: "range", min: "0", max: "100", step: "1", value: "50",
                                   "aria-label": "rating of version " + (j + 1) });
        var out = el("output", {}, "50");
        slider.addEventListener("input", function () { out.textContent = slider.value; });
        row.appendChild(playButton("Version " + (j + 1), player(st.file, true), group));
        row.appendChild(slider);
        row.appendChild(out);
        nodes.push(row);
        sliders.push(slider);
      });
      var next = el("button", { type: "button", "class": "answer", "data-answer": "next" },
                    i + 1 < test.trials.length ? "Next trial" : "Finish");
      next.addEventListener("click", function () {
        stopAll();
        tr.stimuli.forEach(function (st, j) {
          record(tr.reference, st.file, Number(sliders[j].value), "mushra", tr.item, st.condition, tr.id, t0);
        });
        i += 1;
        trial();
      });
      nodes.push(next);
      show(nodes, { item: tr.item, trial: tr.id });
    }
    trial();
  }

  // ------------------------------------------------------------------ abx
  function runAbx(done) {
    var i = 0, correct = 0;
    function trial() {
      if (i >= test.trials.length) { return done("X identified in " + correct + " of " + test.trials.length + " trials."); }
      var tr = test.trials[i], t0 = performance.now(), group = { current: null };
      var x = tr.x === "a" ? tr.a : tr.b;
      function answer(choice) {
        stopAll();
        var ok = choice === tr.x;
        correct += ok ? 1 : 0;
        record(tr.a, tr.b, ok ? 1 : 0, "jnd", tr.item, "abx " + tr.variant + " (X=" + tr.x.toUpperCase() + ")", tr.id, t0);
        i += 1;
        trial();
      }
      var isA = el("button", { type: "button", "class": "answer", "data-answer": "a" }, "X is A");
      var isB = el("button", { type: "button", "class": "answer", "data-answer": "b" }, "X is B");
      isA.addEventListener("click", function () { answer("a"); });
      isB.addEventListener("click", function () { answer("b"); });
      show([el("p", { "class": "progress" }, "Trial " + (i + 1) + " of " + test.trials.length + ": " + tr.item +
                  ", " + tr.variant),
            playButton("A", player(tr.a, true), group), playButton("B", player(tr.b, true), group),
            playButton("X", player(x, true), group), el("p", {}, "Which one is X?"), isA, isB],
           { item: tr.item, trial: tr.id });
    }
    trial();
  }

  // ------------------------------------------------------------------ results
  var COLUMNS = ["ref", "test", "score", "listener", "item", "condition", "scale", "trial", "time_ms", "kind", "test_id"];
  function cell(v) {
    var s = String(v === undefined || v === null ? "" : v);
    return /[",\n\r]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }
  function csv() {
    var lines = [COLUMNS.join(",")];
    rows.forEach(function (r) {
      var full = Object.assign({ listener: listener, kind: test.kind, test_id: test.test_id }, r);
      lines.push(COLUMNS.map(function (c) { return cell(full[c]); }).join(","));
    });
    return lines.join("\r\n") + "\r\n";
  }
  function finish(note) {
    panel.hidden = true;
    document.getElementById("done").hidden = false;
    var summary = document.getElementById("summary");
    summary.textContent = rows.length + " answers. " + note;
    if (/flagged/.test(note)) { summary.classList.add("flag"); }
    var link = document.getElementById("download");
    link.href = URL.createObjectURL(new Blob([csv()], { type: "text/csv" }));
    link.download = "results-" + test.test_id + "-" + listener.replace(/[^A-Za-z0-9_.-]/g, "_") + ".csv";
    var posted = document.getElementById("posted");
    if (location.protocol === "http:" || location.protocol === "https:") {
      posted.textContent = "Sending the results…";
      fetch("api/results", { method: "POST", headers: { "Content-Type": "application/json" },
                             body: JSON.stringify({ format: "jndqa-listen-results/1", test_id: test.test_id,
                                                    kind: test.kind, listener: listener, rows: rows }) })
        .then(function (r) { return r.json().then(function (j) { return [r.status, j]; }); })
        .then(function (res) {
          posted.dataset.status = String(res[0]);
          posted.textContent = res[0] === 201 ? "Results stored (" + res[1].rows + " answers). Thank you."
            : "The results were not stored (" + res[0] + ": " + JSON.stringify(res[1].detail || res[1]) +
              "). Download them and send the file instead.";
        })
        .catch(function (e) { posted.dataset.status = "error"; posted.textContent = "Not sent (" + e + "): download the results."; });
    }
  }

  document.getElementById("begin").addEventListener("click", function () {
    var value = document.getElementById("listener").value.trim();
    if (!LISTENER.test(value)) {
      document.getElementById("start-error").textContent =
        "Enter a listener id of 1 to 64 letters, digits, spaces or _ . @ -";
      return;
    }
    listener = value;
    document.getElementById("start").hidden = true;
    panel.hidden = false;
    ({ jnd: runJnd, mushra: runMushra, abx: runAbx })[test.kind](finish);
  });
})();
