// Simwire dashboard: live panels and the project switcher. No inline script (the CSP forbids it).
"use strict";

const LIVE_INTERVAL_MS = 2000;

// Every element with data-live="<url>" is refreshed from that URL (an HTML fragment) every 2 s.
function startLivePanels() {
  for (const panel of document.querySelectorAll("[data-live]")) {
    const url = panel.getAttribute("data-live");
    let busy = false;
    const refresh = async () => {
      if (busy || document.hidden) return;
      busy = true;
      try {
        const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } });
        // A redirect means the sign-in ended: leave the panel as it is.
        if (response.ok && !response.redirected) {
          panel.innerHTML = await response.text();
          panel.setAttribute("data-refreshed", String(Date.now()));
        }
      } catch (error) {
        // The server is away for a moment; the next tick tries again.
      } finally {
        busy = false;
      }
    };
    window.setInterval(refresh, LIVE_INTERVAL_MS);
  }
}

// A select with data-autosubmit submits its form when changed (its Go button still works).
function startAutosubmit() {
  for (const select of document.querySelectorAll("select[data-autosubmit]")) {
    select.addEventListener("change", () => select.form && select.form.submit());
  }
}

document.addEventListener("DOMContentLoaded", () => {
  startLivePanels();
  startAutosubmit();
});
