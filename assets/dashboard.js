// The dashboard: pick an influencer and a range, draw its series with uPlot, show its latest
// values and rank, and the average across all influencers. State lives in the URL hash
// (#influencer=1000000&range=86400), so a view can be shared and a reload keeps it.
"use strict";

const $ = (id) => document.getElementById(id);
const numbers = new Intl.NumberFormat("en-US");
const charts = {};
// Every chart's x axis spans the requested range, however few points there are.
let shownRange = [0, 1];

// The step that keeps a range under ~1,500 points (raw minutes up to a day).
function stepFor(seconds) {
  if (seconds <= 86400) return null;
  for (const [step, name] of [[300, "5m"], [900, "15m"], [3600, "1h"], [21600, "6h"], [86400, "1d"]]) {
    if (seconds / step <= 1500) return name;
  }
  return "7d";
}

// The view in the URL hash; a range the page does not offer (an old or edited link) falls back
// to the default view rather than asking the API for start_time=NaN.
function readHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  const offered = [...$("range").options].map((option) => option.value);
  const range = params.get("range");
  const windows = [...$("movers-window").options].map((option) => option.value);
  const chosen = params.get("window");
  const horizon = params.get("horizon");
  return { influencer: params.get("influencer") || "",
           watchlist: params.get("watchlist") || "",
           range: offered.includes(range) ? range : "86400",
           window: windows.includes(chosen) ? chosen : "24h",
           horizon: ["7d", "30d", "90d"].includes(horizon) ? horizon : "30d",
           compare: (params.get("compare") || "").split(",").filter((pk) => /^[1-9][0-9]{0,14}$/.test(pk)).slice(0, 19),
           percent: params.get("normalize") === "percent",
           from: params.get("from") || "", to: params.get("to") || "" };
}

function timeRange(view) {
  const now = Math.floor(Date.now() / 1000);
  if (view.range === "custom") {
    const from = Math.floor(Date.parse(view.from + "Z") / 1000);
    const to = Math.floor(Date.parse(view.to + "Z") / 1000);
    if (!Number.isFinite(from) || !Number.isFinite(to)) throw new Error("Pick both ends of the custom range.");
    if (from > to) throw new Error("The custom range starts after it ends.");
    return [from, to];
  }
  return [now - Number(view.range), now];
}

function say(text, kind) {
  const box = $("message");
  box.textContent = text || "";
  box.className = text ? kind : "";
}

// With API_KEYS set the API wants a key: the page asks for it once (on the first 401) and
// keeps it for the tab (sessionStorage: gone when the tab closes, never in the URL).
const KEY = "influencer-analytics.api-key";

