// Kiln function harness for JavaScript (protocol kiln-call/1, see docs/functions.md).
//
// Run as `node /tmp/.kiln/harness.mjs` with a connected unix socket as fd 3. It reads call
// frames (4-byte big-endian length + UTF-8 JSON) from fd 3 until end-of-file and answers each with
// exactly one result frame carrying the call's id; everything the user's code prints goes to its
// own stdout and stderr.
//
// fd 3 and child processes: Node has no API to dup or close a raw descriptor, so the harness keeps
// using fd 3 itself. Node marks the descriptors it inherits close-on-exec when it starts, so
// programs the user's code starts through child_process do not inherit fd 3 unless the code
// passes it on explicitly (a `stdio` entry naming 3). The harness
// cannot stop that, nor the code writing into fd 3 directly: that only corrupts the channel, which
// Kiln reports as a crash.
//
// The user's code is written verbatim to the call frame's `file` (`/tmp/.kiln/user_code.js`).
// Code with `import`/`export` statements (or `import.meta`, or top-level `await`) is an ES module:
// it is copied to a `.mjs` beside it, with an `export { … }` appended for its top-level
// declarations that are not exported, and imported. Any other code is CommonJS or a plain script:
// it runs in a wrapper that provides require, module, exports, __filename and __dirname and that
// hands back its top-level bindings, so `module.exports = …`, `exports.f = …` and a bare
// top-level `function f` / `const f = (…) => …` are all callable.

import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import vm from 'node:vm';
import { spawnSync } from 'node:child_process';
import { createRequire, Module } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { types } from 'node:util';

// What the harness uses once the user's code has run, captured before it loads: the code shares
// this realm and may replace or patch any built-in (JSON.stringify, Object.prototype.toJSON, a
// setter on Object.prototype, Buffer, TextDecoder, process.exit, …) without changing a frame.
const JSONStringify = JSON.stringify;
const JSONParse = JSON.parse;
const ObjectKeys = Object.keys;
const ObjectGetPrototypeOf = Object.getPrototypeOf;
const ObjectPrototypeToString = Object.prototype.toString;
const ObjectHasOwn = Object.hasOwn;
const ObjectDefineProperty = Object.defineProperty;
const ObjectSetPrototypeOf = Object.setPrototypeOf;
const ReflectApply = Reflect.apply;
const ReflectConstruct = Reflect.construct;
const ArrayIsArray = Array.isArray;
const NumberCtor = Number;
const MathMax = Math.max;
const MathFloor = Math.floor;
const NumberIsFinite = Number.isFinite;
const NumberPrototypeValueOf = Number.prototype.valueOf;
const StringCtor = String;
const StringPrototypeValueOf = String.prototype.valueOf;
const BooleanPrototypeValueOf = Boolean.prototype.valueOf;
const BigIntPrototypeValueOf = BigInt.prototype.valueOf;
const SymbolPrototypeToString = Symbol.prototype.toString;
const SymbolPrototypeValueOf = Symbol.prototype.valueOf;
const StringPrototypeIsWellFormed = String.prototype.isWellFormed;
const StringPrototypeToWellFormed = String.prototype.toWellFormed;
const StringPrototypeSlice = String.prototype.slice;
const StringPrototypeIndexOf = String.prototype.indexOf;
const StringPrototypeLastIndexOf = String.prototype.lastIndexOf;
const StringPrototypeIncludes = String.prototype.includes;
const StringPrototypeCharCodeAt = String.prototype.charCodeAt;
const RegExpPrototypeExec = RegExp.prototype.exec;
const SymbolIterator = Symbol.iterator;
const ErrorCtor = Error;
const SyntaxErrorCtor = SyntaxError;
const RangeErrorCtor = RangeError;
const PromiseCtor = Promise;
const PromisePrototypeThen = Promise.prototype.then;
const WeakSetCtor = WeakSet;
const WeakSetPrototypeAdd = WeakSet.prototype.add;
const WeakSetPrototypeHas = WeakSet.prototype.has;
const WeakRefCtor = WeakRef;
const WeakRefPrototypeDeref = WeakRef.prototype.deref;
const MapPrototypeForEach = Map.prototype.forEach;
const SetPrototypeForEach = Set.prototype.forEach;
const SetCtor = Set;
const SetPrototypeAdd = Set.prototype.add;
const SetPrototypeHas = Set.prototype.has;
const SetPrototypeDelete = Set.prototype.delete;
const DatePrototypeGetTime = Date.prototype.getTime;
const DatePrototypeToISOString = Date.prototype.toISOString;
const Uint8ArrayCtor = Uint8Array;
const TypedArrayPrototype = Object.getPrototypeOf(Uint8Array.prototype);
const getter = (proto, name) => Object.getOwnPropertyDescriptor(proto, name).get;
const TypedArrayLength = getter(TypedArrayPrototype, 'length');
const TypedArrayBuffer = getter(TypedArrayPrototype, 'buffer');
const TypedArrayByteOffset = getter(TypedArrayPrototype, 'byteOffset');
const TypedArrayByteLength = getter(TypedArrayPrototype, 'byteLength');
const TypedArrayPrototypeSubarray = TypedArrayPrototype.subarray;
const TypedArrayPrototypeSet = TypedArrayPrototype.set;
const DataViewBuffer = getter(DataView.prototype, 'buffer');
const DataViewByteOffset = getter(DataView.prototype, 'byteOffset');
const DataViewByteLength = getter(DataView.prototype, 'byteLength');
const BufferFrom = Buffer.from;
const BufferConcat = Buffer.concat;
const BufferByteLength = Buffer.byteLength;
const BufferAllocUnsafe = Buffer.allocUnsafe;
const BufferBase64Slice = Buffer.prototype.base64Slice;
const TextDecoderDecode = TextDecoder.prototype.decode;
const bytesDecoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const frameDecoder = new TextDecoder('utf-8', { fatal: true });
const AtomicsWait = Atomics.wait;
const pauseCell = new Int32Array(new SharedArrayBuffer(4));
const hostSetTimeout = setTimeout;
const hostClearTimeout = clearTimeout;
const fsWriteSync = fs.writeSync;
const fsFstatSync = fs.fstatSync;
const reallyExit = typeof process.reallyExit === 'function' ? process.reallyExit : process.exit;
const exitProcess = (code) => ReflectApply(reallyExit, process, [code]);
const { isProxy, isDate, isMap, isSet, isPromise, isRegExp, isNativeError, isBoxedPrimitive, isAnyArrayBuffer,
  isDataView, isTypedArray, isUint8Array, isWeakMap, isWeakSet } = types;
const stdoutStream = process.stdout;
const stderrStream = process.stderr;

const strSlice = (s, a, b) => ReflectApply(StringPrototypeSlice, s, [a, b]);
const strIndexOf = (s, x, from) => ReflectApply(StringPrototypeIndexOf, s, [x, from]);
const strIncludes = (s, x) => ReflectApply(StringPrototypeIncludes, s, [x]);
const wellFormed = (s) => ReflectApply(StringPrototypeToWellFormed, s, []);
const isWellFormed = (s) => ReflectApply(StringPrototypeIsWellFormed, s, []);
const matches = (re, s) => ReflectApply(RegExpPrototypeExec, re, [s]) !== null;
// An own data property, whatever setters the prototypes have.
const define = (obj, key, value) => ObjectDefineProperty(obj, key, { __proto__: null, value, writable: true, enumerable: true, configurable: true });
// A null-prototype list: an index setter on Array.prototype cannot reach it.
const newList = () => ({ __proto__: null, length: 0 });
const listPush = (list, v) => { list[list.length] = v; list.length++; };

