// The dashboard page: polls /api/overview and renders it; retry and forget send the token.
"use strict";

const POLL_MS = 2000;
const TOKEN_KEY = "mqtt-jobs-dashboard-token";
let actionsOn = false;

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "-" : String(text);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function age(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  if (seconds < 120) return seconds.toFixed(1) + " s";
  if (seconds < 7200) return (seconds / 60).toFixed(1) + " min";
  return (seconds / 3600).toFixed(1) + " h";
}

function sparkline(values) {
  const ns = "http://www.w3.org/2000/svg";
  const width = 160, height = 24;
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  const line = document.createElementNS(ns, "polyline");
  const data = values.length ? values : [0];
  const top = Math.max(...data, 1e-9);
  const step = data.length > 1 ? width / (data.length - 1) : 0;
  line.setAttribute("points", data.map((v, i) =>
    `${(i * step).toFixed(1)},${(height - 2 - (v / top) * (height - 4)).toFixed(1)}`).join(" "));
  svg.appendChild(line);
  const title = document.createElementNS(ns, "title");
  title.textContent = `now ${data[data.length - 1].toFixed(2)} jobs/s, peak ${top.toFixed(2)}`;
  svg.appendChild(title);
  return svg;
}

function fill(tableId, rows, render) {
  const body = document.querySelector(`#${tableId} tbody`);
  body.replaceChildren();
  for (const item of rows) {
    const tr = document.createElement("tr");
    render(tr, item);
    body.appendChild(tr);
  }
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = cell(tr, "none", "muted");
    td.colSpan = document.querySelectorAll(`#${tableId} thead th`).length;
    body.appendChild(tr);
  }
}

function render(data) {
  actionsOn = data.actions;
  document.getElementById("token-form").hidden = !data.actions;
  document.getElementById("readonly").hidden = data.actions;
  const errors = Object.entries(data.errors || {}).map(([k, v]) => `${k}: ${v}`);
  const errorLine = document.getElementById("errors");
  errorLine.hidden = !errors.length;
  errorLine.textContent = errors.join("; ");

  fill("queues", data.queues, (tr, q) => {
    tr.dataset.queue = `${q.connection}/${q.queue}`;
    cell(tr, q.connection);
    cell(tr, q.queue);
    cell(tr, q.pending, "num pending");
    cell(tr, q.delayed, "num delayed");
    cell(tr, q.reserved, "num reserved");
    cell(tr, q.failed, "num failed-count" + (q.failed ? " nonzero" : ""));
    cell(tr, age(q.oldest_pending_age), "num");
    const td = cell(tr, "");
    td.appendChild(sparkline(data.throughput[`${q.connection}/${q.queue}`] || []));
  });

  document.getElementById("failed-count").textContent = `(${data.failed.length} shown)`;
  fill("failed", data.failed, (tr, f) => {
    tr.dataset.id = f.id;
    cell(tr, f.id, "id");
    cell(tr, f.job);
    cell(tr, `${f.connection}/${f.queue}`);
    cell(tr, f.failed_at);
    cell(tr, f.exception, "exception");
    const td = cell(tr, "");
    for (const [label, action] of [["show", "show"], ["retry", "retry"], ["forget", "forget"]]) {
      const button = document.createElement("button");
      button.textContent = label;
      button.className = action;
      button.disabled = action !== "show" && !(actionsOn && token());
      if (button.disabled) button.title = actionsOn ? "enter the token first" : "read-only";
      button.addEventListener("click", () => act(action, f.id));
      td.appendChild(button);
    }
  });

  fill("batches", data.batches || [], (tr, b) => {
    tr.dataset.id = b.id;
    cell(tr, b.id, "id");
    cell(tr, b.name);
    cell(tr, b.connection);
    cell(tr, b.total, "num total");
    cell(tr, b.pending, "num pending");
    cell(tr, b.done, "num done");
    cell(tr, b.failed, "num failed-count" + (b.failed ? " nonzero" : ""));
    const bar = document.createElement("progress");
    bar.max = b.total;
    bar.value = b.total - b.pending;
    cell(tr, "").appendChild(bar);
    cell(tr, b.finished_at ? new Date(b.finished_at * 1000).toISOString() : "running", "finished");
  });

  fill("workers", data.workers, (tr, w) => {
    cell(tr, w.name);
    cell(tr, w.host);
    cell(tr, w.pid, "num");
    cell(tr, w.connection);
    cell(tr, (w.queues || []).join(", "));
    const current = w.current;
    cell(tr, current ? `${current.job || "?"} ${current.id} (${current.queue})` : "idle", "current");
    const done = Object.values(w.processed || {}).reduce((a, b) => a + b, 0);
    cell(tr, done, "num");
  });

  fill("routes", data.routes, (tr, r) => {
    cell(tr, r.pattern);
    cell(tr, r.subscription);
    cell(tr, r.qos, "num");
    cell(tr, r.handler);
    cell(tr, (r.middleware || []).join(" → ") || "-");
  });
  document.getElementById("status").textContent =
    `updated ${new Date(data.now * 1000).toLocaleTimeString()}`;
}

async function act(action, id) {
  const result = document.getElementById("action-result");
  const detail = document.getElementById("failed-detail");
  if (action === "show") {
    const response = await fetch(`/api/failed/${encodeURIComponent(id)}`);
    const body = await response.json();
    detail.hidden = false;
    detail.textContent = response.ok
      ? `${body.job} ${body.id} on ${body.connection}/${body.queue}, failed at ${body.failed_at}\n\n` +
        `${body.exception}\n\npayload:\n${JSON.stringify(body.payload, null, 2)}`
      : body.error;
    return;
  }
  const response = await fetch(`/api/failed/${encodeURIComponent(id)}/${action}`, {
    method: "POST",
    headers: { "Authorization": `Bearer ${token()}` },
  });
  const body = await response.json();
  result.textContent = response.ok
    ? (action === "retry" ? `retried ${id} as job ${body.job_id}` : `forgot ${id}`)
    : `${action} refused: ${body.error}`;
  result.className = response.ok ? "muted" : "error";
  refresh();
}

async function refresh() {
  try {
    const response = await fetch("/api/overview");
    render(await response.json());
  } catch (error) {
    document.getElementById("status").textContent = `cannot reach the dashboard: ${error}`;
  }
}

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value);
  document.getElementById("token").value = "";
  document.getElementById("action-result").textContent = "token set for this tab";
  refresh();
});

refresh();
setInterval(refresh, POLL_MS);
