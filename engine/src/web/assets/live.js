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

// --- A run's page and a step's logs (web/run.rs, web/step.rs) ---
// The server says what changed, already decided (a group's state and counts) or rendered (log
// lines as HTML); this only puts it in place, and stops when the run or step ends.
(function () {
  window.weir = window.weir || {};
  weir.onload = weir.onload || [];
  const ICONS = { succeeded: "✓", failed: "✗", running: "▶", leased: "◔", ready: "◌", pending: "○",
    queued: "○", cancelled: "⊘", skipped: "↷", cached: "♻" };

  function setNode(dag, key, state, detail) {
    const node = dag.querySelector('g[data-node="' + CSS.escape(key) + '"]');
    if (!node) return;
    node.setAttribute("class", "node st-" + state);
    node.dataset.state = state;
    const text = node.querySelector("text.state");
    if (text) text.textContent = (ICONS[state] || "?") + " " + state + (detail ? " · " + detail : "");
  }

  function liveRun(dag) {
    const es = new EventSource(dag.dataset.liveRun);
    es.addEventListener("step", (m) => {
      const ev = JSON.parse(m.data);
      if (ev.group) setNode(dag, ev.group.key, ev.group.state, ev.group.detail);
      else setNode(dag, ev.instance, ev.state, ev.attempt > 1 ? "attempt " + ev.attempt : "");
      const row = document.querySelector('#instances tr[data-instance="' + CSS.escape(ev.instance) + '"]');
      if (row) {
        weir.setBadge(row.querySelector("td.state"), ev.state);
        const a = row.querySelector("td.attempts");
        if (a && ev.attempt) a.textContent = String(ev.attempt);
        const msg = row.querySelector("td.message");
        if (msg && ev.message) msg.textContent = ev.message;
      }
    });
    es.addEventListener("run", (m) => weir.setBadge(document.getElementById("run-state"), JSON.parse(m.data).state));
    es.addEventListener("end", () => es.close());
  }

  function liveLogs(pre) {
    const es = new EventSource(pre.dataset.liveLogs);
    es.addEventListener("line", (m) => {
      const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.insertAdjacentHTML("beforeend", m.data + "\n");
      highlight();
      if (atEnd) pre.scrollTop = pre.scrollHeight;
    });
    es.addEventListener("end", () => es.close());
  }

  // Marks the text of the highlight box in the shown lines (a view aid; `?q=` filters).
  function highlight() {
    const box = document.getElementById("log-highlight"), pre = document.getElementById("logs");
    if (!box || !pre) return;
    const word = box.value.toLowerCase();
    for (const line of pre.querySelectorAll(".line")) {
      line.classList.toggle("hit", word !== "" && line.textContent.toLowerCase().includes(word));
    }
  }

  weir.onload.push(() => {
    const dag = document.querySelector("[data-live-run]");
    if (dag) liveRun(dag);
    const pre = document.querySelector("pre[data-live-logs]");
    if (pre) liveLogs(pre);
    const box = document.getElementById("log-highlight");
    if (box) box.addEventListener("input", highlight);
  });
})();
