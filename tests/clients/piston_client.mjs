// The official Piston client (`piston-client` on npm) against Kiln's Piston face: lists the
// runtimes, runs a python program with stdin and args, a C program, and a C program that does
// not compile. Env: KILN_BASE, KILN_TOKEN. Exits non-zero on the first mismatch.
import assert from "node:assert/strict";
import http from "node:http";
import piston from "piston-client";

const base = process.env.KILN_BASE;
const token = process.env.KILN_TOKEN;

// Piston itself has no tokens, so its client sends no Authorization header; Kiln always wants
// one. It is added here, below the client, where a deployment's proxy would add it.
const request = http.request;
http.request = function (options, ...rest) {
  options.headers = { ...options.headers, Authorization: token };
  return request.call(this, options, ...rest);
};

const client = piston({ server: base });

const runtimes = await client.runtimes();
assert.ok(Array.isArray(runtimes), JSON.stringify(runtimes));
const python = runtimes.find((r) => r.language === "python");
const c = runtimes.find((r) => r.language === "c");
assert.ok(python && c, JSON.stringify(runtimes));
assert.equal(c.runtime, "gcc");
assert.ok(python.aliases.includes("py"), JSON.stringify(python));
console.log(`runtimes: ${runtimes.map((r) => `${r.language}-${r.version}`).join(" ")}`);

const echo = "import sys\nname = input()\nprint('hello', name)\nprint(sys.argv[1:])\nprint('warn', file=sys.stderr)\n";
const r = await client.execute("python", echo, { stdin: "kiln", args: ["a", "b c"] });
console.log(JSON.stringify(r));
assert.equal(r.language, "python");
assert.equal(r.version, python.version);
assert.equal(r.run.stdout, "hello kiln\n['a', 'b c']\n");
assert.equal(r.run.stderr, "warn\n");
assert.equal(r.run.output.length, r.run.stdout.length + r.run.stderr.length);
assert.equal(r.run.code, 0);
assert.equal(r.run.signal, null);
assert.equal(r.run.status, null);
for (const k of ["cpu_time", "wall_time", "memory"]) assert.equal(typeof r.run[k], "number", k);
assert.equal(r.compile, undefined);

const ok = await client.execute("c", '#include <stdio.h>\nint main(int argc, char **argv) { printf("%d\\n", argc); return 3; }\n');
console.log(JSON.stringify(ok));
assert.equal(ok.compile.code, 0);
// The client's default arguments are "1", "2", "3".
assert.equal(ok.run.stdout, "4\n");
assert.equal(ok.run.code, 3);
assert.equal(ok.run.status, "RE");

const bad = await client.execute("c", "int main( { return 0; }\n");
console.log(JSON.stringify(bad));
assert.ok(bad.compile, "a compile stage");
assert.notEqual(bad.compile.code, 0);
assert.match(bad.compile.stderr, /error/);
assert.deepEqual(bad.run, bad.compile, "run is a copy of compile when compiling fails");

// The client finds no version of a language the runtimes lack, and sends none: Piston's message.
const unknown = await client.execute("cobol", "x");
assert.equal(unknown.message, "version is required as a string");
const old = await client.execute("python", "x", { version: "0.1" });
assert.equal(old.message, "python-0.1 runtime is unknown");
console.log("ok");
