// weir web UI: live updates. Every page reads without this script; it only keeps what is
// shown current, over Server-Sent Events (EventSource reconnects by itself).
"use strict";
(function () {
  const ICONS = { succeeded: "✓", failed: "✗", running: "▶", leased: "◔", ready: "◌", pending: "○",
    queued: "○", cancelled: "⊘", skipped: "↷", cached: "♻" };
  const csrf = () => (document.querySelector('meta[name="csrf"]') || {}).content || "";
  window.weir = window.weir || {};
  weir.csrf = csrf;

  // Sets a badge (or any element holding one) to `state`.
  function setBadge(el, state) {
    if (!el || !state) return;
    const badge = el.classList.contains("badge") ? el : el.querySelector(".badge");
    if (!badge || badge.dataset.state === state) return;
    badge.className = "badge st-" + state;
    badge.dataset.state = state;
    const icon = badge.querySelector(".icon"), name = badge.querySelector(".name");
    if (icon) icon.textContent = ICONS[state] || "?";
    if (name) name.textContent = state;
  }
  weir.setBadge = setBadge;

  // The runs list: state changes in place; new runs announced.
  function liveRuns(table) {
    const notice = document.getElementById("new-runs");
    let fresh = 0;
    const es = new EventSource("/events");
    es.addEventListener("run", (m) => {
      const ev = JSON.parse(m.data);
      const row = table.querySelector('tr[data-run="' + CSS.escape(ev.run) + '"]');
      if (row) {
        setBadge(row.querySelector("td.state"), ev.state);
        const p = row.querySelector("td.progress");
        if (p && ev.total) p.textContent = ev.done + "/" + ev.total;
      } else if (notice && table.dataset.first === "true") {
        fresh += 1;
        notice.hidden = false;
        notice.querySelector(".count").textContent = String(fresh);
      }
    });
    es.addEventListener("reload", () => location.reload());
  }

  // A table refreshed in place every `data-refresh` seconds while the page is visible.
  function refreshing(el) {
    const every = Number(el.dataset.refresh) * 1000;
    setInterval(async () => {
      if (document.hidden) return;
      const r = await fetch(location.href, { headers: { accept: "text/html" } });
      if (!r.ok) return;
      const doc = new DOMParser().parseFromString(await r.text(), "text/html");
      const fresh = doc.getElementById(el.id);
      if (fresh) { el.replaceWith(fresh); el = fresh; localTimes(); }
    }, every);
  }

  // Times in the reader's zone (the page shows UTC without the script).
  function localTimes() {
    for (const t of document.querySelectorAll("time[datetime]")) {
      const d = new Date(t.getAttribute("datetime"));
      if (!isNaN(d)) { t.title = t.textContent; t.textContent = d.toLocaleString(); }
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    localTimes();
    const runs = document.querySelector("[data-live-runs]");
    if (runs) liveRuns(runs);
    for (const f of document.querySelectorAll("form[data-confirm]")) {
      f.addEventListener("submit", (e) => { if (!confirm(f.dataset.confirm)) e.preventDefault(); });
    }
    const refresh = document.querySelector("[data-refresh]");
    if (refresh) refreshing(refresh);
    for (const hook of weir.onload || []) hook();
  });
})();
