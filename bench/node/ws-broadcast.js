// The `ws` package README's "broadcast to all connected clients" example, unchanged but for the
// port: every text message received is sent to every open client, the sender included (so a
// publisher sees its own messages, which the bots use as its acknowledgement).
// Usage: node ws-broadcast.js PORT [--deflate]
// --deflate: permessage-deflate as `ws` does it (per connection, with context takeover), with the
// threshold lowered from 1024 to 128 bytes so chat-sized messages are compressed too.
'use strict';
const WebSocket = require('ws');
const { WebSocketServer } = WebSocket;

const port = Number(process.argv[2] || 8081);
const perMessageDeflate = process.argv.includes('--deflate') ? { threshold: 128 } : false;
const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate });

wss.on('connection', function connection(ws) {
  ws.on('error', console.error);

  ws.on('message', function message(data, isBinary) {
    wss.clients.forEach(function each(client) {
      if (client.readyState === WebSocket.OPEN) {
        client.send(data, { binary: isBinary });
      }
    });
  });
});

wss.on('listening', () => console.log(`ws broadcast server on 127.0.0.1:${port}`));
