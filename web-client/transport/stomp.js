// The STOMP transport: a @stomp/stompjs Client (global StompJs) with Parley's heart-beats, backoff and jitter.

import { openSocket, socketClosed } from './socket.js';

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * A client for /stomp that, once activated, reconnects by itself until deactivated. Make it the
 * current one before `activate()`: the first attempt starts inside that call. Every callback runs
 * only while `isCurrent(client)` holds, so a replaced client can no longer touch the page:
 *   credentials(client)  async, before each attempt: the CONNECT headers, or null to keep the last
 *   onConnect(frame), onClose(closeEvent), onError(message of an ERROR frame)
 */
export function createStomp({ isCurrent, credentials, onConnect, onClose, onError }) {
  let attempts = 0;
  const client = new StompJs.Client({
    // A plain WebSocket, or SockJS at the same path once WebSockets prove not to get through
    // (socket.js); the same STOMP session over either.
    webSocketFactory: () => openSocket('/stomp', client.stompVersions.protocolVersions()),
    connectHeaders: {},
    heartbeatIncoming: 10000,
    heartbeatOutgoing: 10000,
    // Backoff: 500 ms doubling to 10 s, back to 500 ms once connected. (stompjs copies
    // reconnectDelay into its next delay only on activate/connect, so changing reconnectDelay
    // between attempts has no effect; its EXPONENTIAL mode does exactly this.)
    reconnectDelay: 500,
    maxReconnectDelay: 10000,
    reconnectTimeMode: StompJs.ReconnectionTimeMode.EXPONENTIAL,
    connectionTimeout: 10000,
    // Heart-beats from a worker: timers of background tabs are throttled, which would make the
    // server drop us as silent.
    heartbeatStrategy: StompJs.TickerStrategy.Worker,
    // A little jitter so a restarted server is not hit by every client in the same instant.
    beforeConnect: async () => {
      if (attempts++ > 0) await sleep(Math.random() * 250);
      if (!isCurrent(client)) return;
      const headers = await credentials(client);
      if (headers && isCurrent(client)) client.connectHeaders = headers;
    },
    onConnect: (frame) => {
      if (isCurrent(client)) onConnect(frame);
    },
    onWebSocketClose: (evt) => {
      if (!isCurrent(client)) return; // a replaced client's close says nothing about the network
      socketClosed();
      onClose(evt);
    },
    onStompError: (frame) => {
      if (isCurrent(client)) onError(frame.headers.message || 'error');
    },
  });
  return client;
}

/** SENDs `frame`, whose headers ask for a RECEIPT; `onReceipt` runs when that comes. */
export function publishWithReceipt(client, frame, onReceipt) {
  client.watchForReceipt(frame.headers.receipt, onReceipt);
  client.publish(frame);
}
