// A Socket.IO 4 room broadcast: a client emits `join` with a room name (answered by `joined`),
// then every `msg` it emits goes to everyone in its room, the sender included
// (`io.to(room).emit`). WebSocket transport only, as the bots speak no long-polling.
// Usage: node socketio-rooms.js PORT
'use strict';
const http = require('http');
const { Server } = require('socket.io');

const port = Number(process.argv[2] || 8082);
const io = new Server({ transports: ['websocket'], serveClient: false });

io.on('connection', (socket) => {
  socket.on('join', (room) => {
    socket.join(room);
    socket.data.room = room;
    socket.emit('joined', room);
  });
  socket.on('msg', (body) => {
    const room = socket.data.room;
    if (room !== undefined) io.to(room).emit('msg', body);
  });
});

const server = http.createServer();
io.attach(server);
server.listen(port, '127.0.0.1', () => console.log(`socket.io room server on 127.0.0.1:${port}`));
