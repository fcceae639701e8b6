// OpenFlare admin dashboard — no framework, no build step, no inline code (strict CSP).
//
// The admin token is typed into the sign-in form, kept in this tab's sessionStorage and sent
// only as `Authorization: Bearer` to the same origin; it never goes into a URL or a cookie.
// Every value shown comes from the JSON endpoints listed in docs/13-admin-dashboard.md and is
// written with textContent, never as HTML.
"use strict";

(() => {
  const TOKEN_KEY = "openflare.admin.token";
  const PAGES = ["overview", "cache", "security", "config", "explain"];
  const POLL_MS = { overview: 3000, cache: 4000, security: 4000, config: 15000, explain: 0 };
  const SVG_NS = "http://www.w3.org/2000/svg";
  const STATUS_CLASSES = ["2xx", "3xx", "4xx", "5xx", "1xx"];

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY),
    page: null,
    timer: 0,
    generation: 0, // bumps on every page change or sign-out: late answers are dropped
    explain: false,
    pendingPurge: null,
  };

  // ---------------------------------------------------------------------------------------
  // small helpers

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = String(value);
      else if (name === "class") node.className = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    return node;
  }

  function setText(id, value) {
    const node = $(id);
    if (node) node.textContent = value === null || value === undefined ? "–" : String(value);
  }

  function show(node, visible) {
    if (typeof node === "string") node = $(node);
    if (node) node.hidden = !visible;
  }

  function fill(tbody, rows, emptyText, columns) {
    tbody.replaceChildren();
    if (!rows.length) {
      tbody.append(el("tr", { class: "empty" }, el("td", { colspan: columns, text: emptyText })));
      return;
    }
    for (const row of rows) tbody.append(row);
  }

  const fmt = {
    num(value, digits = 1) {
      if (value === null || value === undefined || Number.isNaN(value)) return "–";
      const abs = Math.abs(value);
      if (abs >= 1e9) return (value / 1e9).toFixed(digits) + "G";
      if (abs >= 1e6) return (value / 1e6).toFixed(digits) + "M";
      if (abs >= 1e4) return (value / 1e3).toFixed(digits) + "k";
      if (Number.isInteger(value)) return String(value);
      return value.toFixed(abs < 10 ? 2 : digits);
    },
    int(value) {
      return value === null || value === undefined ? "–" : Math.round(value).toLocaleString("en");
    },
    pct(value) {
      return value === null || value === undefined ? "–" : (value * 100).toFixed(1) + " %";
    },
    ms(value) {
      if (value === null || value === undefined) return "–";
      return value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2);
    },
    bytes(value) {
      if (value === null || value === undefined) return "–";
      const units = ["B", "KiB", "MiB", "GiB", "TiB"];
      let n = value;
      let unit = 0;
      while (Math.abs(n) >= 1024 && unit < units.length - 1) {
        n /= 1024;
        unit += 1;
      }
      return (unit === 0 ? String(Math.round(n)) : n.toFixed(1)) + " " + units[unit];
    },
    time(epoch) {
      if (!epoch) return "–";
      return new Date(epoch * 1000).toLocaleTimeString("en-GB", { hour12: false });
    },
    datetime(epoch) {
      if (!epoch) return "–";
      const d = new Date(epoch * 1000);
      return d.toLocaleDateString("en-CA") + " " + d.toLocaleTimeString("en-GB", { hour12: false });
    },
    counts(map) {
      const parts = Object.entries(map || {})
        .filter(([, n]) => n > 0)
        .map(([name, n]) => `${name}: ${fmt.int(n)}`);
      return parts.length ? parts.join(" · ") : "–";
    },
  };

  // ---------------------------------------------------------------------------------------
  // the admin API

  class AuthError extends Error {}

  async function api(path, options = {}) {
    const token = options.token || state.token;
    const headers = { Accept: "application/json", Authorization: "Bearer " + token };
    const init = {
      method: options.method || "GET",
      headers,
      cache: "no-store",
      credentials: "omit",
      redirect: "error",
      referrerPolicy: "no-referrer",
    };
    if (options.body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.body);
    }
    const response = await fetch(path, init);
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    if (response.status === 401) {
      throw new AuthError("The proxy refused this admin token (401 Unauthorized).");
    }
    return { status: response.status, ok: response.ok, data };
  }

  function problem(result) {
    const data = result.data || {};
    return data.message || data.error || `HTTP ${result.status}`;
  }

  // ---------------------------------------------------------------------------------------
  // sign in / out

  function showLogin(message) {
    clearTimeout(state.timer);
    state.generation += 1;
    state.page = null;
    show("nav", false);
    show("session", false);
    for (const page of PAGES) show("page-" + page, false);
    show("login", true);
    const error = $("login-error");
    error.textContent = message || "";
    error.hidden = !message;
    $("token").focus();
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    state.explain = false;
    show("nav-explain", false);
    showLogin(message);
  }

  async function signIn(event) {
    event.preventDefault();
    const input = $("token");
    const token = input.value.trim();
    const error = $("login-error");
    if (!token) {
      error.textContent = "Enter the admin token.";
      error.hidden = false;
      return;
    }
    $("login-submit").disabled = true;
    try {
      const result = await api("/admin/stats/overview", { token });
      if (result.status === 404 && result.data && result.data.error === "admin_api_disabled") {
        throw new Error("The admin API is disabled in this proxy's config (admin_api.enabled).");
      }
      if (!result.ok) throw new Error("The proxy answered: " + problem(result));
      sessionStorage.setItem(TOKEN_KEY, token);
      state.token = token;
      input.value = "";
      error.hidden = true;
      await startSession();
    } catch (exc) {
      const message =
        exc instanceof AuthError
          ? "Wrong token: the proxy refused it (401 Unauthorized). Check OPENFLARE_ADMIN_TOKEN."
          : exc instanceof TypeError
            ? "Cannot reach the admin listener: " + exc.message
            : exc.message;
      if (state.token) {
        signOut(message); // accepted, then refused while starting: back to a clean form
        return;
      }
      error.textContent = message;
      error.hidden = false;
      input.select();
    } finally {
      $("login-submit").disabled = false;
    }
  }

  async function startSession() {
    show("login", false);
    show("nav", true);
    show("session", true);
    await probeExplain();
    route();
  }

  async function probeExplain() {
    // `POST /admin/explain` lands with the explainability work; until then it is a 404
    try {
      const result = await api("/admin/explain", { method: "POST", body: {} });
      state.explain = result.status !== 404;
    } catch (exc) {
      if (exc instanceof AuthError) throw exc;
      state.explain = false;
    }
    show("nav-explain", state.explain);
  }

  // ---------------------------------------------------------------------------------------
  // pages and polling

  function route() {
    if (!state.token) {
      showLogin();
      return;
    }
    let page = (location.hash || "").replace(/^#\/?/, "") || "overview";
    if (!PAGES.includes(page) || (page === "explain" && !state.explain)) {
      page = "overview";
      history.replaceState(null, "", "#/overview");
    }
    state.page = page;
    state.generation += 1;
    clearTimeout(state.timer);
    for (const name of PAGES) show("page-" + name, name === page);
    for (const link of document.querySelectorAll("#nav a")) {
      if (link.dataset.page === page) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    document.title = `OpenFlare admin — ${page}`;
    poll(state.generation);
  }

  async function poll(generation) {
    const page = state.page;
    const refresh = REFRESH[page];
    if (!refresh || generation !== state.generation) return;
    try {
      await refresh(generation);
      if (generation !== state.generation) return;
      live(true, "live · " + fmt.time(Date.now() / 1000));
      show("banner", false);
    } catch (exc) {
      if (exc instanceof AuthError) {
        signOut("This tab's token is no longer accepted (401): sign in again.");
        return;
      }
      if (generation !== state.generation) return;
      live(false, "offline");
      const banner = $("banner");
      banner.textContent = "Cannot update: " + (exc.message || exc);
      banner.hidden = false;
    }
    if (generation !== state.generation || !POLL_MS[page]) return;
    clearTimeout(state.timer);
    state.timer = setTimeout(() => {
      if (!document.hidden) poll(generation);
    }, POLL_MS[page]);
  }

  function live(ok, text) {
    $("live-dot").className = "dot " + (ok ? "ok" : "bad");
    setText("live-status", text);
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && state.page) poll(state.generation);
  });

  // ---------------------------------------------------------------------------------------
  // charts: inline SVG drawn here, no library

  // `points` are {t: epoch seconds, v: number|null}; the x axis is the last `span` seconds,
  // right-aligned on the newest point, so a young process fills the chart from the right
  function sparkline(id, points, options = {}) {
    const chart = $(id);
    const width = 300;
    const height = 80;
    const pad = 4;
    chart.replaceChildren();
    // the last `span` seconds, or less while the process is young (at least a minute)
    const age = points.length > 1 ? points[points.length - 1].t - points[0].t : 0;
    const span = Math.min(options.span || 300, Math.max(60, age));
    const present = points.filter((p) => p.v !== null && p.v !== undefined);
    const max = Math.max(options.floor || 1, ...present.map((p) => p.v));
    const newest = points.length ? points[points.length - 1].t : 0;
    const x = (t) => width - pad - ((newest - t) / span) * (width - 2 * pad);
    const y = (v) => height - pad - (v / max) * (height - 2 * pad);
    for (const fraction of [0.25, 0.5, 0.75]) {
      const gy = height - pad - fraction * (height - 2 * pad);
      chart.append(svg("line", { x1: 0, x2: width, y1: gy, y2: gy, class: "grid" }));
    }
    // runs of consecutive points with a value; a gap (no traffic for a percentile) breaks it
    const runs = [];
    let run = [];
    for (const p of points) {
      if (x(p.t) < 0) continue;
      if (p.v === null || p.v === undefined) {
        if (run.length) runs.push(run);
        run = [];
      } else {
        run.push([x(p.t), y(p.v)]);
      }
    }
    if (run.length) runs.push(run);
    const tone = options.tone || "";
    for (const r of runs) {
      if (r.length === 1) {
        chart.append(svg("circle", { cx: r[0][0], cy: r[0][1], r: 2.5, class: "dot-point " + tone }));
        continue;
      }
      const line = r.map(([px, py], i) => `${i ? "L" : "M"}${px.toFixed(1)},${py.toFixed(1)}`).join("");
      const base = (height - pad).toFixed(1);
      const area = `M${r[0][0].toFixed(1)},${base}` + line.replace(/^M/, "L") + `L${r[r.length - 1][0].toFixed(1)},${base}Z`;
      chart.append(svg("path", { d: area, class: "area " + tone }));
      chart.append(svg("path", { d: line, class: "line " + tone }));
    }
    const legend = $(id + "-legend");
    if (legend) {
      const last = present.length ? present[present.length - 1].v : null;
      legend.textContent = present.length
        ? `latest ${options.format(last)} · max ${options.format(Math.max(...present.map((p) => p.v)))}` +
          ` · last ${span >= 120 ? Math.round(span / 60) + " min" : Math.round(span) + " s"}`
        : "no traffic yet";
    }
  }

  function statusMix(counts) {
    const chart = $("status-mix");
    chart.replaceChildren();
    const legend = $("status-mix-legend");
    legend.replaceChildren();
    const total = STATUS_CLASSES.reduce((sum, k) => sum + (counts[k] || 0), 0);
    let x = 0;
    if (!total) {
      chart.append(svg("rect", { x: 0, y: 0, width: 100, height: 10, class: "seg none" }));
    }
    for (const name of STATUS_CLASSES) {
      const n = counts[name] || 0;
      if (total && n) {
        const w = (n / total) * 100;
        chart.append(svg("rect", { x: x, y: 0, width: w, height: 10, class: "seg s" + name[0] }));
        x += w;
      }
      if (n || name !== "1xx") {
        legend.append(
          el(
            "li",
            { "data-class": name },
            el("span", { class: "swatch s" + name[0] }),
            `${name} ${fmt.int(n)}` + (total ? ` (${((n / total) * 100).toFixed(1)} %)` : ""),
          ),
        );
      }
    }
  }

  // ---------------------------------------------------------------------------------------
  // overview

  async function refreshOverview(generation) {
    const result = await api("/admin/stats/overview");
    if (generation !== state.generation) return;
    if (!result.ok) throw new Error(problem(result));
    const d = result.data;
    setText("version", "v" + d.version);
    setText("ov-window", `last ${Math.round(d.window_s)} s`);
    setText("ov-rps", fmt.num(d.requests.per_second));
    setText("ov-total", `${fmt.int(d.requests.total)} since start`);
    setText("ov-error-ratio", fmt.pct(d.status.error_ratio));
    setText("ov-codes", fmt.counts(d.status.codes_window));
    $("ov-codes").title = fmt.counts(d.status.codes_window);
    setText("ov-p50", fmt.ms(d.latency_ms.p50));
    setText("ov-p95", fmt.ms(d.latency_ms.p95));
    setText("ov-p99", fmt.ms(d.latency_ms.p99));
    setText("ov-inflight", fmt.int(d.in_flight));
    setText("ov-bytes", d.bytes_sent.per_second === null ? "–" : fmt.bytes(d.bytes_sent.per_second) + "/s");
    setText("ov-bytes-total", fmt.bytes(d.bytes_sent.total) + " since start");
    setText("ov-hit-ratio", fmt.pct(d.cache.hit_ratio_window));
    setText("ov-hit-ratio-all", fmt.pct(d.cache.hit_ratio) + " since start");
    setText("ov-waf-blocks", fmt.int(d.waf_rule_blocks.window));
    setText("ov-waf-blocks-total", `${fmt.int(d.waf_rule_blocks.total)} since start`);
    setText("ov-rl-denials", fmt.int(d.ratelimit_rule_denials.window));
    setText("ov-rl-denials-total", `${fmt.int(d.ratelimit_rule_denials.total)} since start`);
    const points = d.series.points;
    const span = d.series.span_s;
    sparkline("chart-rps", points.map((p) => ({ t: p.t, v: p.rps })), {
      format: (v) => fmt.num(v) + "/s",
      tone: "blue",
      span,
    });
    sparkline("chart-p95", points.map((p) => ({ t: p.t, v: p.p95_ms })), {
      format: (v) => fmt.ms(v) + " ms",
      tone: "violet",
      span,
    });
    setText("status-mix-window", `(last ${Math.round(d.window_s)} s)`);
    statusMix(d.status.window);
    const rows = d.upstreams.map((u) =>
      el(
        "tr",
        { "data-upstream": u.name },
        el("td", { text: u.name }),
        el("td", { class: "mono small", text: u.base_url }),
        el("td", {}, el("span", { class: "badge " + u.health, text: u.health })),
        el("td", { text: fmt.int(u.answered) }),
        el("td", { text: fmt.counts(u.errors), title: "since start: " + fmt.counts(u.errors_total) }),
        el("td", { text: fmt.ms(u.latency_ms.p95) }),
        el("td", { text: `${u.connections.in_use} / ${u.connections.idle} / ${u.connections.limit || "∞"}` }),
      ),
    );
    fill($("upstreams").tBodies[0], rows, "no upstreams", 7);
  }

  // ---------------------------------------------------------------------------------------
  // cache

  async function refreshCache(generation) {
    const result = await api("/admin/cache/stats");
    if (generation !== state.generation) return;
    const error = $("cache-error");
    if (result.status === 409) {
      error.textContent = "The cache is disabled in this proxy's config (cache.enabled: false).";
      error.hidden = false;
      return;
    }
    if (!result.ok) throw new Error(problem(result));
    error.hidden = true;
    const d = result.data;
    setText("cache-store", `(${d.store} store)`);
    setText("cache-hit-ratio", fmt.pct(d.hits + d.misses ? d.hit_ratio : null));
    setText("cache-entries", fmt.int(d.entries));
    setText("cache-entries-max", d.max_entries ? `of ${fmt.int(d.max_entries)}` : "no cap");
    setText("cache-bytes", fmt.bytes(d.size_bytes));
    setText("cache-bytes-max", d.max_bytes ? `of ${fmt.bytes(d.max_bytes)}` : "no cap");
    setText("cache-hits", fmt.int(d.hits));
    setText("cache-stale", `stale ${fmt.int(d.stale)} · revalidated ${fmt.int(d.revalidated)}`);
    setText("cache-misses", fmt.int(d.misses));
    setText("cache-stores", `stored ${fmt.int(d.stores)} · bypassed ${fmt.int(d.bypasses)}`);
    setText("cache-evictions", fmt.int(d.evictions));
    setText("cache-errors", `errors ${fmt.int(d.errors)}`);
    const rows = d.top_keys.map((item) => {
      const button = el("button", { type: "button", class: "quiet small", text: "Purge…" });
      button.addEventListener("click", () => {
        $("purge-mode").value = "key";
        purgeModeChanged();
        $("purge-value").value = item.key;
        askPurge();
      });
      return el(
        "tr",
        {},
        el("td", { class: "mono small key", text: item.key, title: item.key }),
        el("td", { text: fmt.int(item.hits) }),
        el("td", {}, button),
      );
    });
    fill($("top-keys").tBodies[0], rows, "nothing cached yet", 3);
  }

  const PURGE = {
    url: { label: "URL", endpoint: "/admin/cache/purge", placeholder: "http://example.com/path?query" },
    prefix: { label: "Prefix", endpoint: "/admin/cache/purge-prefix", placeholder: "/static/  or  http://example.com/static/" },
    tags: { label: "Tags", endpoint: "/admin/cache/purge-tags", placeholder: "product-1, product-2" },
    key: { label: "Key", endpoint: "/admin/cache/purge", placeholder: "a key from the table" },
    all: { label: "", endpoint: "/admin/cache/purge-all", placeholder: "" },
  };

  function purgeModeChanged() {
    const mode = $("purge-mode").value;
    setText("purge-value-label", PURGE[mode].label);
    $("purge-value").placeholder = PURGE[mode].placeholder;
    show("purge-value-row", mode !== "all");
    show("purge-confirm", false);
  }

  function purgeRequest() {
    const mode = $("purge-mode").value;
    const value = $("purge-value").value.trim();
    const soft = $("purge-soft").checked;
    const body = soft ? { soft: true } : {};
    let what;
    if (mode === "all") {
      what = "every cached entry";
    } else {
      if (!value) throw new Error(`Enter the ${PURGE[mode].label.toLowerCase()} to purge.`);
      if (mode === "url") {
        if (!/^https?:\/\/[^/]+/i.test(value)) throw new Error("The URL must be absolute: http(s)://host/path");
        body.url = value;
        what = `every variant of the URL ${value}`;
      } else if (mode === "prefix") {
        body.prefix = value;
        what = `every entry under the prefix ${value}`;
      } else if (mode === "tags") {
        body.tags = value.split(/[\s,]+/).filter(Boolean);
        what = `every entry tagged ${body.tags.join(", ")}`;
      } else {
        body.key = value;
        what = `the entry with key ${value}`;
      }
    }
    return { endpoint: PURGE[mode].endpoint, body, text: `${soft ? "Soft-purge (mark stale)" : "Purge"} ${what}?` };
  }

  function askPurge(event) {
    if (event) event.preventDefault();
    const result = $("purge-result");
    try {
      state.pendingPurge = purgeRequest();
    } catch (exc) {
      result.textContent = exc.message;
      result.className = "result error";
      result.hidden = false;
      return;
    }
    result.hidden = true;
    setText("purge-confirm-text", state.pendingPurge.text);
    show("purge-confirm", true);
    $("purge-confirm-yes").focus();
  }

  async function confirmPurge() {
    const pending = state.pendingPurge;
    state.pendingPurge = null;
    show("purge-confirm", false);
    if (!pending) return;
    const result = $("purge-result");
    try {
      const answer = await api(pending.endpoint, { method: "POST", body: pending.body });
      if (answer.ok) {
        const n = answer.data.purged;
        result.textContent = `${answer.data.soft ? "Marked stale" : "Purged"} ${n} ${n === 1 ? "entry" : "entries"}.`;
        result.className = "result ok";
      } else {
        result.textContent = "Purge refused: " + problem(answer);
        result.className = "result error";
      }
    } catch (exc) {
      if (exc instanceof AuthError) {
        signOut(exc.message);
        return;
      }
      result.textContent = "Purge failed: " + exc.message;
      result.className = "result error";
    }
    result.hidden = false;
    if (state.page === "cache") poll(state.generation);
  }

  // ---------------------------------------------------------------------------------------
  // security

  async function refreshSecurity(generation) {
    const result = await api("/admin/stats/security");
    if (generation !== state.generation) return;
    if (!result.ok) throw new Error(problem(result));
    const d = result.data;
    const windowText = `last ${Math.round(d.window_s / 60) || "<1"} min`;
    setText("sec-window", `(${windowText})`);
    const waf = d.waf;
    const sum = (rows, outcome, field) => rows.reduce((n, row) => n + (row[field][outcome] || 0), 0);
    setText("sec-waf-mode", waf.enabled ? waf.mode : "off");
    setText("sec-waf-rules", waf.enabled ? `${waf.rules} rules · paranoia ${waf.paranoia}` : "no rules loaded");
    setText("sec-waf-blocks", fmt.int(sum(waf.decisions, "block", "window")));
    setText("sec-waf-blocks-total", `${fmt.int(sum(waf.decisions, "block", "total"))} since start`);
    const rl = d.ratelimit;
    setText("sec-rl-mode", rl.enabled ? rl.mode : "off");
    setText("sec-rl-rules", rl.enabled ? `${rl.rules} rules · ${rl.backend}` : "no rules loaded");
    setText("sec-rl-denials", fmt.int(sum(rl.decisions, "deny", "window")));
    setText("sec-rl-denials-total", `${fmt.int(sum(rl.decisions, "deny", "total"))} since start`);

    const recent = d.recent;
    setText(
      "recent-note",
      recent.available
        ? `The last ${recent.capacity} WAF blocks and rate-limit refusals (${fmt.int(recent.recorded)} since start). Find the full story in the access log and the waf event by request id.`
        : "This proxy build does not record recent refusals; the counters below still apply.",
    );
    const events = recent.events.map((e) =>
      el(
        "tr",
        { "data-request-id": e.request_id },
        el("td", { text: fmt.time(e.time) }),
        el("td", { class: "mono small", text: e.request_id }),
        el("td", { text: e.kind === "waf" ? "WAF" : "rate limit" }),
        el("td", {}, el("span", { class: "badge " + e.decision, text: e.decision })),
        el("td", { class: "mono small", text: e.rule_ids.join(", ") }),
        el("td", { text: e.status }),
        el("td", { class: "mono small", text: `${e.method} ${e.path}` }),
        el("td", { class: "mono small", text: e.client_ip }),
      ),
    );
    fill($("recent").tBodies[0], events, "no refusals yet", 8);

    const wafRows = waf.decisions.map((row) =>
      el(
        "tr",
        { "data-rule": row.rule_id },
        el("td", { class: "mono small", text: row.rule_id }),
        el("td", {}, el("span", { class: "badge " + row.mode, text: row.mode })),
        el("td", { text: fmt.counts(row.window) }),
        el("td", { text: fmt.counts(row.total) }),
        el("td", { class: "small", text: row.description }),
      ),
    );
    fill($("waf-decisions").tBodies[0], wafRows, "no WAF rule has matched yet", 5);

    const rlRows = rl.decisions.map((row) =>
      el(
        "tr",
        { "data-rule": row.rule_id },
        el("td", { class: "mono small", text: row.rule_id }),
        el("td", {}, el("span", { class: "badge " + row.mode, text: row.mode })),
        el("td", { text: fmt.int(row.window.deny || 0) }),
        el("td", { text: fmt.int(row.total.deny || 0) }),
        el("td", { text: fmt.int(row.total.would_block || 0) }),
        el("td", { text: fmt.int(row.total.error || 0) }),
        el("td", { text: fmt.int(row.total.allow || 0) }),
      ),
    );
    fill($("rl-decisions").tBodies[0], rlRows, "no rate-limit rule has matched yet", 7);
  }

  // ---------------------------------------------------------------------------------------
  // configuration

  async function refreshConfig(generation) {
    const result = await api("/admin/stats/config");
    if (generation !== state.generation) return;
    if (!result.ok) throw new Error(problem(result));
    const d = result.data;
    setText("version", "v" + d.version);
    setText("cfg-hash", d.hash);
    setText("cfg-loaded", "loaded " + fmt.datetime(d.loaded_at));
    setText("cfg-path", d.main_path);
    setText("cfg-mode", d.dev_mode ? "dev_mode: on — do not expose" : "dev_mode: off");
    const lastError = d.last_error;
    show("cfg-last-error", Boolean(lastError));
    if (lastError) {
      setText("cfg-last-error-when", `${fmt.datetime(lastError.at)} · source ${lastError.source} · kept ${lastError.hash}`);
      $("cfg-last-error-list").replaceChildren(...lastError.errors.map((text) => el("li", { class: "mono small", text })));
    }
    const history = d.history.map((item) =>
      el(
        "tr",
        {},
        el("td", { text: fmt.datetime(item.at) }),
        el("td", { text: item.source }),
        el("td", {}, el("span", { class: "badge " + item.result, text: item.result })),
        el("td", { class: "mono small", text: item.hash.slice(0, 16) }),
        el("td", { class: "mono small", text: item.errors.join("\n") }),
      ),
    );
    fill($("reload-history").tBodies[0], history, "no reload since start", 5);
    setText("cfg-stages", d.stages.join(" → "));
    $("cfg-sources").replaceChildren(
      ...d.sources.map((s) => el("li", { text: `${s.file}  sha256:${s.sha256.slice(0, 16)}…` })),
    );
    setText(
      "cfg-redacted",
      d.redacted.length ? `(${d.redacted.length} secret value${d.redacted.length === 1 ? "" : "s"} redacted)` : "(no secrets in it)",
    );
    setText("cfg-effective", JSON.stringify(d.effective, null, 2));
  }

  async function reloadConfig() {
    const button = $("reload-button");
    const out = $("reload-result");
    button.disabled = true;
    try {
      const answer = await api("/admin/config/reload", { method: "POST" });
      const data = answer.data || {};
      if (data.result === "ok") {
        out.textContent = `Reloaded: new hash ${data.hash.slice(0, 16)}…`;
        out.className = "result ok";
      } else if (data.result === "unchanged") {
        out.textContent = "Unchanged: the files on disk are the loaded ones.";
        out.className = "result ok";
      } else if (data.result === "error") {
        out.textContent = `Reload failed, the running config is kept: ${(data.errors || []).join("; ")}`;
        out.className = "result error";
      } else {
        out.textContent = "Reload refused: " + problem(answer);
        out.className = "result error";
      }
    } catch (exc) {
      if (exc instanceof AuthError) {
        signOut(exc.message);
        return;
      }
      out.textContent = "Reload failed: " + exc.message;
      out.className = "result error";
    } finally {
      button.disabled = false;
    }
    out.hidden = false;
    if (state.page === "config") poll(state.generation);
  }

  // ---------------------------------------------------------------------------------------
  // explain (only once the proxy has POST /admin/explain)

  // one line of "why" per stage entry of the trace (pipeline/explain.py)
  function explainWhy(entry) {
    const lines = [];
    if (entry.stage === "waf") {
      lines.push(`score ${entry.score}/${entry.threshold}, ${entry.rules_evaluated} rules (${entry.mode})`);
      for (const m of entry.matched || []) {
        lines.push(`${m.id} (${m.action}, score ${m.score}) in ${m.target}: ${m.excerpt}`);
      }
    } else if (entry.stage === "ratelimit") {
      for (const r of entry.rules || []) {
        let text = `${r.id}: ${r.remaining} of ${r.burst} left, bucket ${r.bucket}`;
        if (r.retry_after_s) text += `, retry after ${r.retry_after_s} s`;
        lines.push(text);
      }
      lines.push(entry.spent ? "token spent" : "no token spent");
    } else if (entry.stage === "route") {
      lines.push(entry.upstream ? `upstream ${entry.upstream} (prefix ${entry.path_prefix})` : "no route");
    } else if (entry.stage === "cache") {
      if (entry.eligible === false) lines.push(`not cacheable: ${entry.reason}`);
      else {
        if (entry.variant && entry.variant !== entry.key) lines.push(`variant ${entry.variant}`);
        if (entry.stored) {
          lines.push(`stored ${entry.stored.status}, ${entry.stored.fresh ? "fresh" : "stale"}: ${entry.stored.freshness}`);
        } else lines.push("nothing stored for this key");
        if (entry.refresh) lines.push(`background refresh: ${entry.refresh}`);
        if (entry.collapsing) lines.push(`collapsing: ${entry.collapsing}`);
      }
    } else if (entry.stage === "upstream") {
      if (entry.decision === "would_forward") {
        lines.push(`${entry.url_path} → ${entry.upstream} (${(entry.targets || []).join(", ")})`);
      } else lines.push(`${entry.target} answered ${entry.status}`);
    }
    return lines.join("\n");
  }

  function renderExplain(data) {
    const summary = data.summary || {};
    const trace = data.trace || { stages: [] };
    const response = summary.response || {};
    const would = $("explain-would");
    would.textContent = "Would " + (summary.would || "?");
    would.className = "result " + (response.source === "waf" || response.source === "ratelimit" ? "error" : "ok");
    setText("explain-response", `${response.status ?? "origin decides"} from ${response.source || "?"}`);
    setText("explain-route", summary.route ? `${summary.route} → ${summary.upstream}` : "none");
    setText("explain-key", summary.cache && summary.cache.key ? summary.cache.key : "–");
    const rows = (trace.stages || []).map((entry) =>
      el(
        "tr",
        { "data-stage": entry.stage },
        el("td", { text: entry.stage }),
        el("td", {}, el("span", { class: "badge " + entry.decision, text: entry.decision })),
        el("td", { class: "why", text: explainWhy(entry) }),
        el("td", { text: entry.ms === undefined ? "" : fmt.num(entry.ms, 2) })
      )
    );
    if (trace.response && trace.response.error) {
      rows.push(
        el(
          "tr",
          { "data-stage": "edge" },
          el("td", { text: "edge" }),
          el("td", {}, el("span", { class: "badge error", text: trace.response.error })),
          el("td", { class: "why", text: "refused before the traced stages" }),
          el("td", { text: "" })
        )
      );
    }
    fill($("explain-stages").querySelector("tbody"), rows, "no stage ran", 4);
  }

  async function explain(event) {
    event.preventDefault();
    const out = $("explain-result");
    const error = $("explain-error");
    const headers = {};
    for (const line of $("explain-headers").value.split("\n")) {
      const at = line.indexOf(":");
      if (at > 0) headers[line.slice(0, at).trim()] = line.slice(at + 1).trim();
    }
    const body = { method: $("explain-method").value, url: $("explain-url").value.trim(), headers };
    const text = $("explain-body").value;
    if (text) body.body = text;
    try {
      const answer = await api("/admin/explain", { method: "POST", body });
      if (!answer.ok) throw new Error(problem(answer));
      renderExplain(answer.data);
      out.textContent = JSON.stringify(answer.data, null, 2);
      show("explain-answer", true);
      error.hidden = true;
    } catch (exc) {
      if (exc instanceof AuthError) {
        signOut(exc.message);
        return;
      }
      error.textContent = "Explain failed: " + exc.message;
      error.hidden = false;
    }
  }

  const REFRESH = {
    overview: refreshOverview,
    cache: refreshCache,
    security: refreshSecurity,
    config: refreshConfig,
    explain: null,
  };

  // ---------------------------------------------------------------------------------------
  // wiring

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", signIn);
    $("logout").addEventListener("click", () => signOut());
    $("purge-form").addEventListener("submit", askPurge);
    $("purge-mode").addEventListener("change", purgeModeChanged);
    $("purge-confirm-yes").addEventListener("click", confirmPurge);
    $("purge-confirm-no").addEventListener("click", () => {
      state.pendingPurge = null;
      show("purge-confirm", false);
    });
    $("reload-button").addEventListener("click", reloadConfig);
    $("explain-form").addEventListener("submit", explain);
    window.addEventListener("hashchange", route);
    purgeModeChanged();
    if (state.token) {
      startSession().catch((exc) => signOut(exc.message));
    } else {
      showLogin();
    }
  });
})();
