// loupe UI: websocket client, filters (kept in the URL), flow table, side
// panel and legend around the canvas service map.
import { ServiceMap, kindColor, HANDSHAKE_SCALE, L7_ERROR_SCALE, L7_LATENCY_SCALE } from './graph.js';
import { STARVED_RUNQ_US, STARVED_COLOR, severityColor } from './graph.js';

const $ = (id) => document.getElementById(id);
const MAX_ROWS = 500;
const SEP = '\u0000';

const state = {
  filter: { ns: [], verdict: '', proto: '', port: 0, q: '' },
  view: { size: 'bytes', color: 'verdict' }, // edge width and colour modes (URL: size=flat, color=handshake|l7errors|l7latency)
  range: 0, // index into RANGES: 0 is live, else a past range from the flow history (URL: range=6h)
  rangeInfo: null, // the server's account of the range shown: {since, until, edges, flows, lost, loading, error}
  selected: null, // {type: 'node', id} | {type: 'pair', id: src + SEP + dst}
  status: null,
  wsOpen: false,
  wsEverOpen: false,
  paused: false,
  lostSeen: 0,
  lostAt: 0,
  legendDirty: true,
  panelDirty: true,
  visDirty: true,
  namespaces: new Set(),
  rowCount: 0,
};

const map = new ServiceMap($('map'), { onSelect: (sel) => select(sel, false), onHover: hover });
window.loupe = { map, state, pairKey: (src, dst) => src + SEP + dst, timing: {} };
const mark = (k) => { if (!window.loupe.timing[k]) window.loupe.timing[k] = performance.now(); };

// The time slider's stops: live, then the last N seconds from history.
const RANGES = [['live', 0], ['5m', 300], ['15m', 900], ['1h', 3600], ['6h', 21600], ['24h', 86400]];

// ---- filters and the URL ---------------------------------------------------
function readURL() {
  const p = new URLSearchParams(location.search);
  state.filter.ns = (p.get('ns') || '').split(',').filter(Boolean);
  state.filter.verdict = p.get('verdict') || '';
  state.filter.proto = p.get('proto') || '';
  state.filter.port = parseInt(p.get('port') || '0', 10) || 0;
  state.filter.q = p.get('q') || '';
  state.view.size = p.get('size') === 'flat' ? 'flat' : 'bytes';
  state.view.color = EDGE_SCALES[p.get('color')] ? p.get('color') : 'verdict';
  state.range = Math.max(0, RANGES.findIndex(([k]) => k === p.get('range')));
  $('f-range').value = String(state.range);
  renderRangeLabel();
  applyView();
  if (p.get('node')) state.selected = { type: 'node', id: p.get('node') };
  else if (p.get('from') && p.get('to')) state.selected = { type: 'pair', id: p.get('from') + SEP + p.get('to') };
  $('f-verdict').value = state.filter.verdict;
  $('f-proto').value = state.filter.proto;
  $('f-port').value = state.filter.port || '';
  $('f-q').value = state.filter.q;
}

function writeURL() {
  const p = new URLSearchParams();
  const f = state.filter;
  if (f.ns.length) p.set('ns', f.ns.join(','));
  if (f.verdict) p.set('verdict', f.verdict);
  if (f.proto) p.set('proto', f.proto);
  if (f.port) p.set('port', String(f.port));
  if (f.q) p.set('q', f.q);
  if (state.view.size !== 'bytes') p.set('size', state.view.size);
  if (state.view.color !== 'verdict') p.set('color', state.view.color);
  if (state.range) p.set('range', RANGES[state.range][0]);
  if (map.starvedUs) p.set('starved', String(map.starvedUs / 1000));
  const s = state.selected;
  if (s && s.type === 'node') p.set('node', s.id);
  if (s && s.type === 'pair') { const [a, b] = s.id.split(SEP); p.set('from', a); p.set('to', b); }
  const qs = p.toString();
  history.replaceState(null, '', qs ? '?' + qs : location.pathname);
}

// The colour modes other than by verdict, with their legends: [title,
// scale, what grey means].
const EDGE_SCALES = {
  handshake: ['handshake p99:', HANDSHAKE_SCALE, 'no data'],
  l7errors: ['L7 errors (HTTP 5xx, DNS not NOERROR):', L7_ERROR_SCALE, 'no L7'],
  l7latency: ['L7 latency p99:', L7_LATENCY_SCALE, 'no L7'],
};

// applyView hands the edge modes to the map and shows the colour scale.
function applyView() {
  $('f-size').value = state.view.size;
  $('f-color').value = state.view.color;
  map.sizeBy = state.view.size;
  map.colorBy = state.view.color;
  const lg = $('edge-legend');
  const scale = EDGE_SCALES[state.view.color];
  lg.hidden = !scale;
  if (scale) {
    const swatch = (label, c) => { const s = el('span', label, 'swatch'); s.style.borderColor = c; return s; };
    lg.replaceChildren(el('span', scale[0]), ...scale[1].map(([, c, label]) => swatch(label, c)), swatch(scale[2], '#b8c0cc'));
  }
  map.invalidate();
}

