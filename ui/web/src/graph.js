// Canvas service map: namespaces as boxes, workloads as dots, one line per
// (source, destination) pair. The layout is incremental: a workload keeps
// its place once refined; new ones take free slots in their namespace box at
// once, then only they are moved by a short force simulation (d3-force, in a
// worker) among their already-fixed neighbours. Nothing reflows the whole
// map.

const CELL = 70; // grid cell of a workload, in map units
const PAD = 28; // namespace box padding (room for its title)
const GAP = 40; // between namespace boxes
const R = 7; // workload radius
const REFINE_MAX = 200; // namespaces above this size stay on their grid

const KIND_COLORS = {
  world: '#7b61ff', host: '#6b7385', 'remote-node': '#6b7385', 'kube-apiserver': '#c77d00', unknown: '#9aa3b2',
};
export function kindColor(kind) { return KIND_COLORS[kind] || '#2f6fde'; }

// Handshake p99 colours (µs thresholds): fast, fair, slow, very slow; grey
// for pairs without a timed handshake.
export const HANDSHAKE_SCALE = [[1000, '#1e9e5a', '< 1 ms'], [10000, '#d4a106', '< 10 ms'], [100000, '#e8710a', '< 100 ms'], [Infinity, '#c5221f', '≥ 100 ms']];
export function handshakeColor(p99us) {
  if (!p99us) return '#b8c0cc';
  for (const [lim, c] of HANDSHAKE_SCALE) if (p99us < lim) return c;
  return '#c5221f';
}

// A workload's health (security events, resource pressure) on the map:
// the side panel's numbers as marks. An edge is marked starved when its
// server's run-queue p99 reaches STARVED_RUNQ_US (URL: starved=MS).
export const STARVED_RUNQ_US = 5000;
export const STARVED_COLOR = '#8e24aa';
// Badge colours by the most severe priority of the workload's events.
export function severityColor(priority) {
  if (['Emergency', 'Alert', 'Critical'].includes(priority)) return '#a50e0e';
  if (['Error', 'Warning'].includes(priority)) return '#e8710a';
  return '#d4a106';
}

// L7 colours of the edge colour modes: by error rate (HTTP 5xx, DNS rcode
// other than NOERROR, unanswered queries) and by p99 latency (ms); grey
// for pairs without L7.
export const L7_ERROR_SCALE = [[0.001, '#1e9e5a', '< 0.1 %'], [0.01, '#d4a106', '< 1 %'], [0.05, '#e8710a', '< 5 %'], [Infinity, '#c5221f', '≥ 5 %']];
export const L7_LATENCY_SCALE = [[10, '#1e9e5a', '< 10 ms'], [100, '#d4a106', '< 100 ms'], [1000, '#e8710a', '< 1 s'], [Infinity, '#c5221f', '≥ 1 s']];
export function l7Color(mode, l) {
  if (!l) return '#b8c0cc';
  const [scale, v] = mode === 'l7errors' ? [L7_ERROR_SCALE, l.errorRate] : [L7_LATENCY_SCALE, l.p99Ms || l.maxMs];
  for (const [lim, c] of scale) if (v < lim) return c;
  return '#c5221f';
}
// Below this zoom the map is an overview: thin lines are drawn 1 px wide.
const OVERVIEW_K = 0.5;
const PATH_SEGMENTS = 500; // lines per stroked path
const MAX_L7_LABELS = 400; // above this many in view, labels would only hide each other
const L7_FONT = 11; // screen px

// l7Text is a pair's L7 label: protocol, request rate and error rate; p50
// and p99 latency (a past range's mean and max: it has no percentiles).
export function l7Text(l) {
  const ms = (v) => v < 1 ? Math.round(v * 1000) + 'µs' : v < 10 ? v.toFixed(1) + 'ms' : v < 1000 ? Math.round(v) + 'ms' : (v / 1000).toFixed(1) + 's';
  const pct = l.errorRate * 100;
  const err = (pct < 10 ? +pct.toFixed(1) : Math.round(pct)) + '% err';
  const rate = l.meanMs ? l.requests + ' req' : (l.requestsPerSec < 10 ? l.requestsPerSec.toFixed(1) : Math.round(l.requestsPerSec)) + '/s';
  const lat = l.meanMs ? `mean ${ms(l.meanMs)} · max ${ms(l.maxMs)}` : `p50 ${ms(l.p50Ms)} · p99 ${ms(l.p99Ms)}`;
  return [`${l.protocols.join('+')} ${rate} · ${err}`, lat];
}

// pairLabel is the lines of a pair's label on the map: the Service its
// flows went through (the edge is drawn to the backend workload), then
// its L7 (l7Text).
export function pairLabel(p) {
  const lines = [];
  if (p.services && p.services.length) lines.push('via svc ' + p.services[0] + (p.services.length > 1 ? ` +${p.services.length - 1}` : ''));
  if (p.l7) lines.push(...l7Text(p.l7));
  return lines;
}

