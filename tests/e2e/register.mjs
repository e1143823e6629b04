#!/usr/bin/env node
// Register a token with a hostie registry exactly like the real wechaty gateway does,
// using wechaty@1.20.2's own `Io` client (see docs/protocol.md §2 and §4).
//
//   node register.mjs --apihost 127.0.0.1:PORT --token TOKEN [--service-port N] [--id ID]
//
// Prints `READY` on stdout once `io.start()` has resolved (WebSocket open), then stays
// connected until stdin reaches EOF or SIGTERM/SIGINT arrives; then `io.stop()`, exit 0.
// Any error: message on stderr, exit 1. stdout carries nothing but `READY`.
//
// Env read by wechaty at import time: WECHATY_LOG (log level, default `info`),
// WECHATY_PUPPET_SERVICE_IP (the subprotocol's custom-host field), WECHATY_APIHOST
// (must look like a host[:port] or the import throws; --apihost overrides its use).
import { EventEmitter } from 'node:events'
import { randomUUID } from 'node:crypto'
import { parseArgs } from 'node:util'

// brolog (wechaty's logger) writes info/verbose/silly via console.info/console.log,
// i.e. to stdout. Send every console line to stderr so stdout stays a clean protocol.
console.log = console.info = console.debug = (...args) => console.error(...args)

const fail = (e) => {
  console.error(`register.mjs: ${e && e.stack ? e.stack : e}`)
  process.exit(1)
}

let args
try {
  ({ values: args } = parseArgs({
    options: {
      apihost: { type: 'string' },
      token: { type: 'string' },
      'service-port': { type: 'string' },
      id: { type: 'string' },
    },
  }))
} catch (e) { fail(e.message) }
if (!args.apihost || !args.token) fail('usage: register.mjs --apihost HOST:PORT --token TOKEN [--service-port N] [--id ID]')

let servicePort
if (args['service-port'] !== undefined) {
  servicePort = Number(args['service-port'])
  if (!Number.isInteger(servicePort) || servicePort <= 0 || servicePort > 65535) fail(`bad --service-port ${args['service-port']}`)
}

try {
  // `Io` is not in wechaty's exports map: import it by path, relative to this file.
  const here = (p) => new URL(p, import.meta.url).href
  const { Io } = await import(here('./node_modules/wechaty/dist/esm/src/io.js'))
  const { VERSION } = await import(here('./node_modules/wechaty/dist/esm/src/config.js'))

  // The part of a Wechaty instance that Io touches.
  const wechaty = Object.assign(new EventEmitter(), {
    id: args.id || randomUUID(),
    version: () => VERSION,
    emitError: (e) => {
      console.error(`register.mjs: wechaty error: ${e && e.message}`)
      if (wechaty.listenerCount('error') > 0) wechaty.emit('error', e) // Io forwards it as an `error` frame
    },
    isLoggedIn: false,
    puppet: { currentUserId: undefined, contactPayload: async () => ({}), messagePayload: async () => ({}) },
    reset: async () => {},
    logout: async () => {},
  })

  const options = { wechaty, token: args.token, apihost: args.apihost }
  if (servicePort !== undefined) options.servicePort = servicePort
  const io = new Io(options)
  await io.start()
  process.stdout.write('READY\n')

  let stopping = false
  const shutdown = async (why) => {
    if (stopping) return
    stopping = true
    console.error(`register.mjs: stopping (${why})`)
    // Io.stop() waits for the socket's `close` event; if the socket was already closed
    // (server hung up, client waiting to reconnect) that never comes: bound the wait.
    const timeout = new Promise((resolve) => setTimeout(() => resolve('timeout'), 3000).unref())
    const r = await Promise.race([io.stop().then(() => 'ok'), timeout])
    if (r === 'timeout') console.error('register.mjs: io.stop() timed out, exiting anyway')
    process.exit(0)
  }
  process.on('SIGTERM', () => shutdown('SIGTERM').catch(fail))
  process.on('SIGINT', () => shutdown('SIGINT').catch(fail))
  process.stdin.on('end', () => shutdown('stdin EOF').catch(fail))
  process.stdin.on('error', () => shutdown('stdin error').catch(fail))
  process.stdin.resume()
} catch (e) {
  fail(e)
}
