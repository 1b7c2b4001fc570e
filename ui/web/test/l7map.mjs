// Checks L7 on the map canvas in a real browser: each L7 edge's label,
// the colour modes by L7 error rate and latency with their legend, and an
// external node named by its FQDN. Input (env): LOUPE_UI_URL,
// LOUPE_UI_L7MAP, a JSON object:
//   {"http": [src, dst], "dns": [src, dst], "fqdn": [src, dst], "svc": [src, dst], "screenshot": path}
// svc is an edge through the Service named like its destination, no L7.
// http has 10 % 5xx and a p99 about 200 ms, dns 2.5 % NXDOMAIN and 3 ms,
// fqdn no L7 and its destination named by DNS. With "lab": true (a live
// lab's traffic, rates unknown) the error rates may be anything, and the
// colours need only be L7 ones; fqdn may be left out. Opens the map with
// ?color=l7errors, reads the labels as drawn (and their pixels) and the
// DNS edge's queries in its side panel, switches
// to latency and to plain in the toolbar. Prints one JSON line; exits 1 on
// failure.
import { launch, fail } from './browser.mjs';

const url = new URL(process.env.LOUPE_UI_URL);
const want = JSON.parse(process.env.LOUPE_UI_L7MAP || '{}');
const timeout = parseInt(process.env.LOUPE_UI_TIMEOUT_MS || '30000', 10);
url.searchParams.set('color', 'l7errors');
const RED = '#c5221f', ORANGE = '#e8710a', YELLOW = '#d4a106', GREEN = '#1e9e5a', GREY = '#b8c0cc', PLAIN = '#8ea2c4';

