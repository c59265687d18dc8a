// portrait profile console: plain JavaScript over the public REST API (no build step, no CDN).
// Every value from the API is written with textContent, never parsed as HTML.
"use strict";

const KEY_STORAGE = "portrait.apiKey";
const $ = (id) => document.getElementById(id);

const state = {
  user: null,        // the user being shown
  catalogue: null,   // GET /v1/features, fetched once per key
  first: null,       // ms of the user's first and newest event (bounds of the slider)
  last: null,
  pages: [],         // paging parameters of each page shown so far ({} for the first)
  next: null,        // parameters of the next (older) page, or null
};

// -- the API ---------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.detail || body.title)) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

async function api(path, params = {}) {
  const url = new URL(path, document.baseURI);
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined && v !== "") url.searchParams.set(k, v);
  }
  const headers = { Accept: "application/json" };
  const key = apiKey();
  if (key) headers["X-API-Key"] = key;
  let response;
  try {
    response = await fetch(url, { headers });
  } catch (err) {
    throw new ApiError(0, { detail: `cannot reach the API (${err.message})` });
  }
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON: keep null */ }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

// -- messages --------------------------------------------------------------------------------

function explain(err, user) {
  switch (err.status) {
    case 401:
      return apiKey()
        ? "The API key was refused (401): check it and press \u201cUse key\u201d again."
        : "This server needs an API key (401): enter one above and press \u201cUse key\u201d.";
    case 403:
      return "This API key may not read profiles (403): use a key with the read scope.";
    case 404:
      return `Unknown user \u201c${user}\u201d (404): the event log has no events for this id` +
        (asOfValue() ? " at or before that time." : ".");
    case 422:
      return `The request was not accepted (422): ${err.message}` +
        (err.body && err.body.field ? ` [field: ${err.body.field}]` : "");
    case 0:
      return `Cannot reach the API: ${err.message.replace(/^cannot reach the API /, "")}`;
    default:
      return `The API answered ${err.status}: ${err.message}`;
  }
}

function say(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = kind;
  box.hidden = !text;
}

// -- formatting ------------------------------------------------------------------------------

const TIME_UNITS = [["d", 86400], ["h", 3600], ["min", 60], ["s", 1]];

function duration(seconds) {
  if (seconds < 0) return "never";
  if (seconds === 0) return "0 s";
  const parts = [];
  let rest = seconds;
  for (const [unit, size] of TIME_UNITS) {
    if (rest >= size && parts.length < 2) {
      const n = Math.floor(rest / size);
      parts.push(`${n} ${unit}`);
      rest -= n * size;
    }
  }
  return parts.length ? parts.join(" ") : `${seconds.toFixed(2)} s`;
}

function isoShort(iso) {
  return iso ? iso.replace("T", " ").replace(/(\.\d+)?\+00:00$/, "") : "\u2014";
}

function number(x, digits = 2) {
  if (Number.isInteger(x)) return x.toLocaleString("en");
  return x.toLocaleString("en", { maximumFractionDigits: digits });
}

function formatValue(value, info) {
  if (value === null || value === undefined) return "\u2014";
  if (Array.isArray(value)) return value.length ? value.join(", ") : "(none)";
  if (typeof value === "string") return info && info.dtype === "timestamp" ? isoShort(value) : value;
  const unit = info ? info.unit : "";
  if (unit === "s") return value < 0 ? "never" : duration(value);
  if (unit === "ratio") return `${(value * 100).toFixed(1)} %`;
  if (unit === "d") return value < 0 ? "never" : `${number(value, 1)} d`;
  if (unit === "currency") return number(value, 2);
  return unit && unit !== "affinity" ? `${number(value)} ${unit}` : number(value, 3);
}

// datetime-local <-> ISO (the console speaks UTC, as the API's times do)
function localToIso(value) {
  if (!value) return "";
  return (value.length === 16 ? value + ":00" : value) + "+00:00";
}

function isoToLocal(iso) {
  return new Date(iso).toISOString().slice(0, 19);
}

function asOfValue() {
  const mode = document.querySelector("input[name=mode]:checked").value;
  return mode === "as_of" ? localToIso($("as-of").value) : "";
}

// -- rendering -------------------------------------------------------------------------------

