// Admin pages: progressive enhancement only; every page works without it.
(function () {
  "use strict";
  // A page that shows a secret was the answer to a POST: point the address bar at the
  // client's page, so a reload shows that page and never asks to resubmit the form.
  var once = document.querySelector("[data-replace-url]");
  if (once && window.history && history.replaceState) {
    history.replaceState(null, "", once.getAttribute("data-replace-url"));
  }
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    var source = document.getElementById(button.getAttribute("data-copy"));
    if (!source || !navigator.clipboard) { return; }
    button.hidden = false;
    button.addEventListener("click", function () {
      navigator.clipboard.writeText(source.textContent.trim()).then(function () {
        button.textContent = "Copied";
      });
    });
  });
})();
