// The ops page: the snapshot the page came with, then one EventSource on /ops/stream: events
// and a snapshot a second. No framework.
"use strict";

(() => {
  const EVENTS_SHOWN = 200;
  const LIFECYCLE_SHOWN = 60;
  const REOPEN_MS = 3000; // after the server refused a stream (EventSource gives up on those)

  const $ = (id) => document.getElementById(id);
  // The log event names this page reads, from the server's trioshop/events.py (OPS_PAGE).
  const EVENT = JSON.parse(document.querySelector('meta[name="event-names"]').content);
  const { el } = window.trioshopDom; // dom.js
  const SVG = "http://www.w3.org/2000/svg";
  const number = new Intl.NumberFormat();
  const stream = {
    source: null, epoch: null, lastSeq: 0, lastId: null, connections: 0, received: 0,
    lost: 0, explained: false, actors: new Map(),
  };

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 60) return `${seconds < 10 ? seconds.toFixed(1) : Math.round(seconds)} s`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
    return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
  }

  // A short time (seconds in, may be null): µs, ms or s with three significant digits at most.
  function latency(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    const [value, unit] = seconds < 0.001 ? [seconds * 1e6, "µs"] : seconds < 1 ? [seconds * 1e3, "ms"] : [seconds, "s"];
    return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${unit}`;
  }

  const clock = (ts) => new Date(ts * 1000).toLocaleTimeString([], { hour12: false });

  function setConnection(state, text) {
    const conn = $("conn");
    conn.dataset.state = state;
    conn.textContent = text;
  }

  function note(text) {
    const notes = $("stream-notes");
    notes.prepend(el("p", { text }));
    while (notes.children.length > 3) notes.lastChild.remove();
  }

  function setCounter(id, value) {
    $(id).textContent = value === null || value === undefined ? "–" : value;
  }

  // -- the stream ---------------------------------------------------------------------------

  function open() {
    const url = stream.lastId ? `/ops/stream?last_event_id=${encodeURIComponent(stream.lastId)}` : "/ops/stream";
    const source = new EventSource(url);
    stream.source = source;
    source.addEventListener("hello", (message) => onHello(JSON.parse(message.data), message.lastEventId));
    source.addEventListener("log", (message) => onLog(JSON.parse(message.data), message.lastEventId));
    source.addEventListener("snapshot", (message) => onSnapshot(JSON.parse(message.data)));
    source.addEventListener("dropped", (message) => onDropped(JSON.parse(message.data)));
    source.addEventListener("gap", (message) => onGap(JSON.parse(message.data)));
    source.addEventListener("bye", () => setConnection("live", "Live (renewing the stream)"));
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) {
        // Refused (401/403/503) or not a stream: EventSource will not retry by itself.
        setConnection("offline", "Disconnected; retrying…");
        source.close();
        setTimeout(() => { if (stream.source === source) open(); }, REOPEN_MS);
      } else {
        setConnection("reconnecting", "Reconnecting…");
      }
    });
  }

  function onHello(hello, eventId) {
    stream.connections += 1;
    $("connections").textContent = String(stream.connections);
    $("node").textContent = hello.node || location.host;
    if (hello.epoch !== stream.epoch) {
      if (stream.epoch !== null && !stream.explained) note("The server restarted: earlier events are gone.");
      stream.epoch = hello.epoch;
      stream.lastSeq = hello.position;
    } else if (hello.position > stream.lastSeq) {
      if (!stream.explained) stream.lost += hello.position - stream.lastSeq;
      stream.lastSeq = hello.position;
    }
    stream.explained = false;
    stream.lastId = eventId || stream.lastId;
    $("lost").textContent = String(stream.lost);
    setConnection("live", "Live");
  }

  function onLog(event, eventId) {
    stream.lastId = eventId || stream.lastId;
    if (event.seq <= stream.lastSeq) return; // already shown (never expected: the server resumes exactly)
    if (event.seq > stream.lastSeq + 1) {
      stream.lost += event.seq - stream.lastSeq - 1;
      $("lost").textContent = String(stream.lost);
    }
    stream.lastSeq = event.seq;
    stream.received += 1;
    $("received").textContent = String(stream.received);
    showEvent(event);
    trackActors(event);
  }

  function onDropped(info) {
    note(`This page fell behind: ${number.format(info.count)} event${info.count === 1 ? " was" : "s were"} dropped (#${info.from_seq}–#${info.to_seq}).`);
    stream.lastSeq = Math.max(stream.lastSeq, info.to_seq);
  }

  function onGap(gap) {
    stream.explained = true;
    note(gap.missed === null
      ? `Reconnected, but ${gap.reason}.`
      : `Reconnected after too long: ${number.format(gap.missed)} events are gone (${gap.reason}).`);
  }

  // -- events -------------------------------------------------------------------------------

  function category(event) {
    const name = event.event;
    if (event.level === "error" || event.level === "critical" || /crash|fail/.test(name)) return "problem";
    if (name.startsWith("DELIVERY")) return "delivery";
    if (name.startsWith("EMAIL")) return "email";
    if (name.startsWith("service") || name === EVENT.orderHandled) return "service";
    if (name.startsWith("checkout")) return "checkout";
    if (name.startsWith("cart") || name.startsWith("item")) return "cart";
    return "other";
  }

  function fieldsText(fields) {
    return Object.entries(fields || {}).map(([k, v]) => `${k}=${v}`).join("  ");
  }

  function showEvent(event) {
    const kind = category(event);
    const item = el("li", { "data-seq": String(event.seq), "data-event": event.event, class: `event ${kind}` },
      el("time", { text: clock(event.ts) }),
      el("span", { class: "what" }, el("span", { class: `tag ${kind}`, text: kind }), event.event),
      el("span", { class: "fields", text: fieldsText(event.fields) }));
    const list = $("events");
    list.prepend(item);
    while (list.children.length > EVENTS_SHOWN) list.lastChild.remove();
  }

  // Spawns, ends and passivations, and the actor table between two snapshots.
  function trackActors(event) {
    const f = event.fields || {};
    let text = null;
    if (event.event === EVENT.cartCreated || event.event === EVENT.cartRestored) {
      const name = `cart:${f.user_id}`;
      text = `spawned ${name} (pid ${f.pid})${event.event === EVENT.cartRestored ? ", restored from the store" : ""}`;
      stream.actors.set(f.pid, { pid: f.pid, name, mailbox_depth: 0, age_seconds: 0, last_message_seconds_ago: 0 });
      renderActors();
    } else if (event.event === EVENT.cartEnded) {
      const name = `cart:${f.user_id}`;
      const how = { idle: "passivated (idle)", stopped: "ended", crashed: "crashed", cancelled: "cancelled (shutdown)" };
      text = `${how[f.reason] || `ended (${f.reason})`}: ${name} (pid ${f.pid})`;
      stream.actors.delete(f.pid);
      renderActors();
    } else if (event.event === EVENT.actorCrashed) {
      text = `crashed: ${f.actor || "actor"} (pid ${f.pid})`;
    }
    if (text === null) return;
    $("lifecycle-empty").hidden = true;
    const list = $("lifecycle");
    list.prepend(el("li", { "data-pid": String(f.pid) }, el("time", { text: clock(event.ts) }), el("span", { class: "what", text })));
    while (list.children.length > LIFECYCLE_SHOWN) list.lastChild.remove();
  }

  // -- snapshots ----------------------------------------------------------------------------

  function onSnapshot(s) {
    if (s.node) $("node").textContent = s.node;
    const a = s.actors;
    setCounter("c-live", number.format(a.live));
    setCounter("c-spawned", number.format(a.spawned));
    setCounter("c-ended", number.format(a.ended));
    setCounter("c-passivated", number.format(a.passivated));
    setCounter("c-crashed", number.format(a.crashed));
    setCounter("c-checkouts", number.format(s.orders.checkouts));
    setCounter("c-rate", s.requests.rate_now.toFixed(1));
    setCounter("c-p95", s.requests.p95_window_ms === null ? "–" : `${s.requests.p95_window_ms.toFixed(1)} ms`);
    stream.actors = new Map(s.actor_list.map((actor) => [actor.pid, actor]));
    stream.actorTotal = a.live;
    renderActors();
    renderKinds(s.actor_kinds);
    renderServices(s.services);
    renderChart(s.requests);
  }

  // A table cell; *label* names it when narrow screens show rows as blocks.
  function cell(text, label = null) {
    const props = { role: "cell", class: label ? "num" : "", text };
    if (label) props["data-label"] = label;
    return el("td", props);
  }

  function renderActors() {
    const rows = [...stream.actors.values()];
    $("actor-count").textContent = `(${number.format(Math.max(rows.length, stream.actorTotal || 0))})`;
    $("actors-empty").hidden = rows.length > 0;
    $("actor-rows").replaceChildren(...rows.map((actor) => el("tr", { role: "row", "data-name": actor.name || "", "data-pid": String(actor.pid) },
      cell(actor.name || "(unnamed)"),
      cell(String(actor.pid), "PID"),
      cell(String(actor.mailbox_depth), "Mailbox"),
      cell(duration(actor.age_seconds), "Age"),
      cell(duration(actor.last_message_seconds_ago), "Idle"))));
    const more = (stream.actorTotal || 0) - rows.length;
    $("actors-more").hidden = more <= 0;
    $("actors-more").textContent = more > 0 ? `…and ${number.format(more)} more (the oldest are listed).` : "";
  }

  function renderKinds(kinds) {
    $("kinds-empty").hidden = kinds.length > 0;
    $("kind-rows").replaceChildren(...kinds.map((k) => el("tr", { role: "row", "data-kind": k.kind },
      cell(k.kind),
      cell(number.format(k.live), "Live"),
      cell(number.format(k.activations), "Activations"),
      cell(number.format(k.passivations), "Passivations"),
      cell(latency(k.mailbox_wait_p50), "Wait p50"),
      cell(latency(k.mailbox_wait_p99), "Wait p99"),
      cell(latency(k.handling_p50), "Handling p50"),
      cell(latency(k.handling_p99), "Handling p99"))));
  }

  function renderServices(services) {
    $("service-rows").replaceChildren(...services.map((s) => el("tr", { role: "row", "data-service": s.name },
      cell(s.name),
      el("td", { role: "cell", "data-label": "State" }, el("span", { class: `badge ${s.state === "running" ? "done" : s.state === "failed" ? "bad" : "pending"}`, text: s.state })),
      cell(String(s.restarts), "Restarts"),
      cell(String(s.failures), "Failures"),
      cell(String(s.orders_processed), "Orders"))));
    $("service-errors").replaceChildren(...services.filter((s) => s.last_error).map((s) => el("li", { text: `${s.name}: ${s.last_error}` })));
  }

  // An axis label: whole numbers as they are, small ones with one decimal.
  const rateText = (value) => (Number.isInteger(value) || value >= 100 ? number.format(Math.round(value)) : value.toFixed(1));

  function renderChart(requests) {
    const svg = $("chart");
    const width = 600, height = 150, slots = 60;
    const rates = requests.per_second.slice(-slots);
    const p95 = requests.p95_ms.slice(-slots);
    const maxRate = Math.max(1, ...rates);
    const maxP95 = Math.max(1, ...p95.filter((v) => v !== null));
    const step = width / slots;
    const offset = slots - rates.length; // newest on the right
    const nodes = [0.25, 0.5, 0.75].map((f) => {
      const line = document.createElementNS(SVG, "line");
      line.setAttribute("class", "grid-line");
      line.setAttribute("x1", "0"); line.setAttribute("x2", String(width));
      line.setAttribute("y1", String(height * f)); line.setAttribute("y2", String(height * f));
      return line;
    });
    rates.forEach((rate, i) => {
      const h = (rate / maxRate) * (height - 6);
      const bar = document.createElementNS(SVG, "rect");
      bar.setAttribute("class", "bar");
      bar.setAttribute("x", String((offset + i) * step + 1));
      bar.setAttribute("width", String(Math.max(1, step - 2)));
      bar.setAttribute("y", String(height - h));
      bar.setAttribute("height", String(h));
      nodes.push(bar);
    });
    // The p95 line is broken where a second had no requests (it has no p95).
    let run = [];
    const flush = () => {
      if (run.length === 1) {
        const [x, y] = run[0].split(",");
        const dot = document.createElementNS(SVG, "circle");
        dot.setAttribute("class", "p95-dot");
        dot.setAttribute("cx", x); dot.setAttribute("cy", y); dot.setAttribute("r", "2.5");
        nodes.push(dot);
      } else if (run.length > 1) {
        const line = document.createElementNS(SVG, "polyline");
        line.setAttribute("class", "p95");
        line.setAttribute("points", run.join(" "));
        nodes.push(line);
      }
      run = [];
    };
    p95.forEach((v, i) => {
      if (v === null) { flush(); return; }
      run.push(`${(offset + i + 0.5) * step},${height - 3 - (v / maxP95) * (height - 10)}`);
    });
    flush();
    svg.replaceChildren(...nodes);
    const peak = Math.max(0, ...rates);
    $("axis-rate").textContent = `${rateText(maxRate)}/s`;
    $("axis-p95").textContent = `${rateText(maxP95)} ms`;
    $("chart-caption").textContent = rates.length
      ? `Now ${requests.rate_now.toFixed(1)} requests/s, peak ${peak.toFixed(1)}/s; p95 over the minute ${requests.p95_window_ms === null ? "–" : `${requests.p95_window_ms.toFixed(1)} ms`} (tallest p95 point: ${maxP95.toFixed(1)} ms).`
      : "Waiting for data…";
  }

  // The figures as of the page's answer: shown at once, before the stream connects.
  const first = JSON.parse($("first-snapshot").textContent);
  if (first) onSnapshot(first);
  open();
})();