export class ServiceMap {
  constructor(canvas, { onSelect, onHover }) {
    this.canvas = canvas;
    this.ctx = canvas.getContext('2d', { alpha: false });
    this.onSelect = onSelect;
    this.onHover = onHover;
    this.nodes = new Map(); // id -> {id, ns, name, kind, x, y (relative to group), data, slot}
    this.groups = new Map(); // ns -> {ns, members: [], cols, x, y, w, h, order}
    this.pairs = new Map(); // "src\u0000dst" -> {key, src, dst, edges: Map(id->edge), drops, flows}
    this.edges = new Map(); // edge id -> edge view
    this.view = { k: 1, tx: 20, ty: 20 };
    this.visibleNode = () => true;
    this.visibleEdge = () => true;
    this.selected = null; // {type:'node'|'pair', id}
    this.sizeBy = 'bytes'; // 'bytes' | 'flat'
    this.colorBy = 'verdict'; // 'verdict' | 'handshake'
    this.hover = null;
    this.invalidate();
    this.layoutDirty = false;
    this.fitted = false;
    this.frameTimes = [];
    this.firstRenderAt = 0;
    this.groupOrder = 0;
    this.pendingRefine = new Set();
    this.jobs = new Map(); // job id -> group, refinements in flight
    this.jobSeq = 0;
    try {
      this.worker = new Worker('layout-worker.js');
      this.worker.onmessage = (ev) => this.refined(ev.data);
    } catch (e) {
      this.worker = null; // refinement is skipped: workloads keep their grid slots
    }
    this.bind();
    const loop = () => {
      if (this.layoutDirty) this.relayout();
      if (this.dirty) this.draw();
      requestAnimationFrame(loop);
    };
    requestAnimationFrame(loop);
  }

  // invalidate marks the scene (nodes, edges, boxes) for redrawing; panning
  // and hovering only move or overlay the cached scene.
  invalidate() { this.sceneDirty = true; this.dirty = true; }

  // ---- data -------------------------------------------------------------
  upsertNode(v) {
    let n = this.nodes.get(v.id);
    if (!n) {
      let g = this.groups.get(v.ns);
      if (!g) {
        g = { ns: v.ns, members: [], cols: 2, next: 0, x: 0, y: 0, w: 0, h: 0, order: this.groupOrder++ };
        this.groups.set(v.ns, g);
      }
      n = { id: v.id, ns: v.ns, name: v.name, kind: v.kind, slot: g.next++, x: 0, y: 0, placed: false, refined: false, data: v, pairs: new Set() };
      g.members.push(n);
      this.nodes.set(v.id, n);
      this.pendingRefine.add(g);
      this.layoutDirty = true;
    }
    n.data = v;
    this.invalidate();
  }

  removeNode(id) {
    const n = this.nodes.get(id);
    if (!n) return;
    this.nodes.delete(id);
    const g = this.groups.get(n.ns);
    if (g) {
      g.members = g.members.filter((m) => m !== n); // others keep their place
      if (!g.members.length) { this.groups.delete(n.ns); this.layoutDirty = true; }
    }
    if (this.selected && this.selected.type === 'node' && this.selected.id === id) this.selected = null;
    this.invalidate();
  }

  upsertEdge(e) {
    this.edges.set(e.id, e);
    const key = e.src + '\u0000' + e.dst;
    let p = this.pairs.get(key);
    if (!p) {
      p = { key, src: e.src, dst: e.dst, edges: new Map(), drops: 0, flows: 0 };
      this.pairs.set(key, p);
      const s = this.nodes.get(e.src), d = this.nodes.get(e.dst);
      if (s) s.pairs.add(p);
      if (d) d.pairs.add(p);
    }
    p.edges.set(e.id, e);
    this.sumPair(p);
    this.invalidate();
  }

  removeEdge(id) {
    const e = this.edges.get(id);
    if (!e) return;
    this.edges.delete(id);
    const key = e.src + '\u0000' + e.dst;
    const p = this.pairs.get(key);
    if (!p) return;
    p.edges.delete(id);
    if (!p.edges.size) {
      this.pairs.delete(key);
      for (const nid of [p.src, p.dst]) { const n = this.nodes.get(nid); if (n) n.pairs.delete(p); }
      if (this.selected && this.selected.type === 'pair' && this.selected.id === key) this.selected = null;
    } else this.sumPair(p);
    this.invalidate();
  }

  sumPair(p) {
    let drops = 0, flows = 0;
    const t = { bytesSent: 0, bytesReceived: 0, packetsSent: 0, packetsReceived: 0, connections: 0, bytesPerSec: 0, connsPerSec: 0, handshakes: 0, p50: 0, p99: 0 };
    let any = false, mostHS = 0;
    for (const e of p.edges.values()) {
      drops += e.verdicts.DROPPED || 0; flows += e.flows;
      const x = e.traffic;
      if (!x) continue;
      any = true;
      for (const k of ['bytesSent', 'bytesReceived', 'packetsSent', 'packetsReceived', 'connections', 'bytesPerSec', 'connsPerSec', 'handshakes']) t[k] += x[k] || 0;
      // The pair's percentiles are those of its port with the most handshakes.
      if ((x.handshakes || 0) > mostHS) { mostHS = x.handshakes; t.p50 = x.handshakeP50Us || 0; t.p99 = x.handshakeP99Us || 0; }
    }
    p.drops = drops; p.flows = flows; p.traffic = any ? t : null;
    // The Services the pair's flows went through (translated ClusterIPs).
    const svcs = new Set();
    for (const e of p.edges.values()) for (const sv of e.services || []) svcs.add(sv);
    p.services = [...svcs].sort();
    this.sumL7(p);
  }

