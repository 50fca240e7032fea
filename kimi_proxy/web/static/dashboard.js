// kimi-proxy dashboard: one EventSource on /dashboard/events. A `snapshot` (on every
// (re)connection) replaces everything; `request` adds a finished request; `state` (each second)
// refreshes keys, streams in flight, charts and today's totals. No build step, no CDN.
"use strict";

const $ = (id) => document.getElementById(id);
const COLUMNS = [
  ["time", "Time"], ["session", "Session"], ["user", "User"], ["route", "Route"], ["target", "Family → provider/model"],
  ["key", "Key"], ["status", "Status"], ["waited_ms", "Wait ms"], ["failovers", "Failover"],
  ["ttft_ms", "TTFT ms"], ["tokens", "In / cached / out"], ["tokens_per_s", "Tok/s"], ["web_searches", "Searches"],
  ["cost_usd", "Cost $"],
];
const RECENT = 100;
const state = { recent: [], chart: [], charts: {}, points: 0 };

function text(value) { return value === null || value === undefined ? "" : String(value); }
function short(id) { return id ? String(id).slice(0, 8) : ""; }
function clock(epoch) { return epoch ? new Date(epoch * 1000).toLocaleTimeString() : ""; }
function money(x) { return x ? x.toFixed(4) : ""; }

function cell(row, name) {
  switch (name) {
    case "time": return clock(row.time);
    case "session": return short(row.session);
    case "target": return `${text(row.family)} → ${text(row.provider)}/${text(row.model)}`;
    case "tokens": return `${text(row.input_tokens)} / ${text(row.cached_tokens)} / ${text(row.output_tokens)}`;
    case "failovers": return row.failovers ? `⤳ ${row.failovers}` : "";
    case "status": return row.status ? (row.error ? `${row.status} ${row.error}` : String(row.status)) : "…";
    case "cost_usd": return money(row.cost_usd);
    case "web_searches": return row.web_searches ? String(row.web_searches) : "";
    default: return text(row[name]);
  }
}

function renderRow(row) {
  const tr = document.createElement("tr");
  tr.dataset.requestId = row.id;
  tr.dataset.provider = text(row.provider);
  if (row.status >= 400) tr.classList.add("error");
  for (const [name] of COLUMNS) {
    const td = document.createElement("td");
    td.textContent = cell(row, name);
    if (name === "failovers" && row.failovers) { td.classList.add("failover"); tr.classList.add("failed-over"); }
    if (["waited_ms", "ttft_ms", "tokens_per_s", "web_searches", "cost_usd"].includes(name)) td.classList.add("num");
    tr.appendChild(td);
  }
  return tr;
}

function header(table, columns) {
  const tr = document.createElement("tr");
  for (const [, title] of columns) { const th = document.createElement("th"); th.textContent = title; tr.appendChild(th); }
  table.tHead.replaceChildren(tr);
}

function renderRecent() {
  $("recent").tBodies[0].replaceChildren(...state.recent.slice().reverse().map(renderRow));
}

function renderRunning(rows) {
  $("running-count").textContent = rows.length;
  $("running").tBodies[0].replaceChildren(...rows.map(renderRow));
}

function bar(window) {
  const div = document.createElement("div");
  div.className = "bar";
  div.dataset.kind = window.kind;
  div.dataset.window = window.window;
  div.dataset.left = text(window.left);
  const per = window.window === "minute" ? "/min" : "/day";
  const left = window.left === null ? "?" : window.left.toLocaleString();
  const limit = window.limit === null ? "?" : window.limit.toLocaleString();
  const label = document.createElement("div");
  label.className = "label";
  label.innerHTML = `<span></span><span></span>`;
  label.children[0].textContent = `${window.kind} ${per}: ${left} of ${limit}${window.reported ? "" : " (counted)"}`;
  label.children[1].textContent = window.resets_in ? `resets in ${window.resets_in}s` : "";
  const track = document.createElement("div");
  track.className = "track";
  const fill = document.createElement("div");
  const share = window.limit ? Math.max(0, Math.min(1, (window.left ?? 0) / window.limit)) : 1;
  fill.className = "fill" + (share === 0 ? " empty" : share < 0.25 ? " low" : "");
  fill.style.width = `${(share * 100).toFixed(1)}%`;
  track.appendChild(fill);
  div.append(label, track);
  return div;
}

function renderKeys(keys, retired) {
  const cards = keys.map((k) => {
    const card = document.createElement("div");
    card.className = "key" + (k.disabled ? " disabled" : "");
    card.dataset.key = `${k.provider}/${k.key}`;
    const name = document.createElement("div");
    name.className = "name";
    name.textContent = `${k.provider} · ${k.key}`;
    card.appendChild(name);
    if (k.disabled) {
      const note = document.createElement("div"); note.className = "note"; note.textContent = `disabled: ${k.disabled}` + (k.recheck_in_s !== null && k.recheck_in_s !== undefined ? `, rechecking in ${Math.round(k.recheck_in_s)} s` : ""); card.appendChild(note);
    } else if (k.cooldown_s) {
      const note = document.createElement("div"); note.className = "note"; note.textContent = `cooling down ${k.cooldown_s}s: ${k.cooldown_reason}`; card.appendChild(note);
    }
    if (!k.windows.length) {
      const note = document.createElement("div"); note.className = "label"; note.textContent = "no limits reported yet"; card.appendChild(note);
    }
    for (const w of k.windows) card.appendChild(bar(w));
    return card;
  });
  $("keys").replaceChildren(...cards);
  $("retired").textContent = Object.entries(retired || {}).map(([c, why]) => `${c} retired: ${why}`).join("\n");
}

