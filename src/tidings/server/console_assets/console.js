// The tidings console. One EventSource per page (/console/api/stream) carries the overview,
// health and the live tail; the rest is fetched on demand. Every value from the server goes
// into the DOM as text (textContent / text nodes), never as markup: a payload holding HTML
// or script is shown, not run.
"use strict";

(() => {
  const TAIL_ROWS = 200; // rows the tail keeps; older ones are dropped (bounded memory)
  const $ = (id) => document.getElementById(id);

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null) continue;
      if (key === "class") node.className = value;
      else if (key === "on") for (const [ev, fn] of Object.entries(value)) node.addEventListener(ev, fn);
      else node.setAttribute(key, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const fmt = {
    int: (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en")),
    rate: (n) => (n >= 100 ? n.toFixed(0) : n.toFixed(1)),
    pct: (f) => (f * 100).toFixed(f > 0 && f < 0.01 ? 2 : 1) + " %",
    ms: (s) => (s === null || s === undefined ? "–" : s < 1 ? (s * 1000).toFixed(s < 0.01 ? 2 : 1) + " ms" : s.toFixed(2) + " s"),
    json: (v) => JSON.stringify(v),
  };

  const state = {
    topic: ">", filter: "", paused: false, source: null, retryTimer: null, retryDelay: 1000,
    tail: [], received: 0, skipped: 0, sampledOut: 0, charts: new Map(), generation: null,
    deadTotal: null, selected: null, logAfter: 0, deadBefore: null, deadNext: null,
  };

  async function api(path, options) {
    const answer = await fetch(path, Object.assign({ credentials: "same-origin" }, options || {}));
    let body = null;
    try { body = await answer.json(); } catch (e) { body = null; }
    return { status: answer.status, ok: answer.ok, body };
  }

  // -- session and connection ---------------------------------------------------------------

  function show(id, visible) { $(id).hidden = !visible; }

  async function start() {
    let session;
    try { session = await api("/console/api/session"); } catch (e) { return disconnected(); }
    if (session.status === 401) {
      show("login", true); show("tabs", false); show("banner", false); setConnection("logged out", "unknown");
      for (const tab of document.querySelectorAll(".tab")) tab.hidden = true;
      return;
    }
    if (session.status === 403) {
      show("login", false); show("denied", true); show("banner", false);
      $("denied-reason").textContent = session.body ? session.body.detail : "this token may see nothing";
      setConnection("no access", "bad");
      return;
    }
    if (!session.ok) return disconnected();
    show("login", false); show("denied", false); show("tabs", true);
    $("caller").textContent = session.body.open ? "open gateway (no tokens)" : "token: " + session.body.caller;
    $("logout").hidden = session.body.open;
    route();
    connect();
  }

  function setConnection(text, kind) {
    const node = $("connection");
    node.textContent = text;
    node.className = "pill state-" + kind;
  }

  function connect() {
    if (state.source) state.source.close();
    clearTimeout(state.retryTimer);
    const query = new URLSearchParams({ topic: state.topic, filter: state.filter });
    const source = new EventSource("/console/api/stream?" + query.toString());
    state.source = source;
    setConnection("connecting…", "unknown"); // "live" again once this stream says hello
    source.addEventListener("hello", () => {
      state.retryDelay = 1000;
      show("banner", false);
      setConnection("live", "ok");
      $("tail-error").hidden = true;
      refreshDeadLetters();
      refreshConfig();
    });
    source.addEventListener("overview", (e) => renderOverview(JSON.parse(e.data)));
    source.addEventListener("health", (e) => renderHealth(JSON.parse(e.data)));
    source.addEventListener("tail", (e) => renderTail(JSON.parse(e.data)));
    source.onerror = () => {
      if (state.source !== source) return;
      disconnected();
      if (source.readyState === EventSource.CLOSED) {
        // refused (a bad filter, a token gone) or the server is down: check, then retry
        source.close();
        state.source = null;
        state.retryTimer = setTimeout(retry, state.retryDelay);
        state.retryDelay = Math.min(state.retryDelay * 2, 5000);
      }
    };
  }

  async function retry() {
    const query = new URLSearchParams({ topic: state.topic, filter: state.filter, limit: "1", after: "0" });
    let check;
    try { check = await api("/console/api/log?" + query.toString()); } catch (e) { check = null; }
    if (check && check.status === 400) {
      $("tail-error").textContent = check.body.detail;
      $("tail-error").hidden = false;
      state.filter = ""; state.topic = ">";
      return connect();
    }
    if (check && (check.status === 401 || check.status === 403)) return start();
    if (!check || !check.ok) {
      state.retryTimer = setTimeout(retry, state.retryDelay);
      state.retryDelay = Math.min(state.retryDelay * 2, 5000);
      return;
    }
    connect();
  }

  function disconnected() {
    show("banner", true);
    setConnection("disconnected", "bad");
  }

  // -- tabs ---------------------------------------------------------------------------------

  function route() {
    const name = (location.hash || "#overview").slice(1) || "overview";
    for (const tab of document.querySelectorAll(".tab")) tab.hidden = tab.id !== name;
    for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.tab === name);
    if (name === "dead-letters") refreshDeadLetters();
    if (name === "config") refreshConfig();
  }
  window.addEventListener("hashchange", route);

  // -- overview -----------------------------------------------------------------------------

  function chartFor(name, cell) {
    let chart = state.charts.get(name);
    if (chart || typeof uPlot === "undefined") return chart;
    chart = new uPlot({
      width: 300, height: 56, class: "chart", legend: { show: false }, cursor: { show: false },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max)] } },
      axes: [{ show: false }, { show: false }],
      series: [{}, { stroke: "#0b5cad", width: 1.5, fill: "rgba(11,92,173,.12)" }, { stroke: "#cf222e", width: 1.5 }],
    }, [[], [], []], cell);
    state.charts.set(name, chart);
    return chart;
  }

  function renderOverview(data) {
    if (state.generation !== data.generation) {
      state.generation = data.generation;
      $("generation").textContent = "generation " + data.generation;
      refreshConfig();
    }
    $("started-at").textContent = data.started_at.slice(0, 19).replace("T", " ") + " UTC";
    $("total-accepted").textContent = fmt.int(data.accepted);
    $("total-routed").textContent = fmt.int(data.routed);
    let rate = 0, dead = 0;
    const body = $("routes").tBodies[0];
    const seen = new Set();
    for (const route of data.routes) {
      rate += route.rate; dead += route.dead_letters;
      seen.add(route.name);
      let row = body.querySelector(`tr[data-route="${CSS.escape(route.name)}"]`);
      if (!row) {
        row = el("tr", { "data-route": route.name });
        for (let i = 0; i < 10; i++) row.append(el("td"));
        for (const i of [2, 3, 4, 5, 6, 7]) row.cells[i].className = "num";
        row.cells[0].append(el("b", {}, route.name));
        row.cells[6].dataset.testid = "route-dead";
        row.cells[7].dataset.testid = "route-events";
        body.append(row);
      }
      const cells = row.cells;
      cells[1].textContent = route.from.join(", ") + (route.when ? "  when " + route.when : "");
      cells[2].textContent = fmt.rate(route.rate);
      cells[3].textContent = fmt.pct(route.error_rate);
      cells[3].classList.toggle("bad", route.error_rate > 0);
      cells[4].textContent = fmt.ms(route.p50);
      cells[5].textContent = fmt.ms(route.p99);
      cells[6].textContent = fmt.int(route.dead_letters);
      cells[6].classList.toggle("bad", route.dead_letters > 0);
      cells[7].textContent = fmt.int(route.events);
      const variants = Object.entries(route.variants).map(([k, v]) => `${k}: ${fmt.int(v)}`).join("  ");
      cells[8].textContent = route.split ? (variants || route.split.variants.join(" / ")) : "";
      cells[8].className = "variants";
      const chart = chartFor(route.name, cells[9]);
      if (chart) {
        // from the first busy second (at least the last 30 s) up to now
        const events = route.series.events, errors = route.series.errors;
        const busy = events.findIndex((n) => n > 0);
        const from = Math.max(0, Math.min(busy < 0 ? events.length : busy, events.length - 30));
        const xs = events.slice(from).map((_, i) => data.now - data.window + 1 + from + i);
        chart.setData([xs, events.slice(from), errors.slice(from)]);
      }
    }
    for (const row of [...body.rows]) {
      if (!seen.has(row.dataset.route)) { state.charts.delete(row.dataset.route); row.remove(); }
    }
    $("total-rate").textContent = fmt.rate(rate);
    $("total-dead").textContent = fmt.int(dead);
    if (state.deadTotal !== dead) { state.deadTotal = dead; refreshDeadLetters(); }
  }

  // -- events -------------------------------------------------------------------------------

  function preview(event) {
    if (event.truncated) return `(${fmt.int(event.size)} bytes: open to read)`;
    const text = fmt.json(event.payload);
    return text.length > 160 ? text.slice(0, 160) + "…" : text;
  }

  function eventRow(event) {
    const row = el("tr", { "data-position": event.position },
      el("td", { class: "num" }, event.position),
      el("td", {}, event.time.slice(11, 23)),
      el("td", {}, event.topic),
      el("td", { title: event.id }, event.id.length > 14 ? event.id.slice(0, 14) + "…" : event.id),
      el("td", { class: "payload" }, preview(event)));
    row.addEventListener("click", () => showDetail(event, row));
    return row;
  }

  function renderTail(data) {
    state.received += data.events.length;
    state.skipped += data.skipped;
    state.sampledOut += data.sampled_out;
    $("tail-stats").textContent = `${fmt.int(state.received)} shown, ${fmt.int(state.skipped + state.sampledOut)} not shown (sampled under load), up to position ${fmt.int(data.position)}` + (state.paused ? " · paused" : "");
    if (state.paused) return;
    const body = $("tail").tBodies[0];
    const fragment = document.createDocumentFragment();
    for (let i = data.events.length - 1; i >= 0; i--) fragment.append(eventRow(data.events[i]));
    body.prepend(fragment);
    while (body.rows.length > TAIL_ROWS) body.deleteRow(-1);
  }

  function dl(pairs) {
    const list = el("dl");
    for (const [key, value] of pairs) list.append(el("dt", {}, key), el("dd", {}, value === null || value === undefined ? "–" : value));
    return list;
  }

  async function showDetail(event, row) {
    for (const old of document.querySelectorAll("tr.selected")) old.classList.remove("selected");
    if (row) row.classList.add("selected");
    if (event.truncated) {
      const full = await api("/console/api/event/" + event.position);
      if (full.ok) event = full.body;
    }
    const aside = $("detail");
    const trace = event.trace_id
      ? el("a", { href: "#events", "data-testid": "trace-link", on: { click: () => followTrace(event.trace_id) } }, event.trace_id)
      : null;
    const headers = el("table", { class: "grid" });
    for (const [k, v] of Object.entries(event.headers)) headers.append(el("tr", {}, el("td", {}, k), el("td", {}, v)));
    aside.replaceChildren(
      el("h3", {}, event.topic),
      dl([["position", event.position], ["id", event.id], ["time", event.time], ["HLC", event.hlc],
          ["key", event.key], ["source", event.source], ["trace id", trace]]),
      el("h4", {}, "headers"), Object.keys(event.headers).length ? headers : el("p", { class: "muted" }, "none"),
      el("h4", {}, "payload"),
      el("pre", { "data-testid": "detail-payload" }, JSON.stringify(event.payload, null, 2)));
  }

  function followTrace(traceId) {
    const form = $("log-form");
    form.elements.after.value = "0";
    form.elements.since.value = "";
    form.elements.topic.value = ">";
    form.elements.filter.value = `has(extensions.traceparent) && extensions.traceparent.contains("${traceId}")`;
    readLog(true);
  }

  $("tail-form").addEventListener("submit", (e) => {
    e.preventDefault();
    state.topic = e.target.elements.topic.value.trim() || ">";
    state.filter = e.target.elements.filter.value.trim();
    $("tail").tBodies[0].replaceChildren();
    state.received = state.skipped = state.sampledOut = 0;
    $("tail-error").hidden = true;
    connect();
  });
  $("pause").addEventListener("click", () => {
    state.paused = !state.paused;
    $("pause").textContent = state.paused ? "resume" : "pause";
  });

  async function readLog(fromStart) {
    const form = $("log-form");
    const query = new URLSearchParams({ limit: "50", topic: form.elements.topic.value.trim() || ">" });
    const filter = form.elements.filter.value.trim();
    if (filter) query.set("filter", filter);
    const since = form.elements.since.value.trim();
    if (since && fromStart) query.set("since", since);
    else query.set("after", fromStart ? (form.elements.after.value || "0") : String(state.logAfter));
    const answer = await api("/console/api/log?" + query.toString());
    const error = $("log-error");
    if (!answer.ok) {
      error.textContent = answer.body ? answer.body.detail : "the gateway did not answer";
      error.hidden = false;
      return;
    }
    error.hidden = true;
    state.logAfter = answer.body.next_after;
    $("log").tBodies[0].replaceChildren(...answer.body.events.map(eventRow));
  }
  $("log-form").addEventListener("submit", (e) => { e.preventDefault(); readLog(true); });
  $("log-next").addEventListener("click", () => readLog(false));

  // -- dead letters -------------------------------------------------------------------------

  let deadTimer = null;
  function refreshDeadLetters() {
    clearTimeout(deadTimer);
    deadTimer = setTimeout(loadDeadLetters, 200);
  }

  async function loadDeadLetters() {
    const showSettled = $("dead-settled").checked;
    const query = new URLSearchParams({ state: showSettled ? "all" : "open" });
    if (state.deadBefore !== null) query.set("before", String(state.deadBefore));
    const answer = await api("/console/api/dead-letters?" + query);
    if (!answer.ok) return;
    const letters = answer.body.dead_letters;
    const counts = answer.body.counts;
    state.deadNext = answer.body.next_before;
    $("dead-count").textContent = counts.open ? String(counts.open) : "";
    $("dead-older").disabled = state.deadNext === null;
    $("dead-newest").disabled = state.deadBefore === null;
    const shown = letters.length ? `positions ${letters[letters.length - 1].position}–${letters[0].position}` : "none here";
    $("dead-page").textContent = `${shown}; in the log: ${fmt.int(counts.open)} open, ${fmt.int(counts.redriven)} redriven, ${fmt.int(counts.discarded)} discarded`;
    const body = $("dead").tBodies[0];
    const checked = new Set([...body.querySelectorAll("input:checked")].map((box) => box.value));
    body.replaceChildren(...letters.map((letter) => {
      const box = el("input", { type: "checkbox", value: letter.position });
      if (letter.state !== "open") box.disabled = true;
      else box.checked = checked.has(String(letter.position));
      const event = letter.event || {};
      const row = el("tr", { "data-position": letter.position, "data-state": letter.state },
        el("td", {}, box),
        el("td", { class: "num" }, letter.position),
        el("td", {}, letter.time.slice(11, 19)),
        el("td", {}, letter.route),
        el("td", {}, letter.target),
        el("td", { class: "num" }, letter.attempts),
        el("td", { class: "bad" }, letter.error || (letter.status ? `HTTP ${letter.status}` : "")),
        el("td", { class: "payload", title: event.id || "" }, `${event.type || ""} ${event.id || ""}`),
        el("td", { "data-testid": "dead-state" }, letter.state + (letter.settled && letter.settled.by ? ` by ${letter.settled.by}` : "")));
      return row;
    }));
  }

  async function settle(action) {
    const positions = [...$("dead").tBodies[0].querySelectorAll("input:checked")].map((box) => Number(box.value));
    const messages = $("dead-messages");
    if (!positions.length) {
      messages.replaceChildren(el("li", { class: "fail" }, "select one or more dead letters first"));
      return;
    }
    const answer = await api("/console/api/dead-letters/" + action, {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ positions }),
    });
    const results = answer.body && answer.body.results ? answer.body.results : [{ ok: false, position: "", message: answer.body ? answer.body.detail : "no answer" }];
    messages.replaceChildren(...results.map((r) => el("li", { class: r.ok ? "ok" : "fail" }, `${r.position}: ${r.message}`)));
    $("dead-all").checked = false;
    loadDeadLetters();
  }
  $("redrive").addEventListener("click", () => settle("redrive"));
  $("discard").addEventListener("click", () => settle("discard"));
  $("dead-settled").addEventListener("change", () => { state.deadBefore = null; loadDeadLetters(); });
  $("dead-older").addEventListener("click", () => { if (state.deadNext !== null) { state.deadBefore = state.deadNext; loadDeadLetters(); } });
  $("dead-newest").addEventListener("click", () => { state.deadBefore = null; loadDeadLetters(); });
  $("dead-all").addEventListener("change", (e) => {
    for (const box of $("dead").tBodies[0].querySelectorAll("input:not(:disabled)")) box.checked = e.target.checked;
  });

  // -- config -------------------------------------------------------------------------------

  async function refreshConfig() {
    const answer = await api("/console/api/config");
    if (!answer.ok) return;
    const config = answer.body;
    $("cfg-generation").textContent = String(config.generation) + (config.previous_generation ? ` (previous: ${config.previous_generation})` : "");
    $("cfg-loaded").textContent = config.loaded_at;
    $("cfg-sources").textContent = config.sources.join(", ") || "embedded default";
    $("cfg-reloads").textContent = Object.entries(config.reloads).map(([k, v]) => `${k}: ${v}`).join(", ") || "none";
    $("cfg-error").textContent = config.last_error ? `${config.last_error} (at ${config.last_error_at})` : "none";
    const diff = $("cfg-diff");
    if (!config.diff.length) diff.replaceChildren("no other config since the gateway started");
    else diff.replaceChildren(...config.diff.map((line) => el("span", {
      class: line.startsWith("@@") ? "hunk" : line.startsWith("+") ? "add" : line.startsWith("-") ? "del" : "",
    }, line + "\n")));
    $("cfg-live").textContent = config.text;
  }

  // -- health -------------------------------------------------------------------------------

  function card(id, status, lines) {
    const node = $(id);
    node.className = "card " + status;
    node.querySelector("p").textContent = lines.filter(Boolean).join("\n");
  }

  function renderHealth(data) {
    card("h-store", data.store.state, [data.store.state, data.store.url, data.store.error,
      data.store.last_position !== undefined ? `last position ${fmt.int(data.store.last_position)}` : ""]);
    const tr = data.transport;
    card("h-transport", tr.state === "none" ? "" : tr.state,
      tr.state === "none" ? ["none (one process)", tr.url] : [
        tr.connection || tr.state, tr.server ? `server ${tr.server}` : tr.url,
        tr.pending !== undefined ? `awaiting ack ${fmt.int(tr.pending)}` : "",
        tr.outbox ? `outbox ${fmt.int(tr.outbox.pending)} (forwarded ${fmt.int(tr.outbox.forwarded)})` : "",
        tr.disconnects ? `disconnects ${fmt.int(tr.disconnects)}` : "",
        tr.last_error ? `last error: ${tr.last_error} (at ${tr.last_error_at})` : ""]);
    card("h-routing", data.routing.state, [data.routing.ready ? "following the log" : "not ready",
      `routed up to ${fmt.int(data.routing.routed_position)}`, data.routing.lag === null ? "" : `lag ${fmt.int(data.routing.lag)}`]);
    const failing = data.store.state !== "ok" || data.routing.state !== "ok" || tr.state === "failing" || data.targets.some((t) => t.state === "failing");
    $("health-dot").className = "dot " + (failing ? "bad" : "ok");
    $("targets").tBodies[0].replaceChildren(...data.targets.map((t) => el("tr", { "data-target": t.address },
      el("td", { class: "state " + t.state }, t.state),
      el("td", {}, t.address),
      el("td", {}, t.route || ""),
      el("td", { class: "num" }, fmt.int(t.delivered)),
      el("td", { class: "num" }, fmt.int(t.failed)),
      el("td", { class: "bad" }, t.last_error || ""))));
  }

  start();
})();
