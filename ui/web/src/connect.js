// Opens the map's websocket as the page starts loading, so that the server
// builds and sends the snapshot while the app's script loads and starts;
// main.js takes the socket over with what arrived before it
// (window.loupeSocket).
(() => {
  const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws');
  const early = { ws, queued: [], openAt: 0, firstAt: 0 };
  ws.onopen = () => { early.openAt = performance.now(); };
  ws.onmessage = (ev) => { early.firstAt = early.firstAt || performance.now(); early.queued.push(ev); };
  window.loupeSocket = early;
})();
