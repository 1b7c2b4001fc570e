// Checks workloads' health on the map in a real browser: the security
// badge, the starved-edge mark and the side panel's events and resources.
// Input (env): LOUPE_UI_URL, LOUPE_UI_HEALTH, a JSON object:
//   {"attacked": id, "events": n, "texts": [...], "quiet": id,
//    "starved": [src, dst], "fed": [src, dst], "resourceTexts": [...],
//    "screenshot": path}
// attacked must carry a badge counting n events whose panel shows texts;
// quiet no badge; the starved pair's server must be marked and the fed
// pair's not; starved[1]'s panel shows resourceTexts. Then the first
// event's "flows then" link must move the slider off live and keep the
// workload selected. Prints one JSON line; exits 1 on failure.
import { launch, fail as failNow } from './browser.mjs';

const url = new URL(process.env.LOUPE_UI_URL);
const want = JSON.parse(process.env.LOUPE_UI_HEALTH || '{}');
const timeout = parseInt(process.env.LOUPE_UI_TIMEOUT_MS || '30000', 10);

const b = await launch({ width: 1400, height: 900 });
const page = await b.newPage();
const logs = [];
page.on('pageerror', (e) => logs.push('pageerror: ' + e.message));
const out = { ok: true };
let step = 'start';
const fail = (msg) => failNow(`${step}: ${msg}`);
page.on('console', (m) => { if (m.type() === 'error') logs.push('console: ' + m.text()); });
const state = () => page.evaluate((w) => ({
  badge: window.loupe.badge(w.attacked), quietBadge: window.loupe.badge(w.quiet),
  health: window.loupe.health(w.attacked),
  starved: w.starved ? window.loupe.starved(...w.starved) : null, fed: w.fed ? window.loupe.starved(...w.fed) : null,
}), want);
try {
  await page.goto(url.toString());
  await page.waitForFunction(() => /^live/.test(document.getElementById('conn').textContent), null, { timeout });
  step = 'badge';
  // The badge, drawn on the canvas with the count of events.
  await page.waitForFunction((w) => {
    const bd = window.loupe.badge(w.attacked);
    return bd && bd.count >= w.events;
  }, want, { timeout }).catch(async () => fail(`no badge on ${want.attacked}: ${JSON.stringify(await state())}; ${logs.join(' | ')}`));
  if (want.starved) {
    await page.waitForFunction((w) => { const s = window.loupe.starved(...w.starved); return s && s.drawn; }, want, { timeout })
      .catch(async () => fail(`starved edge not marked: ${JSON.stringify(await state())}; ${logs.join(' | ')}`));
  }
  Object.assign(out, await state());
  if (out.quietBadge) fail(`badge on the quiet workload ${want.quiet}: ${JSON.stringify(out.quietBadge)}`);
  if (want.fed && (!out.fed || out.fed.drawn)) fail(`the fed pair is marked or missing: ${JSON.stringify(out.fed)}`);
  // The badge's pixels are the badge's colour, not the map's.
  out.badgePixel = await page.evaluate((bd) => {
    const c = document.getElementById('map');
    const { k, tx, ty } = window.loupe.map.view;
    const dpr = window.devicePixelRatio || 1;
    // Above the white count, inside the disc.
    const x = Math.round((bd.x * k + tx) * dpr), y = Math.round(((bd.y - 5) * k + ty) * dpr);
    const d = c.getContext('2d').getImageData(x, y, 1, 1).data;
    return { k, color: '#' + [d[0], d[1], d[2]].map((v) => v.toString(16).padStart(2, '0')).join('') };
  }, out.badge);
  const near = (a, bb) => [1, 3, 5].every((i) => Math.abs(parseInt(a.slice(i, i + 2), 16) - parseInt(bb.slice(i, i + 2), 16)) < 40);
  if (!near(out.badgePixel.color, out.badge.color)) fail(`badge pixel ${JSON.stringify(out.badgePixel)}, want about ${out.badge.color}`);

  step = 'attacked panel';
  // The attacked workload's panel: its events, each with a link.
  await page.evaluate((id) => window.loupe.select({ type: 'node', id }), want.attacked);
  await page.waitForFunction((texts) => { const t = document.getElementById('panel').textContent; return texts.every((x) => t.includes(x)); }, want.texts || [], { timeout })
    .catch(async () => fail(`panel of ${want.attacked} lacks ${JSON.stringify(want.texts)}: ${await page.textContent('#panel', { timeout: 5000 }).catch((e) => 'unreadable: ' + e)}`));
  out.panel = await page.textContent('#panel');
  out.legend = await page.textContent('#legend');
  if (!/security event/.test(out.legend)) fail(`legend has no security flag: ${out.legend}`);
  if (want.screenshot) { await page.screenshot({ path: want.screenshot }); out.screenshot = want.screenshot; }

  step = 'starved panel';
  // The starved server's panel: run queue, I/O, OOM kills.
  if (want.starved) {
    await page.evaluate((id) => window.loupe.select({ type: 'node', id }), want.starved[1]);
    await page.waitForFunction((texts) => { const t = document.getElementById('panel').textContent; return texts.every((x) => t.includes(x)); }, want.resourceTexts || [], { timeout })
      .catch(async () => fail(`panel of ${want.starved[1]} lacks ${JSON.stringify(want.resourceTexts)}: ${await page.textContent('#panel', { timeout: 5000 }).catch((e) => 'unreadable: ' + e)}`));
    out.starvedPanel = await page.textContent('#panel');
    await page.evaluate((p) => window.loupe.select({ type: 'pair', id: window.loupe.pairKey(...p) }), want.starved);
    await page.waitForFunction(() => /starved pod, not the network/.test(document.getElementById('panel').textContent), null, { timeout })
      .catch(async () => fail(`pair panel does not say starved: ${await page.textContent('#panel', { timeout: 5000 }).catch((e) => 'unreadable: ' + e)}`));
    out.pairPanel = await page.textContent('#panel');
  }

  step = 'link';
  // The first event's link: the flows of the workload around its time.
  await page.evaluate((id) => window.loupe.select({ type: 'node', id }), want.attacked);
  await page.locator('#panel table.sec-events a').first().click();
  await page.waitForFunction(() => !/^live/.test(document.getElementById('range-label').textContent), null, { timeout })
    .catch(async () => fail(`the link left the slider at ${await page.textContent('#range-label')}`));
  out.url = page.url();
  const q = new URL(out.url).searchParams;
  if (q.get('node') !== want.attacked || !q.get('range')) fail(`link URL ${out.url}`);
  out.rangeLabel = await page.textContent('#range-label');
  out.scope = await page.textContent('#flow-scope');
} catch (e) {
  fail(String(e) + '; ' + logs.join(' | '));
} finally {
  await b.close();
}
console.log(JSON.stringify(out));
