// W1 against y-websocket: one writer sets a 64-byte value under one Y.Map key at 20 Hz
// (open loop), N observers; prints the same percentiles roomstate-bench reports, as JSON.
//   node driver.mjs w1 <ws-url> <observers> <seconds>
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'

process.setMaxListeners(0) // one exit listener per provider

const [mode, url, observersArg, secondsArg] = process.argv.slice(2)
if (mode !== 'w1') { console.error('usage: driver.mjs w1 <url> <observers> <seconds>'); process.exit(2) }
const observers = Number(observersArg)
const writes = 20 * Number(secondsArg)
const now = () => performance.now() * 1000 // µs on one clock, in this one process
const room = `w1-${observers}`

const connect = () => new Promise((resolve) => {
  const doc = new Y.Doc()
  const provider = new WebsocketProvider(url, room, doc, { WebSocketPolyfill: WebSocket, disableBc: true })
  provider.once('sync', () => resolve({ doc, provider, map: doc.getMap('store') }))
})

const perDelivery = []
const lastArrival = new Float64Array(writes)
const arrivals = new Uint32Array(writes)
const intendedAt = new Float64Array(writes)
const clients = []
for (let n = 0; n < observers; n++) {
  const client = await connect()
  client.map.observe((event) => {
    if (!event.keysChanged.has('k')) return
    const arrived = now()
    const value = client.map.get('k')
    const index = Number(value.slice(0, 10))
    const intended = Number(value.slice(11, 27)) / 1000
    perDelivery.push(arrived - intended)
    lastArrival[index] = Math.max(lastArrival[index], arrived)
    arrivals[index] += 1
  })
  clients.push(client)
}
const writer = await connect()
const start = now() + 100_000
for (let index = 0; index < writes; index++) {
  const intended = start + index * 50_000
  intendedAt[index] = intended
  // Node's timers run on a cached loop clock and can fire up to ~1 ms early: sleep to
  // 1.5 ms before the due time, then spin, as the Rust writer does.
  const wait = (intended - now()) / 1000 - 1.5
  if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
  while (now() < intended) { /* spin */ }
  const stamp = String(Math.round(intended * 1000)).padStart(16, '0') // ns, as roomstate-bench's payloads
  writer.map.set('k', `${String(index).padStart(10, '0')}.${stamp}.`.padEnd(64, 'x'))
}
const deadline = now() + 5_000_000
while (arrivals.some((count) => count < observers) && now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10))

const percentiles = (samples) => {
  const sorted = Float64Array.from(samples).sort()
  const at = (q) => Math.round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] || 0)
  const cdf = [...Array.from({ length: 100 }, (_, i) => (i + 1) / 100), 0.999].map((q) => [q, at(q)])
  return { count: sorted.length, p50_us: at(0.5), p99_us: at(0.99), p999_us: at(0.999), max_us: Math.round(sorted[sorted.length - 1] || 0), cdf }
}
const untilAll = []
let missing = 0
for (let index = 0; index < writes; index++) {
  missing += observers - Math.min(observers, arrivals[index])
  if (arrivals[index] >= observers) untilAll.push(lastArrival[index] - intendedAt[index])
}
console.log(JSON.stringify({ observers, writes, per_delivery: percentiles(perDelivery), until_all: percentiles(untilAll), missing }))
for (const client of [...clients, writer]) client.provider.destroy()
process.exit(0)
