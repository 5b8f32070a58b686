// dify-gateway operator console. Plain JS, no dependencies: every piece of data comes from
// the authenticated JSON endpoints under ./api/ and is put into the page as text, never HTML.
"use strict";

(() => {
  const KEY_NAME = "dify-gateway-console-key";
  const REFRESH_MS = 5000;
  const TYPES = ["llm", "text-embedding", "multimodal-embedding", "rerank", "multimodal-rerank",
    "tts", "speech2text", "moderation"];
  const CAPTIONS = {
    llm: "Prompt", "text-embedding": "Texts, one per line", "multimodal-embedding": "Texts, one per line",
    rerank: "Query", "multimodal-rerank": "Query", tts: "Text to speak", moderation: "Text to check",
  };
  const SAMPLES = {
    llm: "Write one short sentence about the sea.",
    "text-embedding": "How do I bake bread?",
    "multimodal-embedding": "A cat sleeping in the sun",
    rerank: "how do I bake bread",
    "multimodal-rerank": "how do I bake bread",
    tts: "Hello from the gateway console.",
    moderation: "Have a nice day.",
  };
  const SAMPLE_DOCS = "Instructions for baking a loaf at home\nThe stock market fell today\nCats sleep a lot";

  const $ = (id) => document.getElementById(id);
  let status = null;
  let timer = null;
  let tryAbort = null;
  let firstRender = true;

  // --- small helpers ------------------------------------------------------------------

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  const pct = (x) => (x === null || x === undefined ? "—" : `${(x * 100).toFixed(x > 0 && x < 0.1 ? 1 : 0)} %`);
  const ms = (x) => (x === null || x === undefined ? "—" : x >= 1000 ? `${(x / 1000).toFixed(2)} s` : `${Math.round(x)} ms`);
  const clock = (epoch) => new Date(epoch * 1000).toLocaleTimeString();

  function duration(seconds) {
    const s = Math.floor(seconds);
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  }

  function badge(state) {
    const kind = { closed: "ok", up: "ok", ready: "ok", "half-open": "warn", probing: "warn", starting: "warn",
      draining: "warn", open: "bad", down: "bad", failed: "bad", "reload applied": "ok", "reload unchanged": "ok",
      "reload failed": "bad" }[state] || "idle";
    return el("span", { class: `badge ${kind}`, text: state });
  }

  // Long arrays and strings shortened, for showing replies (vectors, hex audio) as text.
  function abbreviate(value) {
    if (Array.isArray(value)) {
      if (value.length > 8 && value.every((v) => typeof v === "number")) {
        return [...value.slice(0, 6).map((v) => Number(v.toFixed(5))), `… ${value.length} values`];
      }
      return value.map(abbreviate);
    }
    if (value && typeof value === "object") {
      return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, abbreviate(v)]));
    }
    if (typeof value === "string" && value.length > 240) return `${value.slice(0, 80)}… (${value.length} chars)`;
    return value;
  }

  // --- the key and the API ------------------------------------------------------------

  const key = () => sessionStorage.getItem(KEY_NAME) || "";

  class Refused extends Error {}

  // ``path`` under ./api/, or ``../admin/...`` for the management API (the same key).
  async function api(path, options = {}) {
    const headers = { "X-Admin-Key": key(), ...(options.headers || {}) };
    const url = path.startsWith("../") ? path : `api/${path}`;
    const response = await fetch(url, { ...options, headers, cache: "no-store" });
    if (response.status === 401) {
      signOut("The key was refused. Check it and try again.");
      throw new Refused();
    }
    if (response.status === 429) {  // too many wrong keys from this address
      const wait = response.headers.get("Retry-After") || "a few";
      signOut(`Too many wrong keys from this address. Try again in ${wait} s.`);
      throw new Refused();
    }
    return response;
  }

  function signOut(message) {
    sessionStorage.removeItem(KEY_NAME);
    clearInterval(timer);
    timer = null;
    clearInterval(usageTimer);
    usageTimer = null;
    $("app").hidden = true;
    $("signout").hidden = true;
    $("signin").hidden = false;
    $("signin-error").textContent = message || "";
    $("key").value = "";
    $("key").focus();
  }

  function signIn() {
    $("signin").hidden = true;
    $("app").hidden = false;
    $("signout").hidden = false;
    refresh();
    timer = setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_MS);
  }

  // --- status -------------------------------------------------------------------------

  async function refresh() {
    try {
      const [s, e] = await Promise.all([api("status"), api("errors")]);
      if (!s.ok || !e.ok) throw new Error(`HTTP ${s.ok ? e.status : s.status}`);
      status = await s.json();
      renderStatus(status, await e.json());
      $("status-error").textContent = "";
    } catch (error) {
      if (!(error instanceof Refused)) $("status-error").textContent = `Cannot load the status: ${error.message}`;
    }
  }

  function renderStatus(s, errors) {
    $("version").textContent = `v${s.version}`;
    const pids = (s.workers || []).map((w) => w.pid);
    $("uptime").textContent = `up ${duration(s.uptime_s)}` +
      (pids.length > 1 ? ` · ${pids.length} workers` : s.multiprocess ? ` · worker ${s.pid}` : "");
    $("uptime").title = s.aggregated ? `The whole instance: summed over worker processes ${pids.join(", ")}.`
      : s.multiprocess ? "Only the worker process that answered." : "";
    const health = s.draining ? "draining" : s.ready ? "ready" : "starting";
    $("health").replaceWith(Object.assign(badge(health), { id: "health" }));
    renderSummary(s);
    renderTraffic(s.traffic);
    renderRoutes(s.routes);
    renderErrors(errors);
    fillRoutes();
    $("updated").textContent = `Updated ${new Date().toLocaleTimeString()} · refreshes every ${REFRESH_MS / 1000} s`;
    if (firstRender) {
      firstRender = false;
      performance.mark("console-status-rendered");
      document.documentElement.dataset.statusRendered = "true";
    }
  }

  function stat(label, value, sub, extra) {
    return el("div", { class: "stat" }, el("div", { class: "label", text: label }),
      el("div", { class: "value" }, value), sub ? el("div", { class: "sub" }, sub) : null, extra || null);
  }

  function renderSummary(s) {
    const types = Object.values(s.traffic);
    const sum = (field) => types.reduce((total, t) => total + t[field], 0);
    const cache = s.cache;
    const models = Object.entries(s.embedded_models);
    const ready = models.filter(([, state]) => state === "ready").length;
    const redis = !cache.enabled ? "cache off" : cache.redis ? cache.redis.state : "not used";
    $("summary").replaceChildren(...[
      stat("In flight", String(s.in_flight), s.max_in_flight ? `limit ${s.max_in_flight}` : "no limit"),
      stat("Requests / min", String(sum("requests_last_minute")), `${sum("requests_total")} since start`),
      stat("Errors / min", String(sum("errors_last_minute")), `${s.errors_total} since start`),
      stat("Embedding cache hits", cache.enabled ? pct(cache.hit_rate) : "off",
        cache.enabled ? `${cache.hits} hits · ${cache.misses} misses · ${cache.store}` : "cache.embeddings.enabled: false"),
      s.response_cache ? stat("LLM answers cached", pct(s.response_cache.hit_rate),
        `${s.response_cache.hits} hits · ${s.response_cache.misses} misses · ${s.response_cache.stored} stored`) : null,
      stat("Redis", cache.redis ? badge(redis) : el("span", { class: "muted", text: redis }),
        cache.redis ? `${cache.redis.mode} · ${cache.redis.errors} errors` : "in-process cache only"),
      stat("Embedded models", models.length ? `${ready} / ${models.length} ready` : "none",
        models.length ? models.map(([name, state]) => name.replace("local/", "") + (state === "ready" ? "" : ` (${state})`)).join(", ")
          : "no route uses them"),
      configStat(s),
    ].filter(Boolean));
  }

  // The configuration file and its last reload (SIGHUP or a watched file change).
  function configStat(s) {
    const r = s.reload;
    const source = String(s.config_source).split("/").pop();
    if (!r) return stat("Configuration", source, "not reloaded since start");
    const when = `${duration(Math.max(0, s.now - r.at))} ago (${r.trigger})`;
    const restart = r.needs_restart && r.needs_restart.length ? ` · needs a restart: ${r.needs_restart.join(", ")}` : "";
    const workers = (r.workers || []).length > 1
      ? ` · ${r.workers.filter((w) => w.result === r.result).length} of ${r.workers.length} workers` : "";
    const value = el("span", {}, source, " ", badge(r.result === "invalid" ? "reload failed" : `reload ${r.result}`));
    const card = stat("Configuration", value, `${when}${workers}${restart}`);
    if (r.result === "invalid") card.append(el("div", { class: "error sub", text: r.message }));
    card.dataset.reload = r.result;
    return card;
  }

  function renderTraffic(traffic) {
    const rows = Object.entries(traffic).map(([type, t]) => el("tr", {},
      el("td", {}, el("span", { class: "tag", text: type })),
      el("td", { class: "num", text: String(t.in_flight) }),
      el("td", { class: "num", text: String(t.requests_last_minute) }),
      el("td", { class: "num" }, `${t.errors_last_minute}`,
        t.error_rate ? el("span", { class: "muted", text: ` (${pct(t.error_rate)})` }) : null),
      el("td", { class: "num hide-narrow", text: ms(t.avg_duration_ms) }),
      el("td", { class: "num hide-narrow", text: String(t.requests_total) })));
    $("traffic").tBodies[0].replaceChildren(...(rows.length ? rows
      : [el("tr", {}, el("td", { colspan: 6, class: "empty", text: "No requests yet." }))]));
  }

  // A configured target: its backends' breaker, and their error rate and latency (backends are
  // shared by the routes that use the same model at the same address).
  function targetRow(t) {
    const numbers = t.calls
      ? [t.requests_last_minute ? `${pct(t.error_rate)} errors` : "idle this minute", `${ms(t.latency_ms)} avg`,
        `${t.calls} calls`, t.backends > 1 ? `${t.backends} models` : null, t.in_flight ? `${t.in_flight} in flight` : null]
        .filter(Boolean).join(" · ")
      : "no calls yet";
    return el("div", { class: "target" },
      badge(t.state),
      el("div", { class: "where" }, el("code", { text: t.model }),
        t.fallback ? el("span", { class: "tag", text: "fallback" }) : null,
        t.api_base ? el("span", { class: "muted", text: ` ${t.api_base}` }) : null,
        t.weight !== 1 ? el("span", { class: "muted", text: ` · weight ${t.weight}` }) : null,
        t.api_key ? el("span", { class: "muted", text: " · key set" }) : null),
      el("div", { class: "numbers", text: numbers }),
      t.last_error ? el("div", { class: "last-error", text: `${clock(t.last_error_at)}: ${t.last_error}` }) : null);
  }

  function routeTraffic(t) {
    if (!t || !t.requests_last_minute) return t ? `${t.requests_total} requests since start` : "no requests yet";
    return `${t.requests_last_minute} req/min · ${pct(t.error_rate)} errors · ${ms(t.avg_duration_ms)} avg`;
  }

  function renderRoutes(routes) {
    const blocks = routes.map((r) => el("div", { class: "route" },
      el("div", { class: "route-head" },
        el("strong", { text: r.route }),
        el("span", {}, ...r.types.map((type) => el("span", { class: "tag", text: type }))),
        el("span", { class: "muted", text: `provider ${r.provider} · model ${r.model}` }),
        r.tenants ? el("span", { class: "muted", text: `· tenants ${r.tenants.join(", ")}` }) : null,
        el("span", { class: "route-traffic", text: routeTraffic(r.traffic) })),
      ...r.targets.map(targetRow), ...r.fallbacks.map(targetRow)));
    $("routes").replaceChildren(...(blocks.length ? blocks
      : [el("p", { class: "muted", text: "No routes: every model call is forwarded to Dify or refused." })]));
  }

  function renderErrors(body) {
    $("errors-note").textContent = `newest first · the last ${body.capacity} are kept`;
    const rows = body.errors.map((e) => el("tr", {},
      el("td", { class: "num", text: clock(e.at) }),
      el("td", {}, el("span", { class: "tag", text: e.type })),
      el("td", { class: "nowrap", text: e.route || "—" }),
      el("td", {}, el("span", { class: "badge bad", text: `${e.status || "—"} ${e.outcome.replace("_", " ")}` })),
      el("td", { class: "message", text: e.message })));
    $("errors").tBodies[0].replaceChildren(...(rows.length ? rows
      : [el("tr", {}, el("td", { colspan: 5, class: "empty", text: "No errors." }))]));
  }

  // --- usage: reports and budgets from the management API (../admin/) -----------------

  const SVG = "http://www.w3.org/2000/svg";
  const USAGE_REFRESH_MS = 30000;
  let usageTimer = null;
  let usageRenders = 0;
  const count = (n) => Number(n).toLocaleString("en-US");

  // Dollars as the usage command prints them: cents from $1, up to four places from a cent,
  // else two significant digits. The exact amount is the cell's title.
  function usd(text) {
    const value = Number(text);
    const size = Math.abs(value);
    if (value === 0) return "0.00";
    if (size >= 1) return value.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
    if (size >= 0.01) {
      const shown = value.toFixed(4).replace(/0+$/, "");
      return shown + "0".repeat(Math.max(0, 2 - shown.split(".")[1].length));
    }
    return value.toFixed(Math.min(12, 1 - Math.floor(Math.log10(size))));
  }

  const svg = (tag, attrs, ...children) => {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    for (const child of children) node.append(child);
    return node;
  };

  async function adminJson(path) {
    const response = await api(`../admin/${path}`);
    const body = await response.json().catch(() => ({}));
    return { status: response.status, ok: response.ok, body };
  }

  async function refreshUsage() {
    const since = $("usage-since").value;
    const days = since.replace("d", "");
    try {
      const [tenants, models, daily, budgets, ledger] = await Promise.all([
        adminJson(`usage?since=${since}&by=tenant&limit=10`), adminJson(`usage?since=${since}&by=model&limit=10`),
        adminJson(`usage/daily?since=${since}`), adminJson("budgets"), adminJson("ledger")]);
      $("usage-error").textContent = "";
      renderBudgets(budgets);
      renderLedger(ledger);
      const failed = [tenants, models, daily].find((r) => !r.ok);
      if (failed) {
        const why = failed.status === 404 ? "This gateway does not serve the management API (/admin)."
          : failed.body.error || `HTTP ${failed.status}`;
        usageMessage(failed.status === 503 ? `No usage to show: ${why}` : why);
      } else if (!tenants.body.total.requests) {
        usageMessage(`No usage recorded in the last ${days} days yet: the ledger fills as the gateway answers calls.`);
      } else {
        $("usage-message").hidden = true;
        $("usage-body").hidden = false;
        renderUsageSummary(tenants.body.total);
        renderChart(daily.body.days);
        renderTenants(tenants.body.lines);
        renderModels(models.body.lines);
      }
      usageRenders += 1;
      document.documentElement.dataset.usageRendered = String(usageRenders);
    } catch (error) {
      if (!(error instanceof Refused)) $("usage-error").textContent = `Cannot load the usage: ${error.message}`;
    }
  }

  // The ledger writer's state: where rows go, and whether any wait, spill or were lost.
  function renderLedger(reply) {
    const state = reply.ok ? reply.body.state || {} : {};
    if (!reply.ok || !reply.body.enabled) {
      $("usage-ledger").replaceChildren(reply.ok ? "Ledger: off (ledger.enabled: false)." : "");
      return;
    }
    const kind = { ok: "ok", degraded: "bad", starting: "warn" }[state.status] || "idle";
    const parts = [state.display, `${count(state.queued || 0)} queued`, `${count(state.written || 0)} written`,
      `${count(state.spilled || 0)} spilled`, `${count(state.replayed || 0)} replayed`, `${count(state.dropped || 0)} dropped`];
    $("usage-ledger").replaceChildren("Ledger ", el("span", { class: `badge ${kind}`, text: state.status || "?" }),
      ` ${parts.filter(Boolean).join(" · ")}`,
      state.last_error ? el("span", { class: "error", text: ` · ${state.last_error}` }) : "");
    $("usage-ledger").dataset.status = state.status || "";
  }

  function usageMessage(text) {
    $("usage-body").hidden = true;
    $("usage-message").hidden = false;
    $("usage-message").textContent = text;
  }

  function renderUsageSummary(t) {
    const cost = stat("Spend (USD)", usd(t.price_usd), `exactly ${t.price_usd}`);
    cost.id = "usage-spend";
    $("usage-summary").replaceChildren(cost,
      stat("Requests", count(t.requests), `${count(t.failed)} failed`),
      stat("Tokens", count(t.tokens_in + t.tokens_out), `${count(t.tokens_in)} in · ${count(t.tokens_out)} out`),
      stat("Cached tokens", count(t.cached_tokens), "served from the embedding cache"));
  }

  function renderChart(days) {
    const width = 720;
    const height = 220;
    const pad = { left: 8, right: 8, top: 16, bottom: 22 };
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const step = plotW / Math.max(1, days.length);
    const maxSpend = Math.max(...days.map((d) => Number(d.price_usd)), 0);
    const maxTokens = Math.max(...days.map((d) => d.tokens_in + d.tokens_out), 0);
    const chart = svg("svg", { id: "usage-chart", viewBox: `0 0 ${width} ${height}`, role: "img",
      "aria-label": "spend and tokens per day", preserveAspectRatio: "none" });
    chart.append(svg("line", { class: "axis", x1: pad.left, x2: width - pad.right, y1: pad.top + plotH, y2: pad.top + plotH }));
    const points = [];
    days.forEach((d, i) => {
      const spend = Number(d.price_usd);
      const tokens = d.tokens_in + d.tokens_out;
      const x = pad.left + i * step;
      const h = maxSpend > 0 ? (spend / maxSpend) * plotH : 0;
      const bar = svg("rect", { class: "spend", x: x + step * 0.15, width: Math.max(1, step * 0.7),
        y: pad.top + plotH - h, height: h, "data-day": d.day, "data-usd": d.price_usd });
      bar.append(svg("title", {}, `${d.day}: ${usd(d.price_usd)} USD · ${count(tokens)} tokens · ${count(d.requests)} requests`));
      chart.append(bar);
      const y = maxTokens > 0 ? pad.top + plotH - (tokens / maxTokens) * plotH : pad.top + plotH;
      points.push(`${(x + step / 2).toFixed(1)},${y.toFixed(1)}`);
    });
    if (points.length) chart.append(svg("polyline", { class: "tokens", points: points.join(" ") }));
    const label = (i, anchor) => chart.append(svg("text", { x: pad.left + i * step + step / 2, y: height - 6,
      "text-anchor": anchor }, days[i].day.slice(5)));
    if (days.length) { label(0, "start"); label(days.length - 1, "end"); }
    chart.append(svg("text", { x: pad.left, y: 11 }, `max ${usd(String(maxSpend))} USD · ${count(maxTokens)} tokens a day`));
    $("usage-chart-wrap").replaceChildren(chart);
  }

  function usageCells(line) {
    return [el("td", { class: "num", text: count(line.requests) }), el("td", { class: "num", text: count(line.failed) }),
      el("td", { class: "num", text: count(line.tokens_in + line.tokens_out) }),
      el("td", { class: "num cost", text: usd(line.price_usd), title: line.price_usd })];
  }

  function renderTenants(lines) {
    $("usage-tenants").tBodies[0].replaceChildren(...lines.map((line) => el("tr", {},
      el("td", { class: "ident", text: line.tenant_id, title: line.tenant_id }), ...usageCells(line))));
  }

  function renderModels(lines) {
    $("usage-models").tBodies[0].replaceChildren(...lines.map((line) => el("tr", {},
      el("td", { class: "ident", title: `${line.provider} / ${line.model}` }, el("strong", { text: line.model }),
        el("span", { class: "muted", text: ` ${line.provider}` })), ...usageCells(line))));
  }

  function renderBudgets(reply) {
    const body = $("usage-budgets").tBodies[0];
    const note = (text) => body.replaceChildren(el("tr", {}, el("td", { colspan: 6, class: "empty", text })));
    if (!reply.ok) return note(`Cannot read the budgets: ${reply.body.error || `HTTP ${reply.status}`}`);
    if (!reply.body.enabled) return note("No budgets are configured (budgets: in the configuration file).");
    if (!reply.body.budgets.length) return note("No budgeted tenant has called yet.");
    const amount = (usdText, tokens) => [usdText !== null && usdText !== undefined ? `${usd(usdText)} USD` : null,
      tokens !== null && tokens !== undefined ? `${count(tokens)} tokens` : null].filter(Boolean).join(" · ") || "—";
    body.replaceChildren(...reply.body.budgets.map((b) => el("tr", {},
      el("td", { class: "ident", text: b.tenant_id || "—", title: b.tenant_id || "" }),
      el("td", {}, b.name, el("span", { class: "muted", text: ` (${b.period}${b.route ? ` · route ${b.route}` : ""}` +
        `${b.model ? ` · model ${b.model}` : ""})` })),
      el("td", { class: "num", text: amount(b.limit_usd !== null ? b.spent_usd : null, b.limit_tokens !== null ? b.spent_tokens : null) }),
      el("td", { class: "num", text: amount(b.limit_usd, b.limit_tokens) }),
      el("td", { class: "nowrap", text: b.resets_at ? new Date(b.resets_at).toLocaleString() : "—" }),
      el("td", {}, el("span", { class: `badge ${b.over ? "bad" : "ok"}`, text: b.over ? "over budget" : "within" })))));
  }

  function showUsage(open) {
    clearInterval(usageTimer);
    usageTimer = null;
    if (!open) return;
    refreshUsage();
    usageTimer = setInterval(() => { if (!document.hidden && key()) refreshUsage(); }, USAGE_REFRESH_MS);
  }

  // --- try it -------------------------------------------------------------------------

  function setupTry() {
    $("try-type").replaceChildren(...TYPES.map((type) => el("option", { value: type, text: type })));
    $("try-type").addEventListener("change", () => { showFields(true); fillRoutes(true); });
    $("try-route").addEventListener("change", routeChosen);
    $("try-form").addEventListener("submit", (event) => { event.preventDefault(); runTry(); });
    $("try-stop").addEventListener("click", () => tryAbort && tryAbort.abort());
    $("try-docs").value = SAMPLE_DOCS;
    showFields(true);
  }

  function showFields(resetSample) {
    const type = $("try-type").value;
    for (const field of document.querySelectorAll("#try-form [data-types]")) {
      field.hidden = !field.dataset.types.split(" ").includes(type);
    }
    $("try-text-caption").textContent = CAPTIONS[type] || "Text";
    const text = $("try-text");
    if (resetSample && (!text.value || Object.values(SAMPLES).includes(text.value))) text.value = SAMPLES[type] || "";
  }

  // The route list for the chosen type; a refresh keeps the user's choice, a new type starts
  // with the first route that serves it.
  function fillRoutes(typeChanged) {
    if (!status) return;
    const type = $("try-type").value;
    const select = $("try-route");
    const chosen = select.value;
    const routes = status.routes.filter((r) => r.types.includes(type));
    const options = routes.map((r) => el("option", { value: r.route, text: r.route }));
    options.push(el("option", { value: "", text: routes.length ? "(none: the gateway picks)" : "(no route serves this type)" }));
    select.replaceChildren(...options);
    const keep = typeChanged ? routes.some((r) => r.route === chosen) : [...select.options].some((o) => o.value === chosen);
    if (keep && select.dataset.filled) select.value = chosen;
    else select.selectedIndex = 0;
    select.dataset.filled = "true";
    routeChosen();
  }

  function routeChosen() {
    const route = status && status.routes.find((r) => r.route === $("try-route").value);
    $("try-provider").placeholder = route ? `from the route: ${route.provider}` : "openai";
    $("try-model").placeholder = route ? `from the route: ${route.model}` : "any";
    $("try-hint").textContent = route ? `${route.targets.map((t) => t.model).join(", ")}` : "";
  }

  function readAudio(file) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(new Error("cannot read the audio file"));
      reader.readAsDataURL(file);
    });
  }

  async function tryPayload() {
    const type = $("try-type").value;
    const payload = {
      type, route: $("try-route").value || null,
      provider: $("try-provider").value.trim() || null, model: $("try-model").value.trim() || null,
    };
    if (type === "speech2text") {
      const file = $("try-audio").files[0];
      if (!file) throw new Error("Choose an audio file first.");
      payload.audio_base64 = await readAudio(file);
      return payload;
    }
    payload.text = $("try-text").value;
    if (type === "llm") {
      const temperature = $("try-temperature").value.trim();
      Object.assign(payload, { system: $("try-system").value, stream: $("try-stream").checked });
      if (temperature !== "") payload.temperature = Number(temperature);
    }
    if (type.endsWith("rerank")) payload.docs = $("try-docs").value;
    if (type.endsWith("embedding")) payload.input_type = $("try-input-type").value;
    if (type === "tts") payload.voice = $("try-voice").value.trim();
    return payload;
  }

  async function runTry() {
    const type = $("try-type").value;
    const view = new TryView(type);
    $("try-run").disabled = true;
    $("try-stop").hidden = false;
    tryAbort = new AbortController();
    try {
      const payload = await tryPayload();
      const response = await api("try", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify(payload), signal: tryAbort.signal,
      });
      if (!response.ok) {
        const body = await response.json().catch(() => ({}));
        view.fail(body.error || `HTTP ${response.status}`);
        return;
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let newline;
        while ((newline = buffer.indexOf("\n")) >= 0) {
          const line = buffer.slice(0, newline);
          buffer = buffer.slice(newline + 1);
          if (line.trim()) view.event(JSON.parse(line));
        }
      }
      view.done();
    } catch (error) {
      if (error instanceof Refused) return;
      view.fail(error.name === "AbortError" ? "Stopped." : error.message);
    } finally {
      $("try-run").disabled = false;
      $("try-stop").hidden = true;
      tryAbort = null;
    }
  }

  // One try's result: updated event by event as the NDJSON lines arrive.
  class TryView {
    constructor(type) {
      this.type = type;
      this.frames = [];
      this.raw = [];
      this.audio = [];
      this.response = null;
      this.firstFrameMs = null;
      $("try-result").hidden = false;
      $("try-error").textContent = "";
      $("try-output").replaceChildren();
      $("try-raw").textContent = "";
      $("try-raw-note").textContent = "";
      $("try-request").textContent = "";
      $("try-path").textContent = "";
      this.meta([el("span", { class: "muted", text: "Sending…" })]);
      if (type === "llm") {
        this.text = el("div", { class: "llm-text streaming", id: "try-llm-text" });
        $("try-output").append(this.text);
      }
    }

    meta(parts) { $("try-meta").replaceChildren(...parts); }

    fail(message) {
      $("try-error").textContent = message;
      if (this.text) this.text.classList.remove("streaming");
      if (!this.response) this.meta([badge("failed")]);
    }

    event(e) {
      if (e.event === "request") {
        $("try-path").textContent = e.path;
        $("try-request").textContent = JSON.stringify(abbreviate(e.body), null, 2);
        this.route = e.route;
      } else if (e.event === "response") {
        this.response = e;
        this.summary(e.t_ms, null);
      } else if (e.event === "frame") {
        if (this.firstFrameMs === null) this.firstFrameMs = e.t_ms;
        this.frames.push(e.frame);
        this.raw.push(`+${Math.round(e.t_ms)} ms  ${JSON.stringify(abbreviate(e.frame))}`);
        $("try-raw").textContent = this.raw.join("\n");
        $("try-raw-note").textContent = `(${this.frames.length} frames)`;
        this.onFrame(e.frame);
      } else if (e.event === "envelope") {
        $("try-raw").textContent = JSON.stringify(abbreviate(e.envelope), null, 2);
        $("try-raw-note").textContent = "(one JSON envelope)";
        this.onEnvelope(e.envelope);
      } else if (e.event === "error") {
        $("try-error").textContent = e.message;
      } else if (e.event === "end") {
        this.end = e;
        this.summary(e.total_ms, e);
      }
    }

    summary(now, end) {
      const r = this.response;
      const parts = [el("span", { class: `badge ${r.status === 200 ? "ok" : "bad"}`, text: `HTTP ${r.status}` })];
      const add = (label, value) => parts.push(el("span", {}, `${label} `, el("b", { text: value })));
      if (this.route) add("route", this.route);
      if (r.target) add("target", r.target);
      if (r.stream && this.firstFrameMs !== null) add("first frame", ms(this.firstFrameMs));
      if (end) {
        add("total", ms(end.total_ms));
        if (r.stream) add("frames", String(end.frames));
        add("bytes", String(end.bytes));
      } else {
        add("headers", ms(now));
      }
      if (r.attempts > 1) add("attempts", String(r.attempts));
      this.meta(parts);
    }

    onFrame(frame) {
      if (frame.error) {
        $("try-error").textContent = frame.error;
        return;
      }
      const data = frame.data || {};
      if (this.type === "llm" && data.delta) {
        const content = data.delta.message && data.delta.message.content;
        if (typeof content === "string") this.text.append(content);
        else if (Array.isArray(content)) this.text.append(content.map((c) => c.data || "").join(""));
        if (data.delta.usage) this.usage = data.delta.usage;
      } else if (this.type === "tts" && data.result) {
        this.audio.push(data.result);
        this.mime = data.mime_type || "audio/mpeg";
      }
    }

    onEnvelope(envelope) {
      if (!envelope) return;
      if (envelope.error) {
        $("try-error").textContent = envelope.error;
        return;
      }
      const data = envelope.data || {};
      const out = $("try-output");
      if (data.embeddings) {
        const dims = data.embeddings.length ? data.embeddings[0].length : 0;
        out.append(el("p", {}, el("b", { id: "try-vector-summary",
          text: `${data.embeddings.length} vector${data.embeddings.length === 1 ? "" : "s"} × ${dims} dimensions` }),
        data.usage ? el("span", { class: "muted", text: ` · ${data.usage.tokens} tokens` }) : null));
        data.embeddings.slice(0, 8).forEach((vector, i) => {
          const norm = Math.sqrt(vector.reduce((s, v) => s + v * v, 0));
          out.append(el("div", { class: "vector" }, el("span", { class: "muted", text: `#${i} · norm ${norm.toFixed(3)}` }),
            el("code", { class: "vector-values", text: `[${vector.slice(0, 8).map((v) => v.toFixed(4)).join(", ")}, …]` })));
        });
      } else if (data.docs) {
        const top = Math.max(...data.docs.map((d) => d.score), 1e-9);
        const rows = data.docs.map((d) => {
          const bar = el("div", { class: "score" });
          bar.style.width = `${Math.max(2, (100 * d.score) / top)}%`;
          return el("tr", {}, el("td", { class: "num", text: String(d.index) }),
            el("td", { class: "num", text: d.score.toFixed(4) }), el("td", {}, d.text, bar));
        });
        out.append(el("div", { class: "table-wrap" }, el("table", {},
          el("thead", {}, el("tr", {}, el("th", { class: "num", text: "Index" }), el("th", { class: "num", text: "Score" }),
            el("th", { text: "Document" }))), el("tbody", {}, ...rows))));
      } else if (typeof data.result === "boolean") {
        out.append(el("p", { id: "try-moderation" },
          el("span", { class: `badge ${data.result ? "bad" : "ok"}`, text: data.result ? "flagged" : "not flagged" })));
      } else if (typeof data.result === "string") {
        out.append(el("div", { class: "llm-text", text: data.result }));
      }
    }

    done() {
      if (this.text) {
        this.text.classList.remove("streaming");
        if (this.usage) {
          $("try-output").append(el("p", { class: "muted", text:
            `${this.usage.prompt_tokens} prompt + ${this.usage.completion_tokens} completion tokens` +
            (this.usage.total_price && this.usage.total_price !== "0" ? ` · ${this.usage.total_price} ${this.usage.currency}` : "") }));
        }
      }
      if (this.audio.length) {
        const hex = this.audio.join("");
        const bytes = new Uint8Array(hex.length / 2);
        for (let i = 0; i < bytes.length; i += 1) bytes[i] = parseInt(hex.substr(i * 2, 2), 16);
        const player = el("audio", { controls: true, src: URL.createObjectURL(new Blob([bytes], { type: this.mime })) });
        $("try-output").append(el("p", {}, el("b", { text: `${(bytes.length / 1024).toFixed(1)} KB of ${this.mime}` }),
          el("span", { class: "muted", text: ` in ${this.audio.length} frames` })), player);
      }
    }
  }

  // --- start --------------------------------------------------------------------------

  function selectTab(name) {
    for (const tab of document.querySelectorAll(".tabs button")) {
      const active = tab.dataset.tab === name;
      tab.setAttribute("aria-selected", String(active));
      $(`tab-${tab.dataset.tab}`).hidden = !active;
    }
    showUsage(name === "usage");
  }

  document.addEventListener("DOMContentLoaded", () => {
    for (const tab of document.querySelectorAll(".tabs button")) {
      tab.addEventListener("click", () => selectTab(tab.dataset.tab));
    }
    $("signin-form").addEventListener("submit", (event) => {
      event.preventDefault();
      sessionStorage.setItem(KEY_NAME, $("key").value.trim());
      signIn();
    });
    $("signout").addEventListener("click", () => signOut(""));
    $("usage-since").addEventListener("change", refreshUsage);
    setupTry();
    if (key()) signIn();
    else signOut("");
  });
})();
