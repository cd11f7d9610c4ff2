// TokenHub console: the copy buttons (the only script; no inline script).
"use strict";
document.addEventListener("click", function (event) {
  var button = event.target.closest("button[data-copy]");
  if (!button) return;
  var source = document.getElementById(button.getAttribute("data-copy"));
  var status = document.getElementById("copy-status");
  if (!source) return;
  var text = source.innerText.trim();
  var done = function (message) { if (status) status.textContent = message; };
  if (navigator.clipboard && navigator.clipboard.writeText) {
    navigator.clipboard.writeText(text).then(function () { done("Copied."); }, function () { done("Copy failed: select the text and copy it."); });
  } else {
    done("Copy is not available here: select the text and copy it.");
  }
});