  // sumL7 sums a pair's L7 over its ports into p.l7 (null without any):
  // rates and counts add up, the latencies are those of the port with the
  // most responses.
  sumL7(p) {
    let l = null;
    for (const e of p.edges.values()) {
      const x = e.l7;
      if (!x) continue;
      if (!l) l = { protocols: [], requestsPerSec: 0, requests: 0, responses: 0, errors: 0, errorRate: 0, p50Ms: 0, p99Ms: 0, meanMs: 0, maxMs: 0, most: -1 };
      if (!l.protocols.includes(x.protocol)) l.protocols.push(x.protocol);
      l.requestsPerSec += x.requestsPerSec || 0; l.requests += x.requests; l.responses += x.responses; l.errors += x.errors;
      if (x.responses > l.most) Object.assign(l, { most: x.responses, p50Ms: x.p50Ms, p99Ms: x.p99Ms, meanMs: x.meanMs || 0, maxMs: x.maxMs || 0 });
    }
    if (l && l.responses) l.errorRate = l.errors / l.responses;
    p.l7 = l;
  }

  // edgeStyle is how a pair is drawn: its width (map units), colour and
  // dash, by the toolbar's size and colour modes. The last drawn style is
  // kept on the pair (p.style), which tests read.
  edgeStyle(p) {
    let width = 1.2;
    const t = p.traffic;
    if (this.sizeBy === 'bytes' && t && t.bytesPerSec > 0) width = 1.2 + Math.min(10, 1.5 * Math.log10(1 + t.bytesPerSec / 1000));
    width = Math.round(width * 2) / 2;
    let color = '#8ea2c4';
    if (this.colorBy === 'handshake') color = handshakeColor(t && t.handshakes ? t.p99 : 0);
    if (this.colorBy === 'l7errors' || this.colorBy === 'l7latency') color = l7Color(this.colorBy, p.l7);
    const dashed = p.drops > 0;
    if (dashed && this.colorBy === 'verdict') { color = '#d93025'; width = Math.max(width, 2); }
    return { width, color, dashed };
  }

  clear() {
    this.nodes.clear(); this.groups.clear(); this.pairs.clear(); this.edges.clear();
    this.groupOrder = 0; this.selected = null; this.fitted = false; this.invalidate();
  }

  // ---- layout -----------------------------------------------------------
  relayout() {
    this.layoutDirty = false;
    for (const g of this.groups.values()) {
      const need = Math.max(4, g.next);
      let cols = g.cols;
      while (cols * cols < need) cols *= 2;
      if (cols !== g.cols) {
        // The box grows. A refined namespace spreads out, keeping its shape;
        // a large one (grid only) takes its new grid.
        const f = cols / g.cols;
        g.cols = cols;
        for (const n of g.members) {
          if (!n.placed) continue;
          if (g.members.length > REFINE_MAX) { const p = this.slotPos(g, n); n.x = p.x; n.y = p.y; } else { n.x = PAD + (n.x - PAD) * f; n.y = PAD + (n.y - PAD) * f; }
        }
      }
    }
    for (const g of this.pendingRefine) if (this.groups.has(g.ns)) this.refine(g);
    this.pendingRefine.clear();
    for (const g of this.groups.values()) {
      let maxY = PAD;
      for (const n of g.members) maxY = Math.max(maxY, n.y);
      g.w = g.cols * CELL + PAD * 2 - CELL / 2;
      g.h = maxY + PAD + CELL / 2;
    }
    // Shelf packing in order of first appearance: a new namespace goes at
    // the end, and boxes only move when one before them grows.
    const groups = [...this.groups.values()].sort((a, b) => a.order - b.order);
    const area = groups.reduce((s, g) => s + (g.w + GAP) * (g.h + GAP), 0);
    // The shelf width only changes when the map outgrows it by half, so
    // that a growing namespace does not reshuffle every box.
    const want = Math.max(Math.sqrt(area) * 1.6, ...groups.map((g) => g.w));
    if (!this.shelfWidth || want > this.shelfWidth * 1.5 || want < this.shelfWidth / 3) this.shelfWidth = want;
    const width = Math.max(this.shelfWidth, ...groups.map((g) => g.w));
    let x = 0, y = 0, shelf = 0;
    for (const g of groups) {
      if (x > 0 && x + g.w > width) { x = 0; y += shelf + GAP; shelf = 0; }
      g.x = x; g.y = y; x += g.w + GAP; shelf = Math.max(shelf, g.h);
    }
    this.invalidate();
  }

  slotPos(g, n) {
    return { x: PAD + (n.slot % g.cols) * CELL, y: PAD + Math.floor(n.slot / g.cols) * CELL };
  }

