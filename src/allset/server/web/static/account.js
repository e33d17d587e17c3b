// Account pages: progressive enhancement only (every form works without it).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // One-time links carry their token in the fragment (#token=…), which never reaches a
  // server log or a Referer. Copy it into the form, hide the field, and drop it from the
  // address bar so it does not stay in the history.
  const params = new URLSearchParams(location.hash.slice(1));
  for (const input of document.querySelectorAll("input[data-from-fragment]")) {
    const value = params.get(input.dataset.fromFragment);
    if (value) {
      input.value = value;
      const wrap = input.closest(".token-field");
      if (wrap) wrap.hidden = true;
      history.replaceState(null, "", location.pathname + location.search);
    }
  }
  // Copy buttons (shown only when the clipboard can be used).
  for (const button of document.querySelectorAll("button.copy[data-copy]")) {
    if (!navigator.clipboard) continue;
    button.hidden = false;
    button.addEventListener("click", () => {
      const text = document.getElementById(button.dataset.copy).textContent.trim();
      navigator.clipboard.writeText(text).then(() => { button.textContent = button.dataset.done; });
    });
  }
});