function viewChanged() { applyView(); writeURL(); }

function filterChanged() {
  writeURL();
  state.visDirty = true; state.legendDirty = true;
  sendFilter();
}

$('f-verdict').addEventListener('change', (e) => { state.filter.verdict = e.target.value; filterChanged(); });
$('f-proto').addEventListener('change', (e) => { state.filter.proto = e.target.value; filterChanged(); });
$('f-port').addEventListener('input', (e) => { state.filter.port = parseInt(e.target.value, 10) || 0; filterChanged(); });
let qTimer = 0;
$('f-q').addEventListener('input', (e) => { clearTimeout(qTimer); qTimer = setTimeout(() => { state.filter.q = e.target.value.trim(); filterChanged(); }, 200); });
$('clear-sel').addEventListener('click', () => select(null, false));
$('f-size').addEventListener('change', (e) => { state.view.size = e.target.value; viewChanged(); });
$('f-color').addEventListener('change', (e) => { state.view.color = e.target.value; viewChanged(); });

// ---- time slider: live, or the map of a past range from the history ------------
function sendRange() { send({ type: 'range', seconds: RANGES[state.range][1] }); }
function renderRangeLabel() {
  const r = state.rangeInfo;
  let t = state.range ? 'last ' + RANGES[state.range][0] : 'live';
  if (state.range && r) {
    if (r.loading) t += ' · loading…';
    else if (r.error) t += ' · error: ' + r.error;
    else t += ` · ${r.flows} flows${r.lost ? ` · ${r.lost} unavailable` : ''}`;
  }
  $('range-label').textContent = t;
}
let rangeTimer = 0;
$('f-range').addEventListener('input', (e) => {
  state.range = parseInt(e.target.value, 10) || 0;
  state.rangeInfo = null;
  renderRangeLabel(); writeURL();
  clearTimeout(rangeTimer); rangeTimer = setTimeout(sendRange, 250); // one query when the slider stops
});

function renderNamespaces() {
  const list = $('ns-list');
  const all = [...state.namespaces].filter(Boolean).sort();
  list.replaceChildren(...all.map((ns) => {
    const label = document.createElement('label');
    const cb = document.createElement('input');
    cb.type = 'checkbox'; cb.value = ns; cb.checked = state.filter.ns.includes(ns);
    cb.addEventListener('change', () => {
      state.filter.ns = [...list.querySelectorAll('input:checked')].map((i) => i.value);
      $('ns-summary').textContent = 'Namespaces: ' + (state.filter.ns.length ? state.filter.ns.join(', ') : 'all');
      filterChanged();
    });
    label.append(cb, document.createTextNode(ns));
    return label;
  }));
  $('ns-summary').textContent = 'Namespaces: ' + (state.filter.ns.length ? state.filter.ns.join(', ') : 'all');
}

// Visibility on the map: an edge passes every filter; a node is shown when
// it matches the namespace and text filters itself, or is an end of a
// shown edge (so a namespace's traffic to the world stays visible).
// null: no filter, everything is shown.
let visNodes = null, visEdges = null;
function textOfNode(n) {
  if (!n) return '';
  const d = n.data;
  return (d.id + ' ' + d.labels.join(' ') + ' ' + d.ips.join(' ') + ' ' + d.pods.join(' ')).toLowerCase();
}
function recomputeVisibility() {
  state.visDirty = false;
  const f = state.filter;
  const q = f.q.toLowerCase();
  const nsOK = (n) => !f.ns.length || (n && f.ns.includes(n.ns));
  const textCache = new Map();
  const textOK = (n) => {
    if (!q) return true;
    if (!n) return false;
    let t = textCache.get(n.id);
    if (t === undefined) { t = textOfNode(n).includes(q); textCache.set(n.id, t); }
    return t;
  };
  const edgeFilters = f.verdict || f.proto || f.port;
  if (!f.ns.length && !q && !edgeFilters) { visEdges = visNodes = null; map.invalidate(); return; }
  visEdges = new Set(); visNodes = new Set();
  for (const e of map.edges.values()) {
    const s = map.nodes.get(e.src), d = map.nodes.get(e.dst);
    if (!(nsOK(s) || nsOK(d))) continue;
    if (!(textOK(s) || textOK(d))) continue;
    if (f.verdict && !(e.verdicts[f.verdict] > 0)) continue;
    if (f.proto && e.proto !== f.proto) continue;
    if (f.port && e.port !== f.port) continue;
    visEdges.add(e.id); visNodes.add(e.src); visNodes.add(e.dst);
  }
  if (!edgeFilters) {
    for (const n of map.nodes.values()) if ((nsOK(n) && textOK(n)) || (!f.ns.length && !q)) visNodes.add(n.id);
  }
  map.invalidate();
}
map.visibleNode = (n) => !visNodes || visNodes.has(n.id);
map.visibleEdge = (e) => !visEdges || visEdges.has(e.id);