function el(tag, attrs = {}, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function renderSummary(p) {
  $("summary-title").textContent = `User ${p.user_id}` + (asOfValue() ? " as of " + isoShort(p.as_of) : " (latest)");
  const facts = [
    ["evaluated at (UTC)", isoShort(p.as_of)],
    ["log offset", number(p.offset)],
    ["newest event (UTC)", isoShort(p.event_time)],
    ["age of newest event", p.event_age_s === null || p.event_age_s === undefined ? "\u2014" : duration(p.event_age_s)],
    ["models", p.model_source + (p.model_version ? ` \u00b7 ${p.model_version}` : "")],
  ];
  const dl = $("summary-facts");
  dl.replaceChildren(...facts.map(([k, v]) => {
    const div = el("div");
    div.append(el("dt", {}, k), el("dd", {}, v));
    return div;
  }));
}

function renderSegment(seg) {
  const box = $("segment-words");
  box.replaceChildren();
  if (!seg || seg.label === null || seg.label === undefined) {
    box.textContent = "No segment: this server runs without the segment model.";
    return;
  }
  box.append(el("div", { class: "segment-label", id: "segment-label" }, seg.label));
  const bits = [];
  if (seg.id !== null && seg.id !== undefined) bits.push(`segment #${seg.id}`);
  if (typeof seg.centroid_distance === "number") {
    bits.push(`${seg.centroid_distance.toFixed(2)} standard units from its centre`);
  }
  if (bits.length) box.append(el("div", { class: "muted" }, bits.join(", ")));
}

function renderPropensity(prop, catalogue) {
  const words = $("propensity-words");
  const bar = $("propensity-bar");
  const list = $("reasons");
  list.replaceChildren();
  if (!prop || typeof prop.score !== "number") {
    words.textContent = "No score: this server runs without the propensity model.";
    bar.style.width = "0";
    return;
  }
  const pct = (prop.score * 100).toFixed(1);
  words.textContent = `${pct} % chance of a purchase within ${prop.horizon || "the horizon"}.`;
  bar.style.width = `${Math.max(0, Math.min(100, prop.score * 100))}%`;
  const reasons = prop.top_features || [];
  const biggest = Math.max(1e-12, ...reasons.map((r) => Math.abs(r.contribution || 0)));
  for (const r of reasons) {
    const c = r.contribution || 0;
    const width = `${(Math.abs(c) / biggest) * 100}%`;
    const info = catalogue.get(r.feature);
    const li = el("li", { title: info ? info.description : "" });
    const name = el("span", { class: "name" }, `${r.feature} = ${formatValue(r.value, info)}`);
    const neg = el("span", { class: "half neg" });
    const pos = el("span", { class: "half pos" });
    const b = el("span", { class: "bar" });
    b.style.width = width;
    (c < 0 ? neg : pos).append(b);
    li.append(name, neg, pos, el("span", { class: "amount" }, (c >= 0 ? "+" : "") + c.toFixed(3)));
    list.append(li);
  }
  if (!reasons.length) list.append(el("li", { class: "muted" }, "no contributions reported"));
}

function renderFeatures(features, catalogue) {
  const groups = new Map();
  for (const info of catalogue.values()) {
    if (!(info.name in features)) continue;
    if (!groups.has(info.view)) groups.set(info.view, []);
    groups.get(info.view).push(info);
  }
  const uncatalogued = Object.keys(features).filter((n) => !catalogue.has(n));
  if (uncatalogued.length) groups.set("other", uncatalogued.map((n) => ({ name: n, description: "" })));
  const root = $("feature-groups");
  root.replaceChildren();
  for (const [theme, infos] of groups) {
    const section = el("div", { class: "theme", "data-theme": theme });
    section.append(el("h3", {}, theme));
    const table = el("table");
    const body = el("tbody");
    for (const info of infos) {
      const tr = el("tr", { "data-feature": info.name });
      tr.append(
        el("td", { class: "fname" }, info.name),
        el("td", { class: "fvalue" }, formatValue(features[info.name], info)),
        el("td", { class: "fdesc" }, info.description),
      );
      body.append(tr);
    }
    table.append(body);
    section.append(table);
    root.append(section);
  }
}

function renderEvents(events) {
  const body = $("events-table").querySelector("tbody");
  body.replaceChildren();
  for (const e of events) {
    const tr = el("tr", { "data-offset": e.offset });
    const type = el("td");
    type.append(el("span", { class: `type ${e.type}` }, e.type));
    tr.append(
      el("td", { class: "num" }, String(e.offset)),
      el("td", {}, isoShort(e.ts)),
      type,
      el("td", {}, e.item_id || ""),
      el("td", {}, e.category || ""),
      el("td", { class: "num" }, e.price === null || e.price === undefined ? "" : number(e.price, 2)),
      el("td", { class: "num" }, String(e.quantity)),
      el("td", {}, e.session_id || ""),
    );
    body.append(tr);
  }
  if (!events.length) {
    const tr = el("tr");
    tr.append(el("td", { colspan: "8", class: "muted" }, "no events"));
    body.append(tr);
  }
  $("events-page").textContent = `page ${state.pages.length}`;
  $("newer").disabled = state.pages.length <= 1;
  $("older").disabled = !state.next;
}

// -- the slider over the user's history ------------------------------------------------------

function setupSlider(features) {
  const first = features.first_event_ts, last = features.last_event_ts;
  if (!first || !last) { $("history").hidden = true; return; }
  state.first = Date.parse(first);
  state.last = Date.parse(last);
  $("slider-min").textContent = isoShort(first);
  $("slider-max").textContent = isoShort(last);
  $("history").hidden = false;
  syncSlider();
}

function syncSlider() {
  const slider = $("as-of-slider");
  const iso = asOfValue();
  const span = Math.max(1, state.last - state.first);
  const at = iso ? Date.parse(iso) : state.last;
  slider.value = String(Math.round(((at - state.first) / span) * 1000));
  $("slider-value").textContent = iso ? isoShort(iso) : "latest";
}

// whole seconds (what the picker shows), rounded up so the start includes the first event
function sliderTime() {
  const span = state.last - state.first;
  const ms = state.first + (Number($("as-of-slider").value) / 1000) * span;
  return new Date(Math.ceil(ms / 1000) * 1000).toISOString();
}

// -- actions ---------------------------------------------------------------------------------

async function loadCatalogue() {
  if (state.catalogue) return state.catalogue;
  const rows = await api("v1/features");
  state.catalogue = new Map(rows.map((r) => [r.name, r]));
  return state.catalogue;
}

async function lookup() {
  const user = $("user-id").value.trim();
  if (!user) { say("Enter a user id.", "info"); return; }
  const asOf = asOfValue();
  if (document.querySelector("input[name=mode]:checked").value === "as_of" && !asOf) {
    say("Pick a time for \u201cas of\u201d, or choose \u201clatest\u201d.", "info");
    return;
  }
  $("lookup-button").disabled = true;
  try {
    const catalogue = await loadCatalogue();
    const newUser = user !== state.user;
    const profile = await api(`v1/users/${encodeURIComponent(user)}/profile`, { as_of: asOf });
    state.user = user;
    say("");
    renderSummary(profile);
    renderSegment(profile.segment);
    renderPropensity(profile.propensity, catalogue);
    renderFeatures(profile.features, catalogue);
    if (newUser || !asOf) {
      // the slider spans the user's whole history: take it from the latest profile
      const latest = asOf ? await api(`v1/users/${encodeURIComponent(user)}/profile`) : profile;
      setupSlider(latest.features);
    } else {
      syncSlider();
    }
    $("result").hidden = false;
    history.replaceState(null, "", `#user=${encodeURIComponent(user)}` +
      (asOf ? `&as_of=${encodeURIComponent(asOf)}` : ""));
    if (newUser) await firstPage();
  } catch (err) {
    if (err instanceof ApiError) {
      say(explain(err, user));
      if (err.status === 401 || err.status === 403 || err.status === 404) {
        $("result").hidden = true;
        state.user = null;
      }
    } else {
      say(`Unexpected error: ${err.message}`);
    }
  } finally {
    $("lookup-button").disabled = false;
  }
}

// Paging: the API hands back an opaque `next_cursor` (sent as `cursor`) or, in older
// servers, a `next_before` time (sent as `before`); the console follows whichever it gets.
function nextParams(body) {
  if (body.next_cursor) return { cursor: body.next_cursor };
  if (body.next_before) return { before: body.next_before };
  return null;
}

async function showPage(params) {
  const limit = $("page-size").value;
  const body = await api(`v1/users/${encodeURIComponent(state.user)}/events`, { limit, ...params });
  state.next = nextParams(body);
  renderEvents(body.events);
}

async function firstPage() {
  state.pages = [{}];
  await showPage({});
}

async function pageAction(action) {
  try {
    if (action === "older" && state.next) {
      state.pages.push(state.next);
    } else if (action === "newer" && state.pages.length > 1) {
      state.pages.pop();
    } else {
      return;
    }
    await showPage(state.pages[state.pages.length - 1]);
  } catch (err) {
    say(err instanceof ApiError ? explain(err, state.user) : err.message);
  }
}

function showKeyState() {
  $("key-state").textContent = apiKey() ? "key set for this tab" : "no key";
}

function init() {
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const key = $("api-key").value.trim();
    if (key) sessionStorage.setItem(KEY_STORAGE, key); else sessionStorage.removeItem(KEY_STORAGE);
    $("api-key").value = "";
    state.catalogue = null;
    showKeyState();
    say("");
    if ($("user-id").value.trim()) { state.user = null; lookup(); }
  });
  $("forget-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    state.catalogue = null;
    showKeyState();
  });
  $("lookup-form").addEventListener("submit", (e) => { e.preventDefault(); lookup(); });
  $("as-of").addEventListener("change", () => {
    document.querySelector("input[name=mode][value=as_of]").checked = true;
  });
  for (const radio of document.querySelectorAll("input[name=mode]")) {
    radio.addEventListener("change", () => { if (state.user) lookup(); });
  }
  const slider = $("as-of-slider");
  slider.addEventListener("input", () => { $("slider-value").textContent = isoShort(sliderTime()); });
  slider.addEventListener("change", () => {
    $("as-of").value = isoToLocal(sliderTime());
    document.querySelector("input[name=mode][value=as_of]").checked = true;
    lookup();
  });
  $("older").addEventListener("click", () => pageAction("older"));
  $("newer").addEventListener("click", () => pageAction("newer"));
  $("page-size").addEventListener("change", () => { if (state.user) firstPage().catch((err) => say(explain(err, state.user))); });
  showKeyState();

  // #user=ID[&as_of=ISO] opens a profile directly (links can be shared; the key is not in them)
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get("user")) {
    $("user-id").value = hash.get("user");
    if (hash.get("as_of")) {
      $("as-of").value = isoToLocal(hash.get("as_of"));
      document.querySelector("input[name=mode][value=as_of]").checked = true;
    }
    lookup();
  }
}

document.addEventListener("DOMContentLoaded", init);