async function getJson(url) {
  const headers = { accept: "application/json" };
  const key = sessionStorage.getItem(KEY);
  if (key) headers.authorization = "Bearer " + key;
  const response = await fetch(url, { headers });
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) {
    sessionStorage.removeItem(KEY);
    $("key-form").hidden = false;
    const error = new Error(key ? "That API key was refused: enter another above."
                                : "This server wants an API key: enter it above.");
    error.status = 401;
    throw error;
  }
  if (!response.ok) {
    const error = new Error(body.detail || `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

// Runs of missing slots of the influencer shown ([[from, to], ...], epoch seconds), shaded on
// its charts.
let gapRuns = [];

function shadeGaps(u) {
  if (!gapRuns.length) return;
  const { ctx, bbox } = u;
  ctx.save();
  ctx.fillStyle = "rgba(220, 38, 38, 0.15)";
  for (const [from, to] of gapRuns) {
    const x0 = u.valToPos(from - 30, "x", true);
    const x1 = u.valToPos(to + 30, "x", true);
    ctx.fillRect(x0, bbox.top, Math.max(1, x1 - x0), bbox.height);
  }
  ctx.restore();
}

function draw(name, title, times, values, color) {
  const target = $("chart-" + name);
  const width = Math.max(300, target.clientWidth || 560);
  const data = [times, values];
  if (charts[name]) {
    charts[name].setData(data);
    charts[name].setScale("x", { min: shownRange[0], max: shownRange[1] });
    return;
  }
  charts[name] = new uPlot({
    width, height: 220,
    scales: { x: { time: true, range: () => shownRange } },
    series: [{}, { label: title, stroke: color, width: 1.5, spanGaps: false,
                   value: (u, v) => v == null ? "–" : numbers.format(v) }],
    hooks: ["followers", "following", "ratio"].includes(name) ? { draw: [shadeGaps] } : {},
    axes: [{}, { size: 70, values: (u, ticks) => ticks.map((v) => numbers.format(v)) }],
  }, data, target);
}

// Raw points carry numbers; buckets carry {avg,min,max,last}: plot the average.
function series(points, field) {
  return points.map((p) => {
    const v = p[field];
    return v != null && typeof v === "object" ? v.avg : v;
  });
}

async function showLatest(id) {
  const latest = await getJson(`/influencer_analytics/${id}/latest`);
  $("who").textContent = `· ${latest.username}${latest.tracked ? "" : " (no longer tracked: " + latest.untracked_reason + ")"}`;
  $("latest-followers").textContent = latest.follower_count == null ? "–" : numbers.format(latest.follower_count);
  $("latest-following").textContent = latest.following_count == null ? "–" : numbers.format(latest.following_count);
  $("latest-ratio").textContent = latest.follower_ratio == null ? "–" : latest.follower_ratio.toFixed(2);
  $("latest-rank").textContent = latest.rank
    ? `#${numbers.format(latest.rank.rank)} of ${numbers.format(latest.rank.of)} (top ${(100 - latest.rank.percentile).toFixed(2)}%)`
    : "–";
  const badge = $("latest-suspicious");
  const flagged = latest.suspicious.filter((v) => v.suspicious).map((v) => v.source);
  if (latest.suspicious.length === 0) {
    badge.className = "badge unknown"; badge.textContent = "not classified";
  } else if (flagged.length) {
    badge.className = "badge suspicious"; badge.textContent = "suspicious (" + flagged.join(", ") + ")";
  } else {
    badge.className = "badge ok"; badge.textContent = "not suspicious";
  }
  // Hovering the badge tells why each classifier decided as it did.
  badge.title = latest.suspicious.map((v) => {
    const d = v.detail || {};
    const why = v.source === "spike"
      ? `largest minute change ${numbers.format(d.from)} → ${numbers.format(d.to)} at ${d.at ? new Date(d.at * 1000).toISOString().slice(0, 16).replace("T", " ") : "?"} UTC, z = ${d.z}`
      : `followers/following = ${numbers.format(d.follower_count)}/${numbers.format(d.following_count)}`;
    return `${v.source}: ${v.suspicious ? "suspicious" : "not suspicious"} (${why})`;
  }).join("\n");
  const when = latest.fetched_at ? `fetched ${new Date(latest.fetched_at).toISOString().replace("T", " ").slice(0, 19)} UTC` : "no point yet";
  const ranked = latest.rank ? `; ranking of ${new Date(latest.rank.ranked_at).toISOString().slice(11, 19)} UTC (refreshed each minute)` : "";
  $("latest-when").textContent = when + ranked;
}

const signed = (n) => (n > 0 ? "+" : "") + numbers.format(n);

// The home view's movers: the top gainers and losers by followers over the chosen window.
async function showMovers(span) {
  $("movers-window").value = span;
  delete document.body.dataset.movers;
  const note = [];
  for (const direction of ["gainers", "losers"]) {
    const body = $(direction).querySelector("tbody");
    body.replaceChildren();
    let answer;
    try {
      answer = await getJson(`/influencer_analytics/movers?window=${span}&direction=${direction}&limit=10`);
    } catch (e) {
      $("movers-note").textContent = e.status === 404 ? "Not enough history yet: " + e.message : e.message;
      if (e.status === 401) throw e;
      continue;
    }
    for (const m of answer.movers) {
      const row = body.insertRow();
      const link = document.createElement("a");
      link.href = `#influencer=${m.influencer_id}&range=86400`;
      link.textContent = m.username || String(m.influencer_id);
      row.insertCell().append(link);
      for (const text of [numbers.format(m.from.follower_count), numbers.format(m.to.follower_count),
                          signed(m.change), m.percent == null ? "–" : signed(m.percent) + "%"]) {
        row.insertCell().textContent = text;
      }
    }
    note[0] = `as of ${new Date(answer.as_of).toISOString().slice(0, 16).replace("T", " ")} UTC · ` +
      `${numbers.format(answer.compared)} compared, ${numbers.format(answer.stale)} left out (no value near an end) · ` +
      `at least ${numbers.format(answer.min_followers)} followers at the start`;
    $("movers-note").textContent = note[0];
  }
  // Both tables are filled (for tests: the window they show).
  document.body.dataset.movers = span;
}

// The live feed: the newest events, then each new one as the API streams it (`GET /events`
// as Server-Sent Events, read with fetch so that the API key goes along), resumed after the
// last one shown when the connection drops.
let lastEventId = null;

function eventSummary(e) {
  const d = e.data || {};
  switch (e.type) {
    case "spike": return `${d.metric} ${signed(d.change)} (${d.from} → ${d.to}, z ${d.z})`;
    case "milestone": return `${d.direction === "up" ? "passed" : "fell under"} ${numbers.format(d.milestone)} followers`;
    case "stale": return `no point for ${d.slots_missed} slots`;
    case "recovered": return "points again";
    case "following_churn": return `following up and down ${d.legs} times by ${numbers.format(Math.round(d.threshold))}+`;
    case "top_n": return `${d.direction} the top ${numbers.format(d.n)}${d.place ? ` (#${d.place})` : ""}`;
    case "verdict": return `${d.source}: ${d.suspicious ? "suspicious" : "not suspicious"}`;
    case "untracked": return `untracked: ${d.reason}`;
    default: return "";
  }
}

function addEvent(e) {
  const list = $("events-list");
  const item = document.createElement("li");
  item.dataset.id = e.id;
  item.dataset.type = e.type;
  const when = e.detected_at ? new Date(e.detected_at * 1000).toISOString().slice(11, 19) : "";
  const link = document.createElement("a");
  link.href = `#influencer=${e.influencer_id}&range=3600`;
  link.textContent = String(e.influencer_id);
  item.append(`${when} ${e.type} `, link, ` ${eventSummary(e)}`);
  for (const name of e.watchlists || []) {
    const list = document.createElement("a");
    list.href = `#watchlist=${encodeURIComponent(name)}&range=86400`;
    list.textContent = name;
    item.append(" [", list, "]");
  }
  list.prepend(item);
  while (list.children.length > 50) list.lastElementChild.remove();
  $("events-note").textContent = "";
}

async function followEvents() {
  for (;;) {
    try {
      if (lastEventId === null) {
        const page = await getJson("/events?limit=20");
        page.items.forEach(addEvent);
        lastEventId = page.next_after;
        if (!page.items.length) $("events-note").textContent = "No events yet: they appear here as they are detected.";
      }
      const headers = { accept: "text/event-stream", "last-event-id": String(lastEventId) };
      const key = sessionStorage.getItem(KEY);
      if (key) headers.authorization = "Bearer " + key;
      const response = await fetch("/events", { headers });
      if (!response.ok) throw new Error(`the stream answered HTTP ${response.status}`);
      document.body.dataset.live = "true";
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = block.split("\n").filter((l) => l.startsWith("data:"))
            .map((l) => l.slice(5).trimStart()).join("\n");
          if (!data) continue;
          const event = JSON.parse(data);
          lastEventId = event.id;
          addEvent(event);
        }
      }
    } catch (e) {
      $("events-note").textContent = `Live feed interrupted (${e.message}); reconnecting.`;
    }
    delete document.body.dataset.live;
    await new Promise((resolve) => setTimeout(resolve, 3000));
  }
}