// Dynamic import() in CommonJS code needs vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER, which
// Node 20 calls experimental: its warning would land in the user's stderr.
const emitWarning = process.emitWarning;
process.emitWarning = function (warning, ...rest) {
  if (String(warning && warning.message ? warning.message : warning).includes('USE_MAIN_CONTEXT_DEFAULT_LOADER')) return;
  return Reflect.apply(emitWarning, this, [warning, ...rest]);
};

const HARNESS_FILE = fileURLToPath(import.meta.url);
const HARNESS_URL = import.meta.url;
const MAX_DEPTH = 512;
const PRISTINE_GLOBALS = new Set(Reflect.ownKeys(globalThis));

// ------------------------------------------------------------------------------------------------
// Errors the harness reports itself

// The harness's own errors, told apart without touching a thrown value (which may be a Proxy).
const callErrors = new WeakSetCtor();
const isCallError = (e) => ReflectApply(WeakSetPrototypeHas, callErrors, [e]);

class CallError extends Error {
  constructor(type, message, stack = '') {
    super(message);
    define(this, 'type', type);
    define(this, 'detail', { __proto__: null, message, type, stack });
    ReflectApply(WeakSetPrototypeAdd, callErrors, [this]);
  }
}

// `e instanceof C` that cannot throw (a revoked Proxy, a throwing getPrototypeOf trap).
function isInstance(e, C) {
  try {
    return e !== null && typeof e === 'object' && !isProxy(e) && e instanceof C;
  } catch {
    return false;
  }
}

const argumentError = (message) => new CallError('ArgumentError', message);

// ------------------------------------------------------------------------------------------------
// A lexer, enough to find parameter lists and top-level declarations: strings, template literals,
// comments, regular expression literals and brackets are skipped or kept whole.

const PUNCTUATORS = [
  '>>>=', '...', '===', '!==', '**=', '<<=', '>>=', '>>>', '&&=', '||=', '??=',
  '=>', '==', '!=', '<=', '>=', '&&', '||', '??', '?.', '++', '--', '+=', '-=', '*=', '/=', '%=',
  '&=', '|=', '^=', '**', '<<', '>>',
];
const REGEX_AFTER = new Set([
  'return', 'typeof', 'instanceof', 'in', 'of', 'new', 'delete', 'void', 'throw', 'case', 'do',
  'else', 'yield', 'await', 'extends',
]);
const NAME_RE = /#?[\p{ID_Start}$_][\p{ID_Continue}$\u200c\u200d]*/uy;
const NUMBER_RE = /(?:0[xXoObB][\da-fA-F_]+|(?:\d[\d_]*\.?[\d_]*|\.\d[\d_]*)(?:[eE][+-]?\d+)?)n?/y;
const LINE_BREAK = /[\n\r\u2028\u2029]/;

function lex(src) {
  const toks = [];
  const braces = []; // 'b': a brace, 't': a template literal's ${
  const n = src.length;
  let i = 0;
  let nl = false;
  const push = (t, v, s) => {
    toks.push({ t, v, s, e: i, nl });
    nl = false;
  };
  const regexAllowed = () => {
    const p = toks[toks.length - 1];
    if (!p) return true;
    if (p.t === 'punct') return !(p.v === ')' || p.v === ']' || p.v === '}');
    if (p.t === 'name') return REGEX_AFTER.has(p.v);
    return false;
  };
  // A template literal's text; each `${` is an opening bracket and its `}` the closing one.
  const template = (s) => {
    while (i < n) {
      const ch = src[i];
      if (ch === '\\') { i += 2; continue; }
      if (ch === '`') { i++; break; }
      if (ch === '$' && src[i + 1] === '{') {
        push('template', src.slice(s, i), s);
        const at = i;
        i += 2;
        braces.push('t');
        push('punct', '${', at);
        return;
      }
      i++;
    }
    push('template', src.slice(s, i), s);
  };
  if (src.startsWith('#!')) while (i < n && !LINE_BREAK.test(src[i])) i++;
  while (i < n) {
    const c = src[i];
    if (LINE_BREAK.test(c)) { nl = true; i++; continue; }
    if (c === ' ' || c === '\t' || c === '\v' || c === '\f' || c === '\ufeff' || c === '\u00a0' || /\s/u.test(c)) { i++; continue; }
    const s = i;
    if (c === '/' && src[i + 1] === '/') {
      while (i < n && !LINE_BREAK.test(src[i])) i++;
      continue;
    }
    if (c === '/' && src[i + 1] === '*') {
      const end = src.indexOf('*/', i + 2);
      const stop = end < 0 ? n : end + 2;
      if (LINE_BREAK.test(src.slice(i, stop))) nl = true;
      i = stop;
      continue;
    }
    if (c === '"' || c === "'") {
      i++;
      while (i < n && src[i] !== c && !LINE_BREAK.test(src[i])) i += src[i] === '\\' ? 2 : 1;
      i++;
      push('string', src.slice(s, i), s);
      continue;
    }
    if (c === '`') { i++; template(s); continue; }
    if (c === '}' && braces[braces.length - 1] === 't') {
      braces.pop();
      i++;
      push('punct', '}', s);
      template(i);
      continue;
    }
    if (c === '/' && regexAllowed()) {
      i++;
      let cls = false;
      while (i < n) {
        const ch = src[i];
        if (ch === '\\') { i += 2; continue; }
        if (LINE_BREAK.test(ch)) break;
        if (cls) { if (ch === ']') cls = false; } else if (ch === '[') cls = true; else if (ch === '/') { i++; break; }
        i++;
      }
      while (i < n && /[\p{ID_Continue}$]/u.test(src[i])) i++;
      push('regex', src.slice(s, i), s);
      continue;
    }
    NAME_RE.lastIndex = i;
    let m = NAME_RE.exec(src);
    if (m) { i += m[0].length; push('name', m[0], s); continue; }
    if (c >= '0' && c <= '9' || (c === '.' && src[i + 1] >= '0' && src[i + 1] <= '9')) {
      NUMBER_RE.lastIndex = i;
      m = NUMBER_RE.exec(src);
      i += m ? m[0].length : 1;
      push('number', src.slice(s, i), s);
      continue;
    }
    if (c === '\\') { // an identifier with a unicode escape: take it whole
      while (i < n && /[\\\p{ID_Continue}${}]/u.test(src[i])) i++;
      push('name', src.slice(s, i), s);
      continue;
    }
    const op = PUNCTUATORS.find((p) => src.startsWith(p, i)) || c;
    if (op === '?.' && src[i + 2] >= '0' && src[i + 2] <= '9') { i++; push('punct', '?', s); continue; }
    i += op.length;
    if (op === '{') braces.push('b');
    else if (op === '}') braces.pop();
    push('punct', op, s);
  }
  return toks;
}

const isOpen = (tk) => tk.t === 'punct' && (tk.v === '(' || tk.v === '[' || tk.v === '{' || tk.v === '${');
const isClose = (tk) => tk.t === 'punct' && (tk.v === ')' || tk.v === ']' || tk.v === '}');
const isPunct = (tk, v) => tk && tk.t === 'punct' && tk.v === v;
const isName = (tk, v) => tk && tk.t === 'name' && (v === undefined || tk.v === v);

