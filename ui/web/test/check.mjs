// Checks the UI in a real browser. Input (env): LOUPE_UI_URL, and
// LOUPE_UI_CHECK, a JSON object:
//   {"nodes": [ids], "edge": [src, dst], "dropped": [src, dst], "screenshot": path}
// Prints one JSON line with what it saw; exits 1 on the first failed check.
import { launch, fail } from './browser.mjs';

const url = process.env.LOUPE_UI_URL;
const want = JSON.parse(process.env.LOUPE_UI_CHECK || '{}');
const timeout = parseInt(process.env.LOUPE_UI_TIMEOUT_MS || '30000', 10);
const out = { ok: true, steps: [] };
const step = (s) => out.steps.push(s);

const b = await launch({ width: 1400, height: 900 });
const page = await b.newPage();
const logs = [];
page.on('console', (m) => logs.push(m.text()));
page.on('pageerror', (e) => logs.push('pageerror: ' + e.message));
try {
  await page.goto(url);
  // The page opens its websocket on load and says when it is live.
  await page.waitForFunction(() => /^live/.test(document.getElementById('conn').textContent), null, { timeout });
  out.connection = await page.textContent('#conn');
  step('live');

  // Workloads as DOM text (the legend) and as map nodes.
  for (const id of want.nodes || []) {
    const sel = `#legend button[data-node="${id}"]`;
    await page.waitForSelector(sel, { timeout }).catch(() => fail(`workload ${id} not in the legend; console: ${logs.join(' | ')}`));
    const text = await page.textContent(sel);
    const name = id.split('/').pop();
    if (!text.includes(name)) fail(`legend entry of ${id} reads ${JSON.stringify(text)}`);
    const onMap = await page.evaluate((id) => window.loupe.map.nodes.has(id), id);
    if (!onMap) fail(`workload ${id} is not a map node`);
  }
  step('nodes');
  // New workloads take their grid slot at once and move once, when the
  // layout worker has refined them: wait for that before aiming at pixels.
  await page.waitForFunction(() => window.loupe.map.settled(), null, { timeout });

  const pairInfo = (src, dst) => page.evaluate(([src, dst]) => {
    const p = window.loupe.map.pairs.get(window.loupe.pairKey(src, dst));
    if (!p) return null;
    return { flows: p.flows, drops: p.drops, ports: [...p.edges.values()].map((e) => `${e.port}/${e.proto}`),
      reasons: [...p.edges.values()].flatMap((e) => Object.keys(e.dropReasons || {})),
      policies: [...p.edges.values()].flatMap((e) => (e.policies || []).filter((x) => x.effect === 'deny').map((x) => (x.ns ? x.ns + '/' : '') + x.name)) };
  }, [src, dst]);
  const waitPair = async (src, dst, cond, what) => {
    await page.waitForFunction(([src, dst, drop]) => {
      const p = window.loupe.map.pairs.get(window.loupe.pairKey(src, dst));
      return p && (!drop || p.drops > 0);
    }, [src, dst, cond === 'drop'], { timeout }).catch(() => fail(`${what}: no edge ${src} -> ${dst}`));
    return pairInfo(src, dst);
  };

  // The dropped edge: it is red and dashed on the canvas. Sample the pixels
  // along the drawn line: red ones and gaps between them.
  if (want.dropped) {
    const [src, dst] = want.dropped;
    out.dropped = await waitPair(src, dst, 'drop', 'dropped edge');
    await page.evaluate(([src, dst]) => { window.loupe.select(null); window.loupe.map.centerOn({ type: 'pair', id: window.loupe.pairKey(src, dst) }); window.loupe.map.view.k = Math.max(window.loupe.map.view.k, 1); window.loupe.map.centerOn({ type: 'pair', id: window.loupe.pairKey(src, dst) }); }, want.dropped);
    await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))); // the map redraws on the next frame
    out.droppedPixels = await page.evaluate(([src, dst]) => {
      const m = window.loupe.map;
      const s = m.nodes.get(src), d = m.nodes.get(dst);
      const a = m.pos(s), b = m.pos(d);
      const { k, tx, ty } = m.view;
      const dpr = window.devicePixelRatio || 1;
      const ctx = m.canvas.getContext('2d');
      let dx = b.x - a.x, dy = b.y - a.y; const len = Math.hypot(dx, dy); dx /= len; dy /= len;
      let red = 0, other = 0;
      for (let i = 0; i <= 200; i++) {
        const t = 0.2 + 0.6 * i / 200;
        const x = (a.x + (b.x - a.x) * t - dy * 3) * k + tx, y = (a.y + (b.y - a.y) * t + dx * 3) * k + ty;
        const px = ctx.getImageData(Math.round(x * dpr), Math.round(y * dpr), 1, 1).data;
        if (px[0] > 180 && px[1] < 110 && px[2] < 100) red++; else other++;
      }
      return { red, other };
    }, want.dropped);
    if (!(out.droppedPixels.red > 20 && out.droppedPixels.other > 10)) fail(`dropped edge is not drawn red and dashed: ${JSON.stringify(out.droppedPixels)}`);
    step('dropped');
  }

  // An edge, clicked on the canvas, filters the flow table to its flows.
  if (want.edge) {
    const [src, dst] = want.edge;
    out.edge = await waitPair(src, dst, '', 'edge');
    const key = await page.evaluate(([s, d]) => window.loupe.pairKey(s, d), want.edge);
    const pt = await page.evaluate((key) => {
      const m = window.loupe.map;
      m.centerOn({ type: 'pair', id: key });
      const p = m.screenOf({ type: 'pair', id: key });
      const r = m.canvas.getBoundingClientRect();
      const hit = m.hit((p.x - m.view.tx) / m.view.k, (p.y - m.view.ty) / m.view.k);
      return { x: r.left + p.x, y: r.top + p.y, hit };
    }, key);
    if (!pt.hit || pt.hit.id !== key) fail(`the middle of edge ${src} -> ${dst} hits ${JSON.stringify(pt.hit)}`);
    await page.mouse.click(pt.x, pt.y);
    await page.waitForFunction(([src, dst]) => {
      const rows = [...document.querySelectorAll('#flow-rows tr')];
      return rows.length > 0 && rows.every((r) => (r.dataset.src === src && r.dataset.dst === dst) || (r.dataset.src === dst && r.dataset.dst === src));
    }, want.edge, { timeout }).catch(async () => fail(`the flow table did not filter to ${src} -> ${dst}: ${(await page.$$eval('#flow-rows tr', (rs) => rs.slice(0, 5).map((r) => r.dataset.src + '>' + r.dataset.dst))).join(', ')}`));
    out.tableRows = await page.$$eval('#flow-rows tr', (rs) => rs.length);
    out.scope = await page.textContent('#flow-scope');
    out.panel = (await page.textContent('#panel')).slice(0, 300);
    out.url = page.url();
    if (!out.url.includes('from=') || !out.url.includes('to=')) fail(`selection not in the URL: ${out.url}`);
    step('edge-click-filters-table');
  }

  // A workload, clicked on the canvas, filters the table to its flows.
  if (want.edge) {
    const id = want.edge[1];
    const pt = await page.evaluate((id) => {
      const m = window.loupe.map;
      m.centerOn({ type: 'node', id });
      const p = m.screenOf({ type: 'node', id });
      const r = m.canvas.getBoundingClientRect();
      return { x: r.left + p.x, y: r.top + p.y, hit: m.hit((p.x - m.view.tx) / m.view.k, (p.y - m.view.ty) / m.view.k) };
    }, id);
    if (!pt.hit || pt.hit.id !== id) fail(`workload ${id} on the canvas hits ${JSON.stringify(pt.hit)}`);
    await page.mouse.click(pt.x, pt.y);
    await page.waitForFunction((id) => {
      const rows = [...document.querySelectorAll('#flow-rows tr')];
      return rows.length > 0 && rows.every((r) => r.dataset.src === id || r.dataset.dst === id) && document.getElementById('panel').textContent.includes(id.split('/').pop());
    }, id, { timeout }).catch(() => fail(`the flow table did not filter to workload ${id}`));
    if (!page.url().includes('node=')) fail(`node selection not in the URL: ${page.url()}`);
    step('node-click-filters-table');
  }

  // The filter lives in the URL: a shared link opens the same view.
  if (want.dropped) {
    const u = new URL(url);
    u.searchParams.set('verdict', 'DROPPED');
    await page.goto(u.toString());
    await page.waitForFunction(() => /^live/.test(document.getElementById('conn').textContent) && window.loupe.map.pairs.size > 0, null, { timeout });
    await page.waitForFunction(() => window.loupe.map.settled(), null, { timeout });
    const v = await page.evaluate(() => {
      const m = window.loupe.map;
      const shown = [...m.pairs.values()].filter((p) => m.segment(p));
      return { select: document.getElementById('f-verdict').value, shown: shown.length, allDropped: shown.every((p) => p.drops > 0) };
    });
    if (v.select !== 'DROPPED' || !v.shown || !v.allDropped) fail(`verdict filter from the URL: ${JSON.stringify(v)}`);
    out.urlFilter = v;
    // Back to the whole map for the screenshot.
    await page.goto(url);
    await page.waitForFunction(() => /^live/.test(document.getElementById('conn').textContent) && window.loupe.map.settled() && window.loupe.map.pairs.size > 0, null, { timeout });
    if (want.edge) await page.evaluate(([s, d]) => window.loupe.select({ type: 'pair', id: window.loupe.pairKey(s, d) }, false), want.edge);
    step('filter-in-url');
  }

  if (want.screenshot) {
    await page.screenshot({ path: want.screenshot, fullPage: true });
    out.screenshot = want.screenshot;
    step('screenshot');
  }
  out.console = logs.filter((l) => /error/i.test(l)).slice(0, 5);
  console.log(JSON.stringify(out));
} catch (e) {
  fail(String(e && e.stack || e) + ' console: ' + logs.join(' | '));
} finally {
  await b.close();
}