function fillTable(id, rows) {
  const body = $(id).querySelector("tbody");
  body.replaceChildren();
  for (const cells of rows) {
    const row = body.insertRow();
    for (const text of cells) row.insertCell().textContent = text;
  }
}

const day = (t) => new Date(t * 1000).toISOString().slice(0, 10);

// The influencer view's growth table, rank history and forecast, each from its endpoint.
async function showInsight(id, horizon) {
  const growth = await getJson(`/influencer_analytics/${id}/growth?days=14`);
  fillTable("growth-windows", growth.windows.map((w) => [
    w.window, numbers.format(w.from.follower_count), numbers.format(w.to.follower_count),
    signed(w.followers.change), w.followers.percent == null ? "–" : signed(w.followers.percent) + "%"]));
  fillTable("growth-days", growth.days.slice().reverse().map((d) => [
    d.day + (d.closed ? "" : " (so far)"), numbers.format(d.follower_count),
    d.follower_change == null ? "–" : signed(d.follower_change)]));
  // The newest hour's rank, then each day's close, newest first.
  const rank = await getJson(`/influencer_analytics/${id}/rank`);
  const hour = rank.hours.slice(-1).map((h) => [
    new Date(h.time * 1000).toISOString().slice(0, 13).replace("T", " ") + ":00", "#" + numbers.format(h.rank), h.percentile.toFixed(2)]);
  fillTable("rank-days", hour.concat(rank.days.slice(-14).reverse().map((d) => [
    d.day, "#" + numbers.format(d.rank), d.percentile.toFixed(2)])));
  $("forecast-horizon").value = horizon;
  try {
    const f = await getJson(`/influencer_analytics/${id}/forecast?horizon=${horizon}`);
    const at = f.at_horizon;
    const m = f.milestone;
    const milestone = !m ? ""
      : m.expected_day ? ` · ${numbers.format(m.followers)} followers expected on ${m.expected_day} (80%: ${m.earliest_day || "later"} to ${m.latest_day || "not within the horizon"})`
      : ` · ${numbers.format(m.followers)} followers not within the horizon`;
    $("forecast").textContent = `${numbers.format(at.expected)} followers expected on ${day(at.time)} ` +
      `(80%: ${numbers.format(at.interval_80.low)}–${numbers.format(at.interval_80.high)}; ` +
      `95%: ${numbers.format(at.interval_95.low)}–${numbers.format(at.interval_95.high)})${milestone}`;
    $("forecast").title = f.method;
  } catch (e) {
    if (e.status !== 404) throw e;
    $("forecast").textContent = "not enough history: " + e.message;
  }
}