// ---- websocket ---------------------------------------------------------------
let ws = null, retry = 1000;
function connect() {
  // The first connection is the one connect.js opened while the page
  // loaded, unless it is already gone.
  const early = window.loupeSocket;
  window.loupeSocket = null;
  const took = early && early.ws.readyState <= WebSocket.OPEN;
  ws = took ? early.ws : new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws');
  ws.onopen = () => { mark('wsOpen'); state.wsOpen = true; state.wsEverOpen = true; retry = 1000; sendFilter(); if (state.paused) send({ type: 'pause' }); if (state.range) sendRange(); renderConn(); };
  ws.onclose = () => { state.wsOpen = false; renderConn(); setTimeout(connect, retry); retry = Math.min(retry * 2, 10000); };
  ws.onmessage = (ev) => { mark('firstMessage'); const m = JSON.parse(ev.data); if (m.type === 'snapshot') mark('snapshotParsed'); handle(m); };
  renderConn();
  if (!took) return;
  if (early.openAt) { window.loupe.timing.wsOpen = early.openAt; ws.onopen(); }
  if (early.firstAt) window.loupe.timing.firstArrived = early.firstAt;
  for (const ev of early.queued) ws.onmessage(ev);
}
function send(m) { if (ws && ws.readyState === 1) ws.send(JSON.stringify(m)); }

function serverFilter() {
  const f = state.filter;
  const out = { ns: f.ns, verdict: f.verdict, proto: f.proto, port: f.port, q: f.q };
  const s = state.selected;
  if (s && s.type === 'node') out.node = s.id;
  if (s && s.type === 'pair') { const [a, b] = s.id.split(SEP); out.from = a; out.to = b; }
  return out;
}
function sendFilter() { send({ type: 'filter', filter: serverFilter() }); }

function applyMap(d) {
  for (const id of d.removedNodes || []) map.removeNode(id);
  for (const id of d.removedEdges || []) map.removeEdge(id);
  for (const n of d.nodes || []) {
    map.upsertNode(n);
    if (!state.namespaces.has(n.ns)) { state.namespaces.add(n.ns); nsDirty = true; }
  }
  for (const e of d.edges || []) map.upsertEdge(e);
  state.visDirty = true; state.legendDirty = true; state.panelDirty = true;
}
let nsDirty = false;

function handle(m) {
  if (m.type === 'snapshot' || m.type === 'range') {
    // A live snapshot (no range) answers a switch back to live too.
    state.rangeInfo = m.range || null;
    renderRangeLabel();
    if (m.type === 'snapshot' && state.range && !m.range) return; // the live map, sent before the range's arrived
  }
  if (m.type === 'snapshot') {
    map.clear();
    clearRows();
    applyMap(m.map);
    mark('snapshotApplied');
    map.relayout();
    mark('laidOut');
    if (!map.fitted) map.fit();
    recomputeVisibility(); // the first frame shows the map, not its empty boxes
    map.draw(); // the map first: the table and legend follow it
    afterFrame(() => { if (state.legendDirty) renderLegend(); });
  } else if (m.type === 'flows') {
    clearRows();
  } else if (m.map) {
    applyMap(m.map);
  }
  applyHealth(m);
  if (m.rows && m.rows.length) addRows(m.rows);
  $('skipped').textContent = m.skipped ? `${m.skipped} more matching flows in the last update not shown (rate-limited)` : '';
  if (m.status) { state.status = m.status; renderConn(); }
  if (nsDirty) { nsDirty = false; renderNamespaces(); }
  if (state.visDirty) recomputeVisibility();
  if (state.selected && state.panelDirty) renderPanel();
  if (m.type === 'snapshot') mark('handled');
}

function renderConn() {
  const el = $('conn');
  const st = state.status;
  let cls = 'connecting', text = 'connecting…';
  if (!state.wsOpen) {
    if (state.wsEverOpen) { cls = 'lost'; text = 'disconnected from the UI server, retrying…'; }
  } else if (!st || st.state === 'connecting') {
    text = 'connecting to the relay…';
  } else if (st.state === 'reconnecting') {
    cls = 'lost'; text = 'relay stream lost, reconnecting' + (st.error ? ': ' + st.error : '');
  } else {
    cls = 'live'; text = state.range ? 'history: last ' + RANGES[state.range][0] : 'live';
    const down = (st.nodes || []).filter((n) => n.state !== 'connected');
    const notes = [];
    if (down.length) notes.push(down.map((n) => `node ${n.name} ${n.state}`).join(', '));
    if (st.lostEvents > state.lostSeen) { state.lostAt = Date.now(); state.lostSeen = st.lostEvents; }
    if (st.lostEvents && Date.now() - state.lostAt < 60000) notes.push(`${st.lostEvents} events lost`);
    if (notes.length) { cls = 'degraded'; text = 'live · ' + notes.join(' · '); }
  }
  // Written only when changed: each write costs the page a layout, which
  // a pan's next frame would pay for.
  setText(el, text, 'conn ' + cls);
  const title = st && st.nodes ? st.nodes.map((n) => `${n.name}: ${n.state}${n.message ? ' (' + n.message + ')' : ''}`).join('\n') : '';
  if (el.title !== title) el.title = title;
  if (st) setStats(`${st.flows} flows · ${st.drops} dropped · ${st.flowsPerSecond.toFixed(1)} flows/s · ${map.nodes.size} workloads · ${map.edges.size} connections`);
}

