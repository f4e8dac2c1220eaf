// Watchlists in the dashboard: on the home view, the lists with their sizes; a list's view
// (#watchlist=NAME&window=24h) shows its members' latest values with the list's total and
// average, its total followers over the chosen range, and the gainers and losers within it.
// Loaded before dashboard.js, whose helpers ($, getJson, numbers, signed, draw) it uses when
// called.
"use strict";

// The home view's list of watchlists, each a link to its view.
async function listWatchlists(window) {
  const list = $("watchlists-list");
  list.replaceChildren();
  const answer = await getJson("/watchlists");
  for (const w of answer.watchlists) {
    const item = document.createElement("li");
    const link = document.createElement("a");
    link.href = `#watchlist=${encodeURIComponent(w.name)}&range=86400&window=${window}`;
    link.textContent = w.name;
    item.append(link, ` ${numbers.format(w.members)} influencers`);
    list.append(item);
  }
  $("watchlists-note").textContent = answer.watchlists.length ? ""
    : "No watchlists yet: create one with POST /watchlists, fill it with PUT /watchlists/{name}/members.";
}

const asOf = (t) => (t == null ? "–" : new Date(t * 1000).toISOString().slice(0, 16).replace("T", " "));

function influencerLink(id, name) {
  const link = document.createElement("a");
  link.href = `#influencer=${id}&range=86400`;
  link.textContent = name || String(id);
  return link;
}

// A list's view: figures, members, the total over the range, and the movers within it.
async function showWatchlist(name, start, end, stepQuery, window) {
  const path = `/watchlists/${encodeURIComponent(name)}`;
  const view = await getJson(`${path}?limit=100`);
  $("watchlist-name").textContent = view.name;
  $("watchlist-members-count").textContent = numbers.format(view.members);
  $("watchlist-total").textContent = numbers.format(view.total_followers);
  $("watchlist-average").textContent = view.average_followers == null ? "–"
    : numbers.format(Math.round(view.average_followers));
  const body = $("watchlist-members").querySelector("tbody");
  body.replaceChildren();
  for (const m of view.items) {
    const row = body.insertRow();
    row.insertCell().append(influencerLink(m.influencer_id, m.username));
    for (const text of [m.follower_count == null ? "–" : numbers.format(m.follower_count),
                        m.following_count == null ? "–" : numbers.format(m.following_count), asOf(m.time)]) {
      row.insertCell().textContent = text;
    }
  }
  $("watchlist-note").textContent = view.next_cursor
    ? `the first ${numbers.format(view.items.length)} members by pk of ${numbers.format(view.members)}` : "";
  try {
    const series = await getJson(`${path}/series?start_time=${start}&end_time=${end}${stepQuery}`);
    const times = series.buckets.map((b) => b.time);
    draw("watchlist", "total followers", times, series.buckets.map((b) => b.total_followers), "#0891b2");
    $("watchlist-chart-note").textContent = "";
  } catch (e) {
    if (e.status === 401) throw e;
    $("watchlist-chart-note").textContent = "no chart: " + e.message;
  }
  await showListMovers(name, window);
  document.body.dataset.watchlist = name;
}

// The list's gainers and losers by followers over the movers' window (a day by default).
async function showListMovers(name, window) {
  for (const direction of ["gainers", "losers"]) {
    $(`watchlist-${direction}`).querySelector("caption").textContent =
      `${direction === "gainers" ? "Gainers" : "Losers"} in the list, last ${window}`;
    const body = $(`watchlist-${direction}`).querySelector("tbody");
    body.replaceChildren();
    let answer;
    try {
      answer = await getJson(`/influencer_analytics/movers?window=${window}&direction=${direction}&limit=10&watchlist=${encodeURIComponent(name)}`);
    } catch (e) {
      if (e.status === 401) throw e;
      $("watchlist-movers-note").textContent = e.status === 404 ? "Not enough history for movers yet." : e.message;
      continue;
    }
    $("watchlist-movers-note").textContent = "";
    for (const m of answer.movers) {
      const row = body.insertRow();
      row.insertCell().append(influencerLink(m.influencer_id, m.username));
      for (const text of [numbers.format(m.from.follower_count), numbers.format(m.to.follower_count), signed(m.change)]) {
        row.insertCell().textContent = text;
      }
    }
  }
}