const PALETTE = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#db2777", "#0891b2", "#65a30d"];

// The influencer and those it is compared with, on the same buckets: followers, or their
// change in percent from each one's first bucket.
async function showCompare(id, view, start, end) {
  $("compare-ids").value = view.compare.join(",");
  $("compare-percent").checked = view.percent;
  const target = $("chart-compare");
  if (charts.compare) { charts.compare.destroy(); delete charts.compare; }
  target.replaceChildren();
  $("compare-note").textContent = "";
  if (!view.compare.length) return;
  const ids = [id, ...view.compare.filter((pk) => pk !== String(id))].join(",");
  const answer = await getJson(`/influencer_analytics/compare?ids=${ids}&start_time=${start}&end_time=${end}` +
    (view.percent ? "&normalize=percent" : ""));
  const format = view.percent ? (v) => v.toFixed(2) + "%" : (v) => numbers.format(v);
  charts.compare = new uPlot({
    width: Math.max(300, target.clientWidth || 1100), height: 260,
    scales: { x: { time: true, range: () => shownRange } },
    series: [{}, ...answer.series.map((s, i) => ({
      label: s.username, stroke: PALETTE[i % PALETTE.length], width: 1.5, spanGaps: true,
      value: (u, v) => v == null ? "–" : format(v) }))],
    axes: [{}, { size: 80, values: (u, ticks) => ticks.map(format) }],
  }, [answer.times, ...answer.series.map((s) => s.follower_count)], target);
  $("compare-note").textContent = `followers${view.percent ? ", change in % from each one's first bucket" : ""}, a bucket every ${answer.step} s`;
}

// The range shown, as a CSV file (fetched with the tab's key, if any).
async function downloadCsv(event) {
  event.preventDefault();
  const view = readHash();
  const [start, end] = shownRange;
  const step = stepFor(end - start);
  const url = `/influencer_analytics/${encodeURIComponent(view.influencer)}?start_time=${start}&end_time=${end}${step ? "&step=" + step : ""}&format=csv`;
  const headers = {};
  const key = sessionStorage.getItem(KEY);
  if (key) headers.authorization = "Bearer " + key;
  const response = await fetch(url, { headers });
  if (!response.ok) {
    say(`The CSV could not be made: HTTP ${response.status}`, "error");
    return;
  }
  const link = document.createElement("a");
  link.href = URL.createObjectURL(await response.blob());
  link.download = `influencer-${view.influencer}.csv`;
  link.click();
  URL.revokeObjectURL(link.href);
}

