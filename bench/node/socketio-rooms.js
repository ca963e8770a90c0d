// A Socket.IO 4 room broadcast speaking Parley's event vocabulary (docs/socketio.md), the
// reference the bots' `socketio` and `socketio-polling` protocols are compared against:
// `join` {room} is acknowledged {type:'joined', room, members:[], last_id:'0'}; `send`
// {room, body} goes to everyone in the room, the sender included, as
// `message` {type:'message', room, id, from, ts, body}, and is acknowledged {type:'ack', id}.
// Ids count per room (as strings). It stores nothing (no history, no catch-up, no members
// list, no recovery offsets): a lower bound on what a Socket.IO server does with a message.
// Both transports: HTTP long-polling and WebSocket (and the upgrade).
// Usage: node socketio-rooms.js PORT
'use strict';
const http = require('http');
const { Server } = require('socket.io');

const port = Number(process.argv[2] || 8082);
const io = new Server({ transports: ['polling', 'websocket'], serveClient: false });
const lastIds = new Map();
let guests = 0;

io.on('connection', (socket) => {
  const from = `guest-${++guests}`;
  socket.on('join', (arg, ack) => {
    const room = String(arg && arg.room);
    socket.join(room);
    if (typeof ack === 'function') ack({ type: 'joined', room, members: [], last_id: '0' });
  });
  socket.on('send', (arg, ack) => {
    const room = String(arg && arg.room);
    const n = (lastIds.get(room) || 0) + 1;
    lastIds.set(room, n);
    const id = String(n);
    io.to(room).emit('message', { type: 'message', room, id, from, ts: Date.now(), body: arg && arg.body });
    if (typeof ack === 'function') ack({ type: 'ack', id });
  });
});

const server = http.createServer();
io.attach(server);
server.listen(port, '127.0.0.1', () => console.log(`socket.io room server on 127.0.0.1:${port}`));