  // refine places a namespace's new workloads on their grid slots now, and
  // asks the worker to refine them when the namespace is small enough for a
  // force layout to help.
  refine(g) {
    const fresh = g.members.filter((n) => !n.placed);
    for (const n of fresh) { const p = this.slotPos(g, n); n.x = p.x; n.y = p.y; n.placed = true; }
    const todo = g.members.filter((n) => !n.refined);
    if (!todo.length) return;
    if (!this.worker || g.members.length > REFINE_MAX) { for (const n of todo) n.refined = true; return; }
    if (g.busy) { g.again = true; return; }
    const members = new Set(g.members);
    const links = [];
    for (const n of g.members) {
      for (const p of n.pairs) {
        if (p.src !== n.id) continue;
        const d = this.nodes.get(p.dst);
        if (d && d !== n && members.has(d)) links.push({ source: n.id, target: d.id });
      }
    }
    const job = ++this.jobSeq;
    g.busy = true;
    this.jobs.set(job, g);
    this.worker.postMessage({
      job, links, cell: CELL, min: PAD, max: PAD + (g.cols - 1) * CELL,
      nodes: g.members.map((n) => { const s = this.slotPos(g, n); return { id: n.id, x: n.x, y: n.y, sx: s.x, sy: s.y, fixed: n.refined }; }),
    });
  }

  refined({ job, nodes }) {
    const g = this.jobs.get(job);
    this.jobs.delete(job);
    if (!g) return;
    g.busy = false;
    for (const r of nodes) {
      const n = this.nodes.get(r.id);
      if (n && n.ns === g.ns && !n.refined) { n.x = r.x; n.y = r.y; n.refined = true; }
    }
    if (g.again) { g.again = false; this.pendingRefine.add(g); }
    this.layoutDirty = true;
    this.invalidate();
  }

  // settled reports that no refinement is pending or running.
  settled() { return !this.jobs.size && !this.pendingRefine.size && !this.layoutDirty; }

  pos(n) { const g = this.groups.get(n.ns); return g ? { x: g.x + n.x, y: g.y + n.y } : { x: n.x, y: n.y }; }

  fit() {
    const groups = [...this.groups.values()];
    if (!groups.length) return;
    const w = Math.max(...groups.map((g) => g.x + g.w)), h = Math.max(...groups.map((g) => g.y + g.h));
    const cw = this.canvas.clientWidth, ch = this.canvas.clientHeight;
    const k = Math.min(2, Math.max(0.02, Math.min(cw / (w + 40), ch / (h + 40))));
    this.view = { k, tx: (cw - w * k) / 2, ty: (ch - h * k) / 2 };
    this.fitted = true;
    this.dirty = true;
  }

  // ---- drawing ----------------------------------------------------------
  resize() {
    const dpr = window.devicePixelRatio || 1;
    const w = this.canvas.clientWidth, h = this.canvas.clientHeight;
    if (this.canvas.width !== Math.round(w * dpr) || this.canvas.height !== Math.round(h * dpr)) {
      this.canvas.width = Math.round(w * dpr); this.canvas.height = Math.round(h * dpr);
    }
    return dpr;
  }

  // draw shows the cached scene, shifted (and scaled while a zoom is under
  // way), and redraws the scene only when it is stale: its data changed, the
  // zoom settled on a new level, or the view left the cached margin. So a
  // pan costs one image copy a frame, however large the map.
  draw() {
    const t0 = performance.now();
    this.dirty = false;
    const dpr = this.resize();
    const W = this.canvas.clientWidth, H = this.canvas.clientHeight;
    const v = this.view;
    let sc = this.scene;
    const zooming = t0 - this.lastZoomAt < 150;
    const stale = !sc || sc.w !== W || sc.h !== H || sc.dpr !== dpr ||
      (sc.k !== v.k && !zooming) || (sc.k === v.k && !this.covers(sc, v, W, H));
    // Live updates of a big map are redrawn at most every few frames' worth
    // of scene time, so that a busy cluster never starves panning.
    // While a person drags, live updates wait: the pan stays smooth.
    const dragging = t0 - this.lastPanAt < 300;
    const due = this.sceneDirty && (!sc || (!dragging && t0 - sc.at > Math.min(1000, sc.cost * 4)));
    if (stale || due) {
      sc = this.renderScene(W, H, dpr);
      if (!this.firstRenderAt && sc.nodes) this.firstRenderAt = performance.now(); // the first scene with workloads on it
    } else if (this.sceneDirty || zooming) {
      this.dirty = true; // come back for it
    }
    const ctx = this.ctx;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = '#fbfcfd';
    ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    const r = v.k / sc.k;
    const dx = v.tx - (sc.tx + sc.mx) * r, dy = v.ty - (sc.ty + sc.my) * r;
    ctx.drawImage(sc.canvas, dx * dpr, dy * dpr, sc.canvas.width * r, sc.canvas.height * r);
    ctx.setTransform(dpr * v.k, 0, 0, dpr * v.k, dpr * v.tx, dpr * v.ty);
    this.drawOverlay(ctx);
    const dt = performance.now() - t0;
    this.frameTimes.push(dt);
    if (this.frameTimes.length > 600) this.frameTimes.splice(0, 300);
  }

