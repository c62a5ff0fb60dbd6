// Refresh the overview every 5 s: fetch its live part and swap it in (no library, no CDN).
// Skipped while a <details> in it is open, so that what the operator expanded stays open.
(function () {
  "use strict";
  var box = document.getElementById("overview");
  var stamp = document.getElementById("refreshed");
  if (!box) { return; }
  var PERIOD_MS = 5000;
  function refresh() {
    if (box.querySelector("details[open]")) { return; }
    fetch(box.getAttribute("data-src"), { credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.text();
      })
      .then(function (html) {
        box.innerHTML = html;
        if (stamp) { stamp.textContent = "at " + new Date().toLocaleTimeString(); }
      })
      .catch(function (e) {
        if (stamp) { stamp.textContent = "failed (" + e.message + "), retrying"; }
      });
  }
  window.setInterval(refresh, PERIOD_MS);
})();