// Draws everything for the view in the URL; marks the page ready (for tests) whatever happens.
// One render at a time, in order: a render of an older view must not finish after a newer one
// (a hash changed twice in a row, or the periodic refresh).
let rendering = Promise.resolve();
function refresh() {
  const hash = location.hash;
  rendering = rendering.then(render).catch((e) => say(e.message, "error")).finally(() => {
    document.body.dataset.ready = "true";
    // The view drawn last (for tests: a form filled before it would be written over).
    document.body.dataset.rendered = hash;
  });
  return rendering;
}

async function render() {
  const view = readHash();
  $("influencer").value = view.influencer;
  $("range").value = view.range;
  $("custom").style.display = view.range === "custom" ? "inline-flex" : "none";
  let start, end;
  try {
    [start, end] = timeRange(view);
  } catch (e) {
    say(e.message, "error");
    return;
  }
  shownRange = [start, end];
  const step = stepFor(end - start);
  const stepQuery = step ? `&step=${step}` : "";
  try {
    const average = await getJson(`/influencer_analytics/average?start_time=${start}&end_time=${end}${stepQuery}`);
    draw("average", "average followers", average.points.map((p) => p.time), average.points.map((p) => p.avg_follower_count), "#7c3aed");
    $("average-now").textContent = average.current
      ? `now ${numbers.format(Math.round(average.current.avg_follower_count))} across ${numbers.format(average.current.influencers)} influencers`
      : "no average stored yet";
  } catch (e) {
    $("average-now").textContent = "average unavailable: " + e.message;
    if (e.status === 401) {
      say(e.message, "error");
      return;
    }
  }
  $("movers").hidden = Boolean(view.influencer || view.watchlist);
  $("insight").hidden = !view.influencer;
  $("watchlists").hidden = Boolean(view.influencer || view.watchlist);
  $("watchlist").hidden = !view.watchlist || Boolean(view.influencer);
  $("latest").hidden = Boolean(view.watchlist) && !view.influencer;
  for (const section of document.querySelectorAll("section.chart")) section.hidden = $("latest").hidden;
  if (view.watchlist && !view.influencer) {
    try {
      await showWatchlist(view.watchlist, start, end, stepQuery, view.window);
      say("", "info");
    } catch (e) {
      say(e.status === 404 ? `Unknown watchlist: ${e.message}.` : e.message, "error");
    }
    return;
  }
  if (!view.influencer) {
    try {
      await listWatchlists(view.window);
    } catch (e) {
      if (e.status === 401) throw e;
      $("watchlists-note").textContent = "watchlists unavailable: " + e.message;
    }
    say("Enter an influencer pk (for example 1000000) and press Show, or search by username.", "info");
    try {
      await showMovers(view.window);
    } catch (e) {
      say(e.message, "error");
    }
    return;
  }
  try {
    const range = await getJson(`/influencer_analytics/${encodeURIComponent(view.influencer)}?start_time=${start}&end_time=${end}${stepQuery}`);
    const gaps = await getJson(`/influencer_analytics/${encodeURIComponent(view.influencer)}/gaps?start_time=${start}&end_time=${end}`);
    gapRuns = gaps.gaps.map((g) => [g.start_time, g.end_time]);
    $("gaps").textContent = gaps.expected === 0 ? ""
      : gaps.missing === 0 ? `all ${numbers.format(gaps.expected)} polls stored`
      : `${numbers.format(gaps.missing)} of ${numbers.format(gaps.expected)} polls missing in ${numbers.format(gaps.gaps.length)}${gaps.truncated ? "+" : ""} gaps (shaded)`;
    document.body.dataset.expected = String(gaps.expected);
    document.body.dataset.missing = String(gaps.missing);
    document.body.dataset.gaps = String(gaps.gaps.length);
    const times = range.points.map((p) => p.time);
    draw("followers", "followers", times, series(range.points, "follower_count"), "#2563eb");
    draw("following", "following", times, series(range.points, "following_count"), "#059669");
    draw("ratio", "ratio", times, series(range.points, "follower_ratio"), "#d97706");
    await showLatest(range.influencer_id);
    await showInsight(range.influencer_id, view.horizon);
    try {
      await showCompare(range.influencer_id, view, start, end);
    } catch (e) {
      if (e.status === 401) throw e;
      $("compare-note").textContent = "cannot compare: " + e.message;
    }
    say(range.points.length === 0 ? `No points for ${range.username} in this range.` : "", "info");
    document.body.dataset.points = String(range.points.length);
  } catch (e) {
    const text = e.status === 404 ? `Unknown influencer: ${e.message}.` : e.message;
    say(text, "error");
    for (const name of ["followers", "following", "ratio"]) {
      if (charts[name]) charts[name].setData([[], []]);
    }
    for (const id of ["latest-followers", "latest-following", "latest-ratio", "latest-rank"]) $(id).textContent = "–";
    $("who").textContent = "";
    $("latest-when").textContent = "";
    $("gaps").textContent = "";
    $("insight").hidden = true;
    gapRuns = [];
  }
  $("refreshed").textContent = "updated " + new Date().toISOString().slice(11, 19) + " UTC" + (step ? ` · step ${step}` : " · every minute");
}