// ------------------------------------------------------------------------------------------------
// Parameter lists, from a function's source text

function parseSignature(fn) {
  let src;
  try {
    src = Function.prototype.toString.call(fn);
  } catch {
    return null;
  }
  if (/\{\s*\[native code\]\s*\}\s*$/.test(src)) return null;
  let toks;
  try {
    toks = lex(src);
  } catch {
    return null;
  }
  if (!toks.length) return null;
  const isClass = isName(toks[0], 'class');
  let open = -1;
  if (isClass) {
    let depth = 0;
    let body = -1;
    let extendsSomething = false;
    for (let k = 1; k < toks.length; k++) {
      if (depth === 0 && isName(toks[k], 'extends')) extendsSomething = true;
      if (depth === 0 && isPunct(toks[k], '{')) { body = k; break; }
      if (isOpen(toks[k])) depth++;
      else if (isClose(toks[k])) depth--;
    }
    if (body < 0) return null;
    depth = 0;
    for (let k = body + 1; k < toks.length; k++) {
      if (depth === 0 && isName(toks[k], 'constructor') && isPunct(toks[k + 1], '(') && !isPunct(toks[k - 1], '.')) {
        open = k + 1;
        break;
      }
      if (isOpen(toks[k])) depth++;
      else if (isClose(toks[k])) { if (depth === 0) break; depth--; }
    }
    if (open < 0) return extendsSomething ? null : { params: [], usesArguments: false, isClass };
  } else {
    let depth = 0;
    for (let k = 0; k < toks.length; k++) {
      const tk = toks[k];
      if (depth === 0 && isPunct(tk, '(')) { open = k; break; }
      if (depth === 0 && isPunct(tk, '=>')) {
        const p = toks[k - 1];
        if (k === 1 || (k === 2 && isName(toks[0], 'async'))) {
          if (isName(p)) return { params: [{ name: p.v, rest: false, hasDefault: false, text: p.v }], usesArguments: false, isClass };
        }
        return null;
      }
      if (depth === 0 && isPunct(tk, '{')) return null;
      if (isOpen(tk)) depth++;
      else if (isClose(tk)) depth--;
    }
  }
  if (open < 0) return null;
  const groups = [];
  let current = [];
  let depth = 0;
  let close = -1;
  for (let k = open + 1; k < toks.length; k++) {
    const tk = toks[k];
    if (isOpen(tk)) depth++;
    else if (isClose(tk)) {
      if (depth === 0) {
        if (tk.v !== ')') return null;
        close = k;
        break;
      }
      depth--;
    } else if (depth === 0 && isPunct(tk, ',')) {
      groups.push(current);
      current = [];
      continue;
    }
    current.push(tk);
  }
  if (close < 0) return null;
  groups.push(current);
  const params = [];
  for (let g = 0; g < groups.length; g++) {
    const group = groups[g];
    if (!group.length) {
      if (g === groups.length - 1) continue; // a trailing comma
      return null;
    }
    let k = 0;
    const rest = isPunct(group[0], '...');
    if (rest) k = 1;
    const head = group[k];
    if (!head) return null;
    let end;
    let name = null;
    if (isName(head)) {
      name = head.v;
      end = k + 1;
    } else if (isPunct(head, '{') || isPunct(head, '[')) {
      let d = 0;
      end = -1;
      for (let m = k; m < group.length; m++) {
        if (isOpen(group[m])) d++;
        else if (isClose(group[m]) && --d === 0) { end = m + 1; break; }
      }
      if (end < 0) return null;
    } else {
      return null;
    }
    const hasDefault = end < group.length && isPunct(group[end], '=');
    if (end < group.length && !hasDefault) return null;
    if (rest && g !== groups.length - 1 && !(g === groups.length - 2 && !groups[g + 1].length)) return null;
    params.push({ name, rest, hasDefault, text: src.slice(group[k].s, group[end - 1].e) });
  }
  let usesArguments = false;
  for (let k = close + 1; k < toks.length; k++) {
    if (isName(toks[k], 'arguments') && !isPunct(toks[k - 1], '.')) { usesArguments = true; break; }
  }
  return { params, usesArguments, isClass };
}

// ------------------------------------------------------------------------------------------------
// Binding

function jsonType(v) {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  return typeof v;
}

function typeMatches(kind, v) {
  switch (kind) {
    case 'number': return typeof v === 'number';
    case 'integer': return Number.isInteger(v);
    case 'string': return typeof v === 'string';
    case 'boolean': return typeof v === 'boolean';
    case 'array': return Array.isArray(v);
    case 'object': return v !== null && typeof v === 'object' && !Array.isArray(v);
    case 'null': return v === null;
    default: return true; // `any`, absent, or a type the harness does not know
  }
}

const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;
const optionsObject = (entries) => Object.fromEntries(entries);

function bindSchema(schema, fname, args, kwargs) {
  if (schema === null || typeof schema !== 'object' || Array.isArray(schema)) throw argumentError('the schema is not an object');
  const params = schema.params ?? [];
  if (!Array.isArray(params)) throw argumentError("the schema's params is not a list");
  const rest = new Map(Object.entries(kwargs));
  const values = [];
  const given = [];
  params.forEach((p, i) => {
    if (!p || typeof p.name !== 'string') throw argumentError(`schema parameter ${i + 1} has no name`);
    const hasDefault = Object.prototype.hasOwnProperty.call(p, 'default');
    const required = p.required ?? !hasDefault;
    let value;
    let present = true;
    let supplied = true;
    if (i < args.length) {
      if (rest.has(p.name)) throw argumentError(`got multiple values for argument '${p.name}' of ${fname}()`);
      value = args[i];
    } else if (rest.has(p.name)) {
      value = rest.get(p.name);
      rest.delete(p.name);
    } else if (hasDefault) {
      value = p.default;
      supplied = false;
    } else if (required) {
      throw argumentError(`missing required argument '${p.name}' of ${fname}()`);
    } else {
      present = false;
      supplied = false;
    }
    if (supplied && !typeMatches(p.type, value)) {
      throw argumentError(`argument '${p.name}' of ${fname}() must be ${/^[aeiou]/.test(p.type) ? 'an' : 'a'} ${p.type}, got ${jsonType(value)}`);
    }
    values.push(value);
    given.push(present);
  });
  const extra = args.slice(params.length);
  if (extra.length && !schema.variadic) {
    throw argumentError(`${fname}() takes ${plural(params.length, 'argument')} but ${args.length} were given (argument ${params.length + 1} has no parameter)`);
  }
  if (rest.size) {
    if (!schema.acceptsKwargs) throw argumentError(`${fname}() got an unexpected keyword argument '${rest.keys().next().value}'`);
    const slot = given.indexOf(false);
    if (slot >= 0 && !extra.length) {
      values[slot] = optionsObject(rest);
      given[slot] = true;
    } else {
      extra.push(optionsObject(rest));
    }
  }
  let last = given.lastIndexOf(true);
  if (extra.length) last = values.length - 1;
  return [...values.slice(0, last + 1), ...extra];
}