// setStats writes the header's counters at most once a second. They change
// on every tick of a busy cluster (flows/s), and each write costs the page
// a layout of everything on it, 20 ms or more beside a big flow table: at
// the server's 50 ticks a second that was a pan's every frame.
const STATS_EVERY_MS = 1000;
let statsText = '', statsAt = -Infinity, statsTimer = 0;
function setStats(text) {
  statsText = text;
  if (statsTimer) return;
  const wait = statsAt + STATS_EVERY_MS - performance.now();
  const write = () => { statsTimer = 0; statsAt = performance.now(); setText($('stats'), statsText); };
  if (wait <= 0) write();
  else statsTimer = setTimeout(write, wait);
}
function setText(el, text, cls) {
  if (cls !== undefined && el.className !== cls) el.className = cls;
  if (el.textContent !== text) el.textContent = text;
}

// ---- flow table ----------------------------------------------------------------
function clearRows() { pendingRows = null; $('flow-rows').replaceChildren(); state.rowCount = 0; }
function td(text, cls) { const c = document.createElement('td'); c.textContent = text; if (cls) c.className = cls; c.title = text; return c; }
function fmtTime(ms) { const d = new Date(ms); return d.toTimeString().slice(0, 8) + '.' + String(d.getMilliseconds()).padStart(3, '0'); }
function endpoint(id, pod, ip, port) {
  const n = map.nodes.get(id);
  let s = id;
  if (pod && n && n.name !== pod) s = (n.ns ? n.ns + '/' : '') + pod;
  if (!pod && ip && (!n || n.ns === '')) s = `${id} ${ip}`;
  return port ? `${s}:${port}` : s;
}
// Rows go into the table after the next frame, so that a snapshot's map
// is on screen before its hundreds of rows are built and laid out; rows
// that come meanwhile queue behind them, in order.
let pendingRows = null;
function addRows(rows) {
  if (state.paused) return;
  if (pendingRows) {
    pendingRows.push(...rows);
    if (pendingRows.length > MAX_ROWS) pendingRows = pendingRows.slice(pendingRows.length - MAX_ROWS);
    return;
  }
  pendingRows = rows.slice(-MAX_ROWS);
  afterFrame(() => {
    const r = pendingRows;
    pendingRows = null;
    if (r) insertRows(r);
  });
}
// afterFrame runs fn once the next frame is on screen.
function afterFrame(fn) { requestAnimationFrame(() => setTimeout(fn)); }
function insertRows(rows) {
  const body = $('flow-rows');
  const frag = document.createDocumentFragment();
  for (let i = rows.length - 1; i >= 0; i--) {
    const r = rows[i];
    const tr = document.createElement('tr');
    tr.className = r.verdict;
    tr.dataset.src = r.src; tr.dataset.dst = r.dst; tr.dataset.edge = r.edge;
    const svcPort = r.reply ? r.sport : r.dport;
    tr.append(
      td(fmtTime(r.t)),
      td(endpoint(r.src, r.srcPod, r.srcIP, r.sport)),
      td(endpoint(r.dst, r.dstPod, r.dstIP, r.dport)),
      td(`${svcPort || ''}/${r.proto}`),
      td(r.verdict, 'v-' + r.verdict),
      td(r.type + (r.reply ? ' (reply)' : '')),
      td([r.reason, r.policy].filter(Boolean).join(' · ')),
      td(r.summary || ''),
    );
    frag.append(tr);
  }
  body.prepend(frag);
  state.rowCount += rows.length;
  while (body.childElementCount > MAX_ROWS) body.lastElementChild.remove();
  mark('rowsAdded');
}
$('pause').addEventListener('click', () => {
  state.paused = !state.paused;
  $('pause').textContent = state.paused ? 'Resume' : 'Pause';
  send({ type: state.paused ? 'pause' : 'resume' });
});

// ---- selection, side panel, tooltip -------------------------------------------
function select(sel, center) {
  state.selected = sel;
  map.selected = sel;
  map.dirty = true;
  if (sel && center) map.centerOn(sel);
  $('clear-sel').hidden = !sel;
  writeURL();
  sendFilter();
  renderPanel();
  renderScope();
}
window.loupe.select = select;
// edgeStyle exposes how a pair is drawn, for tests: width, colour, dash,
// its summed traffic and the style of its last drawing (null if hidden).
window.loupe.edgeStyle = (src, dst) => {
  const p = map.pairs.get(src + SEP + dst);
  return p ? { ...map.edgeStyle(p), traffic: p.traffic, drawn: p.style || null, l7: p.l7 || null, label: p.l7Label || null, services: p.services || [] } : null;
};

