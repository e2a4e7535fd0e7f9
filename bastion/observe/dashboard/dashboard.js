/* Bastion's live dashboard.
 *
 * One EventSource on "events": an "event: history" message with the recent points, then one
 * point a second. Figures are written as text (textContent only: route labels come from
 * requests and are never parsed as HTML); charts are drawn by uPlot over the last 5 minutes.
 * No build step and no framework, so what is served is what is read here.
 */
"use strict";

(() => {
  const WINDOW = 300; // seconds of history drawn, as much as the supervisor keeps
  const STALE_AFTER = 5000; // ms without a point before the page says it is waiting
  const $ = (id) => document.getElementById(id);

  let points = [];
  let charts = [];
  let source = null;
  let lastData = 0;
  let retryDelay = 1000;
  let retryTimer = 0;

  // -- formatting ------------------------------------------------------------------------------

  const DASH = "–";

  function num(v) {
    if (v == null || !isFinite(v)) return DASH;
    const a = Math.abs(v);
    if (a >= 100) return Math.round(v).toLocaleString("en");
    if (a >= 10) return String(Math.round(v * 10) / 10);
    return String(Math.round(v * 100) / 100);
  }

  function seconds(s) {
    if (s == null || !isFinite(s)) return DASH;
    if (s < 0.001) return Math.round(s * 1e6) + " µs";
    if (s < 1) return num(s * 1000) + " ms";
    return num(s) + " s";
  }

  function bytes(b) {
    if (!b) return DASH;
    const mib = b / 1048576;
    return mib >= 1024 ? num(mib / 1024) + " GiB" : num(mib) + " MiB";
  }

  const ms = (s) => (s == null ? null : s * 1000);
  const statusCount = (p, group) => (p.status && p.status[group]) || 0;
  const GROUPS = ["2xx", "3xx", "4xx", "5xx"];

  function setText(id, text) {
    const el = $(id);
    if (el.textContent !== text) el.textContent = text;
  }

  function cell(row, text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  function emptyRow(body, columns, text) {
    const row = document.createElement("tr");
    cell(row, text).colSpan = columns;
    body.replaceChildren(row);
  }

  // -- connection state ------------------------------------------------------------------------

  function setState(state, text) {
    const el = $("conn");
    el.dataset.state = state;
    setText("conn", text);
  }

  function connect() {
    clearTimeout(retryTimer);
    if (source) source.close();
    source = new EventSource("events");
    source.onopen = () => {
      retryDelay = 1000;
      setState("live", "Live");
    };
    source.addEventListener("history", (event) => {
      points = JSON.parse(event.data);
      received();
    });
    source.onmessage = (event) => {
      const point = JSON.parse(event.data);
      const last = points[points.length - 1];
      if (!last || point.time > last.time) points.push(point);
      received();
    };
    source.onerror = () => {
      if (source.readyState === EventSource.CONNECTING) {
        // The browser retries by itself (the feed asks for 2 s): the supervisor is restarting
        // or briefly away, or a proxy dropped the stream.
        setState("reconnecting", "Reconnecting…");
        return;
      }
      // CLOSED: the answer was not an event stream (an error status), so the browser gave
      // up. Ask why once; a refused token will not fix itself, anything else is retried.
      source.close();
      fetch("api/summary", { cache: "no-store" })
        .then((response) => {
          if (response.status === 401) {
            setState("offline", "Needs the admin token: open this page as …/?token=<token>");
          } else {
            retryLater();
          }
        })
        .catch(retryLater);
    };
  }

  function retryLater() {
    setState("reconnecting", "Reconnecting…");
    clearTimeout(retryTimer);
    retryTimer = setTimeout(connect, retryDelay);
    retryDelay = Math.min(retryDelay * 2, 30000);
  }

  function received() {
    lastData = Date.now();
    if ($("conn").dataset.state !== "live") setState("live", "Live");
    const last = points[points.length - 1];
    if (last) {
      const cutoff = last.time - WINDOW;
      let drop = 0;
      while (drop < points.length && points[drop].time < cutoff) drop++;
      if (drop) points = points.slice(drop);
    }
    render();
  }

  setInterval(() => {
    if (source && source.readyState === EventSource.OPEN && lastData &&
        Date.now() - lastData > STALE_AFTER) {
      setState("stale", "Connected, waiting for data…");
    }
  }, 1000);

  // -- figures ---------------------------------------------------------------------------------

  function render() {
    const p = points[points.length - 1];
    if (!p) return;
    const before = points.length > 1 ? points[points.length - 2] : null;
    const when = new Date(p.time * 1000);
    const updated = $("updated");
    updated.dateTime = when.toISOString();
    updated.textContent = when.toLocaleTimeString();

    setText("v-rps", num(p.rps));
    setText("v-p50", seconds(p.p50));
    setText("v-p95", seconds(p.p95));
    setText("v-p99", seconds(p.p99));
    setText("v-connections", num(p.connections));
    setText("v-websockets", num(p.websockets) + " (" + num(p.websocket_messages) + ")");
    setText("v-in-flight", num(p.in_flight));
    setText("v-pool", num(p.busy) + " / " + num(p.queued));
    setText("v-lag", seconds(p.loop_lag));
    const serving = p.workers.filter((w) => w.state === "serving").length;
    setText("v-workers", serving + " of " + p.workers.length);
    renderStatus(p);
    renderWorkers(p, before);
    renderRoutes("busiest", p.busiest, num);
    renderRoutes("slowest", p.slowest, seconds);
    if (!document.hidden) drawCharts();
  }

  function renderStatus(p) {
    const total = GROUPS.reduce((sum, g) => sum + statusCount(p, g), 0);
    const el = $("v-status");
    if (!total) {
      el.textContent = "No requests";
      return;
    }
    const pills = [];
    const bar = document.createElement("div");
    bar.className = "mix";
    bar.setAttribute("aria-hidden", "true");
    for (const group of GROUPS) {
      const count = statusCount(p, group);
      if (!count) continue;
      const share = (100 * count) / total;
      const pill = document.createElement("span");
      pill.className = "pill";
      const label = document.createElement("b");
      label.textContent = group;
      label.style.color = `var(--c-${group})`;
      pill.append(label, ` ${num(count)} (${share < 1 ? "<1" : Math.round(share)}%)`);
      pills.push(pill);
      const segment = document.createElement("span");
      segment.style.width = share + "%";
      segment.style.background = `var(--c-${group})`;
      bar.appendChild(segment);
    }
    el.replaceChildren(...pills, bar);
  }

  function renderWorkers(p, before) {
    const body = $("workers");
    if (!p.workers.length) {
      emptyRow(body, 10, "No workers");
      return;
    }
    const previous = new Map();
    if (before) for (const w of before.workers) previous.set(w.pid, w);
    const elapsed = before ? p.time - before.time : 0;
    const rows = p.workers.map((w) => {
      const row = document.createElement("tr");
      const then = previous.get(w.pid);
      // Rates come from two successive points of the same process; a new pid (a restarted
      // worker) shows a dash for one second rather than a negative or inflated rate.
      const rate = then && elapsed > 0 ? Math.max(0, w.requests - then.requests) / elapsed : null;
      const cpu = then && elapsed > 0 ? (100 * Math.max(0, w.cpu - then.cpu)) / elapsed : null;
      const slot = document.createElement("th");
      slot.scope = "row";
      slot.textContent = String(w.label ?? w.slot);
      row.appendChild(slot);
      cell(row, String(w.pid));
      cell(row, w.state, "state-" + w.state);
      cell(row, num(rate), "num");
      cell(row, num(w.in_flight), "num");
      cell(row, num(w.connections), "num");
      cell(row, num(w.busy) + " / " + num(w.queued), "num");
      cell(row, seconds(w.loop_lag), "num");
      cell(row, bytes(w.rss), "num");
      cell(row, cpu == null ? DASH : num(cpu) + "%", "num");
      return row;
    });
    body.replaceChildren(...rows);
  }

  function renderRoutes(id, pairs, format) {
    const body = $(id);
    if (!pairs || !pairs.length) {
      emptyRow(body, 2, "No requests in the last second");
      return;
    }
    body.replaceChildren(
      ...pairs.map(([label, value]) => {
        const row = document.createElement("tr");
        cell(row, label);
        cell(row, format(value), "num");
        return row;
      }),
    );
  }

  // -- charts ----------------------------------------------------------------------------------

  const CHARTS = [
    {
      id: "c-rps",
      series: [
        ["total", "--total", (p) => p.rps],
        ...GROUPS.map((g) => [g, "--c-" + g, (p) => statusCount(p, g)]),
      ],
      format: num,
    },
    {
      id: "c-latency",
      series: [
        ["p50", "--c-a", (p) => ms(p.p50)],
        ["p95", "--c-b", (p) => ms(p.p95)],
        ["p99", "--c-c", (p) => ms(p.p99)],
      ],
      format: (v) => num(v) + " ms",
    },
    {
      id: "c-conns",
      series: [
        ["connections", "--c-a", (p) => p.connections],
        ["in flight", "--c-b", (p) => p.in_flight],
      ],
      format: num,
    },
    {
      id: "c-pool",
      series: [
        ["busy", "--c-a", (p) => p.busy],
        ["queued", "--c-c", (p) => p.queued],
      ],
      format: num,
    },
    {
      id: "c-lag",
      series: [["loop lag", "--c-b", (p) => ms(p.loop_lag)]],
      format: (v) => num(v) + " ms",
    },
  ];

  const chartHeight = () => (window.innerWidth <= 520 ? 150 : 180);

  function columns(def) {
    return [points.map((p) => p.time), ...def.series.map(([, , pick]) => points.map(pick))];
  }

  function buildCharts() {
    for (const chart of charts) chart.destroy();
    const style = getComputedStyle(document.documentElement);
    const colour = (name) => style.getPropertyValue(name).trim();
    const axis = {
      stroke: colour("--muted"),
      grid: { stroke: colour("--grid"), width: 1 },
      ticks: { stroke: colour("--grid"), width: 1 },
    };
    charts = CHARTS.map((def) => {
      const el = $(def.id);
      const options = {
        width: Math.max(el.clientWidth, 200),
        height: chartHeight(),
        // A live chart that zooms on drag would jump back every second: no selection.
        cursor: { drag: { x: false, y: false } },
        scales: {
          x: {
            time: true,
            range: (u, min, max) => {
              const end = max == null ? Date.now() / 1000 : max;
              return [end - WINDOW, end];
            },
          },
          y: { range: (u, min, max) => [0, max > 0 ? max * 1.15 : 1] },
        },
        axes: [{ ...axis }, { ...axis, size: 48 }],
        series: [
          {},
          ...def.series.map(([label, name]) => ({
            label,
            stroke: colour(name),
            width: 1.5,
            value: (u, v) => (v == null ? DASH : def.format(v)),
          })),
        ],
      };
      return new uPlot(options, columns(def), el);
    });
  }

  function drawCharts() {
    charts.forEach((chart, index) => chart.setData(columns(CHARTS[index])));
  }

  function resizeCharts() {
    charts.forEach((chart, index) => {
      const el = $(CHARTS[index].id);
      chart.setSize({ width: Math.max(el.clientWidth, 200), height: chartHeight() });
    });
  }

  let resizeFrame = 0;
  new ResizeObserver(() => {
    cancelAnimationFrame(resizeFrame);
    resizeFrame = requestAnimationFrame(resizeCharts);
  }).observe(document.querySelector(".charts"));

  // Canvas colours are read once from CSS: rebuild the charts when the scheme flips.
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", buildCharts);
  // Drawing is skipped while the tab is hidden; catch up when it is shown again.
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) drawCharts();
  });

  // -- upstreams: only where a balancer runs (api/summary lists /api/balancer) ---------------

  const upstreamSeen = new Map();

  function pollUpstreams() {
    if (document.hidden) {
      setTimeout(pollUpstreams, 2000);
      return;
    }
    fetch("api/balancer", { cache: "no-store" })
      .then((response) => {
        if (response.status === 404) return null;
        return response.ok ? response.json() : undefined;
      })
      .then((data) => {
        if (data === null) return;
        if (data) renderUpstreams(data);
        setTimeout(pollUpstreams, 2000);
      })
      .catch(() => setTimeout(pollUpstreams, 5000));
  }

  function renderUpstreams(data) {
    const now = performance.now();
    const rows = [];
    for (const route of data.routes || []) {
      for (const upstream of route.upstreams || []) {
        const workers = Object.values(upstream.workers || {});
        const sum = (field) => workers.reduce((total, w) => total + (w[field] || 0), 0);
        const requests = sum("requests");
        const id = route.name + " " + upstream.key;
        const before = upstreamSeen.get(id);
        upstreamSeen.set(id, { requests, at: now });
        const rate = before ? ((requests - before.requests) * 1000) / (now - before.at) : null;
        const latency = Math.max(0, ...workers.map((w) => w.latency_ewma_s || 0));
        const row = document.createElement("tr");
        cell(row, route.name);
        cell(row, upstream.key);
        cell(row, upstream.drained ? "drained" : upstream.health);
        cell(row, num(upstream.weight), "num");
        cell(row, rate === null ? "…" : num(Math.max(0, rate)), "num");
        cell(row, num(sum("outstanding")), "num");
        cell(row, seconds(latency), "num");
        cell(row, num(sum("failures")), "num");
        cell(row, workers.filter((w) => w.ejected).length + " / " + workers.length, "num");
        rows.push(row);
      }
    }
    $("upstreams").replaceChildren(...rows);
    $("upstreams-section").hidden = rows.length === 0;
  }

  buildCharts();
  connect();
  fetch("api/summary", { cache: "no-store" })
    .then((response) => (response.ok ? response.json() : null))
    .then((summary) => {
      if (summary && (summary.apis || []).includes("/api/balancer")) pollUpstreams();
    })
    .catch(() => {});
})();
