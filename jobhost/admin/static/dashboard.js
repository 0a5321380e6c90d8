// jobhost dashboard: keeps the states on the page current without a reload.
// Every element with data-hostname holds a [data-state] cell (and maybe a .not-after cell);
// every 2 s the script asks /state.json for those hostnames and updates them in place.
(function () {
  "use strict";
  var INTERVAL = 2000;

  function rows() {
    return Array.prototype.slice.call(document.querySelectorAll("[data-hostname]"));
  }

  function poll() {
    var found = rows();
    if (found.length === 0) { return; }
    var query = found.map(function (el) {
      return "h=" + encodeURIComponent(el.getAttribute("data-hostname"));
    }).join("&");
    fetch("/state.json?" + query, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (states) {
        if (!states) { return; }
        found.forEach(function (el) {
          var now = states[el.getAttribute("data-hostname")];
          if (!now) { return; }
          var cell = el.querySelector("[data-state]");
          if (cell && cell.getAttribute("data-state") !== now.state) {
            cell.setAttribute("data-state", now.state);
            cell.textContent = now.state;
          }
          var expiry = el.querySelector(".not-after");
          if (expiry && now.not_after && expiry.textContent !== now.not_after) {
            expiry.textContent = now.not_after;
          }
        });
      })
      .catch(function () { /* the next tick tries again */ });
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (rows().length > 0) { window.setInterval(poll, INTERVAL); }
  });
})();