function renderScope() {
  const s = state.selected;
  let t = 'all flows matching the filters';
  if (s && s.type === 'node') t = `flows of ${s.id}`;
  if (s && s.type === 'pair') { const [a, b] = s.id.split(SEP); t = `flows ${a} → ${b}`; }
  $('flow-scope').textContent = t;
}

function el(tag, text, cls) { const e = document.createElement(tag); if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; }
function chips(list) { const dd = el('dd'); if (!list.length) dd.append(el('span', '—', 'muted')); for (const v of list) dd.append(el('span', v, 'chip')); return dd; }
function dl(pairs) { const d = el('dl'); for (const [k, v] of pairs) { d.append(el('dt', k), typeof v === 'string' ? el('dd', v) : v); } return d; }
function verdictText(v) { return Object.entries(v).map(([k, c]) => `${k} ${c}`).join(', '); }
function policyList(pols) {
  const ul = el('ul');
  if (!pols.length) ul.append(el('li', 'none seen on these flows', 'muted'));
  for (const p of pols) ul.append(el('li', `${p.effect === 'deny' ? 'denied by' : 'allowed by'} ${p.ns ? p.ns + '/' : ''}${p.name} (${p.dir}${p.kind ? ', ' + p.kind : ''}) · ${p.flows} flows`, p.effect));
  return ul;
}
function dropsTable(drops) {
  if (!drops.length) return el('p', 'no drops', 'muted');
  const t = el('table');
  t.append(el('tr'));
  t.firstChild.append(el('th', 'time'), el('th', 'reason'), el('th', 'policy'), el('th', 'pods'));
  for (const d of drops.slice(0, 12)) {
    const tr = el('tr');
    tr.append(el('td', fmtTime(d.t)), el('td', d.reason, 'deny'), el('td', (d.policies || []).join(', ') || '—'), el('td', `${d.srcPod || '?'} → ${d.dstPod || '?'}`));
    t.append(tr);
  }
  return t;
}