function renderToday(today) {
  for (const [id, totals] of [["sessions", today.sessions], ["users", today.users]]) {
    const table = $(id);
    header(table, [["", id === "sessions" ? "Session" : "User"], ["", "Requests"], ["", "In / cached / out"], ["", "Cost $"], ["", "Provider/model"]]);
    table.tBodies[0].replaceChildren(...Object.entries(totals).map(([name, t]) => {
      const tr = document.createElement("tr");
      tr.dataset.name = name;
      for (const value of [id === "sessions" ? short(name) : name, t.requests, `${t.input_tokens} / ${t.cached_tokens} / ${t.output_tokens}`, money(t.cost_usd), `${text(t.provider)}/${text(t.model)}`]) {
        const td = document.createElement("td"); td.textContent = text(value); tr.appendChild(td);
      }
      return tr;
    }));
  }
}

// -- charts -------------------------------------------------------------------------------------
const PALETTE = ["#6ea8fe", "#e0a84f", "#5fb878", "#e06c6c", "#b48ead", "#88c0d0"];

function series(points, pick) {
  const names = [...new Set(points.flatMap((p) => Object.keys(pick(p) || {})))].sort();
  return [names, names.map((n) => points.map((p) => (pick(p) || {})[n] ?? null))];
}

function drawChart(id, names, columns, xs) {
  const element = $(id);
  const width = Math.max(300, element.clientWidth || 400);
  const key = names.join("|");
  let chart = state.charts[id];
  if (!chart || chart.key !== key) {
    if (chart) chart.plot.destroy();
    const opts = {
      width, height: 150,
      scales: { x: { time: true, range: () => { const now = Date.now() / 1000; return [now - 3600, now + 60]; } } },
      axes: [{ stroke: "#7b8494", grid: { stroke: "#242833" } }, { stroke: "#7b8494", grid: { stroke: "#242833" } }],
      series: [{}, ...names.map((n, i) => ({ label: n, stroke: PALETTE[i % PALETTE.length], width: 1.5, spanGaps: true, points: { show: true, size: 4 } }))],
      legend: { show: true },
    };
    chart = state.charts[id] = { key, plot: new uPlot(opts, [xs, ...columns], element) };
  } else {
    chart.plot.setData([xs, ...columns]);
  }
  element.dataset.points = String(xs.length);
}

function renderCharts(points) {
  state.chart = points;
  const xs = points.map((p) => p.t);
  drawChart("chart-ttft", ["p50", "p95"], [points.map((p) => p.ttft_p50), points.map((p) => p.ttft_p95)], xs);
  drawChart("chart-speed", ["tokens/s"], [points.map((p) => p.tokens_per_s)], xs);
  drawChart("chart-status", ...series(points, (p) => p.statuses), xs);
  drawChart("chart-providers", ...series(points, (p) => p.tokens_by_provider), xs);
  state.points = points.reduce((n, p) => n + Object.values(p.statuses).reduce((a, b) => a + b, 0), 0);
  $("charts-section").dataset.requests = String(state.points);
}

function renderBudgets(budgets) {
  const box = $("budgets");
  box.replaceChildren();
  $("budgets-section").hidden = !budgets || budgets.length === 0;
  for (const b of budgets || []) {
    const share = b.limit_usd > 0 ? Math.min(1, b.spent_usd / b.limit_usd) : 0;
    const row = document.createElement("div"); row.className = "budget" + (share >= 0.9 ? " near" : "");
    row.dataset.who = b.who;
    const label = document.createElement("span"); label.className = "label";
    label.textContent = `${b.who} · ${b.budget}: $${b.spent_usd.toFixed(2)} of $${b.limit_usd.toFixed(2)}`;
    const bar = document.createElement("div"); bar.className = "bar";
    const fill = document.createElement("div"); fill.className = "fill"; fill.style.width = `${(share * 100).toFixed(1)}%`;
    bar.appendChild(fill); row.append(label, bar); box.appendChild(row);
  }
}

// -- the feed ------------------------------------------------------------------------------------
function applyState(data) {
  $("clock").textContent = clock(data.now);
  renderKeys(data.keys, data.retired);
  renderRunning(data.running);
  renderCharts(data.chart);
  renderToday(data.today);
  renderBudgets(data.budgets);
}

function connect() {
  const source = new EventSource("/dashboard/events");
  source.addEventListener("open", () => { $("connection").textContent = "live"; $("connection").className = "up"; });
  source.addEventListener("error", () => { $("connection").textContent = "reconnecting…"; $("connection").className = "down"; });
  source.addEventListener("snapshot", (e) => {
    const data = JSON.parse(e.data);
    state.recent = data.recent;
    renderRecent();
    applyState(data);
  });
  source.addEventListener("state", (e) => applyState(JSON.parse(e.data)));
  source.addEventListener("request", (e) => {
    const data = JSON.parse(e.data);
    state.recent.push(data.row);
    if (state.recent.length > RECENT) state.recent.shift();
    renderRecent();
  });
  window.kimiDashboard = { source, state };
}

header($("recent"), COLUMNS);
header($("running"), COLUMNS);
connect();
