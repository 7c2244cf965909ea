// Simwire dashboard: live panels. No inline script (the CSP forbids it). The project switcher
// is a plain form with a Go button: a select that navigated on change would move a keyboard
// user away at the first arrow key.
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
          const html = await response.text();
          // A keyboard user's place survives the refresh: focus goes back to the same link.
          const active = document.activeElement;
          const focusedHref = active && panel.contains(active) ? active.getAttribute("href") : null;
          panel.innerHTML = html;
          if (focusedHref) {
            const again = panel.querySelector(`a[href="${CSS.escape(focusedHref)}"]`);
            if (again) again.focus();
          }
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

document.addEventListener("DOMContentLoaded", () => {
  startLivePanels();
});
