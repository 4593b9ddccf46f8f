// roomstate-bench's workloads against y-websocket, with Yjs clients (a Y.Map is the
// key-value store); prints the same numbers roomstate-bench reports, as JSON.
//   node driver.mjs w1 <ws-url> <observers> <seconds>
//     one writer sets a 64-byte value under one key at 20 Hz (open loop), N observers
//   node driver.mjs w2 <ws-url> <distinct|one> <rate> <seconds>
//     10 writers (on distinct keys, or all on one) at <rate> updates/s in all, open loop,
//     10 observers of the whole map
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'

process.setMaxListeners(0) // one exit listener per provider

const [mode, url] = process.argv.slice(2)
const now = () => performance.now() * 1000 // µs on one clock, in this one process

const connect = (room) => new Promise((resolve) => {
  const doc = new Y.Doc()
  const provider = new WebsocketProvider(url, room, doc, { WebSocketPolyfill: WebSocket, disableBc: true })
  provider.once('sync', () => resolve({ doc, provider, map: doc.getMap('store') }))
})

const percentiles = (samples) => {
  const sorted = Float64Array.from(samples).sort()
  const at = (q) => Math.round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] || 0)
  const cdf = [...Array.from({ length: 100 }, (_, i) => (i + 1) / 100), 0.999].map((q) => [q, at(q)])
  return { count: sorted.length, p50_us: at(0.5), p99_us: at(0.99), p999_us: at(0.999), max_us: Math.round(sorted[sorted.length - 1] || 0), cdf }
}

async function w1 (observers, seconds) {
  const writes = 20 * seconds
  const room = `w1-${observers}`
  const perDelivery = []
  const lastArrival = new Float64Array(writes)
  const arrivals = new Uint32Array(writes)
  const intendedAt = new Float64Array(writes)
  const clients = []
  for (let n = 0; n < observers; n++) {
    const client = await connect(room)
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
  const writer = await connect(room)
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

  const untilAll = []
  let missing = 0
  for (let index = 0; index < writes; index++) {
    missing += observers - Math.min(observers, arrivals[index])
    if (arrivals[index] >= observers) untilAll.push(lastArrival[index] - intendedAt[index])
  }
  console.log(JSON.stringify({ observers, writes, per_delivery: percentiles(perDelivery), until_all: percentiles(untilAll), missing }))
  for (const client of [...clients, writer]) client.provider.destroy()
}

async function w2 (keys, rate, seconds) {
  const room = `w2-${keys}-${rate}`
  const observers = []
  const latencies = []
  let delivered = 0
  for (let n = 0; n < 10; n++) {
    const client = await connect(room)
    client.map.observe((event) => {
      const arrived = now()
      for (const key of event.keysChanged) {
        const value = client.map.get(key)
        if (typeof value !== 'string') continue
        latencies.push(arrived - Number(value.slice(11, 27)) / 1000)
        delivered += 1
      }
    })
    observers.push(client)
  }
  const writers = []
  for (let n = 0; n < 10; n++) writers.push(await connect(room))
  const total = Math.round(rate * seconds)
  const start = now() + 100_000
  // Open loop in ~1 ms batches: each write is sent once due, carrying the time it was
  // due; between batches the event loop runs (the observers' messages arrive).
  await new Promise((resolve) => setTimeout(resolve, 100))
  for (let sent = 0; sent < total;) {
    const due = Math.min(total, Math.floor((now() - start) * rate / 1e6))
    while (sent < due) {
      const intended = start + sent * 1e6 / rate
      const writer = sent % 10
      const stamp = String(Math.round(intended * 1000)).padStart(16, '0')
      writers[writer].map.set(keys === 'one' ? 'k' : `k${writer}`, `${String(sent).padStart(10, '0')}.${stamp}.`.padEnd(64, 'x'))
      sent += 1
    }
    await new Promise((resolve) => setTimeout(resolve, 1))
  }
  const deadline = now() + 3_000_000
  while (delivered < total * observers.length && now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5))
  // Every observer must end on the same map (the CRDT converges; give it a moment).
  await new Promise((resolve) => setTimeout(resolve, 500))
  const reference = JSON.stringify(observers[0].map.toJSON())
  const mismatches = observers.filter((client) => JSON.stringify(client.map.toJSON()) !== reference).length
  console.log(JSON.stringify({ sent: total, delivered, per_delivery: percentiles(latencies), final_state_mismatches: mismatches }))
  for (const client of [...observers, ...writers]) client.provider.destroy()
}


if (mode === 'w1') await w1(Number(process.argv[4]), Number(process.argv[5]))
else if (mode === 'w2') await w2(process.argv[4], Number(process.argv[5]), Number(process.argv[6]))
else { console.error('usage: driver.mjs w1 <url> <observers> <seconds> | w2 <url> <distinct|one> <rate> <seconds>'); process.exit(2) }
process.exit(0)
