// callback-ari status page: polls /api/v1/status every 2 s with the token as a Bearer header.
"use strict";

(function () {
  const TOKEN_KEY = "callback-ari-token";
  const REFRESH_MS = 2000;
  let timer = null;

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
      ]),
      5, "No callbacks are waiting.",
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
    if (token()) poll(); else showForm("");
  });
})();