const lab = !!want.lab;
const b = await launch({ width: 1400, height: 900 });
const page = await b.newPage();
page.setDefaultTimeout(timeout);
const logs = [];
page.on('pageerror', (e) => logs.push('pageerror: ' + e.message));
const out = { ok: true };
const style = (pair) => page.evaluate(([s, d]) => window.loupe.edgeStyle(s, d), pair);
const colors = async () => Object.fromEntries(await Promise.all(['http', 'dns', 'fqdn'].filter((k) => want[k]).map(async (k) => [k, ((await style(want[k])) || {}).drawn?.color])));
// w maps an edge to its colour, or to a list of colours it may take.
const waitColors = async (w, what) => {
  // A live lab's pairs may also carry drops (the demo's closed ports): red
  // in plain mode.
  const any = (c) => c === PLAIN ? [PLAIN, '#d93025'] : [RED, ORANGE, YELLOW, GREEN];
  w = Object.fromEntries(Object.entries(w).filter(([k]) => want[k]).map(([k, c]) => [k, lab ? any(c) : [c]]));
  await page.waitForFunction(([pairs, w]) => Object.entries(w).every(([k, cs]) => {
    const s = window.loupe.edgeStyle(...pairs[k]);
    return s && s.drawn && cs.includes(s.drawn.color);
  }), [want, w], { timeout }).catch(async () => fail(`${what}: colours ${JSON.stringify(await colors())}, want ${JSON.stringify(w)}`));
  return colors();
};
// Pixels of a drawn label: dark ones (text) inside its box on the canvas.
const labelPixels = (pair) => page.evaluate(([s, d]) => {
  const m = window.loupe.map, p = m.pairs.get(window.loupe.pairKey(s, d)), b = p && p.l7Label;
  if (!b) return null;
  const { k, tx, ty } = m.view, dpr = window.devicePixelRatio || 1;
  const x = Math.round((b.x * k + tx) * dpr), y = Math.round((b.y * k + ty) * dpr);
  const w = Math.round(b.w * k * dpr), h = Math.round(b.h * k * dpr);
  if (w < 4 || h < 4) return { dark: 0, w, h };
  const px = m.canvas.getContext('2d').getImageData(x, y, w, h).data;
  let dark = 0, light = 0;
  for (let i = 0; i < px.length; i += 4) { const v = px[i] + px[i + 1] + px[i + 2]; if (v < 300) dark++; else if (v > 700) light++; }
  return { dark, light, w, h, screenFont: 11 };
}, pair);
try {
  await page.goto(url.toString());
  await page.waitForFunction(() => /^live/.test(document.getElementById('conn').textContent), null, { timeout });
  await page.waitForFunction(([h, d]) => {
    const a = window.loupe.edgeStyle(...h), b = window.loupe.edgeStyle(...d);
    return window.loupe.map.settled() && a && b && a.label && b.label;
  }, [want.http, want.dns], { timeout }).catch(async () => fail(`no L7 labels drawn: ${JSON.stringify(await style(want.http))}; ${logs.join(' | ')}`));
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));

  // The labels as drawn: protocol, rate and errors; p50 and p99.
  const h = await style(want.http), d = await style(want.dns), f = want.fqdn && await style(want.fqdn);
  out.httpLabel = h.label.lines; out.dnsLabel = d.label.lines;
  // The error rate as labelled is the edge's, about 10 % and 2.5 % (on a
  // live lab, close to it: the label may be a scene older than the data).
  const checkLabel = (proto, s, lo, hi) => {
    const m = /^(HTTP|DNS) \d+(\.\d)?\/s · (\d+(\.\d)?)% err$/.exec(s.label.lines[0]);
    const pct = m && parseFloat(m[3]);
    if (!m || m[1] !== proto || pct < lo || pct > hi || Math.abs(pct - s.l7.errorRate * 100) > (lab ? 2 : 0.06) || !/^p50 \d.*s · p99 \d.*s$/.test(s.label.lines[1])) {
      fail(`${proto} label ${JSON.stringify(s.label.lines)} of ${JSON.stringify(s.l7)}`);
    }
  };
  checkLabel('HTTP', h, lab ? 0 : 9.5, lab ? 100 : 10);
  checkLabel('DNS', d, lab ? 0 : 2.4, lab ? 100 : 2.5);
  if (!lab && !/ · p99 (1\d\d|2\d\d)ms$/.test(h.label.lines[1])) fail(`HTTP p99 not about 200 ms: ${h.label.lines[1]}`);
  if (want.fqdn && (!f || f.label || f.l7)) fail(`the edge without L7 has a label: ${JSON.stringify(f)}`);
  // An edge through a Service (to its backend) is labelled with it.
  if (want.svc) {
    const sv = out.svcEdge = await style(want.svc);
    if (!sv || !sv.label || sv.label.lines.join('|') !== 'via svc ' + want.svc[1] || sv.services.join() !== want.svc[1]) fail(`Service edge ${JSON.stringify(sv)}`);
    const px = await labelPixels(want.svc);
    if (!px || px.dark < 20) fail(`Service label not drawn: ${JSON.stringify(px)}`);
    await page.evaluate(([s, d]) => window.loupe.select({ type: 'pair', id: window.loupe.pairKey(s, d) }), want.svc);
    await page.waitForFunction((svc) => document.getElementById('panel').textContent.includes('through Service' + svc), want.svc[1], { timeout })
      .catch(async () => fail(`Service edge panel: ${await page.textContent('#panel')}`));
    await page.evaluate(() => window.loupe.select(null));
  }
  for (const k of ['http', 'dns']) {
    const px = await labelPixels(want[k]);
    out[k + 'Pixels'] = px;
    if (!px || px.dark < 40 || px.light < px.w * px.h / 3) fail(`${k} label not legible on the canvas: ${JSON.stringify(px)}`);
  }

  // The DNS edge's side panel: its query with count, errors and latency.
  await page.evaluate(([s, d]) => window.loupe.select({ type: 'pair', id: window.loupe.pairKey(s, d) }), want.dns);
  await page.waitForFunction(() => document.querySelectorAll('#panel .l7-paths tr').length > 1, null, { timeout })
    .catch(async () => fail(`DNS panel: ${await page.textContent('#panel')}`));
  out.dnsPanel = await page.$$eval('#panel .l7-paths tr', (rs) => rs.map((r) => [...r.children].map((c) => c.textContent)));
  const [head, row] = out.dnsPanel;
  if (head.join() !== 'query,count,errors,p50,p99' || !/\.$/.test(row[0]) || !(+row[1] > 0) || !/^\d+$/.test(row[2]) || !/s$/.test(row[4]) ||
    (!lab && (row[0] !== 'web.x.svc.lab.' || row[1] !== '40' || row[2] !== '1'))) fail(`DNS queries in the panel: ${JSON.stringify(out.dnsPanel)}`);
  await page.evaluate(() => window.loupe.select(null));

  // Colour by L7 error rate: 10 % red, 2.5 % orange, no L7 grey; legend.
  out.colors = { errors: await waitColors({ http: RED, dns: ORANGE, fqdn: GREY }, 'by error rate') };
  if ((await page.inputValue('#f-color')) !== 'l7errors') fail('colour mode from the URL not in the toolbar');
  out.legend = await page.textContent('#edge-legend');
  if (!(await page.isVisible('#edge-legend')) || !/L7 errors/.test(out.legend) || !out.legend.includes('≥ 5 %') || !out.legend.includes('no L7')) fail(`legend ${out.legend}`);

  // By latency, from the toolbar: p99 200 ms orange, 3 ms green.
  await page.selectOption('#f-color', 'l7latency');
  out.colors.latency = await waitColors({ http: ORANGE, dns: GREEN, fqdn: GREY }, 'by latency');
  out.latencyLegend = await page.textContent('#edge-legend');
  if (!/L7 latency p99/.test(out.latencyLegend) || new URL(page.url()).searchParams.get('color') !== 'l7latency') fail(`latency mode: legend ${out.latencyLegend}, url ${page.url()}`);

  // The external destination: a node named by its FQDN, outside the
  // cluster, in the legend and drawn in the world colour.
  const fq = want.fqdn && want.fqdn[1];
  if (fq) {
    await page.waitForSelector(`#legend button[data-node="${fq}"]`, { timeout }).catch(() => fail(`${fq} not in the legend`));
    const n = out.fqdnNode = await page.evaluate((id) => {
      const m = window.loupe.map, n = m.nodes.get(id);
      if (!n) return null;
      m.centerOn({ type: 'node', id });
      m.invalidate(); m.draw();
      const p = m.screenOf({ type: 'node', id }), dpr = window.devicePixelRatio || 1;
      const px = m.canvas.getContext('2d').getImageData(Math.round(p.x * dpr), Math.round(p.y * dpr), 1, 1).data;
      return { id: n.id, name: n.name, ns: n.ns, kind: n.kind, ips: n.data.ips, pixel: [px[0], px[1], px[2]], hasWorld: m.nodes.has('world') };
    }, fq);
    if (!n || n.name !== fq || n.ns !== '' || n.kind !== 'world' || n.ips.join() !== '192.0.2.1' || !n.hasWorld) fail(`FQDN node ${JSON.stringify(n)}`);
    if (Math.abs(n.pixel[0] - 0x7b) > 12 || Math.abs(n.pixel[1] - 0x61) > 12 || Math.abs(n.pixel[2] - 0xff) > 12) fail(`FQDN node not drawn at its place: ${JSON.stringify(n)}`);
    out.legendEntry = await page.textContent(`#legend button[data-node="${fq}"]`);
  }

  // Plain again: every edge the default colour, no legend, no colour in the URL.
  await page.selectOption('#f-color', 'verdict');
  out.colors.plain = await waitColors({ http: PLAIN, dns: PLAIN, fqdn: PLAIN }, 'plain');
  if (await page.isVisible('#edge-legend')) fail('legend shown in plain mode');
  out.url = page.url();
  if (new URL(out.url).searchParams.has('color')) fail(`plain mode in the URL: ${out.url}`);

  if (want.screenshot) {
    await page.selectOption('#f-color', 'l7errors');
    await page.evaluate(([s, d]) => { window.loupe.map.fit(); window.loupe.select({ type: 'pair', id: window.loupe.pairKey(s, d) }); }, want.http);
    await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
    await page.screenshot({ path: want.screenshot });
    out.screenshot = want.screenshot;
  }
} catch (e) {
  fail(String(e && e.stack || e) + '; ' + logs.join(' | '));
} finally {
  await b.close();
}
console.log(JSON.stringify(out));
