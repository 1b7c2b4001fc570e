// Refines the place of a namespace's new workloads with a short force
// simulation, off the main thread. Workloads already placed stay fixed.
import { forceSimulation, forceLink, forceManyBody, forceCollide, forceX, forceY } from 'd3-force';

self.onmessage = (ev) => {
  const { job, nodes, links, cell, min, max } = ev.data;
  const sim = forceSimulation(nodes.map((n) => (n.fixed ? { ...n, fx: n.x, fy: n.y } : { ...n })))
    .force('link', forceLink(links).id((d) => d.id).distance(cell * 1.2).strength(0.3))
    .force('charge', forceManyBody().strength(-60).distanceMax(cell * 4))
    .force('collide', forceCollide(cell * 0.45))
    .force('x', forceX((d) => d.sx).strength(0.05))
    .force('y', forceY((d) => d.sy).strength(0.05))
    .stop();
  sim.tick(80);
  const out = [];
  for (const n of sim.nodes()) {
    if (n.fixed) continue;
    out.push({ id: n.id, x: Math.min(max, Math.max(min, n.x)), y: Math.min(max, Math.max(min, n.y)) });
  }
  self.postMessage({ job, nodes: out });
};