function bindInferred(sig, fname, args, kwargs) {
  const { params } = sig;
  const restAt = params.findIndex((p) => p.rest);
  const fixed = restAt >= 0 ? restAt : params.length;
  const variadic = restAt >= 0 || sig.usesArguments;
  if (args.length > fixed && !variadic) {
    throw argumentError(`${fname}() takes ${plural(fixed, 'argument')} but ${args.length} were given (argument ${fixed + 1} has no parameter)`);
  }
  const slots = args.slice(0, fixed);
  const filled = slots.map(() => true);
  const extra = args.slice(fixed);
  const leftovers = [];
  for (const [key, value] of Object.entries(kwargs)) {
    const at = params.findIndex((p, i) => i < fixed && p.name === key);
    if (at < 0) { leftovers.push([key, value]); continue; }
    if (at < args.length) throw argumentError(`got multiple values for argument '${key}' of ${fname}()`);
    slots[at] = value;
    filled[at] = true;
  }
  if (leftovers.length) {
    let target = -1;
    for (let i = args.length; i < fixed; i++) if (!filled[i]) { target = i; break; }
    if (target >= 0) {
      slots[target] = optionsObject(leftovers);
      filled[target] = true;
    } else if (variadic) {
      for (let i = 0; i < fixed; i++) if (!filled[i]) { filled[i] = true; slots[i] = undefined; }
      extra.push(optionsObject(leftovers));
    } else {
      throw argumentError(`${fname}() got an unexpected keyword argument '${leftovers[0][0]}'`);
    }
  }
  for (let i = 0; i < fixed; i++) {
    if (!filled[i] && !params[i].hasDefault) {
      throw argumentError(`missing required argument '${params[i].text}' of ${fname}()`);
    }
  }
  let last = -1;
  for (let i = 0; i < fixed; i++) if (filled[i]) last = i;
  if (extra.length) last = fixed - 1;
  const out = [];
  for (let i = 0; i <= last; i++) out.push(filled[i] ? slots[i] : undefined);
  return out.concat(extra);
}

function bind(fn, fname, args, kwargs, schema) {
  const sig = parseSignature(fn);
  const isClass = sig ? sig.isClass : /^class\b/.test(safeSource(fn));
  if (schema !== null && schema !== undefined) {
    return { callArgs: bindSchema(schema, fname, args, kwargs), source: 'schema', isClass };
  }
  if (!sig) {
    const callArgs = Object.keys(kwargs).length ? [...args, optionsObject(Object.entries(kwargs))] : [...args];
    return { callArgs, source: 'convention', isClass };
  }
  try {
    return { callArgs: bindInferred(sig, fname, args, kwargs), source: 'inferred', isClass };
  } catch (e) {
    if (isCallError(e)) define(e, 'source', 'inferred');
    throw e;
  }
}

function safeSource(fn) {
  try {
    return Function.prototype.toString.call(fn);
  } catch {
    return '';
  }
}

// ------------------------------------------------------------------------------------------------
// Loading the user's code

const IDENTIFIER = /^[\p{ID_Start}$_][\p{ID_Continue}$\u200c\u200d]*$/u;
const RESERVED = new Set((
  'await break case catch class const continue debugger default delete do else enum export extends ' +
  'false finally for function if implements import in instanceof interface let new null package ' +
  'private protected public return static super switch this throw true try typeof var void while ' +
  'with yield arguments eval undefined'
).split(' '));
const bindable = (name) => IDENTIFIER.test(name) && !RESERVED.has(name);

