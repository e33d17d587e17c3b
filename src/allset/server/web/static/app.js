// allset web interface. Progressive enhancement only: every page works without this
// file. No inline script anywhere (the Content-Security-Policy forbids it).
"use strict";
// Any form with data-confirm="question" asks before it is sent (Cancel sends nothing).
document.addEventListener("submit", (event) => {
  const form = event.target;
  const question = form instanceof HTMLFormElement ? form.dataset.confirm : undefined;
  if (question && !window.confirm(question)) event.preventDefault();
});
document.addEventListener("DOMContentLoaded", () => {
  // Relative times would go here; for now, show dates in the reader's own time zone.
  for (const el of document.querySelectorAll("time[datetime]")) {
    const when = new Date(el.getAttribute("datetime"));
    if (!Number.isNaN(when.getTime())) {
      el.textContent = when.toLocaleString(document.documentElement.lang, {
        dateStyle: "medium", timeStyle: "short",
      });
    }
  }
});