  // covers reports whether the cached scene holds everything the view
  // shows of the map: the view stays within the scene's margin, or the part
  // of the map in view (its boxes, with room for names and badges) is
  // inside the scene, as when the whole map fits on screen.
  covers(sc, v, W, H) {
    if (Math.abs(v.tx - sc.tx) <= sc.mx && Math.abs(v.ty - sc.ty) <= sc.my) return true;
    const b = sc.bounds;
    if (!b) return false;
    const k = v.k, x0 = Math.max(b[0], -v.tx / k), y0 = Math.max(b[1], -v.ty / k);
    const x1 = Math.min(b[2], (W - v.tx) / k), y1 = Math.min(b[3], (H - v.ty) / k);
    if (x0 >= x1 || y0 >= y1) return true; // no map in view
    const c = sc.covered;
    return x0 >= c[0] && y0 >= c[1] && x1 <= c[2] && y1 <= c[3];
  }

  renderScene(W, H, dpr) {
    const t0 = performance.now();
    this.sceneDirty = false;
    const { k, tx, ty } = this.view;
    const mx = Math.round(W / 2), my = Math.round(H / 2); // margin on each side
    let sc = this.scene;
    if (!sc || sc.w !== W || sc.h !== H || sc.dpr !== dpr) {
      const canvas = document.createElement('canvas');
      canvas.width = Math.round((W + 2 * mx) * dpr); canvas.height = Math.round((H + 2 * my) * dpr);
      sc = { canvas, ctx: canvas.getContext('2d', { alpha: false }), w: W, h: H, dpr };
    }
    Object.assign(sc, { k, tx, ty, mx, my });
    const ctx = sc.ctx;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = '#fbfcfd';
    ctx.fillRect(0, 0, sc.canvas.width, sc.canvas.height);
    ctx.setTransform(dpr * k, 0, 0, dpr * k, dpr * (tx + mx), dpr * (ty + my));
    // The covered rectangle, in map units.
    const vx0 = (-tx - mx) / k, vy0 = (-ty - my) / k, vx1 = (W + mx - tx) / k, vy1 = (H + my - ty) / k;
    const inView = (x0, y0, x1, y1) => x1 >= vx0 && x0 <= vx1 && y1 >= vy0 && y0 <= vy1;
    sc.covered = [vx0, vy0, vx1, vy1];
    // Where anything may be drawn: the boxes, and around them names and
    // labels in screen pixels.
    let bx1 = 0, by1 = 0;
    for (const g of this.groups.values()) { bx1 = Math.max(bx1, g.x + g.w); by1 = Math.max(by1, g.y + g.h); }
    const m = 60 + 200 / k;
    sc.bounds = [-m, -m, bx1 + m, by1 + m];

    const visNode = new Map();
    for (const n of this.nodes.values()) visNode.set(n.id, this.visibleNode(n));

    // namespace boxes
    ctx.lineWidth = 1 / k;
    ctx.font = `600 ${Math.max(11, 12 / k)}px system-ui, sans-serif`;
    for (const g of this.groups.values()) {
      if (!inView(g.x, g.y, g.x + g.w, g.y + g.h)) continue;
      let any = false;
      for (const n of g.members) if (visNode.get(n.id)) { any = true; break; }
      ctx.globalAlpha = any ? 1 : 0.25;
      ctx.fillStyle = g.ns ? '#f1f4f9' : '#f4f0ff';
      ctx.strokeStyle = '#cfd6e2';
      ctx.fillRect(g.x, g.y, g.w, g.h);
      ctx.strokeRect(g.x, g.y, g.w, g.h);
      ctx.fillStyle = '#4b5567';
      ctx.fillText(g.ns || 'outside the cluster', g.x + 6, g.y + Math.max(14, 13 / k));
    }
    ctx.globalAlpha = 1;

    // edges, batched by style: paths per (width, colour, dash). Zoomed out
    // (the overview), lines of up to 2 px are drawn 1 px wide with dashes
    // of screen size: a canvas draws 1 px lines as hairlines, an order of
    // magnitude cheaper than wider ones, and map-sized dashes would be
    // thousands of tiny segments for a blur. A path holds at most
    // PATH_SEGMENTS lines, as stroking one grows faster than its length.
    const overview = k < OVERVIEW_K;
    const styles = new Map();
    const l7s = [];
    let shown = 0;
    for (const p of this.pairs.values()) {
      const seg = this.segment(p);
      if (!seg) { p.style = null; continue; }
      const [x0, y0, x1, y1, dx, dy, self] = seg;
      if (!inView(Math.min(x0, x1) - 20, Math.min(y0, y1) - 20, Math.max(x0, x1) + 20, Math.max(y0, y1) + 20)) continue;
      shown++;
      const st = this.edgeStyle(p);
      p.style = st;
      const w = overview && st.width <= 2 ? 1 : st.width; // screen px below k = 1
      // By colour (a constant string), then width and dash as a number:
      // a string key built per pair would cost more than the drawing.
      let byColor = styles.get(st.color);
      if (!byColor) { byColor = new Map(); styles.set(st.color, byColor); }
      const wk = w * 4 + (st.dashed ? 1 : 0); // w is a multiple of 0.5
      let b = byColor.get(wk);
      if (!b) { b = { st, w, paths: [], n: PATH_SEGMENTS, arrows: [] }; byColor.set(wk, b); }
      if (b.n === PATH_SEGMENTS) { b.paths.push(new Path2D()); b.n = 0; }
      b.n++;
      const path = b.paths[b.paths.length - 1];
      if ((p.l7 || (p.services && p.services.length)) && !self) l7s.push([p, seg, st]);
      if (self) { path.moveTo(x0 + R, y0); path.arc(x0 + R + 6, y0 - 6, 8, Math.PI, Math.PI * 2.6); continue; }
      path.moveTo(x0, y0); path.lineTo(x1, y1);
      if (k > 0.35) b.arrows.push([x1, y1, dx, dy]);
    }
    this.shownPairs = shown;
    const dash = [7 / Math.min(k, 1), 5 / Math.min(k, 1)];
    for (const { st, w, paths, arrows } of [...styles.values()].flatMap((m) => [...m.values()])) {
      ctx.lineWidth = Math.max(w, w / k);
      ctx.strokeStyle = st.color;
      ctx.setLineDash(st.dashed ? dash : []);
      for (const path of paths) ctx.stroke(path);
      ctx.setLineDash([]);
      if (!arrows.length) continue;
      const ap = new Path2D();
      const a = 8 + st.width, h = 4 + st.width / 2;
      for (const [x, y, dx, dy] of arrows) {
        ap.moveTo(x, y);
        ap.lineTo(x - dx * a - dy * h, y - dy * a + dx * h);
        ap.lineTo(x - dx * a + dy * h, y - dy * a - dx * h);
        ap.closePath();
      }
      ctx.fillStyle = st.color; ctx.fill(ap);
    }

    this.drawL7Labels(ctx, k, l7s);

    // nodes, batched by colour
    const byColor = new Map();
    const dropRing = new Path2D();
    const labels = [];
    let drawn = 0;
    for (const n of this.nodes.values()) {
      if (!visNode.get(n.id)) continue;
      const { x, y } = this.pos(n);
      if (!inView(x - R, y - R, x + R, y + R)) continue;
      drawn++;
      const c = kindColor(n.kind);
      let path = byColor.get(c);
      if (!path) { path = new Path2D(); byColor.set(c, path); }
      path.moveTo(x + R, y); path.arc(x, y, R, 0, Math.PI * 2);
      if (n.data.drops > 0) { dropRing.moveTo(x + R + 3, y); dropRing.arc(x, y, R + 3, 0, Math.PI * 2); }
      if (k > 0.45) labels.push([n.name, x, y]);
    }
    sc.nodes = drawn;
    for (const [c, path] of byColor) { ctx.fillStyle = c; ctx.fill(path); }
    ctx.strokeStyle = '#d93025'; ctx.lineWidth = 2 / Math.max(k, 1); ctx.stroke(dropRing);
    this.drawHealth(ctx, k, visNode, inView);
    if (labels.length) {
      ctx.font = '11px system-ui, sans-serif';
      ctx.fillStyle = '#1d2330';
      ctx.strokeStyle = 'rgba(251, 252, 253, 0.9)'; // a halo keeps names legible over lines
      ctx.lineWidth = 3;
      ctx.lineJoin = 'round';
      ctx.textAlign = 'center';
      for (const [name, x, y] of labels) {
        const text = name.length > 24 ? name.slice(0, 23) + '…' : name;
        ctx.strokeText(text, x, y + R + 12);
        ctx.fillText(text, x, y + R + 12);
      }
      ctx.textAlign = 'start';
    }
    sc.at = performance.now();
    sc.cost = sc.at - t0;
    this.scene = sc;
    return sc;
  }

