// Kiln codelet harness: serves `kiln-call/1` frames of type "codelet" on fd 3 (see docs/functions.md,
// "Codelets"). It runs inside Kiln's sandbox, which stays the real security boundary; this file adds
// the codelet policy on top (default deny: ES builtins plus a few vetted globals, no host object).
// kiln-node-flags: --experimental-vm-modules --no-warnings --disallow-code-generation-from-strings --frozen-intrinsics
//
// Node flags: `--experimental-vm-modules` gives vm.SourceTextModule; `--no-warnings` keeps stderr clean
// (the experimental warnings); `--disallow-code-generation-from-strings` and `--frozen-intrinsics` harden
// the harness's own realm in case a host object ever reached the codelet. Kiln adds
// `--max-old-space-size`.

import vm from 'node:vm';
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { types } from 'node:util';

const FD = 3;
const MAX_LOGS = 100; // log frames sent per call; the rest are counted in logsDropped
const MAX_LOG_BYTES = 8192; // UTF-8 bytes of one log message, truncation marker included
const MAX_CALL_FRAME = 256 * 1024 * 1024;
const DEFAULT_MAX_RESULT_BYTES = 16 * 1024 * 1024; // the result frame (Kiln's default frame limit)
const MAX_TIMERS = 10000; // pending timers of one call
const DEFAULT_TIMEOUT_MS = 2000;
const CODELET_ID = 'codelet.mjs'; // how the codelet's file is named in messages and stacks
const RUNTIME_ID = 'kiln:codelet-runtime'; // the in-context runtime's frames (stripped from stacks)
const TRUNCATED = ' … [truncated]';
const MAX_ERROR_BYTES = 64 * 1024; // UTF-8 bytes of an error's message, and of its stack

const HARNESS_FILE = fileURLToPath(import.meta.url);
const HARNESS_DIR = path.dirname(HARNESS_FILE);

// Globals of Node's realm that a codelet may not have (fresh vm contexts only hold the ES builtins).
const NODE_GLOBALS = Object.getOwnPropertyNames(globalThis);

const hostStringify = JSON.stringify;
const hostParse = JSON.parse;
const now = () => performance.now();

process.on('unhandledRejection', () => {}); // a codelet's floating rejection must not end the harness
process.on('uncaughtException', (err) => {
  // Last resort: whatever slipped through fails the current call instead of killing the process.
  if (current !== null) finish(current, { code: 'RUNTIME_ERROR', message: 'internal harness error: ' + describeHostError(err) });
});

// ---------------------------------------------------------------------------------------------
// Frames on fd 3: blocking reads and writes, so logs are on the socket the moment they happen.

const sleepCell = new Int32Array(new SharedArrayBuffer(4));
const pause = () => Atomics.wait(sleepCell, 0, 0, 2);

function readExactly(n) {
  const buf = Buffer.allocUnsafe(n);
  let off = 0;
  while (off < n) {
    let got;
    try {
      got = fs.readSync(FD, buf, off, n - off, null);
    } catch (e) {
      if (e.code === 'EAGAIN' || e.code === 'EWOULDBLOCK' || e.code === 'EINTR') { pause(); continue; }
      if (e.code === 'ECONNRESET' || e.code === 'EPIPE') got = 0;
      else throw e;
    }
    if (got === 0) {
      if (off === 0) return null;
      protocolError('end of file inside a frame');
    }
    off += got;
  }
  return buf;
}

function readFrame() {
  const head = readExactly(4);
  if (head === null) return null;
  const len = head.readUInt32BE(0);
  if (len > MAX_CALL_FRAME) protocolError('call frame too large');
  const body = len === 0 ? Buffer.alloc(0) : readExactly(len);
  if (body === null) protocolError('end of file inside a frame');
  try {
    return hostParse(body.toString('utf8'));
  } catch {
    protocolError('a call frame is not JSON');
  }
}

function writeFrame(text) {
  const body = Buffer.from(text, 'utf8');
  const buf = Buffer.allocUnsafe(4 + body.length);
  buf.writeUInt32BE(body.length, 0);
  body.copy(buf, 4);
  let off = 0;
  while (off < buf.length) {
    try {
      off += fs.writeSync(FD, buf, off, buf.length - off);
    } catch (e) {
      if (e.code === 'EAGAIN' || e.code === 'EWOULDBLOCK' || e.code === 'EINTR') { pause(); continue; }
      if (e.code === 'EPIPE' || e.code === 'ECONNRESET') process.exit(0); // Kiln has gone
      throw e;
    }
  }
}

function protocolError(what) {
  process.stderr.write(`kiln codelet harness: ${what}\n`);
  process.exit(2);
}

// ---------------------------------------------------------------------------------------------
// Text that leaves the harness: no harness paths, no node-internal or runtime frames.

function escapeRegExp(s) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function sanitize(text, codeFile) {
  if (typeof text !== 'string' || text === '') return '';
  let out = text;
  const exact = [[HARNESS_FILE, 'harness.mjs'], [HARNESS_DIR + path.sep, ''], ['/tmp/.kiln/', '']];
  if (typeof codeFile === 'string' && codeFile !== '') exact.unshift([codeFile, CODELET_ID]);
  for (const [from, to] of exact) {
    out = out.replace(new RegExp('(?:file://)?' + escapeRegExp(from), 'g'), to);
  }
  if (!out.includes('\n    at ') && !/^\s+at /.test(out)) return out;
  const lines = out.split('\n');
  const kept = [];
  for (const line of lines) {
    if (/^\s+at /.test(line) && /node:|kiln:|harness\.mjs|evalmachine\.<anonymous>/.test(line)) continue;
    kept.push(line);
  }
  return kept.join('\n');
}

function describeHostError(err) {
  try {
    if (err instanceof Error) return sanitize(`${err.name}: ${err.message}`);
    if (typeof err === 'object' && err !== null && !types.isProxy(err)) {
      const d = Object.getOwnPropertyDescriptor(err, 'message');
      if (d !== undefined && typeof d.value === 'string') return sanitize(d.value);
    }
  } catch { /* fall through */ }
  return 'unknown error';
}

// Cuts a message to MAX_LOG_BYTES of UTF-8 (marker included) without splitting a code point.
function truncateUtf8(s, limit) {
  if (s.length * 3 <= limit) return s;
  if (Buffer.byteLength(s, 'utf8') <= limit) return s;
  const budget = limit - Buffer.byteLength(TRUNCATED, 'utf8');
  let bytes = 0;
  let i = 0;
  while (i < s.length) {
    const c = s.charCodeAt(i);
    let w = 1;
    let step = 1;
    if (c >= 0x80) {
      if (c < 0x800) w = 2;
      else if (c >= 0xd800 && c < 0xdc00 && i + 1 < s.length && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) { w = 4; step = 2; }
      else w = 3;
    }
    if (bytes + w > budget) break;
    bytes += w;
    i += step;
  }
  return s.slice(0, i) + TRUNCATED;
}

// ---------------------------------------------------------------------------------------------
// The runtime that lives INSIDE the codelet's context. It is turned into source text and evaluated
// there, so it must not refer to anything of this module. It captures the context's intrinsics
// before any codelet code runs, builds everything the codelet can touch out of context objects, and
// talks to the harness only through host callbacks held in its closure, passing primitives only.

