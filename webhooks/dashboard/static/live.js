// Live dashboard: listen to the bot's event stream and swap in the sections that changed.
// No framework and no CDN: the dashboard must work on a machine with no internet.
(function () {
  "use strict";
  var indicator = document.getElementById("live");
  var stamp = document.getElementById("updated");
  var pending = null;
  var updates = 0;

  function setState(cls, text) {
    if (!indicator) return;
    indicator.className = "live " + cls;
    indicator.textContent = text;
  }

  function markUpdated() {
    if (stamp) stamp.textContent = "updated " + new Date().toLocaleTimeString();
  }

  function refresh() {
    pending = null;
    fetch(window.location.href, { headers: { "X-Kohai-Refresh": "1" }, cache: "no-store" })
      .then(function (response) { return response.text(); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-live]").forEach(function (section) {
          var replacement = fresh.getElementById(section.id);
          if (replacement && replacement.innerHTML !== section.innerHTML) {
            section.innerHTML = replacement.innerHTML;
            section.classList.remove("flash");
            void section.offsetWidth;
            section.classList.add("flash");
          }
        });
        updates += 1;
        document.body.setAttribute("data-updates", String(updates));
        markUpdated();
      })
      .catch(function () { setState("off", "offline"); });
  }

  function schedule() {
    if (pending === null) pending = window.setTimeout(refresh, 500);
  }

  if (!window.EventSource) {
    setState("off", "no live updates");
    return;
  }
  var source = new EventSource("/events");
  var opened = false;
  source.onopen = function () {
    setState("on", "live");
    // After a reconnect (the bot restarted, the network dropped) messages may have been
    // missed: fetch the page once to catch up.
    if (opened) schedule(); else markUpdated();
    opened = true;
  };
  source.onerror = function () { setState("off", "reconnecting"); };
  source.onmessage = function (event) {
    var message = {};
    try { message = JSON.parse(event.data); } catch (e) { return; }
    if (message.topic === "hello") return;
    schedule();
  };
})();