// Top-level declarations and exported names of a module's source.
function scanModule(src) {
  const declared = [];
  const exported = new Set();
  let toks;
  try {
    toks = lex(src);
  } catch {
    return { declared, exported };
  }
  let depth = 0;
  for (let k = 0; k < toks.length; k++) {
    const tk = toks[k];
    if (isOpen(tk)) { depth++; continue; }
    if (isClose(tk)) { depth--; continue; }
    if (depth !== 0 || tk.t !== 'name') continue;
    const prev = toks[k - 1];
    if (prev && (isPunct(prev, '.') || isPunct(prev, '?.'))) continue;
    const isExport = isName(prev, 'export') || (isName(prev, 'async') && isName(toks[k - 2], 'export'));
    if (tk.v === 'function' || tk.v === 'class') {
      let j = k + 1;
      if (isPunct(toks[j], '*')) j++;
      if (isName(toks[j]) && (tk.v === 'class' || isPunct(toks[j + 1], '('))) {
        declared.push(toks[j].v);
        if (isExport) exported.add(toks[j].v);
      }
    } else if ((tk.v === 'const' || tk.v === 'let' || tk.v === 'var') && isName(toks[k + 1])) {
      // `const a = 1, b = 2`: the names after the top-level commas of the same statement too.
      const names = [toks[k + 1].v];
      let d = 0;
      for (let j = k + 2; j < toks.length; j++) {
        const t = toks[j];
        if (d === 0 && (isPunct(t, ';') || (t.nl && !isPunct(toks[j - 1], ',') && !isPunct(toks[j - 1], '=')))) break;
        if (isOpen(t)) d++;
        else if (isClose(t)) { if (d === 0) break; d--; }
        else if (d === 0 && isPunct(t, ',') && isName(toks[j + 1])) {
          const after = toks[j + 2];
          if (!after || after.nl || isPunct(after, '=') || isPunct(after, ',') || isPunct(after, ';')) names.push(toks[j + 1].v);
        }
      }
      for (const name of names) {
        declared.push(name);
        if (isExport) exported.add(name);
      }
    } else if (tk.v === 'export') {
      const next = toks[k + 1];
      if (isName(next, 'default')) exported.add('default');
      else if (isPunct(next, '{')) {
        let j = k + 2;
        while (j < toks.length && !isPunct(toks[j], '}')) {
          if (isName(toks[j]) || toks[j].t === 'string') {
            let name = toks[j].v;
            if (isName(toks[j + 1], 'as') && toks[j + 2]) { j += 2; name = toks[j].v; }
            exported.add(name.replace(/^['"]|['"]$/g, ''));
          }
          j++;
        }
      } else if (isPunct(next, '*') && isName(toks[k + 2], 'as') && toks[k + 3]) {
        exported.add(toks[k + 3].v);
      }
    }
  }
  return { declared: [...new Set(declared)].filter(bindable), exported };
}

function isModuleSyntaxError(e) {
  return isInstance(e, SyntaxErrorCtor) && /Cannot use import statement|Unexpected token 'export'|import\.meta|await is only valid|Cannot use 'import\.meta'/.test(e.message);
}

function syntaxLine(text) {
  const m = /^(?:file:\/\/)?(.*?):(\d+)\r?\n/.exec(text || '');
  return m ? Number(m[2]) : null;
}

function loadError(e, line) {
  const error = describeThrown(e);
  if (isInstance(e, SyntaxErrorCtor)) {
    const at = line ?? syntaxLine(e.stack);
    if (at !== null) error.message = `${error.message} (line ${at})`;
  }
  return new CallError(error.type, error.message, error.stack);
}

let loaded = null; // { file, content, lookup(name) } of the code loaded last

async function load(file) {
  let content;
  try {
    content = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new CallError('FileNotFoundError', `cannot read the code at ${file}: ${e.message}`);
  }
  if (loaded && loaded.file === file && loaded.content === content) return loaded;
  let record;
  let compiled = null;
  const { declared } = scanModule(content);
  try {
    compiled = compileCommonJs(file, content, declared);
  } catch (e) {
    if (!isModuleSyntaxError(e)) throw loadError(e);
  }
  record = compiled ? runCommonJs(file, compiled) : await importModule(file, content);
  record.file = file;
  record.content = content;
  loaded = record;
  return record;
}

const BINDINGS = '__kiln_bindings__';

function compileCommonJs(file, content, declared) {
  const body = content.startsWith('#!') ? '//' + content.slice(2) : content;
  const getters = declared.map((n) => `get ${n}() { return typeof ${n} === 'undefined' ? undefined : ${n}; }`);
  const trailer = `\n;return { [${BINDINGS}]: true, ${getters.join(', ')} };\n`;
  const options = { filename: file };
  if (vm.constants && vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER) {
    options.importModuleDynamically = vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER;
  }
  return vm.compileFunction(body + trailer, ['exports', 'require', 'module', '__filename', '__dirname', BINDINGS], options);
}

function runCommonJs(file, compiled) {
  const dir = path.dirname(file);
  const mod = new Module(file, null);
  mod.filename = file;
  mod.paths = Module._nodeModulePaths ? Module._nodeModulePaths(dir) : [];
  const require = createRequire(file);
  mod.require = require;
  const tag = Symbol('kiln bindings');
  let returned;
  try {
    returned = compiled.call(mod.exports, mod.exports, require, mod, file, dir, tag);
  } catch (e) {
    throw loadError(e);
  }
  mod.loaded = true;
  const bindings = returned && typeof returned === 'object' && returned[tag] === true ? returned : {};
  return {
    lookup(name) {
      const exp = mod.exports;
      if (name === 'default' && typeof exp === 'function') return { value: exp, self: undefined };
      if (hasMember(exp, name)) return { value: exp[name], self: exp };
      if (bindable(name) && Object.prototype.hasOwnProperty.call(bindings, name) && bindings[name] !== undefined) {
        return { value: bindings[name], self: undefined };
      }
      if (typeof exp === 'function' && exp.name === name) return { value: exp, self: undefined };
      if (exp && hasMember(exp.default, name)) return { value: exp.default[name], self: exp.default };
      return lookupGlobal(name);
    },
  };
}

function hasMember(obj, name) {
  if (obj === null || (typeof obj !== 'object' && typeof obj !== 'function')) return false;
  if (Object.prototype.hasOwnProperty.call(obj, name)) return true;
  return name in obj && !(name in Object.prototype) && !(name in Function.prototype);
}

function lookupGlobal(name) {
  if (!PRISTINE_GLOBALS.has(name) && Object.prototype.hasOwnProperty.call(globalThis, name)) {
    return { value: globalThis[name], self: undefined };
  }
  return null;
}

let importCount = 0;

async function importModule(file, content) {
  let target = file.replace(/\.[cm]?js$/, '') + '.mjs';
  if (target === file) target = file.replace(/\.mjs$/, '') + '.kiln.mjs';
  const { declared, exported } = scanModule(content);
  const missing = declared.filter((n) => !exported.has(n));
  const attempts = [missing];
  if (missing.length) attempts.push([]);
  let lastError = null;
  for (const names of attempts) {
    const text = names.length ? `${content}\n;export { ${names.join(', ')} };\n` : content;
    try {
      fs.writeFileSync(target, text);
    } catch (e) {
      throw new CallError('FileNotFoundError', `cannot write the module copy ${target}: ${e.message}`);
    }
    const url = pathToFileURL(target).href + (importCount++ ? `?kiln=${importCount}` : '');
    let ns;
    try {
      ns = await import(url);
    } catch (e) {
      lastError = e;
      // An export the appended line got wrong fails at link time, before any code runs: retry
      // without it.
      if (names.length && isInstance(e, SyntaxErrorCtor) && /Duplicate export|is not defined in module/.test(e.message)) continue;
      const error = loadError(e);
      if (isInstance(e, SyntaxErrorCtor) && !/^\S*:\d+\n/.test(e.stack || '')) {
        const check = checkSyntax(target);
        if (check) {
          error.detail.message = `${describeThrown(e).message} (line ${check.line})`;
          error.detail.stack = check.text;
        }
      }
      for (const key of ['message', 'stack']) {
        error.detail[key] = error.detail[key].split(pathToFileURL(target).href).join(pathToFileURL(file).href).split(target).join(file);
      }
      throw error;
    }
    return {
      lookup(name) {
        if (Object.prototype.hasOwnProperty.call(ns, name)) return { value: ns[name], self: undefined };
        const def = ns.default;
        if (hasMember(def, name)) return { value: def[name], self: def };
        if (typeof def === 'function' && def.name === name) return { value: def, self: undefined };
        return lookupGlobal(name);
      },
    };
  }
  throw loadError(lastError);
}

// The line of a module's syntax error: import() does not say, `node --check` does.
function checkSyntax(file) {
  try {
    const r = spawnSync(process.execPath, ['--check', file], { encoding: 'utf8', timeout: 10000, stdio: ['ignore', 'ignore', 'pipe'] });
    const line = syntaxLine(r.stderr);
    if (line === null) return null;
    const text = r.stderr.split(/\n\s+at /)[0].trim();
    return { line, text };
  } catch {
    return null;
  }
}

function find(record, name) {
  if (typeof name !== 'string' || !name) throw new CallError('FunctionNotFound', 'no function name was given');
  const parts = name.split('.');
  let found = record.lookup(parts[0]);
  for (let i = 1; found && i < parts.length; i++) {
    const parent = found.value;
    found = hasMember(parent, parts[i]) ? { value: parent[parts[i]], self: parent } : null;
  }
  if (!found || found.value === undefined) {
    throw new CallError('FunctionNotFound', `function '${name}' is not defined in the code`);
  }
  if (typeof found.value !== 'function') {
    throw new CallError('FunctionNotFound', `'${name}' is defined in the code but is ${describeValue(found.value)}, not a function`);
  }
  return found;
}

// ------------------------------------------------------------------------------------------------
// Results

// The value is written straight to JSON text by the rules of docs/functions.md ("Results"), with
// the built-ins captured above: a `toJSON` the value has (its own or inherited) is part of its
// conversion, as with JSON.stringify, but nothing the code patches reaches the frame around it.

const unserializables = new WeakSetCtor();
function unserializable(message) {
  const e = new ErrorCtor(message);
  ReflectApply(WeakSetPrototypeAdd, unserializables, [e]);
  return e;
}
const isUnserializable = (e) => ReflectApply(WeakSetPrototypeHas, unserializables, [e]);

function constructorName(v) {
  try {
    const proto = ObjectGetPrototypeOf(v);
    const ctor = proto === null ? undefined : proto.constructor;
    const name = ctor === undefined || ctor === null ? '' : ctor.name;
    return typeof name === 'string' ? name : '';
  } catch {
    return '';
  }
}

function describeValue(v) {
  if (v === null) return 'null';
  switch (typeof v) {
    case 'function': return matches(/^class\b/, safeSource(v)) ? `a class (${functionName(v) || 'anonymous'})` : `a function (${functionName(v) || 'anonymous'})`;
    case 'symbol': return `a Symbol (${ReflectApply(SymbolPrototypeToString, v, [])})`;
    case 'bigint': return `a BigInt (${v}n)`;
    case 'number': return v !== v ? 'NaN' : StringCtor(v);
    case 'object': {
      let name = constructorName(v);
      if (!name || name === 'Object') {
        try {
          name = strSlice(ReflectApply(ObjectPrototypeToString, v, []), 8, -1);
        } catch {
          name = '';
        }
      }
      return name && name !== 'Object' ? `${matches(/^[AEIOU]/, name) ? 'an' : 'a'} ${name}` : 'an object';
    }
    default: return `a ${typeof v}`;
  }
}

function functionName(fn) {
  try {
    const name = fn.name;
    return typeof name === 'string' ? name : '';
  } catch {
    return '';
  }
}

const fail = (value, at, why = 'which has no JSON form') => {
  throw unserializable(`the result contains ${describeValue(value)} at ${at}, ${why}`);
};

// The plain tree: null-prototype objects and arrays, strings, finite numbers, booleans and null.
// No toJSON, getter or setter can be reached in it, so the captured JSON.stringify turns it into
// text that nothing the code patched has a say in.
const plainObject = () => ({ __proto__: null });
function plainArray() {
  const a = [];
  ObjectSetPrototypeOf(a, null);
  return a;
}

function checkString(s, at, key) {
  if (!isWellFormed(s)) {
    throw unserializable(key
      ? `the result contains a lone surrogate in a key at ${at}, which has no UTF-8 form`
      : `the result contains a lone surrogate at ${at}, a string that has no UTF-8 form`);
  }
  return s;
}

function bytesValue(u8) {
  let text = null;
  try {
    text = ReflectApply(TextDecoderDecode, bytesDecoder, [u8]);
  } catch {}
  if (typeof text === 'string') return text;
  const out = plainObject();
  out.$base64 = ReflectApply(BufferBase64Slice, u8, []);
  return out;
}

const IDENT = /^[A-Za-z_$][\w$]*$/;
const propertyPath = (at, key) => (matches(IDENT, key) ? `${at}.${key}` : `${at}[${JSONStringify(key)}]`);

function toPlain(value, at, depth, active) {
  switch (typeof value) {
    case 'undefined': return null;
    case 'boolean': return value;
    case 'string': return checkString(value, at, false);
    case 'number':
      if (!NumberIsFinite(value)) fail(value, at);
      return value === 0 ? 0 : value;
    case 'bigint':
      if (value > 9007199254740991n || value < -9007199254740991n) fail(value, at, 'beyond the safe integer range of JSON numbers');
      return NumberCtor(value);
    case 'symbol':
    case 'function':
      return fail(value, at);
    default:
      break;
  }
  if (value === null) return null;
  if (depth >= MAX_DEPTH) throw unserializable(`the result is nested deeper than ${MAX_DEPTH} levels at ${at}`);
  if (ReflectApply(SetPrototypeHas, active, [value])) throw unserializable(`the result contains a cycle: ${at} (${describeValue(value)}) contains itself`);
  ReflectApply(SetPrototypeAdd, active, [value]);
  try {
    return containerToPlain(value, at, depth, active);
  } finally {
    ReflectApply(SetPrototypeDelete, active, [value]);
  }
}

function boxedValue(v) {
  const checks = [NumberPrototypeValueOf, StringPrototypeValueOf, BooleanPrototypeValueOf, BigIntPrototypeValueOf, SymbolPrototypeValueOf];
  for (let i = 0; i < 5; i++) {
    try {
      return ReflectApply(checks[i], v, []);
    } catch {}
  }
  return undefined;
}

function isWeakRef(v) {
  if (!isInstance(v, WeakRefCtor)) return false;
  try {
    ReflectApply(WeakRefPrototypeDeref, v, []);
    return true;
  } catch {
    return false;
  }
}

function containerToPlain(value, at, depth, active) {
  const next = (v, where) => toPlain(v, where, depth + 1, active);
  const items = (list, n) => {
    const out = plainArray();
    for (let i = 0; i < n; i++) out[i] = next(list[i], `${at}[${i}]`);
    return out;
  };
  if (isDate(value)) {
    const time = ReflectApply(DatePrototypeGetTime, value, []);
    if (time !== time) fail(value, at, 'an invalid Date');
    return ReflectApply(DatePrototypeToISOString, value, []);
  }
  if (isUint8Array(value)) return bytesValue(value);
  if (typeof value.toJSON === 'function') return next(value.toJSON(), `${at}.toJSON()`);
  if (isAnyArrayBuffer(value)) return bytesValue(new Uint8ArrayCtor(value));
  if (isDataView(value)) {
    return bytesValue(new Uint8ArrayCtor(ReflectApply(DataViewBuffer, value, []), ReflectApply(DataViewByteOffset, value, []), ReflectApply(DataViewByteLength, value, [])));
  }
  if (isTypedArray(value)) return items(value, ReflectApply(TypedArrayLength, value, []));
  if (ArrayIsArray(value)) return items(value, value.length);
  if (isMap(value)) {
    // Keys become strings; two that give the same string are one key (the last value wins).
    const list = newList();
    ReflectApply(MapPrototypeForEach, value, [(v, k) => { listPush(list, k); listPush(list, v); }]);
    const out = plainObject();
    for (let i = 0; i < list.length; i += 2) {
      const k = list[i];
      const key = typeof k === 'string' ? k : typeof k === 'symbol' ? ReflectApply(SymbolPrototypeToString, k, []) : StringCtor(k);
      const where = `${at}.get(${JSONStringify(key)})`;
      out[checkString(key, where, true)] = next(list[i + 1], where);
    }
    return out;
  }
  if (isSet(value)) {
    const list = newList();
    ReflectApply(SetPrototypeForEach, value, [(v) => { listPush(list, v); }]);
    return items(list, list.length);
  }
  if (isPromise(value)) fail(value, at, 'a promise inside the result (only the result itself is awaited)');
  if (isWeakMap(value) || isWeakSet(value) || isWeakRef(value)) fail(value, at);
  if (isRegExp(value)) return checkString(StringCtor(value), at, false);
  if (isBoxedPrimitive(value)) return next(boxedValue(value), at);
  if (isNativeError(value) || isInstance(value, ErrorCtor)) {
    const out = plainObject();
    out.name = checkString(StringCtor(value.name), propertyPath(at, 'name'), false);
    out.message = checkString(StringCtor(value.message), propertyPath(at, 'message'), false);
    const keys = ObjectKeys(value);
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i];
      const where = propertyPath(at, key);
      out[checkString(key, where, true)] = next(value[key], where);
    }
    return out;
  }
  if (typeof value[SymbolIterator] === 'function') {
    const list = newList();
    try {
      const iterator = value[SymbolIterator]();
      for (;;) {
        const step = iterator.next();
        if (step.done) break;
        listPush(list, step.value);
      }
    } catch (e) {
      const d = describeThrown(e);
      throw unserializable(`the result is ${describeValue(value)} that threw ${d.type} while it was turned into JSON: ${d.message}`);
    }
    return items(list, list.length);
  }
  const keys = ObjectKeys(value);
  const out = plainObject();
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i];
    let v;
    try {
      v = value[key];
    } catch (e) {
      const d = describeThrown(e);
      throw unserializable(`reading ${propertyPath(at, key)} of the result threw ${d.type}: ${d.message}`);
    }
    if (v === undefined) continue;
    const where = propertyPath(at, key);
    out[checkString(key, where, true)] = next(v, where);
  }
  return out;
}

