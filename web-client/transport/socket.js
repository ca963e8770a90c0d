// The socket STOMP runs over: the plain WebSocket while it works here, else SockJS (global SockJS, vendor/sockjs.min.js) for the page's life.

/**
 * The SockJS transports this page can use. Not the iframe ones: the SockJS iframe page's CSP
 * lets it make no requests, and ours frames nothing. Not htmlfile and jsonp-polling: they are
 * for browsers older than any that runs this page (ES modules).
 */
const SOCKJS_TRANSPORTS = ['websocket', 'xhr-streaming', 'eventsource', 'xhr-polling'];

/**
 * `?transport=` in the page's URL, for testing: `websocket` (the plain WebSocket and nothing
 * else) or one SockJS transport (that one only); null otherwise (automatic).
 */
const forced = (() => {
  const t = new URLSearchParams(location.search).get('transport');
  return t === 'websocket' || SOCKJS_TRANSPORTS.includes(t) ? t : null;
})();

// Once on SockJS we stay there: a WebSocket that could not open will not open on the next try
// either (a proxy stripping Upgrade, a browser without WebSockets). A reload tries again.
let sockJs = forced !== null && forced !== 'websocket';
// A plain WebSocket opened here once: it works, so later failures are outages, not a reason to
// fall back (and SockJS would not reach a server that is down any better).
let plainOpened = false;
let plainPending = false; // the last socket made is a plain WebSocket that has not opened

/**
 * A new socket to `path` (same origin) offering the STOMP `protocols`. Never throws: stompjs
 * calls this inside its connect loop, which an exception would end for good.
 */
export function openSocket(path, protocols) {
  if (!sockJs) {
    const ws = plainWebSocket(path, protocols);
    if (ws) return ws;
    sockJs = true; // no WebSocket constructor, or it threw: straight to SockJS
  }
  plainPending = false;
  const url = new URL(path, location.href).href; // SockJS wants http(s) URLs
  return new SockJS(url, null, { transports: forced ? [forced] : SOCKJS_TRANSPORTS });
}

function plainWebSocket(path, protocols) {
  const url = new URL(path, location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  if (forced === 'websocket') return new WebSocket(url.href, protocols); // forced: no fallback
  if (typeof window.WebSocket !== 'function') return null;
  let ws;
  try {
    ws = new WebSocket(url.href, protocols);
  } catch {
    return null;
  }
  plainPending = true;
  ws.addEventListener('open', () => {
    plainOpened = true;
    plainPending = false;
  });
  return ws;
}

/**
 * The current connection's socket closed (not one we dropped ourselves: the caller checks).
 * A plain WebSocket that never opened on this page means WebSockets do not get through: the
 * next attempt, after the usual backoff, goes over SockJS.
 */
export function socketClosed() {
  if (plainPending && !plainOpened && forced === null) sockJs = true;
  plainPending = false;
}

/** What `socket` is, for people: "WebSocket" or "SockJS <transport>". */
export function describeSocket(socket) {
  if (typeof SockJS === 'function' && socket instanceof SockJS) return `SockJS ${socket.transport || ''}`.trim();
  return socket ? 'WebSocket' : '';
}
