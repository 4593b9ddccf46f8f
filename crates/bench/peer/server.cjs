// y-websocket's own server (bin/server.js: ws + setupWSConnection), on a free port, saying
// where it listens the way roomstate does.
const http = require('http')
const WebSocket = require('ws')
const { setupWSConnection } = require('y-websocket/bin/utils')

const server = http.createServer((_, response) => { response.writeHead(200); response.end('ok') })
const wss = new WebSocket.Server({ server })
wss.on('connection', setupWSConnection)
server.listen(0, '127.0.0.1', () => {
  console.log(`y-websocket listening on ws://127.0.0.1:${server.address().port}`)
})
