// Counts how often the header's counters (#stats) are rewritten while the
// server streams ticks whose status changes, and how many ticks came.
// Input (env): LOUPE_UI_URL, LOUPE_UI_WATCH_MS (how long to watch).
// Prints one JSON line; exits 1 on failure.
import { launch, fail } from './browser.mjs';

const url = process.env.LOUPE_UI_URL;
const watchMs = parseInt(process.env.LOUPE_UI_WATCH_MS || '3000', 10);
const timeout = parseInt(process.env.LOUPE_UI_TIMEOUT_MS || '30000', 10);

const b = await launch({ width: 1400, height: 900 });
try {
  const page = await b.newPage();
  // Ticks as the page receives them, beside its own handler.
  await page.addInitScript(() => {
    const Orig = window.WebSocket;
    window.ticks = 0;
    window.WebSocket = function (...a) {
      const w = new Orig(...a);
      w.addEventListener('message', (e) => { if (e.data.includes('"type":"tick"')) window.ticks++; });
      return w;
    };
    window.WebSocket.prototype = Orig.prototype;
  });
  await page.goto(url);
  await page.waitForFunction(() => /^live/.test(document.getElementById('conn').textContent) &&
    document.getElementById('stats').textContent !== '', null, { timeout });
  const out = await page.evaluate((ms) => new Promise((resolve) => {
    const el = document.getElementById('stats');
    const ticks0 = window.ticks;
    let writes = 0;
    const texts = new Set([el.textContent]);
    new MutationObserver(() => { writes++; texts.add(el.textContent); })
      .observe(el, { childList: true, characterData: true, subtree: true });
    setTimeout(() => resolve({ writes, texts: texts.size, ticks: window.ticks - ticks0, last: el.textContent }), ms);
  }), watchMs);
  console.log(JSON.stringify(out));
} catch (e) {
  fail(String(e && e.stack || e));
} finally {
  await b.close();
}