$("pick").addEventListener("submit", (event) => {
  event.preventDefault();
  const params = new URLSearchParams({ influencer: $("influencer").value.trim(), range: $("range").value });
  if ($("range").value === "custom") { params.set("from", $("from").value); params.set("to", $("to").value); }
  location.hash = params.toString();
});
$("movers-window").addEventListener("change", () => {
  const params = new URLSearchParams(location.hash.slice(1));
  params.set("window", $("movers-window").value);
  location.hash = params.toString();
});
// Suggestions as one types; Enter opens the influencer whose pk was typed, or the first match.
let searching = null;
$("search").addEventListener("input", () => {
  clearTimeout(searching);
  const q = $("search").value.trim();
  if (!q) return;
  searching = setTimeout(async () => {
    try {
      const answer = await getJson(`/influencer_analytics/search?q=${encodeURIComponent(q)}&limit=10`);
      $("search-results").replaceChildren(...answer.influencers.map((f) => {
        const option = document.createElement("option");
        option.value = String(f.influencer_id);
        option.label = f.username;
        return option;
      }));
    } catch (e) {
      say(e.message, "error");
    }
  }, 200);
});
$("search-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const q = $("search").value.trim();
  if (!q) return;
  try {
    const answer = await getJson(`/influencer_analytics/search?q=${encodeURIComponent(q)}&limit=1`);
    if (!answer.influencers.length) {
      say(`No influencer's username starts with "${q}".`, "error");
      return;
    }
    location.hash = new URLSearchParams({ influencer: answer.influencers[0].influencer_id, range: $("range").value }).toString();
  } catch (e) {
    say(e.message, "error");
  }
});
$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY, $("api-key").value.trim());
  $("api-key").value = "";
  $("key-form").hidden = true;
  say("", "info");
  refresh();
});
$("csv-download").addEventListener("click", downloadCsv);
$("compare-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const params = new URLSearchParams(location.hash.slice(1));
  const ids = $("compare-ids").value.split(/[\s,]+/).filter(Boolean).join(",");
  if (ids) params.set("compare", ids); else params.delete("compare");
  if ($("compare-percent").checked) params.set("normalize", "percent"); else params.delete("normalize");
  location.hash = params.toString();
});
$("forecast-horizon").addEventListener("change", () => {
  const params = new URLSearchParams(location.hash.slice(1));
  params.set("horizon", $("forecast-horizon").value);
  location.hash = params.toString();
});
$("range").addEventListener("change", () => {
  $("custom").style.display = $("range").value === "custom" ? "inline-flex" : "none";
});
window.addEventListener("hashchange", refresh);
refresh();
setInterval(refresh, 30000);
followEvents();
