// Helpers shared by the Node client tests. Every script gets the server it talks to from the
// environment (set by crates/kiln/tests/all/clients.rs):
//   KILN_BASE      http://127.0.0.1:<port> of a `kiln serve`
//   KILN_TOKEN     a bearer token it accepts
//   KILN_APP_KEY   its Pusher app key
// A script prints what it checks, and exits non-zero on the first mismatch.

import { createRequire } from "node:module";
import { inspect } from "node:util";

const require = createRequire(import.meta.url);
// pusher-js's "main" is its Node build (dist/node/pusher.js), which brings its own WebSocket and
// XMLHttpRequest: Node 20 has neither as a global.
const PusherModule = require("pusher-js");
export const Pusher = PusherModule.default ?? PusherModule;

export function env(name) {
  const v = process.env[name];
  if (!v) fail(`environment variable ${name} is not set`);
  return v;
}

export const BASE = env("KILN_BASE").replace(/\/+$/, "");
export const TOKEN = env("KILN_TOKEN");
export const APP_KEY = process.env.KILN_APP_KEY ?? "kiln-key";

const started = Date.now();
export function log(...args) {
  const t = ((Date.now() - started) / 1000).toFixed(2).padStart(6);
  console.log(`[${t}s]`, ...args);
}

export function show(v) {
  return typeof v === "string" ? v : inspect(v, { depth: 8, breakLength: 120 });
}

export function fail(msg) {
  console.error(`FAIL: ${msg}`);
  process.exit(1);
}

export function check(cond, msg, ...details) {
  if (!cond) fail(`${msg}${details.length ? "\n  " + details.map(show).join("\n  ") : ""}`);
}

export function eq(actual, expected, msg) {
  const a = JSON.stringify(actual);
  const e = JSON.stringify(expected);
  if (a !== e) fail(`${msg}: expected ${e}, got ${a}`);
}

// A zod schema's verdict on `value`, failing the script with zod's issues if it is refused.
export function conforms(schema, value, what) {
  const r = schema.safeParse(value);
  if (!r.success) {
    fail(`${what} does not match the contract:\n  value: ${show(value)}\n  issues: ${show(r.error.issues)}`);
  }
  return r.data;
}

// Whatever else happens, the script ends in `ms`.
export function deadline(ms, what = "the test") {
  const t = setTimeout(() => fail(`${what} did not finish within ${ms} ms`), ms);
  t.unref();
}

export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

// One HTTP request with fetch; the raw status, headers and text, plus the JSON if it parses.
export async function http(method, path, { body, token = TOKEN, headers = {} } = {}) {
  const h = { ...headers };
  if (token) h.Authorization = `Bearer ${token}`;
  const init = { method, headers: h };
  if (body !== undefined) {
    h["Content-Type"] ??= "application/json";
    init.body = typeof body === "string" ? body : JSON.stringify(body);
  }
  const res = await fetch(`${BASE}${path}`, init);
  const text = await res.text();
  let json;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, text, json };
}

// Polls GET /v1/jobs/{id} until its state is one of `states`.
export async function waitState(id, states, ms = 30000) {
  const end = Date.now() + ms;
  for (;;) {
    const r = await http("GET", `/v1/jobs/${id}`);
    check(r.status === 200, `GET /v1/jobs/${id} answered ${r.status}`, r.text);
    if (states.includes(r.json.state)) return r.json;
    check(Date.now() < end, `job ${id} never reached ${states.join("|")}`, r.json);
    await sleep(50);
  }
}

// Reads Kiln's SSE stream of a job (replayed from the start) until an event named `name` arrives.
export async function waitSseEvent(id, name, { base = BASE, ms = 15000 } = {}) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), ms);
  try {
    const res = await fetch(`${base}/v1/jobs/${id}/events`, {
      headers: { Authorization: `Bearer ${TOKEN}` },
      signal: ctl.signal,
    });
    check(res.status === 200, `GET /v1/jobs/${id}/events answered ${res.status}`);
    const decoder = new TextDecoder();
    let buf = "";
    for await (const bytes of res.body) {
      buf += decoder.decode(bytes, { stream: true });
      if (buf.split("\n").some((l) => l === `event: ${name}`)) return;
    }
    fail(`the SSE stream of job ${id} ended without a ${name} event:\n${buf}`);
  } catch (e) {
    if (ctl.signal.aborted) fail(`no ${name} event on the SSE stream of job ${id} within ${ms} ms`);
    throw e;
  } finally {
    clearTimeout(timer);
    ctl.abort();
  }
}

// A connected pusher-js client, authorising private channels through Kiln's /v1/channel-auth
// with the ajax transport (a form-urlencoded POST, as in a browser).
export async function connectPusher({ key = APP_KEY, token = TOKEN } = {}) {
  const { hostname, port } = new URL(BASE);
  const pusher = new Pusher(key, {
    cluster: "",
    wsHost: hostname,
    wsPort: Number(port),
    wssPort: Number(port),
    forceTLS: false,
    enabledTransports: ["ws"],
    disableStats: true,
    channelAuthorization: {
      endpoint: `${BASE}/v1/channel-auth`,
      transport: "ajax",
      headers: { Authorization: `Bearer ${token}` },
    },
  });
  await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`pusher-js did not connect (state ${pusher.connection.state})`)), 10000);
    pusher.connection.bind("connected", () => {
      clearTimeout(t);
      resolve();
    });
    pusher.connection.bind("failed", () => reject(new Error("pusher-js connection failed")));
    pusher.connection.bind("unavailable", () => reject(new Error("pusher-js connection unavailable")));
    pusher.connection.bind("error", (e) => log("pusher-js connection error:", show(e)));
  });
  log(`pusher-js connected to ws://${hostname}:${port}/app/${key} as socket ${pusher.connection.socket_id}`);
  return pusher;
}

// Subscribes and records every event (not the pusher:* ones) in arrival order. Resolves once the
// subscription succeeded; rejects on a subscription error.
export async function subscribe(pusher, channelName) {
  const channel = pusher.subscribe(channelName);
  const events = [];
  channel.bind_global((name, data) => {
    if (name.startsWith("pusher:") || name.startsWith("pusher_internal:")) return;
    events.push({ name, data });
  });
  await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no subscription_succeeded for ${channelName}`)), 10000);
    channel.bind("pusher:subscription_succeeded", () => {
      clearTimeout(t);
      resolve();
    });
    channel.bind("pusher:subscription_error", (e) => {
      clearTimeout(t);
      reject(new Error(`subscription_error on ${channelName}: ${show(e)}`));
    });
  });
  log(`subscribed to ${channelName}`);
  return { channel, events };
}

// Waits until `events` holds an event named `name` (then a grace period, so that any event sent
// after it, which must not exist, has time to arrive).
export async function waitFor(events, name, { ms = 30000, grace = 300 } = {}) {
  const end = Date.now() + ms;
  while (!events.some((e) => e.name === name)) {
    check(Date.now() < end, `no ${name} event within ${ms} ms; got:`, events);
    await sleep(20);
  }
  await sleep(grace);
}

// Runs `main`, failing the script on any exception, and exits 0 when it returns.
export function run(main, ms = 80000) {
  deadline(ms);
  main().then(
    () => {
      log("PASS");
      process.exit(0);
    },
    (e) => fail(e?.stack ?? String(e)),
  );
}