// ---- traffic of a pair: bytes, packets, connections, handshakes ---------------
function fmtBytes(v) {
  const u = ['B', 'kB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (v >= 1000 && i < u.length - 1) { v /= 1000; i++; }
  return (i ? v.toPrecision(3) : String(Math.round(v))) + ' ' + u[i];
}
function fmtUs(us) { return us >= 1000 ? (us / 1000).toPrecision(3) + ' ms' : us.toPrecision(3) + ' µs'; }
function trafficRows(t) {
  if (!t) return [['traffic', el('dd', 'no connection counters (yet)', 'muted')]];
  return [
    ['bytes', `${fmtBytes(t.bytesSent)} sent · ${fmtBytes(t.bytesReceived)} received`],
    ['packets', `${t.packetsSent} sent · ${t.packetsReceived} received`],
    ['throughput', `${fmtBytes(t.bytesPerSec)}/s`],
    ['connections', `${t.connections} · ${t.connsPerSec.toFixed(2)}/s`],
    ['handshake', t.handshakes ? `p50 ${fmtUs(t.p50)} · p99 ${fmtUs(t.p99)} (${t.handshakes} timed)` : '—'],
  ];
}

// ---- L7 of a pair: protocol, request rate, errors, latency, top paths ---------
function fmtMs(ms) { return ms >= 1000 ? (ms / 1000).toPrecision(3) + ' s' : ms >= 1 ? ms.toPrecision(3) + ' ms' : (ms * 1000).toPrecision(3) + ' µs'; }
function l7Line(e) {
  const l = e.l7;
  const lat = l.meanMs ? `mean ${fmtMs(l.meanMs)} · max ${fmtMs(l.maxMs)}` : `p50 ${fmtMs(l.p50Ms)} · p99 ${fmtMs(l.p99Ms)}`;
  const rate = state.range ? `${l.requests} requests` : `${l.requestsPerSec.toFixed(1)} req/s`;
  return `${l.protocol} ${e.port}/${e.proto}: ${rate} · ${(l.errorRate * 100).toFixed(1)}% errors (${l.errors}/${l.responses}) · ${lat}`;
}
function l7Section(edges) {
  const l7 = edges.filter((e) => e.l7);
  if (!l7.length) return [el('h2', 'L7'), el('p', 'no HTTP or DNS seen on this connection', 'muted')];
  const out = [el('h2', 'L7')];
  for (const e of l7) {
    out.push(el('p', l7Line(e), 'l7-line'));
    const paths = e.l7.paths || [];
    if (!paths.length) continue;
    const t = el('table', undefined, 'l7-paths');
    t.append(el('tr'));
    t.firstChild.append(el('th', e.l7.protocol === 'DNS' ? 'query' : 'path'), el('th', 'count'), el('th', 'errors'), el('th', 'p50'), el('th', 'p99'));
    for (const p of paths) {
      const tr = el('tr');
      tr.append(el('td', p.path), el('td', String(p.count)), el('td', String(p.errors), p.errors ? 'deny' : ''), el('td', fmtMs(p.p50Ms)), el('td', fmtMs(p.p99Ms)));
      t.append(tr);
    }
    out.push(t);
    if (e.l7.morePaths) out.push(el('p', `… ${e.l7.morePaths} more`, 'muted'));
  }
  return out;
}

function renderPanel() {
  state.panelDirty = false;
  const panel = $('panel');
  const s = state.selected;
  if (!s) { panel.replaceChildren(el('p', 'Select a workload or a connection.', 'muted')); return; }
  if (s.type === 'node') {
    const n = map.nodes.get(s.id);
    if (!n) { panel.replaceChildren(el('p', `${s.id}: not in the map (yet)`, 'muted')); return; }
    const d = n.data;
    const edges = [...n.pairs].flatMap((p) => [...p.edges.values()]);
    const drops = edges.flatMap((e) => (e.recentDrops || []).map((x) => ({ ...x }))).sort((a, b) => b.t - a.t);
    const pols = new Map();
    for (const e of edges) for (const p of e.policies || []) {
      if ((p.dir === 'ingress' && e.dst === n.id) || (p.dir === 'egress' && e.src === n.id)) {
        const k = p.effect + p.dir + p.ns + '/' + p.name; const o = pols.get(k);
        pols.set(k, o ? { ...o, flows: o.flows + p.flows } : { ...p });
      }
    }
    const conns = el('table');
    conns.append(el('tr')); conns.firstChild.append(el('th', 'peer'), el('th', 'port'), el('th', 'flows'), el('th', 'verdicts'));
    for (const e of edges.sort((a, b) => b.flows - a.flows).slice(0, 40)) {
      const tr = el('tr');
      tr.append(el('td', e.src === n.id ? '→ ' + e.dst : '← ' + e.src), el('td', `${e.port}/${e.proto}`), el('td', String(e.flows)), el('td', verdictText(e.verdicts), e.verdicts.DROPPED ? 'deny' : ''));
      conns.append(tr);
    }
    panel.replaceChildren(
      el('h3', d.name),
      ...healthSections(n.id),
      dl([['namespace', d.ns || '—'], ['kind', d.kind], ['flows', `${d.flowsOut} out · ${d.flowsIn} in · ${d.drops} dropped`],
        ['labels', chips(d.labels)], ['pods', chips(d.pods)], ['IPs', chips(d.ips)], ['ports', chips(d.ports)]]),
      el('h2', 'Connections'), conns,
      el('h2', 'Recent drops'), dropsTable(drops),
      el('h2', 'Policies on its flows'), policyList([...pols.values()]),
    );
    return;
  }
  const p = map.pairs.get(s.id);
  const [a, b] = s.id.split(SEP);
  if (!p) { panel.replaceChildren(el('p', `${a} → ${b}: not in the map (yet)`, 'muted')); return; }
  const edges = [...p.edges.values()];
  const t = el('table');
  t.append(el('tr')); t.firstChild.append(el('th', 'port'), el('th', 'flows'), el('th', 'verdicts'), el('th', 'drop reasons'));
  for (const e of edges) {
    const tr = el('tr');
    tr.append(el('td', `${e.port}/${e.proto}`), el('td', String(e.flows)), el('td', verdictText(e.verdicts)), el('td', Object.entries(e.dropReasons || {}).map(([r, c]) => `${r} ${c}`).join(', ') || '—', 'deny'));
    t.append(tr);
  }
  const pols = edges.flatMap((e) => e.policies || []);
  const drops = edges.flatMap((e) => e.recentDrops || []).sort((x, y) => y.t - x.t);
  const title = el('h3'); title.append(document.createTextNode(`${a} → ${b}`));
  panel.replaceChildren(
    title,
    dl([['flows', String(p.flows)], ['dropped', p.drops ? `${p.drops} (drawn red, dashed)` : '0'],
      ...(p.services && p.services.length ? [['through Service', p.services.join(', ')]] : []), ...trafficRows(p.traffic)]),
    ...serverHealth(b),
    el('h2', 'Ports'), t,
    ...l7Section(edges),
    el('h2', 'Policies'), policyList(pols),
    el('h2', 'Recent drops'), dropsTable(drops),
  );
}

function hover(h, x, y) {
  const tip = $('tooltip');
  if (!h) { tip.hidden = true; return; }
  const parts = [];
  if (h.type === 'node') {
    const n = map.nodes.get(h.id); if (!n) { tip.hidden = true; return; }
    parts.push(el('strong', n.data.name), el('div', `${n.ns || 'outside the cluster'} · ${n.kind}`), el('div', `${n.data.flowsOut} out · ${n.data.flowsIn} in · ${n.data.drops} dropped`));
    parts.push(...healthFlags(h.id).map((f) => el('div', f.textContent, f.className)));
  } else {
    const p = map.pairs.get(h.id); if (!p) { tip.hidden = true; return; }
    parts.push(el('strong', `${p.src} → ${p.dst}`));
    if (p.services && p.services.length) parts.push(el('div', `through Service ${p.services.join(', ')}`));
    for (const e of p.edges.values()) {
      parts.push(el('div', `${e.port}/${e.proto}: ${e.flows} flows (${verdictText(e.verdicts)})`));
      if (e.l7) parts.push(el('div', l7Line(e)));
      for (const [r, c] of Object.entries(e.dropReasons || {})) parts.push(el('div', `dropped: ${r} × ${c}`, 'deny'));
      for (const pol of e.policies || []) if (pol.effect === 'deny') parts.push(el('div', `denied by ${pol.ns ? pol.ns + '/' : ''}${pol.name} (${pol.dir})`, 'deny'));
    }
  }
  tip.replaceChildren(...parts);
  tip.style.left = Math.min(x + 14, $('map-wrap').clientWidth - 300) + 'px';
  tip.style.top = (y + 14) + 'px';
  tip.hidden = false;
}

// ---- legend: every shown workload as DOM text ----------------------------------
const LEGEND_PER_NS = 80;
function renderLegend() {
  state.legendDirty = false;
  const byNS = new Map();
  for (const n of map.nodes.values()) {
    if (!map.visibleNode(n)) continue;
    if (!byNS.has(n.ns)) byNS.set(n.ns, []);
    byNS.get(n.ns).push(n);
  }
  const items = [];
  let count = 0;
  for (const ns of [...byNS.keys()].sort()) {
    const list = byNS.get(ns).sort((a, b) => a.name.localeCompare(b.name));
    count += list.length;
    items.push(el('li', ns || 'outside the cluster', 'ns'));
    for (const n of list.slice(0, LEGEND_PER_NS)) {
      const li = el('li');
      const btn = el('button');
      btn.type = 'button';
      btn.dataset.node = n.id;
      const dot = el('span', undefined, 'dot'); dot.style.background = kindColor(n.kind);
      btn.append(dot, el('span', n.name, 'wl-name'));
      if (n.data.drops) btn.append(el('span', `${n.data.drops} dropped`, 'dropflag'));
      btn.append(...healthFlags(n.id));
      btn.addEventListener('click', () => select({ type: 'node', id: n.id }, true));
      li.append(btn);
      items.push(li);
    }
    if (list.length > LEGEND_PER_NS) items.push(el('li', `… ${list.length - LEGEND_PER_NS} more (use the search)`, 'muted'));
  }
  $('legend').replaceChildren(...items);
  $('wl-count').textContent = `(${count})`;
}

// ---- workload health: recent security events, run queue, I/O, OOM kills ------
// The server sends each workload's health on the live snapshot and what
// changed on ticks; a past range keeps the live health (the badge is about
// now, the link shows the flows of then).
map.health = new Map();
map.starvedUs = Math.round(parseFloat(new URLSearchParams(location.search).get('starved')) * 1000) || 0;
window.loupe.health = (id) => map.health.get(id) || null;
window.loupe.badge = (id) => { const n = map.nodes.get(id); return n ? n.badge || null : null; };
window.loupe.starved = (src, dst) => { const p = map.pairs.get(src + SEP + dst); return p ? { starved: map.starved(p), drawn: !!p.starved } : null; };

function applyHealth(m) {
  if (m.type === 'snapshot' && !m.range) map.health = new Map(Object.entries(m.workloads || {}));
  else if (!m.workloads && !m.removedWorkloads) return;
  else {
    for (const [id, h] of Object.entries(m.workloads || {})) map.health.set(id, h);
    for (const id of m.removedWorkloads || []) map.health.delete(id);
  }
  state.panelDirty = true; state.legendDirty = true;
  map.invalidate();
}

function starvedUs() { return map.starvedUs || STARVED_RUNQ_US; }

function healthFlags(id) {
  const h = map.health.get(id);
  const out = [];
  if (h && h.eventCount) { const f = el('span', `${h.eventCount} security event${h.eventCount > 1 ? 's' : ''}`, 'secflag'); f.style.color = severityColor(h.priority); out.push(f); }
  if (h && h.res && h.res.runqP99Us >= starvedUs()) out.push(el('span', `run queue p99 ${fmtUs(h.res.runqP99Us)}`, 'starvedflag'));
  return out;
}

// The range stop that reaches back to time t (unix ms) with a minute to
// spare, so that a link shows the flows around an event.
function rangeFor(t) {
  const age = (Date.now() - t) / 1000 + 60;
  const i = RANGES.findIndex(([, s]) => s >= age);
  return i > 0 ? i : RANGES.length - 1;
}
function showFlowsAt(id, t) {
  state.range = rangeFor(t);
  state.rangeInfo = null;
  $('f-range').value = String(state.range);
  renderRangeLabel();
  select({ type: 'node', id }, true);
  sendRange();
}
function peerText(ev) {
  if (ev.query) return `DNS ${ev.query}`;
  if (!ev.peerIP) return '';
  let name = '';
  for (const n of map.nodes.values()) if (n.data.ips.includes(ev.peerIP)) { name = n.id + ' '; break; }
  return `${name}${ev.peerIP}${ev.peerPort ? ':' + ev.peerPort : ''}${ev.proto ? '/' + ev.proto : ''}`;
}
function eventsTable(id, h) {
  const t = el('table', undefined, 'sec-events');
  t.append(el('tr'));
  t.firstChild.append(el('th', 'time'), el('th', 'rule'), el('th', 'priority'), el('th', 'process / peer'), el('th', ''));
  for (const ev of h.events || []) {
    const tr = el('tr');
    const what = [ev.process ? `${ev.process}(${ev.pid})` : '', ev.file || '', peerText(ev)].filter(Boolean).join(' · ');
    const a = el('a', 'flows then');
    const p = new URLSearchParams(location.search);
    p.set('node', id); p.set('range', RANGES[rangeFor(ev.t)][0]); p.delete('from'); p.delete('to');
    a.href = '?' + p.toString();
    a.title = `the flows of ${id} over the ${RANGES[rangeFor(ev.t)][0]} before now, which include ${fmtTime(ev.t)}`;
    a.addEventListener('click', (e) => { e.preventDefault(); showFlowsAt(id, ev.t); });
    const link = el('td'); link.append(a);
    const prio = el('td', ev.priority + (ev.action ? ` (${ev.action.toUpperCase()})` : ''));
    prio.style.color = severityColor(ev.priority);
    tr.append(el('td', fmtTime(ev.t)), el('td', ev.count > 1 ? `${ev.rule} ×${ev.count}` : ev.rule), prio, el('td', what || '—'), link);
    if (ev.pod) tr.title = `pod ${ev.pod} on ${ev.node || '?'}`;
    t.append(tr);
  }
  return t;
}
function resourceRows(r) {
  if (!r) return [['resources', el('dd', 'no resource samples (yet)', 'muted')]];
  const runq = el('dd', `${fmtUs(r.runqP99Us || 0)}${r.runqP99Us >= starvedUs() ? ' · starved: waits for a CPU' : ''}`);
  if (r.runqP99Us >= starvedUs()) runq.className = 'starved';
  return [
    ['run queue p99', runq],
    ['block I/O p99', r.ioOps ? `${fmtUs(r.ioP99Us)} (${r.ioOps} ops)` : '— (no I/O)'],
    ['OOM kills', el('dd', String(r.oomKills || 0), r.oomKills ? 'deny' : '')],
    ['CPU', `${(r.cpuSeconds || 0).toFixed(2)} s in ${(r.intervalMs / 1000).toFixed(1)} s · ${r.pods} pod${r.pods > 1 ? 's' : ''}`],
  ];
}
// The panel is rebuilt on every live update; the events table keeps its
// elements while the workload's events are unchanged (resources change
// every read), so that a click on an event's link is not lost to a
// rebuild.
let eventsDom = { key: '', nodes: null };
function eventSection(id, h) {
  const key = id + SEP + (h.eventCount || 0) + SEP + JSON.stringify(h.events || []);
  if (eventsDom.nodes && eventsDom.key === key) return eventsDom.nodes;
  const out = [el('h2', `Security events${h.eventCount ? ` (${h.eventCount})` : ''}`)];
  out.push(h.eventCount ? eventsTable(id, h) : el('p', 'none recently', 'muted'));
  eventsDom = { key, nodes: out };
  return out;
}
function healthSections(id) {
  const h = map.health.get(id) || {};
  return [...eventSection(id, h), el('h2', 'Resources'), dl(resourceRows(h.res))];
}
// serverHealth: a connection's server, starved or not, next to its traffic.
function serverHealth(dst) {
  const h = map.health.get(dst);
  if (!h || !h.res) return [];
  const r = h.res;
  const starved = r.runqP99Us >= starvedUs();
  const p = el('p', `server ${dst}: run queue p99 ${fmtUs(r.runqP99Us || 0)} · I/O p99 ${r.ioOps ? fmtUs(r.ioP99Us) : '—'} · ${r.oomKills || 0} OOM kills${starved ? ' — starved pod, not the network' : ''}`, starved ? 'starved' : 'muted');
  if (starved) p.style.borderLeftColor = STARVED_COLOR;
  return [p];
}

setInterval(() => {
  if (state.visDirty) recomputeVisibility();
  if (state.legendDirty) renderLegend();
  renderConn();
}, 1000);

readURL();
renderScope();
if (state.selected) { map.selected = state.selected; $('clear-sel').hidden = false; }
connect();
