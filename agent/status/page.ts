/**
 * The status page itself: one HTML document with its style, and one script, served by the
 * agent's status port (no build step, no framework, nothing fetched from elsewhere: it works
 * offline). The script follows `/events` (Server-Sent Events; the browser reconnects by itself)
 * and writes every value with `textContent`, never as markup: SPIFFE IDs and request paths come
 * from peers, and the page must not run what a caller put in a path.
 *
 * @module
 */

/** The page's HTML (`GET /`). */
export const STATUS_PAGE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>meshauth node status</title>
<style>
  :root { color-scheme: light dark; --ok: #1a7f37; --deny: #cf222e; --warn: #bf8700; --muted: #6e7781;
    --line: rgba(127,127,127,.25); --bar: rgba(127,127,127,.18); }
  body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; padding: 20px 28px; }
  h1 { font-size: 19px; margin: 0 0 2px; }
  h2 { font-size: 15px; margin: 22px 0 8px; }
  .sub { color: var(--muted); margin: 0; }
  .mono, td.id, td.serial { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12.5px; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; padding: 5px 10px 5px 0; border-bottom: 1px solid var(--line); vertical-align: middle; }
  th { font-weight: 600; color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .03em; }
  .bar { position: relative; height: 10px; min-width: 180px; background: var(--bar); border-radius: 5px; overflow: hidden; }
  .bar > span { position: absolute; left: 0; top: 0; bottom: 0; background: var(--ok); border-radius: 5px; }
  .bar.low > span { background: var(--warn); } .bar.gone > span { background: var(--deny); }
  .left { color: var(--muted); font-size: 12px; white-space: nowrap; }
  .badge { display: inline-block; min-width: 52px; text-align: center; padding: 1px 6px; border-radius: 4px;
    font-size: 11.5px; font-weight: 700; color: #fff; background: var(--muted); }
  .badge.allow { background: var(--ok); } .badge.deny, .badge.failed { background: var(--deny); }
  .badge.rotated, .badge.issued { background: #0969da; } .badge.revoked { background: var(--warn); }
  .badge.bundle { background: #8250df; }
  tr.decision.deny > td { background: rgba(207,34,46,.07); }
  .fresh { animation: fresh 2s ease-out; }
  @keyframes fresh { from { background: rgba(9,105,218,.18); } to { background: transparent; } }
  #state { float: right; font-size: 12px; color: var(--muted); }
  #state.live::before { content: "\\25CF "; color: var(--ok); }
  #events td { font-size: 13px; }
  .why { color: var(--muted); }
</style>
</head>
<body>
<span id="state">connecting</span>
<h1>meshauth node status</h1>
<p class="sub"><span id="node" class="mono"></span> &middot; trust domain <span id="td" class="mono"></span>
  &middot; <span id="roots"></span> in the trust bundle</p>
<h2>Workloads</h2>
<table id="workloads">
  <thead><tr><th>Workload</th><th>SPIFFE ID</th><th>Serial</th><th>Time left</th><th></th><th>Rotations</th></tr></thead>
  <tbody></tbody>
</table>
<h2>Proxy listeners</h2>
<table id="listeners">
  <thead><tr><th>Listener</th><th>Direction</th><th>Address</th><th>Workload</th></tr></thead>
  <tbody></tbody>
</table>
<h2>Authorization decisions and events <span class="sub" id="dropped"></span></h2>
<table id="events">
  <thead><tr><th>Time</th><th></th><th>Where</th><th>Peer (caller, or server for outbound)</th><th>Why</th></tr></thead>
  <tbody></tbody>
</table>
<script src="/status.js"></script>
</body>
</html>
`;

/** The page's script (`GET /status.js`). */
export const STATUS_PAGE_SCRIPT = `"use strict";
(() => {
  const MAX_ROWS = 250; // the snapshot's 200 decisions and 50 other events
  let workloads = [];
  let clockSkewMs = 0;
  const $ = (id) => document.getElementById(id);
  const el = (tag, text, className) => {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (className) node.className = className;
    return node;
  };
  const row = (cells) => {
    const tr = document.createElement("tr");
    for (const cell of cells) tr.append(cell instanceof Node ? cell : el("td", cell));
    return tr;
  };
  const td = (text, className) => el("td", text, className);
  const span = (text, className) => el("span", text, className);
  const duration = (ms) => {
    if (ms <= 0) return "expired";
    const s = Math.floor(ms / 1000);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    return h ? h + "h " + m + "m" : m ? m + "m " + String(r).padStart(2, "0") + "s" : r + "s";
  };
  const clock = (iso) => new Date(iso).toLocaleTimeString([], { hour12: false });

  function renderWorkloads(fresh) {
    const body = $("workloads").tBodies[0];
    body.replaceChildren(...workloads.map((w) => {
      const bar = el("div", undefined, "bar");
      bar.append(span());
      bar.dataset.notBefore = w.notBefore || "";
      bar.dataset.notAfter = w.notAfter || "";
      const serial = td(w.serialNumber ? w.serialNumber.slice(0, 16) + (w.serialNumber.length > 16 ? "\\u2026" : "") : "none yet", "serial");
      serial.title = w.serialNumber || "";
      const cell = td(); cell.append(bar);
      const left = td("", "left");
      const tr = row([td(w.name), td(w.spiffeId, "id"), serial, cell, left,
        td(w.rotations + (w.lastRotation ? " (last " + clock(w.lastRotation) + ")" : ""))]);
      tr.dataset.workload = w.name;
      if (fresh && fresh.has(w.name)) tr.className = "fresh";
      return tr;
    }));
    tick();
  }

  function tick() {
    const now = Date.now() + clockSkewMs;
    for (const bar of document.querySelectorAll("#workloads .bar")) {
      const from = Date.parse(bar.dataset.notBefore), to = Date.parse(bar.dataset.notAfter);
      const left = bar.closest("tr").querySelector(".left");
      if (!(to > from)) { bar.firstChild.style.width = "0"; left.textContent = ""; continue; }
      const fraction = Math.max(0, Math.min(1, (to - now) / (to - from)));
      bar.firstChild.style.width = (fraction * 100).toFixed(2) + "%";
      bar.className = "bar" + (fraction === 0 ? " gone" : fraction < 0.2 ? " low" : "");
      left.textContent = duration(to - now) + " left";
    }
  }

  function renderListeners(listeners) {
    $("listeners").tBodies[0].replaceChildren(...listeners.map((l) =>
      row([td(l.name), td(l.direction), td(l.address, "mono"), td(l.workload)])
    ));
  }

  function eventRow(event) {
    const time = td(clock(event.time), "mono");
    if (event.kind === "decision") {
      const r = event.record;
      const badge = td(); badge.append(span(r.decision === "allow" ? "ALLOW" : "DENY", "badge " + r.decision));
      const where = r.listener + " (" + r.direction + ")" + (r.method ? " " + r.method + " " + r.path : "");
      let why = r.reason.replaceAll("-", " ");
      if (r.policy) why = "policy " + r.policy + (r.ruleIndex !== undefined ? ", rule " + r.ruleIndex : "");
      if (r.error) why += ": " + r.error.code;
      const tr = row([time, badge, td(where), td(r.peerId || (r.transport === "plaintext" ? "plain text" : "unverified"), "id"), td(why, "why")]);
      tr.className = "decision " + r.decision;
      return tr;
    }
    const badge = td(); badge.append(span(event.kind.toUpperCase(), "badge " + event.kind));
    if (event.kind === "bundle") {
      return row([time, badge, td("trust bundle"), td(event.roots + " root" + (event.roots === 1 ? "" : "s")), td(event.sequence !== undefined ? "sequence " + event.sequence : "", "why")]);
    }
    if (event.kind === "removed") return row([time, badge, td(event.workload), td(""), td("")]);
    if (event.kind === "failed") return row([time, badge, td(event.workload), td(event.cause), td(event.message, "why")]);
    const why = event.kind === "rotated" ? "serial " + event.previousSerialNumber.slice(0, 12) + "\\u2026 \\u2192 " + event.serialNumber.slice(0, 12) + "\\u2026"
      : "serial " + event.serialNumber.slice(0, 12) + "\\u2026";
    return row([time, badge, td(event.workload), td(event.spiffeId, "id"), td(why, "why")]);
  }

  function addEvents(events, isFresh) {
    const body = $("events").tBodies[0];
    const rows = events.slice(-MAX_ROWS).reverse().map(eventRow);
    if (isFresh) for (const r of rows) r.classList.add("fresh");
    body.prepend(...rows);
    while (body.rows.length > MAX_ROWS) body.deleteRow(body.rows.length - 1);
  }

  function dropped(count) {
    $("dropped").textContent = count ? "(" + count + " not shown: a burst went past the page's limit)" : "";
  }

  function connect() {
    const source = new EventSource("/events");
    source.addEventListener("open", () => { $("state").textContent = "live"; $("state").className = "live"; });
    source.addEventListener("error", () => { $("state").textContent = "reconnecting"; $("state").className = ""; });
    source.addEventListener("snapshot", (e) => {
      const s = JSON.parse(e.data);
      clockSkewMs = Date.parse(s.now) - Date.now();
      $("node").textContent = s.node;
      $("td").textContent = s.trustDomain;
      $("roots").textContent = s.roots + " root" + (s.roots === 1 ? "" : "s");
      workloads = s.workloads;
      renderWorkloads();
      renderListeners(s.listeners);
      $("events").tBodies[0].replaceChildren();
      addEvents(s.events, false);
      dropped(s.eventsNotSent);
    });
    source.addEventListener("workloads", (e) => {
      const data = JSON.parse(e.data);
      clockSkewMs = Date.parse(data.now) - Date.now();
      const before = new Map(workloads.map((w) => [w.name, w.serialNumber]));
      workloads = data.workloads;
      renderWorkloads(new Set(workloads.filter((w) => before.get(w.name) !== w.serialNumber).map((w) => w.name)));
    });
    source.addEventListener("events", (e) => {
      const data = JSON.parse(e.data);
      addEvents(data.events, true);
      dropped(data.eventsNotSent);
      const bundle = data.events.filter((ev) => ev.kind === "bundle").pop();
      if (bundle) $("roots").textContent = bundle.roots + " root" + (bundle.roots === 1 ? "" : "s");
    });
  }

  setInterval(tick, 250);
  connect();
})();
`;
