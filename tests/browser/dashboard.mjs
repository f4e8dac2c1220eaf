// Drives the dashboard in headless Chromium: choose an influencer through the form, wait for
// the charts, and check what a person would read. Prints one JSON line with what it saw;
// the Rust test (tests/it/dashboard.rs) judges it. Usage:
//   node dashboard.mjs <base-url> <influencer-id> <screenshot.png> [<keyed-base-url> <key>]
// The last two: an API that wants a key (API_KEYS), which the page must ask for once.
import { readFileSync } from "node:fs";
import { chromium } from "playwright-core";

const [base, influencer, screenshot, keyedBase, key] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1300, height: 1000 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(base + "/");
  await page.waitForSelector("body[data-ready=true]", { timeout: 15000 });
  const prompt = await page.textContent("#message");
  // The live feed: the event logged before the page opened, then the one logged while it is.
  await page.waitForSelector("#events-list li[data-type=spike]", { timeout: 15000 });
  await page.waitForSelector("#events-list li[data-type=milestone]", { timeout: 30000 });
  const feed = await page.$$eval("#events-list li", (items) => items.map((i) => i.textContent));
  // The home view's movers: the day's window has no history here; the hour's has.
  await page.waitForFunction(
    () => document.querySelector("#movers-note").textContent !== "", null, { timeout: 15000 });
  const moversDay = await page.textContent("#movers-note");
  await page.selectOption("#movers-window", "1h");
  await page.waitForSelector('body[data-movers="1h"]', { timeout: 15000 });
  const rows = (id) => page.evaluate((id) => [...document.querySelectorAll(`#${id} tbody tr`)].map(
    (tr) => [...tr.cells].map((cell) => cell.textContent)), id);
  const movers = { day: moversDay, gainers: await rows("gainers"), losers: await rows("losers"),
                   note: await page.textContent("#movers-note"),
                   hash: await page.evaluate(() => location.hash) };
  await page.screenshot({ path: screenshot.replace(/\.png$/, "-home.png"), fullPage: true });
  // The watchlists: listed on the home view; a list's view from its link (with the window).
  await page.waitForSelector("#watchlists-list li a", { timeout: 15000 });
  const listed = await page.$$eval("#watchlists-list li", (items) => items.map((i) => i.textContent));
  await page.click("#watchlists-list li a");
  await page.waitForSelector("body[data-watchlist=campaign]", { timeout: 15000 });
  const watchlist = {
    listed, hash: await page.evaluate(() => location.hash),
    members: await page.textContent("#watchlist-members-count"),
    total: await page.textContent("#watchlist-total"),
    average: await page.textContent("#watchlist-average"),
    rows: await rows("watchlist-members"), gainers: await rows("watchlist-gainers"), losers: await rows("watchlist-losers"),
    chart: await page.evaluate(() => charts.watchlist ? Array.from(charts.watchlist.data[1]).filter((v) => v != null) : []),
    hidden: await page.evaluate(() => ({ latest: document.querySelector("#latest").hidden,
                                          movers: document.querySelector("#movers").hidden })),
  };
  await page.screenshot({ path: screenshot.replace(/\.png$/, "-watchlist.png"), fullPage: true });

  await page.fill("#influencer", influencer);
  await page.selectOption("#range", "3600");
  await page.click("#show");
  await page.waitForFunction(() => document.body.dataset.points !== undefined, null, { timeout: 15000 });
  await page.waitForFunction(
    (id) => document.querySelector("#who").textContent.includes(id), influencer, { timeout: 15000 });
  const seen = await page.evaluate(() => ({
    points: Number(document.body.dataset.points),
    expected: Number(document.body.dataset.expected),
    missing: Number(document.body.dataset.missing),
    gapRuns: Number(document.body.dataset.gaps),
    gapsText: document.querySelector("#gaps").textContent,
    canvases: [...document.querySelectorAll("main section canvas")].length,
    charts: ["followers", "following", "ratio", "average"].map(
      (n) => document.querySelector(`#chart-${n} canvas`) !== null),
    followers: document.querySelector("#latest-followers").textContent,
    following: document.querySelector("#latest-following").textContent,
    ratio: document.querySelector("#latest-ratio").textContent,
    rank: document.querySelector("#latest-rank").textContent,
    suspicious: document.querySelector("#latest-suspicious").textContent,
    why: document.querySelector("#latest-suspicious").title,
    average: document.querySelector("#average-now").textContent,
    legend: document.querySelector("#chart-followers .u-legend")?.textContent ?? "",
    // What each uPlot chart holds: [times, values].
    series: Object.fromEntries(["followers", "following", "ratio", "average"].map(
      (n) => [n, charts[n] ? charts[n].data.map((column) => Array.from(column)) : null])),
  }));
  // Growth, rank and forecast; the range as a CSV file; the forecast's horizon in the URL.
  await page.waitForFunction(() => document.querySelector("#forecast").textContent !== "", null, { timeout: 15000 });
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#csv-download")]);
  const csvLines = readFileSync(await download.path(), "utf8").split("\r\n").filter((l) => l !== "");
  await page.selectOption("#forecast-horizon", "7d");
  await page.waitForFunction(() => location.hash.includes("horizon=7d"), null, { timeout: 15000 });
  const insight = {
    windows: await rows("growth-windows"), days: await rows("growth-days"), ranks: await rows("rank-days"),
    forecast: await page.textContent("#forecast"), csvHeader: csvLines[0], csvRows: csvLines.length - 1,
    csvName: download.suggestedFilename(), hash: await page.evaluate(() => location.hash),
  };
  // Compare with another, in percent: the state goes into the URL, the chart holds both. The
  // view of the horizon's change drawn first (it sets the form).
  await page.waitForFunction(() => document.body.dataset.rendered === location.hash, null, { timeout: 15000 });
  await page.fill("#compare-ids", "1000002");
  await page.check("#compare-percent");
  await page.click("#compare-go");
  await page.waitForFunction(() => document.querySelector("#compare-note").textContent !== "", null, { timeout: 15000 });
  const compared = await page.evaluate(() => ({
    hash: location.hash,
    labels: charts.compare ? charts.compare.series.slice(1).map((s) => s.label) : [],
    other: charts.compare ? Array.from(charts.compare.data[2]).filter((v) => v != null) : [],
    note: document.querySelector("#compare-note").textContent,
  }));
  await page.screenshot({ path: screenshot, fullPage: true });

  await page.fill("#influencer", "424242");
  await page.click("#show");
  await page.waitForFunction(() => document.querySelector("#message").className === "error", null, { timeout: 15000 });
  const unknown = await page.textContent("#message");

  // A link whose range the page does not offer opens the default view (the last day).
  const linked = await browser.newPage();
  linked.on("pageerror", (e) => errors.push(String(e)));
  await linked.goto(`${base}/#influencer=${influencer}&range=fortnight`);
  await linked.waitForFunction(() => document.body.dataset.points !== undefined, null, { timeout: 15000 });
  const badRange = await linked.evaluate(() => ({
    points: Number(document.body.dataset.points),
    range: document.querySelector("#range").value,
    message: document.querySelector("#message").textContent,
  }));
  // Search: a username's start, then Enter, opens that influencer.
  const searching = await browser.newPage();
  searching.on("pageerror", (e) => errors.push(String(e)));
  await searching.goto(base + "/");
  await searching.waitForSelector("body[data-ready=true]", { timeout: 15000 });
  await searching.fill("#search", "INFLUENCER-1000003");
  await searching.press("#search", "Enter");
  await searching.waitForFunction(
    () => document.querySelector("#who").textContent.includes("1000003"), null, { timeout: 15000 });
  const searched = await searching.evaluate(() => ({
    who: document.querySelector("#who").textContent,
    followers: document.querySelector("#latest-followers").textContent,
    moversHidden: document.querySelector("#movers").hidden,
  }));

  let keyed = null;
  if (keyedBase) {
    const page = await browser.newPage();
    page.on("pageerror", (e) => errors.push(String(e)));
    const loaded = () => page.waitForFunction(
      () => document.body.dataset.points !== undefined, null, { timeout: 15000 });
    await page.goto(`${keyedBase}/#influencer=${influencer}&range=3600`);
    await page.waitForSelector("#key-form:not([hidden])", { timeout: 15000 });
    const asked = await page.textContent("#message");
    await page.fill("#api-key", "wrong-key-0123456789");
    await page.click("#key-use");
    await page.waitForFunction(
      () => document.querySelector("#message").textContent.includes("refused"), null, { timeout: 15000 });
    const refused = await page.textContent("#message");
    await page.fill("#api-key", key);
    await page.click("#key-use");
    await loaded();
    const points = await page.evaluate(() => Number(document.body.dataset.points));
    // The same tab keeps the key: a reload asks for nothing.
    await page.reload();
    await loaded();
    keyed = {
      asked, refused, points,
      afterReload: await page.evaluate(() => ({
        points: Number(document.body.dataset.points),
        asked: !document.querySelector("#key-form").hidden,
      })),
    };
  }
  console.log(JSON.stringify({ prompt, feed, movers, watchlist, ...seen, insight, compared, unknown, badRange, searched, keyed, errors }));
} finally {
  await browser.close();
}