  // starved reports whether a pair's server workload waits for CPU: its
  // run-queue p99 at or above the threshold.
  starved(p) {
    const h = this.health && this.health.get(p.dst);
    return !!(h && h.res && h.res.runqP99Us >= (this.starvedUs || STARVED_RUNQ_US));
  }

  // drawHealth marks starved edges with a purple diamond near their server
  // end and puts a badge, coloured by severity, with the count of recent
  // security events on workloads that have any. What it drew is kept on
  // the pair (p.starved) and the node (n.badge), which tests read.
  drawHealth(ctx, k, visNode, inView) {
    const marks = new Path2D();
    for (const p of this.pairs.values()) {
      p.starved = false;
      if (!this.starved(p)) continue;
      const seg = this.segment(p);
      if (!seg || seg[6]) continue;
      const x = seg[0] + (seg[2] - seg[0]) * 0.75, y = seg[1] + (seg[3] - seg[1]) * 0.75;
      if (!inView(x - 8, y - 8, x + 8, y + 8)) continue;
      const d = 6;
      marks.moveTo(x, y - d); marks.lineTo(x + d, y); marks.lineTo(x, y + d); marks.lineTo(x - d, y); marks.closePath();
      p.starved = true;
    }
    ctx.fillStyle = STARVED_COLOR; ctx.fill(marks);
    ctx.font = '600 9px system-ui, sans-serif';
    ctx.textAlign = 'center';
    for (const n of this.nodes.values()) {
      const h = this.health && this.health.get(n.id);
      n.badge = null;
      if (!h || !h.eventCount || !visNode.get(n.id)) continue;
      const { x, y } = this.pos(n);
      const bx = x + R, by = y - R;
      if (!inView(bx - 7, by - 7, bx + 7, by + 7)) continue;
      const color = severityColor(h.priority);
      ctx.fillStyle = color;
      ctx.beginPath(); ctx.arc(bx, by, 6.5, 0, Math.PI * 2); ctx.fill();
      ctx.fillStyle = '#fff';
      ctx.fillText(h.eventCount > 9 ? '9+' : String(h.eventCount), bx, by + 3);
      n.badge = { count: h.eventCount, color, x: bx, y: by };
    }
    ctx.textAlign = 'start';
  }

