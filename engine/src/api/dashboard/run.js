// The run page live: log lines from the API's event stream (EventSource sends the session
// cookie), and step states from the run's JSON once a second until the run ends.
(function () {
  "use strict";
  var logs = document.getElementById("logs");
  if (!logs) { return; }
  var run = logs.getAttribute("data-run");
  var status = document.getElementById("logs-status");
  var finished = false;

  function setState(step, state) {
    document.querySelectorAll('[data-step="' + CSS.escape(step) + '"]').forEach(function (el) {
      if (el.tagName.toLowerCase() === "g") {
        el.setAttribute("class", "node state-" + state);
        var label = el.querySelector(".node-state");
        if (label) { label.textContent = state; }
      } else {
        var cell = el.querySelector(".step-state");
        if (cell) { cell.innerHTML = '<span class="badge state-' + state + '">' + state + "</span>"; }
      }
    });
  }

  function refresh() {
    fetch("/api/v1/runs/" + run, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (detail) {
        if (!detail) { return; }
        detail.steps.forEach(function (s) { setState(s.step_id, s.state); });
        var badge = document.querySelector("#run-state .badge");
        if (badge) { badge.className = "badge state-" + detail.run.state; badge.textContent = detail.run.state; }
        if (detail.run.state !== "running") { finished = true; }
      })
      .catch(function () {})
      .then(function () { if (!finished) { setTimeout(refresh, 1000); } });
  }
  refresh();

  var source = new EventSource("/api/v1/runs/" + run + "/logs/stream");
  source.addEventListener("open", function () { status.textContent = "Streaming live."; });
  source.addEventListener("log", function (event) {
    var line = JSON.parse(event.data);
    var atBottom = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 4;
    logs.appendChild(document.createTextNode(line.step_id + " | " + line.line + "\n"));
    if (atBottom) { logs.scrollTop = logs.scrollHeight; }
  });
  source.addEventListener("end", function (event) {
    var end = JSON.parse(event.data);
    status.textContent = "Run " + end.state + "; log complete.";
    source.close();
    finished = true;
    refresh();
  });
  source.addEventListener("error", function () {
    if (!finished) { status.textContent = "Reconnecting…"; }
  });
})();
