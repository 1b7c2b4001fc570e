// Checks an edge's L7 in the side panel and tooltip, and the time slider,
// in a real browser. Input (env): LOUPE_UI_URL, LOUPE_UI_L7, a JSON object:
//   {"l7": [src, dst], "old": [src, dst]}
// l7 has recent HTTP traffic, old only traffic 2 hours ago. Opens the map
// with the l7 pair selected, reads its L7 section (protocol, rate, errors,
// p50/p99, top paths), then moves the slider to 1h (old must be gone), to
// 6h (old back) and to live. Prints one JSON line; exits 1 on failure.
import { launch, fail } from './browser.mjs';

const url = new URL(process.env.LOUPE_UI_URL);
const want = JSON.parse(process.env.LOUPE_UI_L7 || '{}');
const timeout = parseInt(process.env.LOUPE_UI_TIMEOUT_MS || '30000', 10);
url.searchParams.set('from', want.l7[0]);
url.searchParams.set('to', want.l7[1]);

const b = await launch({ width: 1400, height: 900 });
const page = await b.newPage();
const logs = [];
page.on('pageerror', (e) => logs.push('pageerror: ' + e.message));
const out = { ok: true };
const hasPair = (p) => page.evaluate(([s, d]) => !!window.loupe.map.pairs.get(window.loupe.pairKey(s, d)), p);
const slide = async (i, label) => {
  await page.locator('#f-range').fill(String(i));
  await page.waitForFunction((re) => new RegExp(re).test(document.getElementById('range-label').textContent), label, { timeout })
    .catch(async () => fail(`slider ${i}: label ${await page.textContent('#range-label')}; ${logs.join(' | ')}`));
  return page.textContent('#range-label');
};
try {
  await page.goto(url.toString());
  await page.waitForFunction(() => /^live/.test(document.getElementById('conn').textContent), null, { timeout });
  await page.waitForFunction(() => /GET \/status\/500/.test(document.getElementById('panel').textContent), null, { timeout })
    .catch(async () => fail(`no L7 paths in the panel: ${await page.textContent('#panel')}; ${logs.join(' | ')}`));
  out.panel = await page.textContent('#panel');
  for (const w of ['HTTP 80/TCP', 'req/s', '% errors', 'p50', 'p99', 'GET /ok', 'POST /delay/200', 'count']) {
    if (!out.panel.includes(w)) fail(`panel lacks ${w}: ${out.panel}`);
  }
  out.l7Line = await page.textContent('.l7-line');
  if (!(await hasPair(want.old))) fail('the old pair is not on the live map (the relay returned it as recent history)');

  out.h1 = await slide(3, '^last 1h · \\d+ flows');
  out.h1HasOld = await hasPair(want.old);
  out.h1HasL7 = await hasPair(want.l7);
  if (out.h1HasOld || !out.h1HasL7) fail(`1h range: old ${out.h1HasOld}, l7 ${out.h1HasL7}`);
  out.h1Conn = await page.textContent('#conn');
  await page.waitForFunction(() => /requests/.test(document.getElementById('panel').textContent), null, { timeout })
    .catch(async () => fail(`1h panel lacks the L7 totals: ${await page.textContent('#panel')}`));
  out.h1Panel = await page.textContent('#panel');

  out.h6 = await slide(4, '^last 6h · \\d+ flows');
  out.h6HasOld = await hasPair(want.old);
  if (!out.h6HasOld) fail('6h range lacks the pair 2 hours old');
  out.url = page.url();
  if (new URL(out.url).searchParams.get('range') !== '6h') fail(`URL does not keep the range: ${out.url}`);

  out.live = await slide(0, '^live$');
  await page.waitForFunction(() => /^live/.test(document.getElementById('conn').textContent), null, { timeout });
} catch (e) {
  fail(String(e) + '; ' + logs.join(' | '));
} finally {
  await b.close();
}
console.log(JSON.stringify(out));
