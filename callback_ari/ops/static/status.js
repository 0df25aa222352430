// callback-ari status page: polls /api/v1/status every 2 s with the token as a Bearer header.
// Without a token it shows only health (/readyz, public): no numbers, no names.
"use strict";

(function () {
  const TOKEN_KEY = "callback-ari-token";
  const REFRESH_MS = 2000;
  const SVG = "http://www.w3.org/2000/svg"; // the SVG namespace name, not a request
  const COLORS = {
    holding: "#0969da", pending: "#8250df", hold_p90_s: "#bf3989",
    connected: "#1a7f37", busy: "#bc4c00", no_answer: "#9a6700", congestion: "#cf222e",
    rejected: "#a40e26", not_confirmed: "#6e7781", hangup: "#0550ae", error: "#82071e",
  };
  let timer = null;
  let healthTimer = null;

  const $ = (id) => document.getElementById(id);

  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }

  function say(text) {
    $("message").textContent = text;
  }

  function showForm(reason) {
    stop();
    $("dashboard").hidden = true;
    $("forget").hidden = true;
    $("token-form").hidden = false;
    say(reason || "");
    $("token").focus();
  }

  function stop() {
    if (timer !== null) {
      clearTimeout(timer);
      timer = null;
    }
  }

  function schedule() {
    stop();
    timer = setTimeout(poll, REFRESH_MS);
  }

  async function pollHealth() {
    if (healthTimer !== null) clearTimeout(healthTimer);
    let body = null;
    try {
      const response = await fetch("/readyz", { cache: "no-store", credentials: "omit" });
      body = await response.json();
    } catch (err) {
      body = null;
    }
    const state = $("health-state");
    const links = $("health-links");
    links.replaceChildren();
    if (!body || !body.checks) {
      state.textContent = "unreachable";
      state.className = "state down";
    } else {
      const ok = body.status === "ok";
      state.textContent = ok ? "ready" : "not ready";
      state.className = "state " + (ok ? "up" : "down");
      for (const name of Object.keys(body.checks)) {
        const up = Boolean(body.checks[name]);
        links.appendChild(text("span", name.toUpperCase() + (up ? " up" : " down"),
          "link " + (up ? "up" : "down")));
      }
    }
    healthTimer = setTimeout(pollHealth, REFRESH_MS);
  }

  async function poll() {
    const current = token();
    if (!current) {
      showForm("");
      return;
    }
    let response;
    try {
      response = await fetch("/api/v1/status", {
        headers: { Authorization: "Bearer " + current, Accept: "application/json" },
        cache: "no-store",
        credentials: "omit",
      });
    } catch (err) {
      say("Cannot reach the service; retrying.");
      schedule();
      return;
    }
    if (response.status === 404) {
      stop();
      $("dashboard").hidden = true;
      $("token-form").hidden = true;
      say("The figures are off on this server (no [http] token is set); health is shown above.");
      return;
    }
    if (response.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      showForm("The token was not accepted.");
      return;
    }
    if (!response.ok) {
      let detail = "HTTP " + response.status;
      try {
        const body = await response.json();
        if (body && body.error && body.error.message) detail = body.error.message;
      } catch (err) { /* not JSON */ }
      say("Status unavailable: " + detail + "; retrying.");
      schedule();
      return;
    }
    try {
      render(await response.json());
      say("");
    } catch (err) {
      say("Could not read the status: " + err);
    }
    schedule();
  }

  function text(tag, value, className) {
    const el = document.createElement(tag);
    el.textContent = value === null || value === undefined ? "" : String(value);
    if (className) el.className = className;
    return el;
  }

  function duration(seconds) {
    const s = Math.max(0, Math.round(seconds));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const rest = String(s % 60).padStart(2, "0");
    return h > 0 ? h + "h " + String(m).padStart(2, "0") + "m" : m + ":" + rest;
  }

  function when(iso, now) {
    if (!iso) return "now";
    const t = Date.parse(iso);
    if (Number.isNaN(t)) return iso;
    const delta = (t - now) / 1000;
    const clock = new Date(t).toLocaleTimeString();
    if (delta <= 0) return "due (" + clock + ")";
    return "in " + duration(delta) + " (" + clock + ")";
  }

  function fillRows(tbody, rows, columns, emptyText) {
    const body = document.createElement("tbody");
    if (rows.length === 0) {
      const tr = document.createElement("tr");
      const td = text("td", emptyText, "empty");
      td.colSpan = columns;
      tr.appendChild(td);
      body.appendChild(tr);
    }
    for (const cells of rows) {
      const tr = document.createElement("tr");
      for (const cell of cells) tr.appendChild(cell);
      body.appendChild(tr);
    }
    tbody.replaceWith(body);
  }

  function tile(node, cls, value) {
    node.querySelector(cls).textContent = value;
  }

  function percent(rate) {
    return rate === null || rate === undefined ? "–" : Math.round(rate * 100) + "%";
  }

  function svg(tag, attrs) {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
    return el;
  }

  function ago(ms) {
    const s = Math.round(ms / 1000);
    return s >= 120 ? "-" + Math.round(s / 60) + " min" : "-" + s + " s";
  }

  // One line chart: lines = [{name, values}], values aligned with at (epoch ms).
  function drawChart(figure, at, lines) {
    for (const el of figure.querySelectorAll("svg, .legend, .empty")) el.remove();
    const W = 300, H = 100, L = 26, B = 14, T = 6, R = 6;
    const values = lines.flatMap((l) => l.values.filter((v) => v !== null && v !== undefined));
    if (at.length === 0 || values.length === 0) {
      figure.appendChild(text("p", "No samples yet.", "empty"));
      figure.dataset.points = "0";
      return;
    }
    const t0 = at[0], t1 = at[at.length - 1];
    const span = Math.max(t1 - t0, 1);
    const top = Math.max(1, ...values);
    const x = (t) => L + ((t - t0) / span) * (W - L - R);
    const y = (v) => T + (1 - v / top) * (H - T - B);
    const root = svg("svg", { viewBox: "0 0 " + W + " " + H, role: "img",
      "aria-label": figure.querySelector("figcaption").textContent });
    root.appendChild(svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis" }));
    root.appendChild(svg("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }));
    const label = (s, attrs) => { const el = svg("text", attrs); el.textContent = s; return el; };
    root.appendChild(label(String(Math.round(top * 10) / 10), { x: 2, y: T + 8 }));
    root.appendChild(label("0", { x: 2, y: H - B }));
    root.appendChild(label(ago(t1 - t0), { x: L, y: H - 2 }));
    root.appendChild(label("now", { x: W - R - 18, y: H - 2 }));
    let points = 0;
    for (const line of lines) {
      const color = COLORS[line.name] || "#57606a";
      const coords = [];
      line.values.forEach((v, i) => {
        if (v === null || v === undefined) return;
        coords.push([x(at[i]), y(v)]);
      });
      if (coords.length > 1) {
        root.appendChild(svg("polyline", { points: coords.map((c) => c.join(",")).join(" "),
          fill: "none", stroke: color, "stroke-width": 2, class: "series series-" + line.name }));
      }
      for (const [cx, cy] of coords) {
        root.appendChild(svg("circle", { cx: cx, cy: cy, r: 2.5, fill: color, class: "point" }));
      }
      points += coords.length;
    }
    figure.appendChild(root);
    figure.dataset.points = String(points);
    if (lines.length > 1) {
      const legend = document.createElement("p");
      legend.className = "legend";
      legend.textContent = lines.map((l) => l.name.replace("_", " ")).join(" · ");
      figure.appendChild(legend);
    }
  }

  function renderTrend(node, trend) {
    const at = trend ? trend.at_ms : [];
    for (const figure of node.querySelectorAll(".chart")) {
      const key = figure.dataset.series;
      let lines;
      if (!trend) lines = [];
      else if (key === "attempts") {
        lines = Object.keys(trend.attempts).map((o) => ({ name: o, values: trend.attempts[o] }));
        if (lines.length === 0) lines = [{ name: "none", values: at.map(() => 0) }];
      } else lines = [{ name: key, values: trend[key] }];
      drawChart(figure, at, lines);
    }
  }

  function renderQueue(q, index, now) {
    const node = $("queue-template").content.firstElementChild.cloneNode(true);
    const headingId = "queue-" + index;
    node.dataset.queue = q.name;
    node.setAttribute("aria-labelledby", headingId);
    const heading = node.querySelector(".queue-name");
    heading.id = headingId;
    heading.textContent = "Queue " + q.name;
    node.querySelector(".ready-members").textContent = q.ready_members;
    node.querySelector(".callers-count").textContent = q.callers.length;
    node.querySelector(".pending-count").textContent = q.pending.length;
    node.querySelector(".in-flight").textContent = q.in_flight;
    node.querySelector(".reserved").textContent = (q.reserved || []).length
      ? (q.reserved || []).map((r) => r.member + " for " + r.callback_id).join(", ")
      : "none";
    node.querySelector(".preheld").textContent = (q.preheld || []).length
      ? (q.preheld || []).map((h) => h.member).join(", ")
      : "none";
    const today = q.today || {};
    tile(node, ".t-requested", today.requested ?? "–");
    tile(node, ".t-connected", today.connected ?? "–");
    tile(node, ".t-success", percent(today.success_rate));
    tile(node, ".t-expired", today.expired ?? "–");
    tile(node, ".t-median",
      today.connect_p50_s === null || today.connect_p50_s === undefined
        ? "–" : duration(today.connect_p50_s));
    const longest = Math.max(0, ...q.callers.map((c) => c.hold_s));
    tile(node, ".t-longest", q.callers.length ? duration(longest) : "nobody");
    renderTrend(node, q.trend);
    fillRows(
      node.querySelector(".callers tbody"),
      q.callers.map((c) => [
        text("td", c.position), text("td", c.caller), text("td", c.channel),
        text("td", duration(c.hold_s)),
      ]),
      4, "Nobody is holding.",
    );
    fillRows(
      node.querySelector(".pending tbody"),
      q.pending.map((p) => [
        text("td", p.id), text("td", p.number), text("td", p.state.replace("_", " ")),
        text("td", p.attempts), text("td", when(p.next_attempt_at, now)),
        text("td", (p.reason || "-") + (p.recording ? " + message" : "")),
        text("td", p.origin),
      ]),
      7, "No callbacks are waiting.",
    );
    fillRows(
      node.querySelector(".outcomes tbody"),
      q.last_outcomes.map((o) => [
        text("td", o.id),
        text("td", o.outcome + (o.detail ? " (" + o.detail.replace("_", " ") + ")" : ""),
          "outcome-" + o.outcome),
        text("td", new Date(o.at).toLocaleString()),
      ]),
      3, "No outcomes yet.",
    );
    return node;
  }

  function render(doc) {
    const now = Date.now();
    $("token-form").hidden = true;
    $("dashboard").hidden = false;
    $("forget").hidden = false;
    $("instance").textContent = "Instance " + doc.instance;
    const generated = $("generated-at");
    generated.dateTime = doc.generated_at;
    generated.textContent = new Date(doc.generated_at).toLocaleTimeString();
    const links = $("links");
    links.replaceChildren();
    for (const name of Object.keys(doc.links)) {
      const up = Boolean(doc.links[name]);
      links.appendChild(text("span", name.toUpperCase() + (up ? " up" : " down"),
        "link " + (up ? "up" : "down")));
    }
    const queues = doc.queues.map((q, i) => renderQueue(q, i, now));
    $("queues").replaceChildren(...queues);
    $("no-queues").hidden = queues.length > 0;
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const value = $("token").value.trim();
      $("token").value = "";
      if (!value) return;
      sessionStorage.setItem(TOKEN_KEY, value);
      $("token-form").hidden = true;
      say("Loading…");
      poll();
    });
    $("forget").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      showForm("Token forgotten.");
    });
    pollHealth();
    if (token()) poll(); else showForm("");
  });
})();