function codeletRuntime() {
  'use strict';

  // ---- intrinsics, captured before the codelet can replace them ----
  const G = globalThis;
  const ObjectCtor = Object;
  const ObjectPrototype = Object.prototype;
  const ObjectCreate = Object.create;
  const ObjectFreeze = Object.freeze;
  const ObjectIsFrozen = Object.isFrozen;
  const ObjectDefineProperty = Object.defineProperty;
  const ObjectGetPrototypeOf = Object.getPrototypeOf;
  const ObjectKeys = Object.keys;
  const ObjectGetOwnPropertyDescriptor = Object.getOwnPropertyDescriptor;
  const ObjectPrototypeToString = Object.prototype.toString;
  const ObjectPrototypePropertyIsEnumerable = Object.prototype.propertyIsEnumerable;
  const ObjectHasOwn = Object.hasOwn;
  const ObjectIs = Object.is;
  const ReflectApply = Reflect.apply;
  const ReflectHas = Reflect.has;
  const ReflectOwnKeys = Reflect.ownKeys;
  const JSONParse = JSON.parse;
  const JSONStringify = JSON.stringify;
  const ArrayCtor = Array;
  const ArrayIsArray = Array.isArray;
  const StringCtor = String;
  const NumberCtor = Number;
  const BooleanCtor = Boolean;
  const StringFromCharCode = String.fromCharCode;
  const StringPrototypeCharCodeAt = String.prototype.charCodeAt;
  const StringPrototypeSlice = String.prototype.slice;
  const StringPrototypeIndexOf = String.prototype.indexOf;
  const StringPrototypeStartsWith = String.prototype.startsWith;
  const StringPrototypeToLowerCase = String.prototype.toLowerCase;
  const StringPrototypeTrim = String.prototype.trim;
  const StringPrototypeValueOf = String.prototype.valueOf;
  const StringPrototypeIsWellFormed = String.prototype.isWellFormed;
  const NumberPrototypeValueOf = Number.prototype.valueOf;
  const BooleanPrototypeValueOf = Boolean.prototype.valueOf;
  const BigIntPrototypeValueOf = BigInt.prototype.valueOf;
  const SymbolPrototypeValueOf = Symbol.prototype.valueOf;
  const SymbolPrototypeToString = Symbol.prototype.toString;
  const NumberParseInt = Number.parseInt;
  const NumberParseFloat = Number.parseFloat;
  const MathTrunc = Math.trunc;
  const MathMin = Math.min;
  const SymbolIterator = Symbol.iterator;
  const SymbolToPrimitive = Symbol.toPrimitive;
  const SymbolToStringTag = Symbol.toStringTag;
  const ErrorCtor = Error;
  const TypeErrorCtor = TypeError;
  const RangeErrorCtor = RangeError;
  const EvalErrorCtor = EvalError;
  const ErrorCaptureStackTrace = Error.captureStackTrace;
  const FunctionPrototype = Function.prototype;
  const FunctionPrototypeToString = Function.prototype.toString;
  const AsyncFunctionPrototype = ObjectGetPrototypeOf(async function () {});
  const GeneratorFunctionPrototype = ObjectGetPrototypeOf(function* () {});
  const AsyncGeneratorFunctionPrototype = ObjectGetPrototypeOf(async function* () {});
  const MapCtor = Map;
  const MapPrototypeGet = Map.prototype.get;
  const MapPrototypeSet = Map.prototype.set;
  const MapPrototypeHas = Map.prototype.has;
  const MapPrototypeForEach = Map.prototype.forEach;
  const MapPrototypeDelete = Map.prototype.delete;
  const MapSizeGetter = ObjectGetOwnPropertyDescriptor(Map.prototype, 'size').get;
  const SetCtor = Set;
  const SetPrototypeAdd = Set.prototype.add;
  const SetPrototypeForEach = Set.prototype.forEach;
  const SetSizeGetter = ObjectGetOwnPropertyDescriptor(Set.prototype, 'size').get;
  const WeakMapCtor = WeakMap;
  const WeakMapPrototypeGet = WeakMap.prototype.get;
  const WeakMapPrototypeSet = WeakMap.prototype.set;
  const WeakMapPrototypeHas = WeakMap.prototype.has;
  const WeakSetPrototypeHas = WeakSet.prototype.has;
  const DateCtor = Date;
  const DateNow = Date.now;
  const DatePrototypeGetTime = Date.prototype.getTime;
  const DatePrototypeToISOString = Date.prototype.toISOString;
  const RegExpCtor = RegExp;
  const RegExpPrototype = RegExp.prototype;
  const RegExpPrototypeToString = RegExp.prototype.toString;
  const RegExpSourceGetter = ObjectGetOwnPropertyDescriptor(RegExp.prototype, 'source').get;
  const RegExpFlagsGetter = ObjectGetOwnPropertyDescriptor(RegExp.prototype, 'flags').get;
  const TypedArrayPrototype = ObjectGetPrototypeOf(Uint8Array.prototype);
  const TypedArrayTagGetter = ObjectGetOwnPropertyDescriptor(TypedArrayPrototype, SymbolToStringTag).get;
  const TypedArrayLengthGetter = ObjectGetOwnPropertyDescriptor(TypedArrayPrototype, 'length').get;
  const TypedArrayBufferGetter = ObjectGetOwnPropertyDescriptor(TypedArrayPrototype, 'buffer').get;
  const TypedArrayByteOffsetGetter = ObjectGetOwnPropertyDescriptor(TypedArrayPrototype, 'byteOffset').get;
  const TypedArrayByteLengthGetter = ObjectGetOwnPropertyDescriptor(TypedArrayPrototype, 'byteLength').get;
  const ArrayBufferByteLengthGetter = ObjectGetOwnPropertyDescriptor(ArrayBuffer.prototype, 'byteLength').get;
  const ArrayBufferPrototypeSlice = ArrayBuffer.prototype.slice;
  const SharedArrayBufferByteLengthGetter = ObjectGetOwnPropertyDescriptor(SharedArrayBuffer.prototype, 'byteLength').get;
  const DataViewCtor = DataView;
  const DataViewBufferGetter = ObjectGetOwnPropertyDescriptor(DataView.prototype, 'buffer').get;
  const DataViewByteOffsetGetter = ObjectGetOwnPropertyDescriptor(DataView.prototype, 'byteOffset').get;
  const DataViewByteLengthGetter = ObjectGetOwnPropertyDescriptor(DataView.prototype, 'byteLength').get;
  const Uint8ArrayCtor = Uint8Array;
  const Uint16ArrayCtor = Uint16Array;
  const TYPED_ARRAYS = {
    __proto__: null, Int8Array, Uint8Array, Uint8ClampedArray, Int16Array, Uint16Array, Int32Array,
    Uint32Array, Float32Array, Float64Array, BigInt64Array, BigUint64Array,
  };
  const FinalizationRegistryCtor = G.FinalizationRegistry; // (the runtime's own class shadows the name)
  const FinalizationRegistryRegister = FinalizationRegistryCtor.prototype.register;
  const FinalizationRegistryUnregister = FinalizationRegistryCtor.prototype.unregister;
  const ERROR_CTORS = {
    __proto__: null, Error, EvalError, RangeError, ReferenceError, SyntaxError, TypeError, URIError,
  };

  const HEX = '0123456789ABCDEF';
  // Lists without a prototype: a polluted Array.prototype (an index setter, say) cannot reach them.
  const newList = () => ({ __proto__: null, length: 0 });
  const listPush = (list, v) => { list[list.length] = v; list.length++; };
  const newInspectState = () => ({ __proto__: null, n: 0, seen: newList() });
  const call = (fn, self, ...args) => ReflectApply(fn, self, args);
  const strSlice = (s, a, b) => ReflectApply(StringPrototypeSlice, s, [a, b]);
  const strCode = (s, i) => ReflectApply(StringPrototypeCharCodeAt, s, [i]);
  const strIndexOf = (s, x, from) => ReflectApply(StringPrototypeIndexOf, s, [x, from]);
  const strStarts = (s, x) => ReflectApply(StringPrototypeStartsWith, s, [x]);
  const desc = (value, writable, enumerable, configurable) =>
    ({ __proto__: null, value, writable, enumerable, configurable });
  const define = (obj, key, value) => ObjectDefineProperty(obj, key, desc(value, true, true, true));
  const defineHidden = (obj, key, value) => ObjectDefineProperty(obj, key, desc(value, true, false, true));

  function brand(getter, v) {
    try {
      ReflectApply(getter, v, []);
      return true;
    } catch {
      return false;
    }
  }
  const isMap = (v) => brand(MapSizeGetter, v);
  const isSet = (v) => brand(SetSizeGetter, v);
  const isDate = (v) => brand(DatePrototypeGetTime, v);
  const isRegExp = (v) => v !== RegExpPrototype && brand(RegExpSourceGetter, v);
  const typedArrayName = (v) => ReflectApply(TypedArrayTagGetter, v, []);
  const isArrayBuffer = (v) => brand(ArrayBufferByteLengthGetter, v);
  const isSharedArrayBuffer = (v) => brand(SharedArrayBufferByteLengthGetter, v);
  const isDataView = (v) => brand(DataViewByteLengthGetter, v);
  const isWeakMap = (v) => { try { ReflectApply(WeakMapPrototypeHas, v, [ObjectPrototype]); return true; } catch { return false; } };
  const isWeakSet = (v) => { try { ReflectApply(WeakSetPrototypeHas, v, [ObjectPrototype]); return true; } catch { return false; } };
  function boxedPrimitive(v) {
    const checks = [NumberPrototypeValueOf, StringPrototypeValueOf, BooleanPrototypeValueOf, BigIntPrototypeValueOf, SymbolPrototypeValueOf];
    for (let i = 0; i < 5; i++) {
      try {
        return { __proto__: null, value: ReflectApply(checks[i], v, []) };
      } catch { /* next */ }
    }
    return null;
  }
  function builtinTag(v) {
    try {
      return ReflectApply(ObjectPrototypeToString, v, []);
    } catch {
      return '[object Object]';
    }
  }
  function isErrorLike(v) {
    return builtinTag(v) === '[object Error]';
  }

  // ---- the bridge to the harness (set once by init; unreachable from the codelet) ----
  let hLog = null;
  let hDrop = null;
  let hViolation = null;
  let hTimer = null;
  let hClearTimer = null;
  let hDone = null;
  let hUrl = null;
  let hFinalize = null;
  let LOG_LIMIT = 8192;
  let MAX_TIMERS = 10000;
  let MAX_RESULT = 32 * 1024 * 1024;

  // Every call into the harness goes through here: a failure (even a stack overflow on entry) is
  // replaced by an error of this realm, so nothing of the harness's realm reaches the codelet.
  function bridge(fn, a, b, c, d) {
    try {
      return fn(a, b, c, d);
    } catch {
      throw new ErrorCtor('the codelet runtime could not reach the harness');
    }
  }

  function policyError(message) {
    const err = new ErrorCtor(message);
    defineHidden(err, 'name', 'PolicyViolation');
    try {
      ErrorCaptureStackTrace(err, policyError);
    } catch { /* keep the default stack */ }
    return err;
  }
  // Records the violation with the harness (it decides the call's outcome even if the codelet
  // catches the error) and returns the error to throw.
  function violation(message) {
    bridge(hViolation, message);
    return policyError(message);
  }

  // ---- formatting (the console's format: strings as they are, other values inspected) ----
  function quote(s) {
    let q = "'";
    if (strIndexOf(s, "'") !== -1) {
      if (strIndexOf(s, '"') === -1) q = '"';
      else if (strIndexOf(s, '`') === -1 && strIndexOf(s, '${') === -1) q = '`';
    }
    let out = q;
    const n = MathMin(s.length, LOG_LIMIT + 1);
    for (let i = 0; i < n; i++) {
      const c = strCode(s, i);
      if (c === 0x5c) out += '\\\\';
      else if (c === 0x0a) out += '\\n';
      else if (c === 0x0d) out += '\\r';
      else if (c === 0x09) out += '\\t';
      else if (c === 0x08) out += '\\b';
      else if (c === 0x0c) out += '\\f';
      else if (c === 0x0b) out += '\\v';
      else if (c < 0x20 || c === 0x7f) out += '\\x' + HEX[c >> 4] + HEX[c & 15];
      else if (c === strCode(q, 0)) out += '\\' + q;
      else out += StringFromCharCode(c);
    }
    return out + q;
  }

  function functionName(fn) {
    try {
      const d = ObjectGetOwnPropertyDescriptor(fn, 'name');
      if (d && typeof d.value === 'string') return d.value;
    } catch { /* anonymous */ }
    return '';
  }
  function functionTag(fn) {
    const name = functionName(fn);
    let source = '';
    try {
      source = ReflectApply(FunctionPrototypeToString, fn, []);
    } catch { /* not inspectable */ }
    if (strStarts(source, 'class')) return name ? `[class ${name}]` : '[class (anonymous)]';
    let kind = 'Function';
    const proto = ObjectGetPrototypeOf(fn);
    if (proto === AsyncFunctionPrototype) kind = 'AsyncFunction';
    else if (proto === GeneratorFunctionPrototype) kind = 'GeneratorFunction';
    else if (proto === AsyncGeneratorFunctionPrototype) kind = 'AsyncGeneratorFunction';
    return name ? `[${kind}: ${name}]` : `[${kind} (anonymous)]`;
  }
  function constructorName(obj) {
    let o = obj;
    for (let i = 0; i < 64 && o !== null; i++) {
      const d = ObjectGetOwnPropertyDescriptor(o, 'constructor');
      if (d && typeof d.value === 'function') {
        const name = functionName(d.value);
        if (name !== '') return name;
      }
      o = ObjectGetPrototypeOf(o);
    }
    return null;
  }
  function keyText(key) {
    if (typeof key === 'symbol') return '[' + call(SymbolPrototypeToString, key) + ']';
    let ident = key.length > 0;
    for (let i = 0; i < key.length && ident; i++) {
      const c = strCode(key, i);
      const letter = (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c === 0x24 || c === 0x5f;
      ident = letter || (i > 0 && c >= 0x30 && c <= 0x39);
    }
    return ident ? key : quote(key);
  }
  function errorText(err) {
    let stack;
    let name;
    let message;
    try { stack = err.stack; } catch { /* none */ }
    if (typeof stack === 'string' && stack !== '') return stack;
    try { name = err.name; } catch { /* none */ }
    try { message = err.message; } catch { /* none */ }
    name = typeof name === 'string' ? name : 'Error';
    message = typeof message === 'string' ? message : '';
    return message === '' ? name : `${name}: ${message}`;
  }

  function inspect(v, depth, st, nested) {
    if (st.n > LOG_LIMIT) return '';
    switch (typeof v) {
      case 'string': return nested ? quote(v) : v;
      case 'number': return ObjectIs(v, -0) ? '-0' : StringCtor(v);
      case 'bigint': return StringCtor(v) + 'n';
      case 'boolean': return v ? 'true' : 'false';
      case 'undefined': return 'undefined';
      case 'symbol': return call(SymbolPrototypeToString, v);
      case 'function': return functionTag(v);
      default: break;
    }
    if (v === null) return 'null';
    for (let i = 0; i < st.seen.length; i++) if (st.seen[i] === v) return '[Circular]';
    let out = inspectObject(v, depth, st, nested);
    if (typeof out !== 'string') out = '';
    st.n += out.length;
    return out;
  }
  function inspectObject(v, depth, st, nested) {
    if (isErrorLike(v)) {
      const text = errorText(v);
      return nested ? '[' + text + ']' : text;
    }
    if (isDate(v)) {
      const t = call(DatePrototypeGetTime, v);
      return t === t ? call(DatePrototypeToISOString, v) : 'Invalid Date';
    }
    if (isRegExp(v)) return call(RegExpPrototypeToString, v);
    const boxed = boxedPrimitive(v);
    if (boxed !== null) {
      const p = boxed.value;
      const kind = typeof p === 'number' ? 'Number' : typeof p === 'string' ? 'String' : typeof p === 'boolean' ? 'Boolean' : typeof p === 'bigint' ? 'BigInt' : 'Symbol';
      return `[${kind}: ${inspect(p, depth, st, true)}]`;
    }
    const taName = typedArrayName(v);
    const isArray = ArrayIsArray(v);
    const map = !isArray && isMap(v);
    const set = !isArray && !map && isSet(v);
    let prefix = '';
    let ctor = null;
    try { ctor = constructorName(v); } catch { /* odd object */ }
    if (depth > 2) {
      if (isArray) return '[Array]';
      return '[' + (ctor || 'Object') + ']';
    }
    listPush(st.seen, v);
    let body = '';
    let empty = true;
    let open = '{';
    let close = '}';
    const add = (text) => {
      body += (empty ? '' : ', ') + text;
      empty = false;
      st.n += text.length + 2;
      return st.n <= LOG_LIMIT;
    };
    try {
      if (isArray || taName !== undefined) {
        open = '[';
        close = ']';
        const len = taName !== undefined ? call(TypedArrayLengthGetter, v) : v.length;
        if (taName !== undefined) prefix = `${taName}(${len}) `;
        else if (ctor !== null && ctor !== 'Array') prefix = `${ctor}(${len}) `;
        const shown = MathMin(len, 100);
        let holes = 0;
        for (let i = 0; i < shown; i++) {
          if (taName === undefined && !ObjectHasOwn(v, i)) { holes++; continue; }
          if (holes > 0) { if (!add(`<${holes} empty item${holes > 1 ? 's' : ''}>`)) break; holes = 0; }
          if (!add(inspect(v[i], depth + 1, st, true))) break;
        }
        if (holes > 0) add(`<${holes} empty item${holes > 1 ? 's' : ''}>`);
        if (len > shown) add(`... ${len - shown} more item${len - shown > 1 ? 's' : ''}`);
      } else if (map) {
        prefix = `Map(${call(MapSizeGetter, v)}) `;
        call(MapPrototypeForEach, v, (val, key) => {
          if (st.n <= LOG_LIMIT) add(inspect(key, depth + 1, st, true) + ' => ' + inspect(val, depth + 1, st, true));
        });
      } else if (set) {
        prefix = `Set(${call(SetSizeGetter, v)}) `;
        call(SetPrototypeForEach, v, (val) => {
          if (st.n <= LOG_LIMIT) add(inspect(val, depth + 1, st, true));
        });
      } else if (isWeakMap(v) || isWeakSet(v)) {
        return `${isWeakMap(v) ? 'WeakMap' : 'WeakSet'} { <items unknown> }`;
      } else if (isArrayBuffer(v) || isSharedArrayBuffer(v)) {
        const shared = !isArrayBuffer(v);
        return `${shared ? 'SharedArrayBuffer' : 'ArrayBuffer'} { byteLength: ${call(shared ? SharedArrayBufferByteLengthGetter : ArrayBufferByteLengthGetter, v)} }`;
      } else {
        const proto = ObjectGetPrototypeOf(v);
        if (proto === null) prefix = '[Object: null prototype] ';
        else if (builtinTag(v) === '[object Promise]') prefix = 'Promise ';
        else if (ctor !== null && ctor !== 'Object') prefix = ctor + ' ';
      }
      if (!map && !set) {
        const keys = ReflectOwnKeys(v);
        for (let i = 0; i < keys.length && st.n <= LOG_LIMIT; i++) {
          const key = keys[i];
          if (typeof key === 'string' && (isArray || taName !== undefined)) {
            // indices are shown above; `length` is not enumerable
            const n = NumberCtor(key);
            if (key !== '' && n >= 0 && MathTrunc(n) === n && StringCtor(n) === key) continue;
          }
          const d = ObjectGetOwnPropertyDescriptor(v, key);
          if (!d || !d.enumerable) continue;
          let valueText;
          if (d.get || d.set) valueText = d.get && d.set ? '[Getter/Setter]' : d.get ? '[Getter]' : '[Setter]';
          else valueText = inspect(d.value, depth + 1, st, true);
          if (!add(keyText(key) + ': ' + valueText)) break;
        }
      }
    } finally {
      st.seen.length = st.seen.length - 1;
    }
    if (empty) return prefix + open + close;
    return prefix + open + ' ' + body + ' ' + close;
  }

  function formatArgs(args) {
    const st = newInspectState();
    const count = args.length;
    if (count === 0) return '';
    let out = '';
    let next = 0;
    const clip = (s) => (s.length > LOG_LIMIT ? strSlice(s, 0, LOG_LIMIT + 1) : s);
    const first = args[0];
    if (typeof first === 'string') {
      next = 1;
      if (count === 1 || strIndexOf(first, '%') === -1) {
        out = clip(first);
      } else {
        const f = clip(first);
        let last = 0;
        for (let i = 0; i < f.length - 1; i++) {
          if (strCode(f, i) !== 0x25) continue;
          const d = f[i + 1];
          if (d === '%') { out += strSlice(f, last, i) + '%'; last = i + 2; i++; continue; }
          if (next >= count) continue;
          let piece;
          const a = args[next];
          if (d === 's') piece = typeof a === 'string' ? a : typeof a === 'bigint' ? StringCtor(a) + 'n' : (typeof a === 'object' && a !== null) || typeof a === 'function' ? inspect(a, 1, st, false) : typeof a === 'symbol' ? call(SymbolPrototypeToString, a) : inspect(a, 0, st, false);
          else if (d === 'd') piece = typeof a === 'bigint' ? StringCtor(a) + 'n' : typeof a === 'symbol' ? 'NaN' : inspect(NumberCtor(a), 0, st, false);
          else if (d === 'i') piece = typeof a === 'bigint' ? StringCtor(a) + 'n' : typeof a === 'symbol' ? 'NaN' : inspect(NumberParseInt(a), 0, st, false);
          else if (d === 'f') piece = typeof a === 'symbol' ? 'NaN' : inspect(NumberParseFloat(a), 0, st, false);
          else if (d === 'j') { try { piece = StringCtor(JSONStringify(a)); } catch { piece = '[Circular]'; } }
          else if (d === 'o' || d === 'O') piece = inspect(a, 0, st, true);
          else if (d === 'c') piece = '';
          else continue;
          out += strSlice(f, last, i) + clip(piece);
          last = i + 2;
          i++;
          next++;
          if (out.length > LOG_LIMIT) break;
        }
        if (last < f.length) out += strSlice(f, last);
      }
    }
    for (let i = next; i < count && out.length <= LOG_LIMIT; i++) {
      const a = args[i];
      const piece = clip(typeof a === 'string' ? a : inspect(a, 0, st, false));
      out = i === 0 ? piece : out + ' ' + piece;
    }
    return out.length > LOG_LIMIT ? strSlice(out, 0, LOG_LIMIT + 1) : out;
  }

  // ---- logs: the first ones go to the harness as they happen, the rest are only counted ----
  let logsFull = false;
  let groupIndent = '';
  function emitText(level, text) {
    if (logsFull) {
      bridge(hDrop);
      return;
    }
    let msg = typeof text === 'string' ? text : '';
    if (groupIndent !== '') {
      let indented = groupIndent;
      for (let i = 0; i < msg.length && indented.length <= LOG_LIMIT; i++) {
        const ch = msg[i];
        indented += ch === '\n' ? '\n' + groupIndent : ch;
      }
      msg = indented;
    }
    if (msg.length > LOG_LIMIT) msg = strSlice(msg, 0, LOG_LIMIT + 1);
    if (bridge(hLog, level, msg) !== true) logsFull = true;
  }
  function emit(level, args) {
    if (logsFull) {
      bridge(hDrop);
      return;
    }
    let text;
    try {
      text = formatArgs(args);
    } catch {
      text = '[a log message that could not be formatted]';
    }
    emitText(level, text);
  }

  const logger = ObjectFreeze({
    info(...args) { emit('info', args); },
    warn(...args) { emit('warn', args); },
    error(...args) { emit('error', args); },
    debug(...args) { emit('debug', args); },
    log(...args) { emit('log', args); },
  });

  const counts = new MapCtor();
  const timersStarted = new MapCtor();
  const labelOf = (label) => (label === undefined ? 'default' : StringCtor(label));
  const consoleObject = {
    log(...args) { emit('log', args); },
    info(...args) { emit('info', args); },
    warn(...args) { emit('warn', args); },
    error(...args) { emit('error', args); },
    debug(...args) { emit('debug', args); },
    trace(...args) {
      const holder = {};
      try { ErrorCaptureStackTrace(holder, consoleObject.trace); } catch { /* no stack */ }
      let stack = typeof holder.stack === 'string' ? holder.stack : '';
      const nl = strIndexOf(stack, '\n');
      stack = nl === -1 ? '' : strSlice(stack, nl);
      const text = formatArgs(args);
      emitText('debug', 'Trace' + (text === '' ? '' : ': ' + text) + stack);
    },
    dir(value) { emitText('log', inspect(value, 0, newInspectState(), true)); },
    dirxml(...args) { emit('log', args); },
    table(...args) { emit('log', args); },
    assert(condition, ...args) {
      if (condition) return;
      const text = formatArgs(args);
      emitText('error', 'Assertion failed' + (text === '' ? '' : ': ' + text));
    },
    count(label) {
      const key = labelOf(label);
      const n = (call(MapPrototypeGet, counts, key) || 0) + 1;
      call(MapPrototypeSet, counts, key, n);
      emitText('log', `${key}: ${n}`);
    },
    countReset(label) { call(MapPrototypeSet, counts, labelOf(label), 0); },
    time(label) { call(MapPrototypeSet, timersStarted, labelOf(label), DateNow()); },
    timeLog(label, ...args) {
      const key = labelOf(label);
      if (!call(MapPrototypeHas, timersStarted, key)) return;
      const extra = formatArgs(args);
      emitText('log', `${key}: ${DateNow() - call(MapPrototypeGet, timersStarted, key)}ms${extra === '' ? '' : ' ' + extra}`);
    },
    timeEnd(label) {
      const key = labelOf(label);
      if (!call(MapPrototypeHas, timersStarted, key)) return;
      emitText('log', `${key}: ${DateNow() - call(MapPrototypeGet, timersStarted, key)}ms`);
      call(MapPrototypeDelete, timersStarted, key);
    },
    group(...args) {
      if (args.length > 0) emit('log', args);
      groupIndent += '  ';
    },
    groupCollapsed(...args) {
      if (args.length > 0) emit('log', args);
      groupIndent += '  ';
    },
    groupEnd() { groupIndent = strSlice(groupIndent, 0, groupIndent.length >= 2 ? groupIndent.length - 2 : 0); },
  };

  // ---- timers: ids and callbacks live here, the harness only arms host timers by id ----
  const timers = ObjectCreate(null);
  const handles = new WeakMapCtor();
  let timerCount = 0;
  let nextTimerId = 1;
  let uncaught = null; // set by init: reports an error nobody caught (a timer, a microtask)

  function Timeout() { throw new TypeErrorCtor('Illegal constructor'); }
  const TimeoutPrototype = Timeout.prototype;
  define(TimeoutPrototype, 'ref', function ref() { return this; });
  define(TimeoutPrototype, 'unref', function unref() { return this; });
  define(TimeoutPrototype, 'hasRef', function hasRef() { return true; });
  define(TimeoutPrototype, 'refresh', function refresh() {
    const id = call(WeakMapPrototypeGet, handles, this);
    const t = id === undefined ? undefined : timers[id];
    if (t !== undefined) {
      bridge(hClearTimer, id);
      bridge(hTimer, id, t.ms, t.repeat);
    }
    return this;
  });
  define(TimeoutPrototype, 'close', function close() { clearTimer(this); return this; });
  define(TimeoutPrototype, SymbolToPrimitive, function toPrimitive() { return call(WeakMapPrototypeGet, handles, this); });

  function addTimer(callback, delay, args, repeat, what) {
    if (typeof callback !== 'function') {
      if (typeof callback === 'string') throw violation(`${what}() with a string of code is not allowed in a codelet: code generation from strings is disabled`);
      throw new TypeErrorCtor(`The "callback" argument of ${what}() must be a function`);
    }
    let ms = NumberCtor(delay);
    if (!(ms >= 1 && ms <= 2147483647)) ms = 1;
    ms = MathTrunc(ms);
    if (timerCount >= MAX_TIMERS) throw new RangeErrorCtor(`too many pending timers (a codelet may have ${MAX_TIMERS})`);
    const id = nextTimerId++;
    const handle = ObjectCreate(TimeoutPrototype);
    call(WeakMapPrototypeSet, handles, handle, id);
    timers[id] = { __proto__: null, callback, args, repeat, ms, handle };
    timerCount++;
    bridge(hTimer, id, ms, repeat);
    return handle;
  }
  function clearTimer(h) {
    let id;
    if (typeof h === 'number') id = h;
    else if (typeof h === 'string' && h !== '') id = NumberCtor(h);
    else if (typeof h === 'object' && h !== null) id = call(WeakMapPrototypeGet, handles, h);
    if (id === undefined || timers[id] === undefined) return;
    delete timers[id];
    timerCount--;
    bridge(hClearTimer, id);
  }
  function fireTimer(id) {
    const t = timers[id];
    if (t === undefined) return;
    if (!t.repeat) {
      delete timers[id];
      timerCount--;
    }
    try {
      ReflectApply(t.callback, t.handle, t.args);
    } catch (err) {
      uncaught(err);
    }
  }
  function setTimeout(callback, delay, ...args) { return addTimer(callback, delay, args, false, 'setTimeout'); }
  function setInterval(callback, delay, ...args) { return addTimer(callback, delay, args, true, 'setInterval'); }
  function clearTimeout(handle) { clearTimer(handle); }
  function clearInterval(handle) { clearTimer(handle); }
  function queueMicrotask(callback) {
    if (typeof callback !== 'function') throw new TypeErrorCtor('The "callback" argument of queueMicrotask() must be a function');
    (async () => {
      await undefined;
      try {
        callback();
      } catch (err) {
        uncaught(err);
      }
    })();
  }

  // ---- FinalizationRegistry: V8 calls cleanup callbacks from a task of its own, outside any
  // timed run. The engine's registry only calls back into this runtime, which queues the
  // codelet's callback and asks the harness for a timed run to call it (like a timer's).
  const finalizers = newList(); // callback, held value, callback, held value, …
  let finalizersAt = 0;
  let finalizeAsked = false;
  function queueFinalizer(callback, held) {
    try {
      listPush(finalizers, callback);
      listPush(finalizers, held);
      if (!finalizeAsked) {
        finalizeAsked = true;
        bridge(hFinalize);
      }
    } catch { /* the call is over */ }
  }
  function runFinalizers() {
    finalizeAsked = false;
    while (finalizersAt < finalizers.length) {
      const callback = finalizers[finalizersAt];
      const held = finalizers[finalizersAt + 1];
      finalizers[finalizersAt] = undefined;
      finalizers[finalizersAt + 1] = undefined;
      finalizersAt += 2;
      try {
        ReflectApply(callback, undefined, [held]);
      } catch (err) {
        uncaught(err);
      }
    }
    finalizers.length = 0;
    finalizersAt = 0;
  }
  class FinalizationRegistry {
    #registry;
    constructor(cleanupCallback) {
      if (typeof cleanupCallback !== 'function') throw new TypeErrorCtor('FinalizationRegistry: cleanup must be callable');
      this.#registry = new FinalizationRegistryCtor((held) => { queueFinalizer(cleanupCallback, held); });
    }
    register(target, heldValue, unregisterToken = undefined) {
      ReflectApply(FinalizationRegistryRegister, this.#registry, [target, heldValue, unregisterToken]);
    }
    unregister(unregisterToken) {
      return ReflectApply(FinalizationRegistryUnregister, this.#registry, [unregisterToken]);
    }
  }
  defineHidden(FinalizationRegistry.prototype, SymbolToStringTag, 'FinalizationRegistry');

  // ---- structuredClone ----
  function dataCloneError(message) {
    const err = new ErrorCtor(message);
    defineHidden(err, 'name', 'DataCloneError');
    defineHidden(err, 'code', 25);
    return err;
  }
  function cloneValue(v, memo) {
    const t = typeof v;
    if (t === 'symbol') throw dataCloneError(`${call(SymbolPrototypeToString, v)} could not be cloned.`);
    if (t === 'function') throw dataCloneError(`${functionTag(v)} could not be cloned.`);
    if (t !== 'object' || v === null) return v;
    if (call(MapPrototypeHas, memo, v)) return call(MapPrototypeGet, memo, v);
    const remember = (out) => { call(MapPrototypeSet, memo, v, out); return out; };
    const boxed = boxedPrimitive(v);
    if (boxed !== null) {
      if (typeof boxed.value === 'symbol') throw dataCloneError('Symbol object could not be cloned.');
      return remember(ObjectCtor(boxed.value));
    }
    if (isDate(v)) return remember(new DateCtor(call(DatePrototypeGetTime, v)));
    if (isRegExp(v)) return remember(new RegExpCtor(call(RegExpSourceGetter, v), call(RegExpFlagsGetter, v)));
    if (isArrayBuffer(v)) return remember(call(ArrayBufferPrototypeSlice, v, 0));
    if (isSharedArrayBuffer(v)) return remember(v);
    const taName = typedArrayName(v);
    if (taName !== undefined) {
      const buffer = cloneValue(call(TypedArrayBufferGetter, v), memo);
      return remember(new TYPED_ARRAYS[taName](buffer, call(TypedArrayByteOffsetGetter, v), call(TypedArrayLengthGetter, v)));
    }
    if (isDataView(v)) {
      const buffer = cloneValue(call(DataViewBufferGetter, v), memo);
      return remember(new DataViewCtor(buffer, call(DataViewByteOffsetGetter, v), call(DataViewByteLengthGetter, v)));
    }
    if (isMap(v)) {
      const out = remember(new MapCtor());
      const entries = newList();
      call(MapPrototypeForEach, v, (val, key) => { listPush(entries, key); listPush(entries, val); });
      for (let i = 0; i < entries.length; i += 2) call(MapPrototypeSet, out, cloneValue(entries[i], memo), cloneValue(entries[i + 1], memo));
      return out;
    }
    if (isSet(v)) {
      const out = remember(new SetCtor());
      const values = newList();
      call(SetPrototypeForEach, v, (val) => { listPush(values, val); });
      for (let i = 0; i < values.length; i++) call(SetPrototypeAdd, out, cloneValue(values[i], memo));
      return out;
    }
    if (isErrorLike(v)) {
      let name = 'Error';
      try { name = StringCtor(v.name); } catch { /* Error */ }
      const Ctor = ERROR_CTORS[name] || ErrorCtor;
      const md = ObjectGetOwnPropertyDescriptor(v, 'message');
      const out = remember(new Ctor(md && 'value' in md ? StringCtor(md.value) : ''));
      const sd = ObjectGetOwnPropertyDescriptor(v, 'stack');
      if (sd && typeof sd.value === 'string') defineHidden(out, 'stack', sd.value);
      const cd = ObjectGetOwnPropertyDescriptor(v, 'cause');
      if (cd && 'value' in cd) defineHidden(out, 'cause', cloneValue(cd.value, memo));
      return out;
    }
    if (isWeakMap(v) || isWeakSet(v) || builtinTag(v) === '[object Promise]') {
      throw dataCloneError(`${constructorName(v) || 'object'} could not be cloned.`);
    }
    const isArray = ArrayIsArray(v);
    const out = remember(isArray ? new ArrayCtor(v.length) : {});
    const keys = ObjectKeys(v);
    for (let i = 0; i < keys.length; i++) define(out, keys[i], cloneValue(v[keys[i]], memo));
    return out;
  }
  function structuredClone(value, options) {
    if (arguments.length === 0) throw new TypeErrorCtor('The "value" argument must be specified');
    if (options !== undefined && options !== null) {
      const transfer = options.transfer;
      if (transfer !== undefined && transfer !== null && transfer.length > 0) throw dataCloneError('structuredClone() cannot transfer objects in a codelet');
    }
    return cloneValue(value, new MapCtor());
  }

  // ---- TextEncoder / TextDecoder (UTF-8) ----
  function utf8Encode(s) {
    let len = 0;
    const n = s.length;
    for (let i = 0; i < n; i++) {
      const c = strCode(s, i);
      if (c < 0x80) len += 1;
      else if (c < 0x800) len += 2;
      else if (c >= 0xd800 && c < 0xdc00 && i + 1 < n && (strCode(s, i + 1) & 0xfc00) === 0xdc00) { len += 4; i++; }
      else len += 3;
    }
    const out = new Uint8ArrayCtor(len);
    let o = 0;
    for (let i = 0; i < n; i++) {
      let c = strCode(s, i);
      if (c < 0x80) { out[o++] = c; continue; }
      if (c < 0x800) { out[o++] = 0xc0 | (c >> 6); out[o++] = 0x80 | (c & 0x3f); continue; }
      if (c >= 0xd800 && c < 0xdc00 && i + 1 < n && (strCode(s, i + 1) & 0xfc00) === 0xdc00) {
        c = 0x10000 + ((c - 0xd800) << 10) + (strCode(s, ++i) - 0xdc00);
        out[o++] = 0xf0 | (c >> 18);
        out[o++] = 0x80 | ((c >> 12) & 0x3f);
        out[o++] = 0x80 | ((c >> 6) & 0x3f);
        out[o++] = 0x80 | (c & 0x3f);
        continue;
      }
      if (c >= 0xd800 && c < 0xe000) c = 0xfffd; // a lone surrogate
      out[o++] = 0xe0 | (c >> 12);
      out[o++] = 0x80 | ((c >> 6) & 0x3f);
      out[o++] = 0x80 | (c & 0x3f);
    }
    return out;
  }
  function bytesOf(input, what) {
    if (input === undefined) return new Uint8ArrayCtor(0);
    if (typedArrayName(input) !== undefined) {
      return new Uint8ArrayCtor(call(TypedArrayBufferGetter, input), call(TypedArrayByteOffsetGetter, input), call(TypedArrayByteLengthGetter, input));
    }
    if (isDataView(input)) {
      return new Uint8ArrayCtor(call(DataViewBufferGetter, input), call(DataViewByteOffsetGetter, input), call(DataViewByteLengthGetter, input));
    }
    if (isArrayBuffer(input) || isSharedArrayBuffer(input)) return new Uint8ArrayCtor(input);
    throw new TypeErrorCtor(`The "input" argument of ${what} must be an ArrayBuffer, a TypedArray or a DataView`);
  }
  // The WHATWG UTF-8 decoder; `state` carries an unfinished sequence between streaming calls.
  function utf8Decode(bytes, state, fatal, flush) {
    let out = '';
    const chunk = new Uint16ArrayCtor(4096);
    let k = 0;
    const push = (unit) => {
      chunk[k++] = unit;
      if (k >= 4094) { out += ReflectApply(StringFromCharCode, null, call(TypedArrayPrototype.subarray, chunk, 0, k)); k = 0; }
    };
    const pushCodePoint = (cp) => {
      if (!state.bomDone) {
        state.bomDone = true;
        if (cp === 0xfeff && !state.ignoreBOM) return;
      }
      if (cp < 0x10000) push(cp);
      else { cp -= 0x10000; push(0xd800 | (cp >> 10)); push(0xdc00 | (cp & 0x3ff)); }
    };
    const fail = () => {
      state.need = 0; state.seen = 0; state.cp = 0; state.lower = 0x80; state.upper = 0xbf;
      if (fatal) throw new TypeErrorCtor('The encoded data was not valid for encoding utf-8');
      pushCodePoint(0xfffd);
    };
    const n = call(TypedArrayLengthGetter, bytes);
    for (let i = 0; i < n; i++) {
      const b = bytes[i];
      if (state.need === 0) {
        if (b <= 0x7f) pushCodePoint(b);
        else if (b >= 0xc2 && b <= 0xdf) { state.need = 1; state.cp = b & 0x1f; }
        else if (b >= 0xe0 && b <= 0xef) {
          if (b === 0xe0) state.lower = 0xa0;
          if (b === 0xed) state.upper = 0x9f;
          state.need = 2; state.cp = b & 0xf;
        } else if (b >= 0xf0 && b <= 0xf4) {
          if (b === 0xf0) state.lower = 0x90;
          if (b === 0xf4) state.upper = 0x8f;
          state.need = 3; state.cp = b & 0x7;
        } else fail();
        continue;
      }
      if (b < state.lower || b > state.upper) {
        fail();
        i--; // the byte starts over
        continue;
      }
      state.lower = 0x80; state.upper = 0xbf;
      state.cp = (state.cp << 6) | (b & 0x3f);
      if (++state.seen === state.need) {
        const cp = state.cp;
        state.need = 0; state.seen = 0; state.cp = 0;
        pushCodePoint(cp);
      }
    }
    if (flush) {
      if (state.need !== 0) fail();
      state.bomDone = false;
    }
    if (k > 0) out += ReflectApply(StringFromCharCode, null, call(TypedArrayPrototype.subarray, chunk, 0, k));
    return out;
  }
  const UTF8_LABELS = ['unicode-1-1-utf-8', 'unicode11utf8', 'unicode20utf8', 'utf-8', 'utf8', 'x-unicode20utf8'];
  const decoderState = new WeakMapCtor();
  class TextEncoder {
    get encoding() { return 'utf-8'; }
    encode(input = '') { return utf8Encode(StringCtor(input)); }
    encodeInto(source, destination) {
      if (typedArrayName(destination) !== 'Uint8Array') throw new TypeErrorCtor('The "destination" argument must be a Uint8Array');
      const s = StringCtor(source);
      const room = call(TypedArrayLengthGetter, destination);
      let read = 0;
      let written = 0;
      for (let i = 0; i < s.length; i++) {
        const c = strCode(s, i);
        const pair = c >= 0xd800 && c < 0xdc00 && i + 1 < s.length && (strCode(s, i + 1) & 0xfc00) === 0xdc00;
        const bytes = utf8Encode(pair ? strSlice(s, i, i + 2) : s[i]);
        const w = call(TypedArrayLengthGetter, bytes);
        if (written + w > room) break;
        for (let j = 0; j < w; j++) destination[written + j] = bytes[j];
        written += w;
        read += pair ? 2 : 1;
        if (pair) i++;
      }
      return { read, written };
    }
  }
  defineHidden(TextEncoder.prototype, SymbolToStringTag, 'TextEncoder');
  class TextDecoder {
    constructor(label = 'utf-8', options = undefined) {
      const name = call(StringPrototypeToLowerCase, call(StringPrototypeTrim, StringCtor(label)));
      let known = false;
      for (let i = 0; i < UTF8_LABELS.length; i++) if (UTF8_LABELS[i] === name) known = true;
      if (!known) throw new RangeErrorCtor(`The "${StringCtor(label)}" encoding is not supported (a codelet's TextDecoder decodes UTF-8)`);
      const fatal = options !== undefined && options !== null && BooleanCtor(options.fatal);
      const ignoreBOM = options !== undefined && options !== null && BooleanCtor(options.ignoreBOM);
      call(WeakMapPrototypeSet, decoderState, this, { __proto__: null, fatal, ignoreBOM, need: 0, seen: 0, cp: 0, lower: 0x80, upper: 0xbf, bomDone: false });
    }
    get encoding() { return 'utf-8'; }
    get fatal() { return this.#state().fatal; }
    get ignoreBOM() { return this.#state().ignoreBOM; }
    #state() {
      const state = call(WeakMapPrototypeGet, decoderState, this);
      if (state === undefined) throw new TypeErrorCtor('Illegal invocation');
      return state;
    }
    decode(input = undefined, options = undefined) {
      const state = this.#state();
      const stream = options !== undefined && options !== null && BooleanCtor(options.stream);
      return utf8Decode(bytesOf(input, 'TextDecoder.decode()'), state, state.fatal, !stream);
    }
  }
  defineHidden(TextDecoder.prototype, SymbolToStringTag, 'TextDecoder');

  // ---- atob / btoa ----
  const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
  function invalidCharacter(message) {
    const err = new ErrorCtor(message);
    defineHidden(err, 'name', 'InvalidCharacterError');
    defineHidden(err, 'code', 5);
    return err;
  }
  function btoa(data) {
    if (arguments.length === 0) throw new TypeErrorCtor('The "data" argument must be specified');
    const s = StringCtor(data);
    let out = '';
    for (let i = 0; i < s.length; i += 3) {
      const a = strCode(s, i);
      const b = i + 1 < s.length ? strCode(s, i + 1) : 0;
      const c = i + 2 < s.length ? strCode(s, i + 2) : 0;
      if (a > 0xff || b > 0xff || c > 0xff) throw invalidCharacter('Invalid character');
      const n = (a << 16) | (b << 8) | c;
      out += B64[(n >> 18) & 63] + B64[(n >> 12) & 63] + (i + 1 < s.length ? B64[(n >> 6) & 63] : '=') + (i + 2 < s.length ? B64[n & 63] : '=');
    }
    return out;
  }
  function atob(data) {
    if (arguments.length === 0) throw new TypeErrorCtor('The "data" argument must be specified');
    const s = StringCtor(data);
    let clean = '';
    for (let i = 0; i < s.length; i++) {
      const c = strCode(s, i);
      if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0c || c === 0x0d) continue;
      clean += s[i];
    }
    if (clean.length % 4 === 0) {
      if (strSlice(clean, -2) === '==') clean = strSlice(clean, 0, -2);
      else if (strSlice(clean, -1) === '=') clean = strSlice(clean, 0, -1);
    }
    if (clean.length % 4 === 1) throw invalidCharacter('The string to be decoded is not correctly encoded.');
    let out = '';
    let bits = 0;
    let acc = 0;
    for (let i = 0; i < clean.length; i++) {
      const v = strIndexOf(B64, clean[i]);
      if (v === -1) throw invalidCharacter('The string to be decoded is not correctly encoded.');
      acc = (acc << 6) | v;
      bits += 6;
      if (bits >= 8) {
        bits -= 8;
        out += StringFromCharCode((acc >> bits) & 0xff);
      }
    }
    return out;
  }

  // ---- URLSearchParams (here) and URL (parsed by the harness's URL, passed as JSON text) ----
  const FORM_SAFE = (b) => b === 0x2a || b === 0x2d || b === 0x2e || b === 0x5f || (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a);
  function formEncode(s) {
    const bytes = utf8Encode(s);
    const n = call(TypedArrayLengthGetter, bytes);
    let out = '';
    for (let i = 0; i < n; i++) {
      const b = bytes[i];
      if (FORM_SAFE(b)) out += StringFromCharCode(b);
      else if (b === 0x20) out += '+';
      else out += '%' + HEX[b >> 4] + HEX[b & 15];
    }
    return out;
  }
  function hexValue(c) {
    if (c >= 0x30 && c <= 0x39) return c - 0x30;
    if (c >= 0x41 && c <= 0x46) return c - 0x37;
    if (c >= 0x61 && c <= 0x66) return c - 0x57;
    return -1;
  }
  function formDecode(s) {
    const bytes = utf8Encode(s);
    const n = call(TypedArrayLengthGetter, bytes);
    const out = new Uint8ArrayCtor(n);
    let o = 0;
    for (let i = 0; i < n; i++) {
      const b = bytes[i];
      if (b === 0x2b) { out[o++] = 0x20; continue; }
      if (b === 0x25 && i + 2 < n) {
        const h = hexValue(bytes[i + 1]);
        const l = hexValue(bytes[i + 2]);
        if (h >= 0 && l >= 0) { out[o++] = (h << 4) | l; i += 2; continue; }
      }
      out[o++] = b;
    }
    const state = { __proto__: null, ignoreBOM: true, need: 0, seen: 0, cp: 0, lower: 0x80, upper: 0xbf, bomDone: true };
    return utf8Decode(call(TypedArrayPrototype.subarray, out, 0, o), state, false, true);
  }
  function parseForm(query) {
    const list = [];
    let s = query;
    if (s.length > 0 && s[0] === '?') s = strSlice(s, 1);
    let start = 0;
    while (start <= s.length) {
      let end = strIndexOf(s, '&', start);
      if (end === -1) end = s.length;
      const piece = strSlice(s, start, end);
      if (piece !== '') {
        const eq = strIndexOf(piece, '=');
        const name = eq === -1 ? piece : strSlice(piece, 0, eq);
        const value = eq === -1 ? '' : strSlice(piece, eq + 1);
        list[list.length] = [formDecode(name), formDecode(value)];
      }
      start = end + 1;
    }
    return list;
  }
  function toUSV(v) {
    const s = StringCtor(v);
    let out = '';
    let last = 0;
    for (let i = 0; i < s.length; i++) {
      const c = strCode(s, i);
      if (c < 0xd800 || c > 0xdfff) continue;
      if (c < 0xdc00 && i + 1 < s.length && (strCode(s, i + 1) & 0xfc00) === 0xdc00) { i++; continue; }
      out += strSlice(s, last, i) + '\ufffd';
      last = i + 1;
    }
    return last === 0 ? s : out + strSlice(s, last);
  }
  const paramsState = new WeakMapCtor();
  function paramsOf(sp) {
    const state = call(WeakMapPrototypeGet, paramsState, sp);
    if (state === undefined) throw new TypeErrorCtor('Illegal invocation');
    return state;
  }
  function paramsChanged(state) {
    if (state.onChange !== null) state.onChange(serializeForm(state.list));
  }
  function serializeForm(list) {
    let out = '';
    for (let i = 0; i < list.length; i++) out += (i === 0 ? '' : '&') + formEncode(list[i][0]) + '=' + formEncode(list[i][1]);
    return out;
  }
  class URLSearchParams {
    constructor(init = undefined) {
      let list = [];
      if (init === undefined || init === null) {
        list = [];
      } else if (typeof init === 'object' || typeof init === 'function') {
        const iter = init[SymbolIterator];
        if (iter !== undefined && iter !== null) {
          if (typeof iter !== 'function') throw new TypeErrorCtor('Query pairs must be iterable');
          const it = call(iter, init);
          for (;;) {
            const step = it.next();
            if (step.done) break;
            const pair = step.value;
            if (pair === null || (typeof pair !== 'object' && typeof pair !== 'function')) throw new TypeErrorCtor('Each query pair must be an iterable [name, value] tuple');
            const items = [];
            const pit = call(pair[SymbolIterator], pair);
            for (;;) {
              const s = pit.next();
              if (s.done) break;
              items[items.length] = s.value;
            }
            if (items.length !== 2) throw new TypeErrorCtor('Each query pair must be an iterable [name, value] tuple');
            list[list.length] = [toUSV(items[0]), toUSV(items[1])];
          }
        } else {
          const keys = ReflectOwnKeys(init);
          for (let i = 0; i < keys.length; i++) {
            const key = keys[i];
            if (typeof key !== 'string' || !call(ObjectPrototypePropertyIsEnumerable, init, key)) continue;
            list[list.length] = [toUSV(key), toUSV(init[key])];
          }
        }
      } else {
        list = parseForm(toUSV(init));
      }
      call(WeakMapPrototypeSet, paramsState, this, { __proto__: null, list, onChange: null });
    }
    get size() { return paramsOf(this).list.length; }
    append(name, value) {
      const state = paramsOf(this);
      state.list[state.list.length] = [toUSV(name), toUSV(value)];
      paramsChanged(state);
    }
    delete(name, value = undefined) {
      const state = paramsOf(this);
      const n = toUSV(name);
      const v = value === undefined ? undefined : toUSV(value);
      const kept = [];
      for (let i = 0; i < state.list.length; i++) {
        const p = state.list[i];
        if (p[0] === n && (v === undefined || p[1] === v)) continue;
        kept[kept.length] = p;
      }
      state.list = kept;
      paramsChanged(state);
    }
    get(name) {
      const list = paramsOf(this).list;
      const n = toUSV(name);
      for (let i = 0; i < list.length; i++) if (list[i][0] === n) return list[i][1];
      return null;
    }
    getAll(name) {
      const list = paramsOf(this).list;
      const n = toUSV(name);
      const out = [];
      for (let i = 0; i < list.length; i++) if (list[i][0] === n) out[out.length] = list[i][1];
      return out;
    }
    has(name, value = undefined) {
      const list = paramsOf(this).list;
      const n = toUSV(name);
      const v = value === undefined ? undefined : toUSV(value);
      for (let i = 0; i < list.length; i++) if (list[i][0] === n && (v === undefined || list[i][1] === v)) return true;
      return false;
    }
    set(name, value) {
      const state = paramsOf(this);
      const n = toUSV(name);
      const v = toUSV(value);
      const out = [];
      let placed = false;
      for (let i = 0; i < state.list.length; i++) {
        const p = state.list[i];
        if (p[0] !== n) { out[out.length] = p; continue; }
        if (!placed) { out[out.length] = [n, v]; placed = true; }
      }
      if (!placed) out[out.length] = [n, v];
      state.list = out;
      paramsChanged(state);
    }
    sort() {
      const state = paramsOf(this);
      const list = state.list;
      for (let i = 1; i < list.length; i++) {
        const p = list[i];
        let j = i - 1;
        while (j >= 0 && list[j][0] > p[0]) { list[j + 1] = list[j]; j--; }
        list[j + 1] = p;
      }
      paramsChanged(state);
    }
    forEach(callback, thisArg = undefined) {
      if (typeof callback !== 'function') throw new TypeErrorCtor('The "callback" argument must be a function');
      const list = paramsOf(this).list;
      for (let i = 0; i < list.length; i++) call(callback, thisArg, list[i][1], list[i][0], this);
    }
    *entries() { const list = paramsOf(this).list; for (let i = 0; i < list.length; i++) yield [list[i][0], list[i][1]]; }
    *keys() { const list = paramsOf(this).list; for (let i = 0; i < list.length; i++) yield list[i][0]; }
    *values() { const list = paramsOf(this).list; for (let i = 0; i < list.length; i++) yield list[i][1]; }
    toString() { return serializeForm(paramsOf(this).list); }
  }
  defineHidden(URLSearchParams.prototype, SymbolIterator, URLSearchParams.prototype.entries);
  defineHidden(URLSearchParams.prototype, SymbolToStringTag, 'URLSearchParams');

  function urlParts(text) {
    if (typeof text !== 'string' || text === '') return null;
    const p = JSONParse(text);
    return p;
  }
  function invalidUrl(input) {
    const err = new TypeErrorCtor('Invalid URL');
    defineHidden(err, 'code', 'ERR_INVALID_URL');
    defineHidden(err, 'input', input);
    return err;
  }
  class URL {
    #p;
    #params = null;
    constructor(url, base = undefined) {
      if (arguments.length === 0) throw new TypeErrorCtor('The "url" argument must be specified');
      const input = toUSV(url);
      const p = urlParts(bridge(hUrl, 'parse', input, base === undefined ? undefined : toUSV(base)));
      if (p === null) throw invalidUrl(input);
      this.#p = p;
    }
    static canParse(url, base = undefined) {
      return urlParts(bridge(hUrl, 'parse', toUSV(url), base === undefined ? undefined : toUSV(base))) !== null;
    }
    #set(part, value) {
      const p = urlParts(bridge(hUrl, 'set', this.#p.href, part, toUSV(value)));
      if (p !== null) this.#p = p;
    }
    #syncParams() {
      if (this.#params !== null) paramsOf(this.#params).list = parseForm(this.#p.search);
    }
    get href() { return this.#p.href; }
    set href(value) {
      const input = toUSV(value);
      const p = urlParts(bridge(hUrl, 'parse', input, undefined));
      if (p === null) throw invalidUrl(input);
      this.#p = p;
      this.#syncParams();
    }
    get origin() { return this.#p.origin; }
    get protocol() { return this.#p.protocol; }
    set protocol(v) { this.#set('protocol', v); }
    get username() { return this.#p.username; }
    set username(v) { this.#set('username', v); }
    get password() { return this.#p.password; }
    set password(v) { this.#set('password', v); }
    get host() { return this.#p.host; }
    set host(v) { this.#set('host', v); }
    get hostname() { return this.#p.hostname; }
    set hostname(v) { this.#set('hostname', v); }
    get port() { return this.#p.port; }
    set port(v) { this.#set('port', v); }
    get pathname() { return this.#p.pathname; }
    set pathname(v) { this.#set('pathname', v); }
    get search() { return this.#p.search; }
    set search(v) { this.#set('search', v); this.#syncParams(); }
    get hash() { return this.#p.hash; }
    set hash(v) { this.#set('hash', v); }
    get searchParams() {
      if (this.#params === null) {
        const sp = new URLSearchParams(this.#p.search);
        paramsOf(sp).onChange = (query) => { this.#set('search', query); };
        this.#params = sp;
      }
      return this.#params;
    }
    toString() { return this.#p.href; }
    toJSON() { return this.#p.href; }
  }
  defineHidden(URL.prototype, SymbolToStringTag, 'URL');

  // ---- code generation and the host's names are refused with a policy violation ----
  function denyFunctionConstructor(label) {
    const deny = function Function() {
      throw violation(`${label} is not allowed in a codelet: code generation from strings is disabled`);
    };
    return deny;
  }
  function replaceConstructor(proto, label) {
    const deny = denyFunctionConstructor(label);
    ObjectDefineProperty(deny, 'prototype', desc(proto, false, false, false));
    ObjectDefineProperty(proto, 'constructor', desc(deny, true, false, true));
    return deny;
  }
  const FunctionDeny = replaceConstructor(FunctionPrototype, 'the Function constructor');
  replaceConstructor(AsyncFunctionPrototype, 'the AsyncFunction constructor');
  replaceConstructor(GeneratorFunctionPrototype, 'the GeneratorFunction constructor');
  replaceConstructor(AsyncGeneratorFunctionPrototype, 'the AsyncGeneratorFunction constructor');
  const evalDeny = {
    eval() {
      throw violation('eval() is not allowed in a codelet: code generation from strings is disabled');
    },
  }.eval;

  const DENY_REASONS = {
    __proto__: null,
    process: 'a codelet has no access to the host process',
    require: 'a codelet cannot load modules',
    module: 'a codelet cannot load modules',
    exports: 'a codelet cannot load modules',
    __filename: 'a codelet has no file system',
    __dirname: 'a codelet has no file system',
    Buffer: 'use Uint8Array, TextEncoder and TextDecoder',
    global: 'use globalThis',
    fetch: 'a codelet has no network',
    Request: 'a codelet has no network',
    Response: 'a codelet has no network',
    Headers: 'a codelet has no network',
    FormData: 'a codelet has no network',
    WebSocket: 'a codelet has no network',
    XMLHttpRequest: 'a codelet has no network',
    EventSource: 'a codelet has no network',
    setImmediate: 'use setTimeout(callback, 0)',
    clearImmediate: 'use clearTimeout()',
    WebAssembly: 'code generation is disabled',
    Worker: 'a codelet cannot start threads',
    SharedWorker: 'a codelet cannot start threads',
  };
  function denyName(name) {
    const reason = DENY_REASONS[name];
    const message = `'${name}' is not available in a codelet${reason === undefined ? '' : ': ' + reason}`;
    const accessors = {
      get() { throw violation(message); },
      set(value) { throw violation(message); },
    };
    ObjectDefineProperty(G, name, { __proto__: null, get: accessors.get, set: accessors.set, enumerable: false, configurable: false });
  }

  // ---- the return value, as JSON text (the rules of docs/functions.md, "Results") ----
  let resultLength = 0;
  function notJson(what, path) {
    const p = path.length > 200 ? strSlice(path, 0, 200) + '…' : path;
    const err = new TypeErrorCtor(`the return value cannot be turned into JSON: ${what} at ${p}`);
    defineHidden(err, 'name', 'SerializationError');
    return err;
  }
  function bytesJson(bytes) {
    const state = { __proto__: null, ignoreBOM: true, need: 0, seen: 0, cp: 0, lower: 0x80, upper: 0xbf, bomDone: true };
    try {
      return JSONStringify(utf8Decode(bytes, state, true, true));
    } catch {
      let bin = '';
      const n = call(TypedArrayLengthGetter, bytes);
      for (let i = 0; i < n; i += 4096) {
        bin += ReflectApply(StringFromCharCode, null, call(TypedArrayPrototype.subarray, bytes, i, MathMin(i + 4096, n)));
      }
      return '{"$base64":' + JSONStringify(btoa(bin)) + '}';
    }
  }
  // Counts the JSON text of the leaves and keys once each (containers only add their punctuation):
  // UTF-16 units, never more than the text's UTF-8 bytes, so this only stops what cannot fit.
  function count(text) {
    resultLength += text.length;
    if (resultLength > MAX_RESULT) {
      const err = new RangeErrorCtor(`the return value is too large (over ${MAX_RESULT} bytes of JSON)`);
      defineHidden(err, 'name', 'SerializationError');
      throw err;
    }
    return text;
  }
  // A string as JSON text; a lone surrogate has no UTF-8 form, so it is no JSON the host reads.
  function stringJson(s, what, path) {
    if (!call(StringPrototypeIsWellFormed, s)) throw notJson(what, path);
    return count(JSONStringify(s));
  }
  function serialize(v, key, path, stack, depth) {
    if (v !== null && (typeof v === 'object' || typeof v === 'bigint')) {
      const toJSON = v.toJSON;
      if (typeof toJSON === 'function') v = call(toJSON, v, key);
    }
    switch (typeof v) {
      case 'string': return stringJson(v, 'a lone surrogate', path);
      case 'number':
        if (v !== v) throw notJson('NaN', path);
        if (v === Infinity || v === -Infinity) throw notJson(v > 0 ? 'Infinity' : '-Infinity', path);
        return count(JSONStringify(v));
      case 'boolean': return count(v ? 'true' : 'false');
      case 'undefined': return undefined;
      case 'bigint': throw notJson('a BigInt', path);
      case 'symbol': throw notJson('a symbol', path);
      case 'function': throw notJson(`a function (${functionTag(v)})`, path);
      default:
        if (v === null) return count('null');
        return serializeObject(v, path, stack, depth);
    }
  }
  function serializeObject(v, path, stack, depth) {
    if (depth >= 512) throw notJson('nesting deeper than 512 levels', path);
    for (let i = 0; i < depth; i++) if (stack[i] === v) throw notJson('a circular reference', path);
    const boxed = boxedPrimitive(v);
    if (boxed !== null) return serialize(boxed.value, '', path, stack, depth);
    const taName = typedArrayName(v);
    if (taName === 'Uint8Array' || taName === 'Uint8ClampedArray') return count(bytesJson(v));
    if (isArrayBuffer(v) || isSharedArrayBuffer(v)) return count(bytesJson(new Uint8ArrayCtor(v)));
    if (isDataView(v)) return count(bytesJson(bytesOf(v, 'a DataView')));
    stack[depth] = v;
    let out;
    const items = (values, n) => {
      let s = count('[');
      for (let i = 0; i < n; i++) {
        const t = serialize(values(i), StringCtor(i), `${path}[${i}]`, stack, depth + 1);
        s += (i === 0 ? '' : count(',')) + (t === undefined ? count('null') : t);
      }
      return s + count(']');
    };
    if (ArrayIsArray(v)) {
      out = items((i) => v[i], v.length);
    } else if (taName !== undefined) {
      out = items((i) => v[i], call(TypedArrayLengthGetter, v));
    } else if (isMap(v)) {
      const entries = newList();
      call(MapPrototypeForEach, v, (val, k) => { listPush(entries, k); listPush(entries, val); });
      let s = count('{');
      let first = true;
      for (let i = 0; i < entries.length; i += 2) {
        const k = typeof entries[i] === 'string' ? entries[i] : typeof entries[i] === 'symbol' ? call(SymbolPrototypeToString, entries[i]) : StringCtor(entries[i]);
        const where = `${path}.get(${quote(k)})`;
        const t = serialize(entries[i + 1], k, where, stack, depth + 1);
        if (t === undefined) continue;
        s += (first ? '' : count(',')) + stringJson(k, 'a lone surrogate in a key', where) + count(':') + t;
        first = false;
      }
      out = s + count('}');
    } else if (isSet(v)) {
      const values = newList();
      call(SetPrototypeForEach, v, (val) => { listPush(values, val); });
      out = items((i) => values[i], values.length);
    } else if (typeof v[SymbolIterator] === 'function' && !isErrorLike(v) && ObjectGetPrototypeOf(v) !== ObjectPrototype) {
      const values = newList();
      const it = call(v[SymbolIterator], v);
      for (;;) {
        const step = it.next();
        if (step.done) break;
        listPush(values, step.value);
      }
      out = items((i) => values[i], values.length);
    } else {
      const keys = ObjectKeys(v);
      let s = count('{');
      let first = true;
      for (let i = 0; i < keys.length; i++) {
        const k = keys[i];
        const where = path + (keyText(k) === k ? '.' + k : `[${quote(k)}]`);
        const t = serialize(v[k], k, where, stack, depth + 1);
        if (t === undefined) continue;
        s += (first ? '' : count(',')) + stringJson(k, 'a lone surrogate in a key', where) + count(':') + t;
        first = false;
      }
      out = s + count('}');
    }
    stack[depth] = undefined;
    return out;
  }
  function toJsonText(value) {
    resultLength = 0;
    const text = serialize(value, '', 'value', ObjectCreate(null), 0);
    return text === undefined ? 'null' : text;
  }

  // ---- errors the codelet did not catch ----
  function describe(err) {
    let name = '';
    let message = '';
    let stack = '';
    if ((typeof err === 'object' && err !== null) || typeof err === 'function') {
      try { const n = err.name; if (typeof n === 'string') name = n; } catch { /* none */ }
      try { const m = err.message; if (typeof m === 'string') message = m; } catch { /* none */ }
      try { const s = err.stack; if (typeof s === 'string') stack = s; } catch { /* none */ }
      if (!isErrorLike(err) && name === '' && message === '') {
        let text = '';
        try { text = inspect(err, 0, newInspectState(), true); } catch { text = '[an object]'; }
        return ['Uncaught ' + text, ''];
      }
      if (err instanceof EvalErrorCtor && (strIndexOf(message, 'Code generation from strings disallowed') !== -1 || strIndexOf(message, 'code generation disallowed') !== -1)) {
        bridge(hViolation, 'code generation from strings is not allowed in a codelet (eval, Function, WebAssembly)');
      }
      if (name === '') name = 'Error';
      return [message === '' ? name : `${name}: ${message}`, stack];
    }
    let text;
    try { text = inspect(err, 0, newInspectState(), true); } catch { text = '[a value]'; }
    return ['Uncaught ' + text, ''];
  }
  function fail(err) {
    let d;
    try { d = describe(err); } catch { d = ['Uncaught error', '']; }
    const message = typeof d[0] === 'string' ? d[0] : 'Uncaught error';
    const stack = typeof d[1] === 'string' ? d[1] : '';
    bridge(hDone, 'error', message, stack);
  }
  uncaught = fail;

  // ---- running main ----
  async function start(ns, exportName, inputText) {
    let fn;
    if (!ReflectHas(ns, exportName)) {
      const names = ReflectOwnKeys(ns);
      let list = '';
      for (let i = 0; i < names.length; i++) if (typeof names[i] === 'string') list += (list === '' ? '' : ', ') + names[i];
      bridge(hDone, 'missing', `the codelet has no export named '${exportName}'` + (list === '' ? ' (it exports nothing)' : ` (its exports: ${list})`));
      return;
    }
    try {
      fn = ns[exportName];
    } catch (err) {
      fail(err);
      return;
    }
    if (typeof fn !== 'function') {
      bridge(hDone, 'missing', `the codelet's export '${exportName}' is not a function (it is ${fn === null ? 'null' : typeof fn})`);
      return;
    }
    const input = JSONParse(inputText);
    let value;
    try {
      value = await ReflectApply(fn, undefined, [input, { logger }]);
    } catch (err) {
      fail(err);
      return;
    }
    let text;
    try {
      text = toJsonText(value);
    } catch (err) {
      let message = 'the return value cannot be turned into JSON';
      try {
        const d = describe(err);
        if (typeof d[0] === 'string') message = d[0];
      } catch { /* keep the generic message */ }
      bridge(hDone, 'serialize', message);
      return;
    }
    bridge(hDone, 'ok', text);
  }

  // The harness stashes an operation, then evaluates `<key>.run()` with a timeout, so that any
  // codelet code it leads to (and the microtasks after it) runs under the vm's time limit.
  let op = null;
  let opA;
  let opB;
  let opC;
  function run() {
    const o = op;
    const a = opA;
    const b = opB;
    const c = opC;
    op = null; opA = undefined; opB = undefined; opC = undefined;
    try {
      if (o === 'start') start(a, b, c);
      else if (o === 'fire') fireTimer(a);
      else if (o === 'fail') fail(a);
      else if (o === 'finalize') runFinalizers();
    } catch (err) {
      try { fail(err); } catch { /* the harness's deadline still ends the call */ }
    }
  }

  function deepFreeze(v) {
    if (typeof v !== 'object' || v === null || ObjectIsFrozen(v)) return v;
    ObjectFreeze(v);
    const keys = ObjectKeys(v);
    for (let i = 0; i < keys.length; i++) deepFreeze(v[keys[i]]);
    return v;
  }

  function init(log, drop, violate, timer, clearTimer_, done, url, finalize, config) {
    hLog = log; hDrop = drop; hViolation = violate; hTimer = timer; hClearTimer = clearTimer_; hDone = done; hUrl = url;
    hFinalize = finalize;
    const cfg = JSONParse(config);
    LOG_LIMIT = cfg.logLimit; MAX_TIMERS = cfg.maxTimers; MAX_RESULT = cfg.maxResult;
    // What the codelet may use besides the ES builtins; everything else of the host is refused.
    const allowed = {
      __proto__: null, console: consoleObject, logger, setTimeout, clearTimeout, setInterval, clearInterval,
      queueMicrotask, structuredClone, TextEncoder, TextDecoder, URL, URLSearchParams, atob, btoa,
      eval: evalDeny, Function: FunctionDeny, FinalizationRegistry,
    };
    const allowedNames = ObjectKeys(allowed);
    for (let i = 0; i < allowedNames.length; i++) {
      const name = allowedNames[i];
      ObjectDefineProperty(G, name, desc(allowed[name], true, false, true));
    }
    const denied = cfg.denied;
    const reasons = ObjectKeys(DENY_REASONS);
    for (let i = 0; i < reasons.length; i++) denied[denied.length] = reasons[i];
    const seenNames = ObjectCreate(null);
    for (let i = 0; i < denied.length; i++) {
      const name = denied[i];
      if (typeof name !== 'string' || seenNames[name] || allowed[name] !== undefined) continue;
      seenNames[name] = true;
      // the ES builtins stay; WebAssembly is the one global of a fresh context a codelet may not have
      if (name === 'WebAssembly' || !ReflectHas(G, name)) denyName(name);
    }
  }
  function installGlobals(text) {
    const globals = deepFreeze(JSONParse(text));
    const keys = ObjectKeys(globals);
    for (let i = 0; i < keys.length; i++) {
      if (ReflectHas(G, keys[i]) || keys[i] === '__proto__') return `the global '${keys[i]}' would replace a name every codelet has`;
    }
    for (let i = 0; i < keys.length; i++) ObjectDefineProperty(G, keys[i], desc(globals[keys[i]], false, true, false));
    return '';
  }

  return ObjectFreeze({
    __proto__: null,
    init,
    installGlobals,
    run,
    stash(o, a, b, c) { op = o; opA = a; opB = b; opC = c; },
    policyError,
  });
}

// ---------------------------------------------------------------------------------------------
// One call.

let current = null; // the call being served
let pendingFrame = null; // a frame read after a result, served once the stack has unwound
const RUNTIME_SOURCE = '(' + codeletRuntime.toString() + ')()';

// A call's outcome is decided once (`call.outcome`) and its frame written once, never inside a
// timed run: vm's time limit can stop any code that runs there, the harness's own included, and
// a frame cut short or never written would lose the call. Decided during a run, the run is ended
// at once (a SIGINT to the harness itself, which the run's `breakOnSigint` turns into an
// exception) and the frame is written when runInContext returns.
function finish(call, res) {
  if (call.outcome !== null) return;
  call.outcome = res;
  if (call.depth > 0) {
    try {
      process.kill(process.pid, 'SIGINT');
    } catch { /* the run still ends by its time limit */ }
    return;
  }
  deliver(call);
}

function deliver(call) {
  if (call.written || call.outcome === null || call.depth > 0) return;
  call.written = true;
  clearTimeout(call.deadlineTimer);
  clearImmediate(call.finalizeTimer);
  for (const t of call.timers.values()) clearTimeout(t);
  call.timers.clear();
  let res = call.outcome;
  if (call.violation !== null) res = { code: 'POLICY_VIOLATION', message: call.violation };
  if (res.ok) {
    const a = res.valueJson;
    let problem = null;
    try {
      hostParse(a); // never send a frame that is not JSON
      const bytes = Buffer.byteLength(a, 'utf8');
      if (bytes + 256 > call.maxResultBytes) {
        problem = `SerializationError: the return value is too large (${bytes} bytes of JSON, over ${call.maxResultBytes} bytes)`;
      }
    } catch {
      problem = 'the return value could not be turned into JSON';
    }
    if (problem !== null) res = { code: 'RUNTIME_ERROR', message: problem };
  }
  const id = hostStringify(call.id === undefined ? null : call.id);
  let text;
  if (res.ok) {
    text = `{"v":1,"id":${id},"type":"result","ok":true,"value":${res.valueJson},"logsDropped":${call.dropped}}`;
  } else {
    let error = `{"code":${hostStringify(res.code)},"message":${hostStringify(errorText(res.message, call.file) || res.code)}`;
    const stack = errorText(res.stack, call.file);
    if (stack !== '') error += `,"stack":${hostStringify(stack)}`;
    text = `{"v":1,"id":${id},"type":"result","ok":false,"error":${error}},"logsDropped":${call.dropped}}`;
  }
  writeFrame(text);
  if (current === call) current = null;
  // Kiln shuts its side down after the call frame: seeing EOF now lets the harness exit even if
  // the codelet left work behind in its context (say, a busy microtask queue).
  const next = readFrame();
  if (next === null) process.exit(0);
  pendingFrame = next;
  setImmediate(serve);
}

// An error's message or stack as it leaves: a bounded prefix (cut at a line or word, so no path
// is left half-sanitized), no harness paths, lone surrogates as U+FFFD, at most 64 KiB of UTF-8.
function errorText(text, codeFile) {
  if (typeof text !== 'string' || text === '') return '';
  let t = text;
  if (t.length > 4 * MAX_ERROR_BYTES) {
    t = t.slice(0, 4 * MAX_ERROR_BYTES);
    const cut = Math.max(t.lastIndexOf('\n'), t.lastIndexOf(' '));
    if (cut > t.length - 4096) t = t.slice(0, cut);
    t += TRUNCATED;
  }
  return truncateUtf8(sanitize(t, codeFile).toWellFormed(), MAX_ERROR_BYTES);
}

function finishTimeout(call) {
  finish(call, { code: 'TIMEOUT', message: `the codelet did not finish within ${call.timeoutMs} ms` });
}

// The vm's timeout error is made in the context's realm: recognise it without running its code.
function isTimeout(call, e) {
  if (now() < call.deadline - 50) return false;
  return errorCode(e) === 'ERR_SCRIPT_EXECUTION_TIMEOUT';
}

function errorCode(e) {
  if (typeof e !== 'object' || e === null || types.isProxy(e)) return undefined;
  const d = Object.getOwnPropertyDescriptor(e, 'code');
  return d === undefined ? undefined : d.value;
}

// What a timed run (or the module's evaluation) threw, once it is over.
function afterRun(call, e) {
  if (call.outcome !== null) return;
  if (isTimeout(call, e)) finishTimeout(call);
  else finish(call, { code: 'RUNTIME_ERROR', message: 'internal harness error: ' + describeHostError(e) });
}

function runTimed(call, op, a, b, c) {
  if (call.outcome !== null) return;
  const remaining = call.deadline - now();
  if (remaining <= 0) { finishTimeout(call); return; }
  call.api.stash(op, a, b, c);
  call.depth++;
  let failure = null;
  try {
    call.runScript.runInContext(call.context, { timeout: Math.max(1, Math.ceil(remaining)), breakOnSigint: true });
  } catch (e) {
    // run() catches everything the codelet throws, so what ends a run here is the vm's timeout
    // or the interruption of a run whose outcome is decided
    failure = { e };
  } finally {
    call.depth--;
  }
  if (failure !== null) afterRun(call, failure.e);
  deliver(call);
}

// Host callbacks: they take primitives, check them, never throw, and return primitives only.
function hostCallbacks(call) {
  const log = (level, message) => {
    try {
      if (call.outcome !== null) return false;
      if (call.sent >= MAX_LOGS) { call.dropped++; return false; }
      if (typeof level !== 'string' || !['info', 'warn', 'error', 'debug', 'log'].includes(level)) return true;
      const text = truncateUtf8(sanitize(typeof message === 'string' ? message : '', call.file).toWellFormed(), MAX_LOG_BYTES);
      call.sent++;
      writeFrame(`{"v":1,"id":${hostStringify(call.id === undefined ? null : call.id)},"type":"log","level":"${level}","message":${hostStringify(text)},"timestamp":"${new Date().toISOString()}"}`);
      return call.sent < MAX_LOGS;
    } catch {
      return false;
    }
  };
  const drop = () => {
    if (call.outcome === null) call.dropped++;
  };
  // A violation decides the call at once, whatever the codelet does with the error it gets.
  const violate = (message) => {
    if (call.outcome !== null || typeof message !== 'string') return;
    call.violation = message;
    finish(call, { code: 'POLICY_VIOLATION', message });
  };
  const timer = (id, ms, repeat) => {
    try {
      if (call.outcome !== null || typeof id !== 'number' || typeof ms !== 'number' || call.timers.has(id)) return false;
      const fire = () => {
        if (!repeat) call.timers.delete(id);
        runTimed(call, 'fire', id);
      };
      call.timers.set(id, repeat === true ? setInterval(fire, ms) : setTimeout(fire, ms));
      return true;
    } catch {
      return false;
    }
  };
  const clear = (id) => {
    const t = call.timers.get(id);
    if (t !== undefined) {
      clearTimeout(t);
      call.timers.delete(id);
    }
  };
  // Only records the outcome (checked and written by deliver, after the run).
  const done = (kind, a, b) => {
    try {
      if (call.outcome !== null) return;
      if (kind === 'ok' && typeof a === 'string') {
        finish(call, { ok: true, valueJson: a });
      } else if (kind === 'error') {
        finish(call, { code: 'RUNTIME_ERROR', message: typeof a === 'string' ? a : 'Uncaught error', stack: typeof b === 'string' ? b : '' });
      } else if (kind === 'serialize' || kind === 'missing') {
        finish(call, { code: 'RUNTIME_ERROR', message: typeof a === 'string' ? a : 'runtime error' });
      }
    } catch {
      // (a stack overflow on the way in, say): still one answer
      if (call.outcome === null) call.outcome = { code: 'RUNTIME_ERROR', message: 'internal harness error' };
    }
  };
  const url = (op, a, b, c) => {
    try {
      let u;
      if (op === 'parse' && typeof a === 'string' && (b === undefined || typeof b === 'string')) {
        u = b === undefined ? new URL(a) : new URL(a, b);
      } else if (op === 'set' && typeof a === 'string' && typeof b === 'string' && typeof c === 'string'
        && ['protocol', 'username', 'password', 'host', 'hostname', 'port', 'pathname', 'search', 'hash'].includes(b)) {
        u = new URL(a);
        u[b] = c;
      } else {
        return '';
      }
      return hostStringify({
        href: u.href, origin: u.origin, protocol: u.protocol, username: u.username, password: u.password,
        host: u.host, hostname: u.hostname, port: u.port, pathname: u.pathname, search: u.search, hash: u.hash,
      });
    } catch {
      return '';
    }
  };
  // A FinalizationRegistry callback is due: it is called in a timed run of its own.
  const finalize = () => {
    try {
      if (call.outcome !== null || call.finalizeTimer !== null) return;
      call.finalizeTimer = setImmediate(() => {
        call.finalizeTimer = null;
        runTimed(call, 'finalize');
      });
    } catch { /* the deadline still ends the call */ }
  };
  return [log, drop, violate, timer, clear, done, url, finalize];
}

// A module's syntax error carries no position through vm's API: find the first line whose prefix
// of the code fails with the same message (a parser reports the first error it meets).
function syntaxErrorLine(code, message, context) {
  const starts = [0];
  for (let i = 0; i < code.length; i++) {
    const c = code.charCodeAt(i);
    if (c === 0x0a || c === 0x2028 || c === 0x2029 || (c === 0x0d && code.charCodeAt(i + 1) !== 0x0a)) starts.push(i + 1);
  }
  const lines = starts.length;
  if (/end of input/i.test(message)) return lines;
  const failsSame = (k) => {
    const end = k >= lines ? code.length : starts[k];
    try {
      new vm.SourceTextModule(code.slice(0, end), { context, identifier: CODELET_ID });
      return false;
    } catch (e) {
      return e !== null && typeof e === 'object' && e.message === message;
    }
  };
  let lo = 1;
  let hi = lines;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (failsSame(mid)) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

function lineText(code, line) {
  const text = code.split(/\r\n|[\n\r\u2028\u2029]/)[line - 1];
  if (text === undefined) return '';
  const t = text.trim();
  return t.length > 120 ? t.slice(0, 120) + '…' : t;
}

async function runCodelet(frame) {
  const timeoutMs = typeof frame.timeoutMs === 'number' && Number.isFinite(frame.timeoutMs) && frame.timeoutMs > 0
    ? Math.min(Math.ceil(frame.timeoutMs), 2147483647) : DEFAULT_TIMEOUT_MS;
  const call = {
    id: frame.id,
    file: typeof frame.file === 'string' ? frame.file : '',
    timeoutMs,
    maxResultBytes: typeof frame.maxResultBytes === 'number' && Number.isFinite(frame.maxResultBytes) && frame.maxResultBytes >= 1024
      ? Math.floor(frame.maxResultBytes) : DEFAULT_MAX_RESULT_BYTES,
    deadline: now() + timeoutMs,
    outcome: null, // what the result frame says, decided once
    written: false, // the result frame has been written
    depth: 0, // > 0 while the codelet's code may run (a timed run, the module's evaluation)
    sent: 0,
    dropped: 0,
    violation: null,
    timers: new Map(),
    deadlineTimer: null,
    finalizeTimer: null,
    context: null,
    api: null,
    runScript: null,
  };
  current = call;
  call.deadlineTimer = setTimeout(() => finishTimeout(call), timeoutMs);

  if (typeof vm.SourceTextModule !== 'function') {
    finish(call, { code: 'RUNTIME_ERROR', message: 'the harness was started without --experimental-vm-modules' });
    return;
  }
  let code;
  try {
    code = fs.readFileSync(call.file, 'utf8');
  } catch {
    finish(call, { code: 'RUNTIME_ERROR', message: 'the codelet source could not be read' });
    return;
  }
  const exportName = typeof frame.exportName === 'string' && frame.exportName !== '' ? frame.exportName : 'main';
  const input = frame.input === undefined ? null : frame.input;
  const globals = frame.globals === undefined ? null : frame.globals;
  if (globals !== null && (typeof globals !== 'object' || Array.isArray(globals))) {
    finish(call, { code: 'RUNTIME_ERROR', message: 'the globals must be a JSON object' });
    return;
  }

  // The context: a null-prototype sandbox (so the global's lookups never reach this realm's
  // Object.prototype), no code generation, and its own microtask queue drained inside each timed run.
  const context = vm.createContext(Object.create(null), {
    name: 'codelet',
    codeGeneration: { strings: false, wasm: false },
    microtaskMode: 'afterEvaluate',
  });
  call.context = context;
  const key = '__kiln_' + randomBytes(16).toString('hex');
  // A global lexical binding: other scripts of the context see it, the codelet cannot list it.
  const api = new vm.Script(`'use strict'; const ${key} = ${RUNTIME_SOURCE}; ${key}`, { filename: RUNTIME_ID })
    .runInContext(context);
  call.api = api;
  call.runScript = new vm.Script(`${key}.run()`, { filename: RUNTIME_ID });
  api.init(...hostCallbacks(call), hostStringify({
    logLimit: MAX_LOG_BYTES, maxTimers: MAX_TIMERS, maxResult: call.maxResultBytes, denied: NODE_GLOBALS,
  }));
  if (globals !== null) {
    const refused = api.installGlobals(hostStringify(globals));
    if (refused !== '') {
      finish(call, { code: 'POLICY_VIOLATION', message: refused });
      return;
    }
  }

  let module;
  try {
    module = new vm.SourceTextModule(code, {
      context,
      identifier: CODELET_ID,
      importModuleDynamically(specifier) {
        const message = `import(${hostStringify(String(specifier))}) is not allowed in a codelet: a codelet cannot load modules`;
        if (call.outcome === null) {
          call.violation = message;
          finish(call, { code: 'POLICY_VIOLATION', message });
        }
        throw api.policyError(message);
      },
    });
  } catch (e) {
    let name = 'SyntaxError';
    let message = 'the codelet does not parse';
    try {
      if (typeof e.name === 'string') name = e.name;
      if (typeof e.message === 'string') message = e.message;
    } catch { /* keep the defaults */ }
    const line = syntaxErrorLine(code, message, context);
    const text = lineText(code, line);
    finish(call, {
      code: 'SYNTAX_ERROR',
      message: `${name}: ${message} (line ${line})`,
      stack: `${CODELET_ID}:${line}` + (text === '' ? '' : `\n    ${text}`),
    });
    return;
  }
  const imports = module.dependencySpecifiers;
  if (imports.length > 0) {
    finish(call, { code: 'POLICY_VIOLATION', message: `import of ${hostStringify(String(imports[0]))} is not allowed in a codelet: a codelet cannot load modules` });
    return;
  }
  try {
    await module.link(() => { throw new Error('a codelet cannot load modules'); });
  } catch {
    finish(call, { code: 'POLICY_VIOLATION', message: 'a codelet cannot load modules' });
    return;
  }
  if (call.outcome !== null) return;

  const remaining = call.deadline - now();
  if (remaining <= 0) { finishTimeout(call); return; }
  // With its own microtask queue, the module's evaluation promise settles when the context's queue
  // is next drained: by the no-op run just below, or by a timer's run for a top-level await.
  let evaluation;
  call.depth++;
  try {
    evaluation = module.evaluate({ timeout: Math.max(1, Math.ceil(remaining)), breakOnSigint: true });
  } catch (e) {
    evaluation = Promise.reject(e);
  } finally {
    call.depth--;
  }
  evaluation.then(() => {
    if (call.outcome !== null) return;
    runTimed(call, 'start', module.namespace, exportName, hostStringify(input));
  }, (e) => {
    if (call.outcome !== null) return;
    if (isTimeout(call, e)) finishTimeout(call);
    else runTimed(call, 'fail', e);
  });
  if (call.outcome !== null) {
    deliver(call);
    return;
  }
  runTimed(call, 'noop');
}

function serve() {
  for (;;) {
    let frame = pendingFrame;
    pendingFrame = null;
    if (frame === null) frame = readFrame();
    if (frame === null) process.exit(0);
    if (frame === null || typeof frame !== 'object' || Array.isArray(frame) || typeof frame.id !== 'string') {
      protocolError('a call frame without an id');
    }
    if (frame.type === 'codelet' && frame.v === 1) {
      runCodelet(frame).catch((e) => {
        if (current !== null) finish(current, { code: 'RUNTIME_ERROR', message: 'internal harness error: ' + describeHostError(e) });
      });
      return;
    }
    const message = frame.v !== 1 ? 'unsupported protocol version' : `unsupported call type ${hostStringify(String(frame.type))}`;
    writeFrame(`{"v":1,"id":${hostStringify(frame.id)},"type":"result","ok":false,"error":{"code":"RUNTIME_ERROR","message":${hostStringify(message)}},"logsDropped":0}`);
  }
}

serve();