// The result's JSON text and its UTF-8 bytes.
function serialize(value) {
  let tree;
  try {
    tree = toPlain(value, 'result', 0, new SetCtor());
  } catch (e) {
    if (isUnserializable(e)) throw new CallError('SerializationError', e.message);
    if (isInstance(e, RangeErrorCtor) && matches(/call stack/, safeMessage(e))) {
      throw new CallError('SerializationError', 'the result is nested too deeply to turn into JSON');
    }
    const d = describeThrown(e);
    throw new CallError('SerializationError', `turning the result into JSON failed: ${d.type}: ${d.message}`);
  }
  let text;
  try {
    text = JSONStringify(tree);
  } catch {
    throw new CallError('SerializationError', 'the result is more JSON than a string can hold');
  }
  return { __proto__: null, text, bytes: BufferByteLength(text, 'utf8') };
}

function safeMessage(e) {
  try {
    const m = e.message;
    return typeof m === 'string' ? m : '';
  } catch {
    return '';
  }
}

// ------------------------------------------------------------------------------------------------
// Errors thrown by the user's code

const MAX_ERROR_BYTES = 64 * 1024; // UTF-8 bytes of an error's message, type and stack each
const TRUNCATED = ' … [truncated]';

// Cuts `s` to `limit` bytes of UTF-8 (marker included) without splitting a code point.
function truncateUtf8(s, limit) {
  if (s.length * 3 <= limit || BufferByteLength(s, 'utf8') <= limit) return s;
  const budget = limit - BufferByteLength(TRUNCATED, 'utf8');
  let bytes = 0;
  let i = 0;
  while (i < s.length) {
    const c = ReflectApply(StringPrototypeCharCodeAt, s, [i]);
    let w = 1;
    let step = 1;
    if (c >= 0x80) {
      if (c < 0x800) w = 2;
      else if (c >= 0xd800 && c < 0xdc00 && i + 1 < s.length && (ReflectApply(StringPrototypeCharCodeAt, s, [i + 1]) & 0xfc00) === 0xdc00) { w = 4; step = 2; }
      else w = 3;
    }
    if (bytes + w > budget) break;
    bytes += w;
    i += step;
  }
  return strSlice(s, 0, i) + TRUNCATED;
}