  // drawL7Labels writes each labelled pair's label (pairLabel: its Service
  // and its L7) at the middle of its
  // line, on the side of its direction so that the two directions of a
  // pair do not overlap, in a box edged with the line's colour. Text keeps
  // its screen size. The drawn label is kept on the pair (p.l7Label, map
  // units), which tests read.
  drawL7Labels(ctx, k, l7s) {
    for (const p of this.l7Labelled || []) p.l7Label = null;
    this.l7Labelled = [];
    if (k < 0.5 || !l7s.length || l7s.length > MAX_L7_LABELS) return;
    const f = L7_FONT / k, lh = f * 1.25, pad = 3 / k;
    ctx.font = `${f}px system-ui, sans-serif`;
    ctx.textAlign = 'center';
    ctx.textBaseline = 'middle';
    const boxes = [];
    const nodeRect = (n) => {
      const q = this.pos(n), tw = 6.5 * Math.min(24, n.name.length);
      return [q.x - Math.max(R, tw / 2), q.y - R, q.x + Math.max(R, tw / 2), q.y + R + 16];
    };
    let obstacles = null;
    if (this.nodes.size <= 300) obstacles = [...this.nodes.values()].filter((n) => this.visibleNode(n)).map(nodeRect);
    for (const [p, [x0, y0, x1, y1, dx, dy], st] of l7s) {
      const lines = pairLabel(p);
      const w = Math.max(...lines.map((s) => ctx.measureText(s).width)) + 2 * pad, h = lines.length * lh + pad;
      // From the line's middle, away from it on the pair's side, far enough
      // that the box's corner clears it whatever the angle.
      let off = 4 / k + Math.abs(dx) * h / 2 + Math.abs(dy) * w / 2;
      // Further out while it would cover a dot, a name or a label drawn
      // before it (on small maps; on big ones only its ends' dots and names).
      const near = obstacles || [nodeRect(this.nodes.get(p.src)), nodeRect(this.nodes.get(p.dst))];
      let box;
      for (let i = 0; i < 8; i++) {
        const cx = (x0 + x1) / 2 - dy * off, cy = (y0 + y1) / 2 + dx * off;
        box = { x: cx - w / 2, y: cy - h / 2, w, h, lines };
        if (!near.some(([ax, ay, bx, by]) => box.x < bx && box.x + w > ax && box.y < by && box.y + h > ay)) break;
        off += 6 / Math.min(k, 1);
      }
      if (obstacles) obstacles.push([box.x, box.y, box.x + w, box.y + h]);
      p.l7Label = box;
      this.l7Labelled.push(p);
      boxes.push([box, st.color]);
    }
    ctx.lineWidth = 1.5 / k;
    for (const [b, color] of boxes) {
      ctx.fillStyle = 'rgba(255, 255, 255, 0.9)';
      ctx.fillRect(b.x, b.y, b.w, b.h);
      ctx.strokeStyle = color;
      ctx.strokeRect(b.x, b.y, b.w, b.h);
    }
    ctx.fillStyle = '#1d2330';
    for (const [b] of boxes) b.lines.forEach((s, i) => ctx.fillText(s, b.x + b.w / 2, b.y + pad / 2 + lh * (i + 0.5)));
    ctx.textAlign = 'start';
    ctx.textBaseline = 'alphabetic';
  }

  // segment returns where a pair's line is drawn, or null when hidden:
  // [x0, y0, x1, y1, dx, dy, self]. Both directions of a pair are offset
  // apart so that each stays visible and clickable.
  segment(p) {
    const s = this.nodes.get(p.src), d = this.nodes.get(p.dst);
    if (!s || !d) return null;
    let vis = false;
    for (const e of p.edges.values()) if (this.visibleEdge(e)) { vis = true; break; }
    if (!vis) return null;
    const a = this.pos(s), b = this.pos(d);
    if (s === d) return [a.x, a.y, a.x, a.y, 0, 0, true];
    let dx = b.x - a.x, dy = b.y - a.y; const len = Math.hypot(dx, dy) || 1;
    dx /= len; dy /= len;
    const ox = -dy * 3, oy = dx * 3;
    return [a.x + dx * R + ox, a.y + dy * R + oy, b.x - dx * (R + 2) + ox, b.y - dy * (R + 2) + oy, dx, dy, false];
  }

  // drawOverlay draws the selected and hovered items over the scene.
  drawOverlay(ctx) {
    const k = this.view.k;
    const hi = new Path2D(), ring = new Path2D();
    for (const sel of [this.selected, this.hover]) {
      if (!sel) continue;
      if (sel.type === 'pair') {
        const p = this.pairs.get(sel.id); const seg = p && this.segment(p);
        if (seg && !seg[6]) { hi.moveTo(seg[0], seg[1]); hi.lineTo(seg[2], seg[3]); }
      } else {
        const n = this.nodes.get(sel.id);
        if (n && this.visibleNode(n)) { const { x, y } = this.pos(n); ring.moveTo(x + R + 6, y); ring.arc(x, y, R + 6, 0, Math.PI * 2); }
      }
    }
    ctx.strokeStyle = 'rgba(255, 170, 0, 0.9)';
    ctx.lineWidth = Math.max(4, 4 / k);
    ctx.stroke(hi);
    ctx.lineWidth = 3 / Math.max(k, 0.2);
    ctx.stroke(ring);
  }

