// Canvas service map: namespaces as boxes, workloads as dots, one line per
// (source, destination) pair. The layout is incremental: a workload keeps
// its place once placed; new ones take free slots in their namespace box
// and only they are refined by a short force simulation (d3-force) among
// their already-fixed neighbours. Nothing reflows the whole map.
import { forceSimulation, forceLink, forceManyBody, forceCollide, forceX, forceY } from 'd3-force';

const CELL = 70; // grid cell of a workload, in map units
const PAD = 28; // namespace box padding (room for its title)
const GAP = 40; // between namespace boxes
const R = 7; // workload radius
const REFINE_MAX = 200; // namespaces above this size stay on their grid

const KIND_COLORS = {
  world: '#7b61ff', host: '#6b7385', 'remote-node': '#6b7385', 'kube-apiserver': '#c77d00', unknown: '#9aa3b2',
};
export function kindColor(kind) { return KIND_COLORS[kind] || '#2f6fde'; }

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
    this.hover = null;
    this.dirty = true;
    this.layoutDirty = false;
    this.fitted = false;
    this.frameTimes = [];
    this.firstRenderAt = 0;
    this.groupOrder = 0;
    this.pendingRefine = new Set();
    this.bind();
    const loop = () => {
      if (this.layoutDirty) this.relayout();
      if (this.dirty) this.draw();
      requestAnimationFrame(loop);
    };
    requestAnimationFrame(loop);
  }

  // ---- data -------------------------------------------------------------
  upsertNode(v) {
    let n = this.nodes.get(v.id);
    if (!n) {
      let g = this.groups.get(v.ns);
      if (!g) {
        g = { ns: v.ns, members: [], cols: 2, next: 0, x: 0, y: 0, w: 0, h: 0, order: this.groupOrder++ };
        this.groups.set(v.ns, g);
      }
      n = { id: v.id, ns: v.ns, name: v.name, kind: v.kind, slot: g.next++, x: 0, y: 0, placed: false, data: v, pairs: new Set() };
      g.members.push(n);
      this.nodes.set(v.id, n);
      this.pendingRefine.add(g);
      this.layoutDirty = true;
    }
    n.data = v;
    this.dirty = true;
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
    this.dirty = true;
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
      if (s && d && s.ns === d.ns) { const g = this.groups.get(s.ns); if (g) this.pendingRefine.add(g); }
    }
    p.edges.set(e.id, e);
    this.sumPair(p);
    this.dirty = true;
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
    this.dirty = true;
  }

  sumPair(p) {
    let drops = 0, flows = 0;
    for (const e of p.edges.values()) { drops += e.verdicts.DROPPED || 0; flows += e.flows; }
    p.drops = drops; p.flows = flows;
  }

  clear() {
    this.nodes.clear(); this.groups.clear(); this.pairs.clear(); this.edges.clear();
    this.groupOrder = 0; this.selected = null; this.fitted = false; this.dirty = true;
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
    this.dirty = true;
  }

  slotPos(g, n) {
    return { x: PAD + (n.slot % g.cols) * CELL, y: PAD + Math.floor(n.slot / g.cols) * CELL };
  }

  refine(g) {
    const fresh = g.members.filter((n) => !n.placed);
    for (const n of fresh) { const p = this.slotPos(g, n); n.x = p.x; n.y = p.y; }
    if (!fresh.length || g.members.length > REFINE_MAX) {
      for (const n of fresh) n.placed = true;
      return;
    }
    const members = new Set(g.members);
    const links = [];
    for (const p of this.pairs.values()) {
      const s = this.nodes.get(p.src), d = this.nodes.get(p.dst);
      if (s && d && s !== d && members.has(s) && members.has(d)) links.push({ source: s.id, target: d.id });
    }
    const simNodes = g.members.map((n) => {
      const o = { id: n.id, x: n.x, y: n.y, ref: n };
      if (n.placed) { o.fx = n.x; o.fy = n.y; }
      const s = this.slotPos(g, n); o.sx = s.x; o.sy = s.y;
      return o;
    });
    const sim = forceSimulation(simNodes)
      .force('link', forceLink(links).id((d) => d.id).distance(CELL * 1.2).strength(0.3))
      .force('charge', forceManyBody().strength(-60).distanceMax(CELL * 4))
      .force('collide', forceCollide(CELL * 0.45))
      .force('x', forceX((d) => d.sx).strength(0.05))
      .force('y', forceY((d) => d.sy).strength(0.05))
      .stop();
    sim.tick(80);
    const maxX = PAD + (g.cols - 1) * CELL, maxY = maxX;
    for (const o of simNodes) {
      if (o.ref.placed) continue;
      o.ref.x = Math.min(maxX, Math.max(PAD, o.x));
      o.ref.y = Math.min(maxY, Math.max(PAD, o.y));
      o.ref.placed = true;
    }
  }

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

  draw() {
    const t0 = performance.now();
    this.dirty = false;
    const dpr = this.resize();
    const ctx = this.ctx;
    const { k, tx, ty } = this.view;
    const W = this.canvas.clientWidth, H = this.canvas.clientHeight;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = '#fbfcfd';
    ctx.fillRect(0, 0, W, H);
    ctx.setTransform(dpr * k, 0, 0, dpr * k, dpr * tx, dpr * ty);
    // The visible rectangle, in map units, with a margin.
    const m = 20 / k;
    const vx0 = -tx / k - m, vy0 = -ty / k - m, vx1 = (W - tx) / k + m, vy1 = (H - ty) / k + m;
    const inView = (x0, y0, x1, y1) => x1 >= vx0 && x0 <= vx1 && y1 >= vy0 && y0 <= vy1;

    const visNode = new Map();
    for (const n of this.nodes.values()) visNode.set(n.id, this.visibleNode(n));
    const visPair = (p) => {
      if (!this.nodes.has(p.src) || !this.nodes.has(p.dst)) return false;
      for (const e of p.edges.values()) if (this.visibleEdge(e)) return true;
      return false;
    };

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
      if (12 * k > 4 || g.w * k > 80) {
        ctx.fillStyle = '#4b5567';
        ctx.fillText(g.ns || 'outside the cluster', g.x + 6, g.y + Math.max(14, 13 / k));
      }
    }
    ctx.globalAlpha = 1;

    // edges, batched by style: one path per style
    const ok = new Path2D(), bad = new Path2D(), hi = new Path2D();
    const arrowsOk = [], arrowsBad = [];
    const sel = this.selected, hov = this.hover;
    const shown = [];
    for (const p of this.pairs.values()) {
      if (!visPair(p)) continue;
      const s = this.nodes.get(p.src), d = this.nodes.get(p.dst);
      const a = this.pos(s), b = this.pos(d);
      if (!inView(Math.min(a.x, b.x), Math.min(a.y, b.y), Math.max(a.x, b.x), Math.max(a.y, b.y))) continue;
      shown.push(p);
      // Offset both directions of a pair apart.
      let dx = b.x - a.x, dy = b.y - a.y; const len = Math.hypot(dx, dy) || 1;
      dx /= len; dy /= len;
      const ox = -dy * 3, oy = dx * 3;
      const x0 = a.x + dx * R + ox, y0 = a.y + dy * R + oy, x1 = b.x - dx * (R + 2) + ox, y1 = b.y - dy * (R + 2) + oy;
      const path = p.drops > 0 ? bad : ok;
      if (s === d) { path.moveTo(a.x + R, a.y); path.arc(a.x + R + 6, a.y - 6, 8, Math.PI, Math.PI * 2.6); continue; }
      path.moveTo(x0, y0); path.lineTo(x1, y1);
      if ((sel && sel.type === 'pair' && sel.id === p.key) || (hov && hov.type === 'pair' && hov.id === p.key)) { hi.moveTo(x0, y0); hi.lineTo(x1, y1); }
      if (k > 0.35) (p.drops > 0 ? arrowsBad : arrowsOk).push([x1, y1, dx, dy]);
    }
    this.shownPairs = shown.length;
    ctx.lineWidth = Math.max(1.2, 1.2 / k);
    ctx.strokeStyle = '#8ea2c4';
    ctx.setLineDash([]);
    ctx.stroke(ok);
    ctx.strokeStyle = '#d93025';
    ctx.lineWidth = Math.max(2, 2 / k);
    ctx.setLineDash([7, 5]);
    ctx.stroke(bad);
    ctx.setLineDash([]);
    ctx.strokeStyle = 'rgba(255, 170, 0, 0.9)';
    ctx.lineWidth = Math.max(4, 4 / k);
    ctx.stroke(hi);
    const arrows = (list, color) => {
      if (!list.length) return;
      const ap = new Path2D();
      for (const [x, y, dx, dy] of list) {
        ap.moveTo(x, y);
        ap.lineTo(x - dx * 8 - dy * 4, y - dy * 8 + dx * 4);
        ap.lineTo(x - dx * 8 + dy * 4, y - dy * 8 - dx * 4);
        ap.closePath();
      }
      ctx.fillStyle = color; ctx.fill(ap);
    };
    arrows(arrowsOk, '#8ea2c4');
    arrows(arrowsBad, '#d93025');

    // nodes, batched by colour
    const byColor = new Map();
    const dropRing = new Path2D(), selRing = new Path2D();
    const labels = [];
    for (const n of this.nodes.values()) {
      if (!visNode.get(n.id)) continue;
      const { x, y } = this.pos(n);
      if (!inView(x - R, y - R, x + R, y + R)) continue;
      const c = kindColor(n.kind);
      let path = byColor.get(c);
      if (!path) { path = new Path2D(); byColor.set(c, path); }
      path.moveTo(x + R, y); path.arc(x, y, R, 0, Math.PI * 2);
      if (n.data.drops > 0) { dropRing.moveTo(x + R + 3, y); dropRing.arc(x, y, R + 3, 0, Math.PI * 2); }
      if ((sel && sel.type === 'node' && sel.id === n.id) || (hov && hov.type === 'node' && hov.id === n.id)) { selRing.moveTo(x + R + 6, y); selRing.arc(x, y, R + 6, 0, Math.PI * 2); }
      if (k > 0.45) labels.push([n.name, x, y]);
    }
    for (const [c, path] of byColor) { ctx.fillStyle = c; ctx.fill(path); }
    ctx.strokeStyle = '#d93025'; ctx.lineWidth = 2 / Math.max(k, 1); ctx.stroke(dropRing);
    ctx.strokeStyle = '#ffaa00'; ctx.lineWidth = 3; ctx.stroke(selRing);
    if (labels.length) {
      ctx.font = '11px system-ui, sans-serif';
      ctx.fillStyle = '#1d2330';
      ctx.textAlign = 'center';
      for (const [name, x, y] of labels) ctx.fillText(name.length > 24 ? name.slice(0, 23) + '…' : name, x, y + R + 12);
      ctx.textAlign = 'start';
    }
    const dt = performance.now() - t0;
    this.frameTimes.push(dt);
    if (this.frameTimes.length > 600) this.frameTimes.splice(0, 300);
    if (!this.firstRenderAt && this.nodes.size) this.firstRenderAt = performance.now();
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
        this.view.tx = drag.tx + dx; this.view.ty = drag.ty + dy; this.dirty = true;
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
      this.view.tx = m.sx - m.x * k; this.view.ty = m.sy - m.y * k; this.view.k = k; this.dirty = true;
    }, { passive: false });
    new ResizeObserver(() => { this.dirty = true; }).observe(c);
  }
}