// A bounded prefix of a long text, cut at a line or word within its last 4 KiB when it can be.
function prefix(s, n) {
  if (s.length <= n) return s;
  let t = strSlice(s, 0, n);
  const cut = MathMax(ReflectApply(StringPrototypeLastIndexOf, t, ['\n']), ReflectApply(StringPrototypeLastIndexOf, t, [' ']));
  if (cut > n - 4096) t = strSlice(t, 0, cut);
  return t + TRUNCATED;
}

// Text for a frame: a string, lone surrogates as U+FFFD, at most 64 KiB of UTF-8.
function frameText(s, limit = MAX_ERROR_BYTES) {
  const text = typeof s === 'string' ? s : '';
  return truncateUtf8(wellFormed(prefix(text, 4 * limit)), limit);
}

function cleanStack(stack) {
  if (typeof stack !== 'string') return '';
  const text = prefix(stack, 4 * MAX_ERROR_BYTES);
  let out = '';
  let first = true;
  let at = 0;
  while (at <= text.length) {
    let end = strIndexOf(text, '\n', at);
    if (end < 0) end = text.length;
    const line = strSlice(text, at, end);
    at = end + 1;
    if (strIncludes(line, HARNESS_FILE) || strIncludes(line, HARNESS_URL) || strIncludes(line, 'node:internal')) continue;
    out += (first ? '' : '\n') + line;
    first = false;
  }
  return out;
}

function describeThrown(e) {
  if (isCallError(e)) return { __proto__: null, ...e.detail };
  if (e !== null && typeof e === 'object') {
    let type = '';
    try {
      const name = e.name;
      type = typeof name === 'string' && name ? name : '';
    } catch {}
    if (!type) type = constructorName(e);
    if (!type || type === 'Object') type = 'Error';
    let message;
    try {
      message = 'message' in e ? StringCtor(e.message) : JSONStringify(e);
    } catch {
      message = describeValue(e);
    }
    if (typeof message !== 'string') message = message === undefined ? '' : describeValue(e);
    let stack = '';
    try {
      stack = cleanStack(e.stack);
    } catch {}
    return { __proto__: null, message, type, stack };
  }
  let message;
  try {
    message = typeof e === 'symbol' ? ReflectApply(SymbolPrototypeToString, e, []) : StringCtor(e);
  } catch {
    message = describeValue(e);
  }
  return { __proto__: null, message, type: 'Error', stack: '' };
}

// ------------------------------------------------------------------------------------------------
// A call

let abortCurrent = null;

// Outside a call (code the last one left running), what nobody caught goes to stderr.
function reportStray(what, e) {
  try {
    const d = describeThrown(e);
    stderrStream.write(`${what} ${d.stack || `${d.type}: ${d.message}`}\n`);
  } catch {}
}
process.on('uncaughtException', (e) => {
  if (abortCurrent) abortCurrent(e);
  else reportStray('Uncaught', e);
});
process.on('unhandledRejection', (e) => {
  if (abortCurrent) abortCurrent(e);
  else reportStray('Unhandled rejection:', e);
});

// The call's value, or its failure: an exception, a rejection, or an uncaught exception or
// unhandled rejection while it runs.
function invoke(found, isClass, callArgs) {
  let settled = false;
  let settleWith = null;
  const early = newList(); // what arrives before the promise below exists
  const settle = (ok) => (v) => {
    if (settled) return;
    settled = true;
    abortCurrent = null;
    if (settleWith !== null) settleWith(ok, v);
    else { early[0] = ok; early[1] = v; early.length = 2; }
  };
  abortCurrent = settle(false);
  const run = (async () => {
    const value = isClass ? ReflectConstruct(found.value, callArgs) : ReflectApply(found.value, found.self, callArgs);
    return await value;
  })();
  ReflectApply(PromisePrototypeThen, run, [settle(true), settle(false)]);
  return new PromiseCtor((resolve, reject) => {
    settleWith = (ok, v) => (ok ? resolve(v) : reject(v));
    if (early.length) settleWith(early[0], early[1]);
  });
}

const DEFAULT_MAX_RESULT_BYTES = 16 * 1024 * 1024; // Kiln's default frame limit

const own = (obj, key) => (obj !== null && typeof obj === 'object' && ObjectHasOwn(obj, key) ? obj[key] : undefined);

