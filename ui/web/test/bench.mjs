// Measures the UI at scale in headless chromium: time from navigation to
// the first frame that draws the map, and frame times while panning.
// Input (env): LOUPE_UI_URL, LOUPE_UI_NODES (nodes to wait for).
// Prints one JSON line.
import { launch, fail } from './browser.mjs';

const url = process.env.LOUPE_UI_URL;
const nodes = parseInt(process.env.LOUPE_UI_NODES || '1', 10);
const timeout = parseInt(process.env.LOUPE_UI_TIMEOUT_MS || '60000', 10);
// Frames are not held to the display's 60 Hz: a frame's time is then the
// page's own work, which can be told from 16 ms (vsync makes 16.7 the floor).
const b = await launch({ width: 1600, height: 1000 }, ['--disable-gpu-vsync', '--disable-frame-rate-limit']);
try {
  const page = await b.newPage();
  // The map shown: the first animation frame after a scene with the map's
  // lines was drawn, whatever the build counts as its first render.
  await page.addInitScript(() => {
    const seen = () => {
      const m = window.loupe && window.loupe.map;
      if (m && m.shownPairs > 0) window.loupeMapShownAt = performance.now();
      else requestAnimationFrame(seen);
    };
    requestAnimationFrame(seen);
  });
  await page.goto(url);
  await page.waitForFunction((n) => window.loupe && window.loupe.map.nodes.size >= n && window.loupe.map.firstRenderAt > 0, nodes, { timeout, polling: 50 });
  await page.waitForFunction(() => window.loupeMapShownAt > 0, null, { timeout, polling: 50 });
  await page.waitForFunction(() => window.loupe.map.settled(), null, { timeout, polling: 20 });
  const settledMs = await page.evaluate(() => performance.now());
  const first = await page.evaluate(() => ({
    firstRenderMs: window.loupe.map.firstRenderAt, // since navigation start
    mapShownMs: window.loupeMapShownAt,
    nodes: window.loupe.map.nodes.size, edges: window.loupe.map.edges.size, pairs: window.loupe.map.pairs.size,
    zoom: window.loupe.map.view.k, timing: window.loupe.timing, sceneMs: window.loupe.map.scene && window.loupe.map.scene.cost,
  }));
  // Pan for 120 frames at two zoom levels: the whole map (every edge on
  // screen), and close up (labels on). The page's own animation frames
  // measure the frame time; draw time is the map's own work per frame.
  const pan = (zoom) => page.evaluate((zoom) => new Promise((resolve) => {
    const m = window.loupe.map;
    if (zoom) { m.view.k = zoom; }
    else m.fit();
    m.frameTimes = [];
    const intervals = [];
    let last = 0, n = 0;
    const tick = (t) => {
      if (last) intervals.push(t - last);
      last = t;
      m.view.tx += 7; m.view.ty += 3; m.dirty = true;
      if (++n < 121) requestAnimationFrame(tick); else resolve({ intervals, draws: m.frameTimes.slice(), shown: m.shownPairs, labels: (m.l7Labelled || []).length });
    };
    requestAnimationFrame(tick);
  }), zoom);
  const stats = (xs) => {
    const s = [...xs].sort((a, b) => a - b);
    const q = (p) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
    return { n: s.length, mean: s.reduce((a, b) => a + b, 0) / s.length, p50: q(0.5), p95: q(0.95), max: s[s.length - 1] };
  };
  const res = { ...first, layoutSettledMs: settledMs };
  for (const [name, zoom] of [['whole', 0], ['close', 0.8]]) {
    const r = await pan(zoom);
    res[name] = { frame: stats(r.intervals), draw: stats(r.draws), pairsDrawn: r.shown, l7Labels: r.labels };
  }
  console.log(JSON.stringify(res));
} catch (e) {
  fail(String(e && e.stack || e));
} finally {
  await b.close();
}
