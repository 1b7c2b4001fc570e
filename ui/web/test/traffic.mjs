// Checks edge sizing and colouring by connection traffic in a real browser.
// Input (env): LOUPE_UI_URL, LOUPE_UI_TRAFFIC, a JSON object:
//   {"bulk": [src, dst], "idle": [src, dst]}
// Opens the map with ?color=handshake, waits until the bulk edge is drawn
// wider than the idle one, reads the side panel of the bulk edge, then
// turns sizing off in the toolbar. Prints one JSON line; exits 1 on failure.
import { launch, fail } from './browser.mjs';

const url = new URL(process.env.LOUPE_UI_URL);
const want = JSON.parse(process.env.LOUPE_UI_TRAFFIC || '{}');
const timeout = parseInt(process.env.LOUPE_UI_TIMEOUT_MS || '30000', 10);
url.searchParams.set('color', 'handshake');

const b = await launch({ width: 1400, height: 900 });
const page = await b.newPage();
const logs = [];
page.on('pageerror', (e) => logs.push('pageerror: ' + e.message));
const out = { ok: true };
try {
  await page.goto(url.toString());
  await page.waitForFunction(() => /^live/.test(document.getElementById('conn').textContent), null, { timeout });
  const style = (pair) => page.evaluate(([s, d]) => window.loupe.edgeStyle(s, d), pair);
  // Both edges drawn, the bulk one visibly wider.
  await page.waitForFunction(([bulk, idle]) => {
    const a = window.loupe.edgeStyle(...bulk), b = window.loupe.edgeStyle(...idle);
    return a && b && a.drawn && b.drawn && a.traffic && b.traffic && a.drawn.width >= b.drawn.width + 3;
  }, [want.bulk, want.idle], { timeout }).catch(async () => {
    fail(`bulk edge not wider: bulk ${JSON.stringify(await style(want.bulk))}, idle ${JSON.stringify(await style(want.idle))}; ${logs.join(' | ')}`);
  });
  out.bulk = await style(want.bulk);
  out.idle = await style(want.idle);
  out.colorSelect = await page.inputValue('#f-color');
  if (out.colorSelect !== 'handshake') fail(`colour mode from the URL not in the toolbar: ${out.colorSelect}`);
  out.legend = await page.textContent('#edge-legend');

  // The side panel of the bulk edge.
  await page.evaluate(([s, d]) => window.loupe.select({ type: 'pair', id: window.loupe.pairKey(s, d) }), want.bulk);
  await page.waitForFunction(() => /handshake/.test(document.getElementById('panel').textContent), null, { timeout });
  out.panel = await page.textContent('#panel');
  for (const w of ['bytes', 'packets', 'throughput', 'connections', 'p50', 'p99']) {
    if (!out.panel.includes(w)) fail(`panel lacks ${w}: ${out.panel}`);
  }

  // Turning sizing off in the toolbar keeps the colour, goes to the URL,
  // and draws both edges alike.
  await page.selectOption('#f-size', 'flat');
  await page.waitForFunction(([bulk, idle]) => {
    const a = window.loupe.edgeStyle(...bulk), b = window.loupe.edgeStyle(...idle);
    return a.drawn && b.drawn && a.drawn.width === b.drawn.width;
  }, [want.bulk, want.idle], { timeout }).catch(() => fail('widths differ with sizing off'));
  out.url = page.url();
  const q = new URL(out.url).searchParams;
  if (q.get('size') !== 'flat' || q.get('color') !== 'handshake') fail(`URL does not keep the modes: ${out.url}`);
} catch (e) {
  fail(String(e) + '; ' + logs.join(' | '));
} finally {
  await b.close();
}
console.log(JSON.stringify(out));