async function handle(frame) {
  const rawId = own(frame, 'id');
  const maxBytes = own(frame, 'maxResultBytes');
  const reply = {
    __proto__: null,
    id: typeof rawId === 'string' || (typeof rawId === 'number' && NumberIsFinite(rawId)) ? rawId : null,
    limit: typeof maxBytes === 'number' && NumberIsFinite(maxBytes) && maxBytes >= 1024 ? MathFloor(maxBytes) : DEFAULT_MAX_RESULT_BYTES,
    success: false,
    resultText: null,
    error: null,
    source: 'convention',
  };
  const schema = own(frame, 'schema') ?? null;
  reply.source = schema !== null ? 'schema' : 'convention';
  try {
    const v = own(frame, 'v') ?? 1;
    if (v !== 1) throw new CallError('ProtocolError', `unsupported protocol version ${JSONStringify(typeof v === 'object' ? null : v)}`);
    const args = own(frame, 'args') ?? [];
    const kwargs = own(frame, 'kwargs') ?? {};
    if (!ArrayIsArray(args)) throw argumentError('args is not a list');
    if (kwargs === null || typeof kwargs !== 'object' || ArrayIsArray(kwargs)) throw argumentError('kwargs is not an object');
    const name = own(frame, 'function');
    const record = await load(own(frame, 'file') || '/tmp/.kiln/user_code.js');
    const found = find(record, name);
    const bound = bind(found.value, name, args, kwargs, schema);
    reply.source = bound.source;
    let value;
    try {
      value = await invoke(found, bound.isClass, bound.callArgs);
    } catch (e) {
      const d = describeThrown(e);
      throw new CallError(d.type, d.message, d.stack);
    }
    const { text, bytes } = serialize(value);
    const envelope = BufferByteLength(resultFrame({ __proto__: null, ...reply, success: true, resultText: '' }), 'utf8');
    if (bytes + envelope > reply.limit) {
      throw new CallError('SerializationError', `the result is ${bytes} bytes of JSON, over the limit of ${reply.limit} bytes for a result frame`);
    }
    reply.success = true;
    reply.resultText = text;
  } catch (e) {
    reply.success = false;
    reply.resultText = null;
    if (isCallError(e)) {
      const source = own(e, 'source');
      if (typeof source === 'string') reply.source = source;
      reply.error = describeThrown(e);
    } else { // a fault of the harness itself: still one answer
      const d = describeThrown(e);
      reply.error = { __proto__: null, message: `the harness failed: ${d.type}: ${d.message}`, type: 'InternalError', stack: '' };
    }
  }
  return reply;
}

// The result frame's JSON text, built from strings the harness made itself.
function resultFrame(reply, errorLimit = MAX_ERROR_BYTES) {
  const head = `{"v":1,"id":${JSONStringify(reply.id)},"type":"result",`;
  const tail = `,"signatureSource":${JSONStringify(StringCtor(reply.source))}}`;
  if (reply.success) return `${head}"success":true,"result":${reply.resultText}${tail}`;
  const e = reply.error;
  const stack = errorLimit >= MAX_ERROR_BYTES ? frameText(e.stack, errorLimit) : '';
  const error = `{"message":${JSONStringify(frameText(e.message, errorLimit))},"type":${JSONStringify(frameText(e.type, errorLimit))},"stack":${JSONStringify(stack)}}`;
  return `${head}"success":false,"error":${error}${tail}`;
}

// ------------------------------------------------------------------------------------------------
// The channel

function protocolFail(why) {
  try {
    fsWriteSync(2, `kiln harness: ${why}\n`);
  } catch {}
  exitProcess(2);
}

function flushStream(stream) {
  return new PromiseCtor((resolve) => {
    const timer = hostSetTimeout(resolve, 5000);
    try {
      if (!stream || stream.destroyed || !stream.writable) { hostClearTimeout(timer); resolve(); return; }
      stream.write('', () => { hostClearTimeout(timer); resolve(); });
    } catch {
      hostClearTimeout(timer);
      resolve();
    }
  });
}

function frameBytes(reply) {
  let text = resultFrame(reply);
  if (BufferByteLength(text, 'utf8') > reply.limit && !reply.success) text = resultFrame(reply, 1024); // a tiny limit
  const body = BufferFrom(text, 'utf8');
  const n = ReflectApply(TypedArrayLength, body, []);
  const data = BufferAllocUnsafe(4 + n);
  data[0] = (n >>> 24) & 255;
  data[1] = (n >>> 16) & 255;
  data[2] = (n >>> 8) & 255;
  data[3] = n & 255;
  ReflectApply(TypedArrayPrototypeSet, data, [body, 4]);
  return data;
}

// fd 3 is non-blocking (the socket reading it made it so): written directly, in full.
function writeChannel(data) {
  const n = ReflectApply(TypedArrayLength, data, []);
  let off = 0;
  while (off < n) {
    try {
      off += fsWriteSync(3, data, off, n - off);
    } catch (e) {
      const code = e !== null && typeof e === 'object' ? e.code : undefined;
      if (code === 'EAGAIN' || code === 'EWOULDBLOCK' || code === 'EINTR') { ReflectApply(AtomicsWait, null, [pauseCell, 0, 0, 2]); continue; }
      protocolFail(`the call channel failed: ${code || 'write error'}`);
    }
  }
}

function main() {
  try {
    fsFstatSync(3);
  } catch (e) {
    protocolFail(`fd 3 (the call channel) is not open: ${e.message}`);
  }
  let channel;
  try {
    channel = new net.Socket({ fd: 3, readable: true, writable: true, allowHalfOpen: true });
  } catch (e) {
    protocolFail(`fd 3 (the call channel) is not a socket: ${e.message}`);
  }
  stdoutStream.on?.('error', () => {});
  stderrStream.on?.('error', () => {});
  channel.on('error', (e) => protocolFail(`the call channel failed: ${e.message}`));

  let pending = null; // the bytes read and not yet taken
  let buffered = 0;
  let queue = PromiseCtor.resolve();
  const then = (p, f) => ReflectApply(PromisePrototypeThen, p, [f]);

  const take = (n) => {
    const out = ReflectApply(TypedArrayPrototypeSubarray, pending, [0, n]);
    pending = ReflectApply(TypedArrayPrototypeSubarray, pending, [n]);
    buffered -= n;
    return out;
  };
  const peekLength = () => ((pending[0] << 24) | (pending[1] << 16) | (pending[2] << 8) | pending[3]) >>> 0;
  let need = -1; // body length of the frame being read, -1 while its length is not known

  channel.on('data', (chunk) => {
    pending = buffered ? BufferConcat([pending, chunk]) : chunk;
    buffered += ReflectApply(TypedArrayLength, chunk, []);
    for (;;) {
      if (need < 0) {
        if (buffered < 4) break;
        need = peekLength();
        take(4);
      }
      if (buffered < need) break;
      const body = take(need);
      need = -1;
      let frame;
      try {
        frame = JSONParse(ReflectApply(TextDecoderDecode, frameDecoder, [body]));
      } catch (e) {
        protocolFail(`a frame is not UTF-8 JSON: ${e.message}`);
      }
      if (frame === null || typeof frame !== 'object' || ArrayIsArray(frame)) protocolFail('a frame is not a JSON object');
      if (own(frame, 'type') !== 'call') continue;
      queue = then(queue, async () => {
        let data;
        try {
          data = frameBytes(await handle(frame));
        } catch (e) { // a fault of the harness itself: still one answer
          const id = own(frame, 'id');
          data = frameBytes({
            __proto__: null, id: typeof id === 'string' ? id : null, limit: DEFAULT_MAX_RESULT_BYTES, success: false, source: 'convention',
            error: { __proto__: null, message: `the harness failed: ${describeThrown(e).message}`, type: 'InternalError', stack: '' },
          });
        }
        await flushStream(stdoutStream);
        await flushStream(stderrStream);
        writeChannel(data);
      });
    }
  });
  channel.on('end', () => {
    if (buffered || need >= 0) protocolFail('the channel ended inside a frame');
    then(queue, async () => {
      await flushStream(stdoutStream);
      await flushStream(stderrStream);
      exitProcess(0);
    });
  });
}

main();