  // ---- interaction ------------------------------------------------------
  toMap(ev) {
    const r = this.canvas.getBoundingClientRect();
    const sx = ev.clientX - r.left, sy = ev.clientY - r.top;
    return { sx, sy, x: (sx - this.view.tx) / this.view.k, y: (sy - this.view.ty) / this.view.k };
  }

  hit(x, y) {
    const k = this.view.k;
    let best = null, bestD = (R + 4 / k) ** 2;
    for (const n of this.nodes.values()) {
      if (!this.visibleNode(n)) continue;
      const p = this.pos(n); const d = (p.x - x) ** 2 + (p.y - y) ** 2;
      if (d < bestD) { bestD = d; best = { type: 'node', id: n.id }; }
    }
    if (best) return best;
    let bestE = 6 / k;
    for (const p of this.pairs.values()) {
      const s = this.nodes.get(p.src), d = this.nodes.get(p.dst);
      if (!s || !d || s === d) continue;
      let vis = false;
      for (const e of p.edges.values()) if (this.visibleEdge(e)) { vis = true; break; }
      if (!vis) continue;
      const a = this.pos(s), b = this.pos(d);
      let dx = b.x - a.x, dy = b.y - a.y; const len = Math.hypot(dx, dy) || 1;
      const ox = -dy / len * 3, oy = dx / len * 3;
      const ax = a.x + ox, ay = a.y + oy;
      const t = Math.max(0, Math.min(1, ((x - ax) * dx + (y - ay) * dy) / (len * len)));
      const dist = Math.hypot(ax + t * dx - x, ay + t * dy - y);
      if (dist < bestE) { bestE = dist; best = { type: 'pair', id: p.key }; }
    }
    return best;
  }

  // Screen position (relative to the canvas) of a node or of the middle of
  // a pair's line: for tests and keyboard users.
  screenOf(sel) {
    const { k, tx, ty } = this.view;
    if (sel.type === 'node') { const n = this.nodes.get(sel.id); if (!n) return null; const p = this.pos(n); return { x: p.x * k + tx, y: p.y * k + ty }; }
    const p = this.pairs.get(sel.id); if (!p) return null;
    const s = this.nodes.get(p.src), d = this.nodes.get(p.dst); if (!s || !d) return null;
    const a = this.pos(s), b = this.pos(d);
    let dx = b.x - a.x, dy = b.y - a.y; const len = Math.hypot(dx, dy) || 1;
    const mx = (a.x + b.x) / 2 - dy / len * 3, my = (a.y + b.y) / 2 + dx / len * 3;
    return { x: mx * k + tx, y: my * k + ty };
  }

  centerOn(sel) {
    const s = this.screenOf(sel); if (!s) return;
    this.view.tx += this.canvas.clientWidth / 2 - s.x; this.view.ty += this.canvas.clientHeight / 2 - s.y;
    this.dirty = true;
  }

  bind() {
    const c = this.canvas;
    let drag = null;
    c.addEventListener('mousedown', (ev) => { drag = { x: ev.clientX, y: ev.clientY, tx: this.view.tx, ty: this.view.ty, moved: false }; c.classList.add('dragging'); });
    window.addEventListener('mouseup', (ev) => {
      c.classList.remove('dragging');
      if (drag && !drag.moved && ev.target === c) { const m = this.toMap(ev); this.selected = this.hit(m.x, m.y); this.dirty = true; this.onSelect(this.selected); }
      drag = null;
    });
    window.addEventListener('mousemove', (ev) => {
      if (drag) {
        const dx = ev.clientX - drag.x, dy = ev.clientY - drag.y;
        if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
        this.view.tx = drag.tx + dx; this.view.ty = drag.ty + dy; this.dirty = true; this.lastPanAt = performance.now();
        return;
      }
      if (ev.target !== c) return;
      const m = this.toMap(ev);
      const h = this.nodes.size + this.pairs.size < 30000 ? this.hit(m.x, m.y) : null;
      if ((h && h.id) !== (this.hover && this.hover.id)) { this.hover = h; this.dirty = true; }
      this.onHover(h, m.sx, m.sy);
    });
    c.addEventListener('mouseleave', () => { if (this.hover) { this.hover = null; this.dirty = true; } this.onHover(null); });
    c.addEventListener('wheel', (ev) => {
      ev.preventDefault();
      const m = this.toMap(ev);
      const k = Math.min(4, Math.max(0.02, this.view.k * Math.exp(-ev.deltaY * 0.0015)));
      this.view.tx = m.sx - m.x * k; this.view.ty = m.sy - m.y * k; this.view.k = k; this.lastZoomAt = performance.now(); this.dirty = true;
    }, { passive: false });
    new ResizeObserver(() => this.invalidate()).observe(c);
  }
}
