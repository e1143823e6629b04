#!/usr/bin/env node
// Discover a token exactly like the real TypeScript SDKs do, with wechaty-token@1.1.2:
//   `new WechatyToken({ token, authority }).discover()` → GET https://AUTHORITY/v0/hosties/TOKEN
//
//   NODE_EXTRA_CA_CERTS=cert.pem node discover.mjs --authority 127.0.0.1:TLSPORT --token TOKEN
//
// Prints one line of JSON on stdout: the result object ({host, port, ...}) or `null`
// when discover() resolves undefined (4xx, malformed body, or 3 failed tries on 5xx /
// network errors — wechaty-token swallows those). Exit 0; a thrown error: stderr, exit 1.
import { parseArgs } from 'node:util'

// Keep stdout for the single JSON line (wechaty-token's brolog logs info via console.info).
const out = console.log.bind(console)
console.log = console.info = console.debug = (...args) => console.error(...args)

const fail = (e) => {
  console.error(`discover.mjs: ${e && e.stack ? e.stack : e}`)
  process.exit(1)
}

try {
  const { values: args } = parseArgs({
    options: { authority: { type: 'string' }, token: { type: 'string' } },
  })
  if (!args.authority || !args.token) throw new Error('usage: discover.mjs --authority HOST:PORT --token TOKEN')
  const { WechatyToken } = await import('wechaty-token')
  const result = await new WechatyToken({ token: args.token, authority: args.authority }).discover()
  out(JSON.stringify(result ?? null))
  process.exit(0)
} catch (e) {
  fail(e)
}
