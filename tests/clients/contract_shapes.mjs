// Every body of the contract's routes, as Kiln sends it, against the contract's own zod validators
// (@teovilla/code-runner-contract 0.5.0; its objects are strict: no field may be added or
// missing). Job statuses are checked in every state seen (queued, running, done, killed, error),
// and RunResults for an interpreted run, a compiled run (with its `compile` object), a compile
// error, a killed run and a job that was never started.
//
// The server must run with `--warmup-ms 500`, so that a job never started ends in `error` soon.

import {
  ExecuteResponseSchema,
  JobStatusSchema,
  LanguageInfoSchema,
  RunResultSchema,
} from "@teovilla/code-runner-contract";
import { check, conforms, eq, http, log, run, sleep } from "./lib.mjs";

const seenStates = new Set();

function status(body, what) {
  const st = conforms(JobStatusSchema, body, what);
  seenStates.add(st.state);
  check(Math.abs(st.updatedAtMs - Date.now()) < 3600_000, `${what}: updatedAtMs is not ms since the epoch`, st);
  return st;
}

// GET /v1/jobs/{id} and its /status alias: both valid, same job.
async function getStatus(id, what) {
  const a = await http("GET", `/v1/jobs/${id}`);
  eq(a.status, 200, `${what}: GET /v1/jobs/{id} status (${a.text})`);
  const st = status(a.json, `${what}: GET /v1/jobs/{id}`);
  eq(st.jobId, id, `${what}: jobId`);
  eq(st.channel, `private-run-${id}`, `${what}: channel`);
  const b = await http("GET", `/v1/jobs/${id}/status`);
  eq(b.status, 200, `${what}: GET /v1/jobs/{id}/status status (${b.text})`);
  status(b.json, `${what}: GET /v1/jobs/{id}/status`);
  return st;
}

// Polls both routes until the state is one of `states`, checking every answer on the way.
async function waitState(id, states, what, ms = 30000) {
  const end = Date.now() + ms;
  for (;;) {
    const st = await getStatus(id, what);
    if (states.includes(st.state)) {
      log(`${what}: ${st.state} ✓`);
      return st;
    }
    check(Date.now() < end, `${what}: never reached ${states.join("|")}`, st);
    await sleep(30);
  }
}

async function execute(body, what) {
  const r = await http("POST", "/v1/execute", { body });
  eq(r.status, 202, `${what}: POST /v1/execute status (${r.text})`);
  const ex = conforms(ExecuteResponseSchema, r.json, `${what}: the 202 body of POST /v1/execute`);
  eq(ex.channel, `private-run-${ex.jobId}`, `${what}: channel`);
  return ex.jobId;
}

async function output(id, what) {
  const r = await http("GET", `/v1/jobs/${id}/output`);
  eq(r.status, 200, `${what}: GET /v1/jobs/{id}/output status (${r.text})`);
  const out = conforms(RunResultSchema, r.json, `${what}: GET /v1/jobs/{id}/output`);
  log(`${what}: RunResult ✓ ${JSON.stringify(r.json).slice(0, 300)}`);
  return out;
}

const py = (content, extra = {}) => ({ language: "python", files: [{ name: "main.py", content }], ...extra });
const c = (content, extra = {}) => ({ language: "c", files: [{ name: "main.c", content }], ...extra });

run(async () => {
  // The oracle itself must be strict, or none of this means anything.
  const sample = { jobId: "j", channel: "private-run-j", language: "python", version: "3", state: "done", updatedAtMs: 1 };
  check(JobStatusSchema.safeParse(sample).success, "the sample JobStatus is refused");
  check(!JobStatusSchema.safeParse({ ...sample, extra: 1 }).success, "JobStatusSchema accepts an extra field");

  const langs = await http("GET", "/v1/languages");
  eq(langs.status, 200, "GET /v1/languages status");
  check(Array.isArray(langs.json) && langs.json.length > 0, "GET /v1/languages is not a non-empty array", langs.text);
  for (const l of langs.json) conforms(LanguageInfoSchema, l, `GET /v1/languages item ${l.language}`);
  log(`languages ✓ (${langs.json.map((l) => l.language).join(", ")})`);

  // queued, then error: never started within the 500 ms warm-up.
  const unstarted = await execute(py("print(1)", { collectOutput: true }), "unstarted");
  eq((await getStatus(unstarted, "unstarted")).state, "queued", "unstarted: the state right after execute");
  await waitState(unstarted, ["error"], "unstarted");
  const o1 = await output(unstarted, "unstarted");
  eq([o1.stdout, o1.stderr, o1.artifacts], ["", "", []], "unstarted: RunResult output");

  // killed before it started.
  const early = await execute(py("print(1)", { collectOutput: true }), "killed early");
  eq((await http("POST", `/v1/jobs/${early}/kill`)).json, { ok: true }, "POST /kill body");
  await waitState(early, ["killed"], "killed early");
  await output(early, "killed early");

  // running, then killed.
  const sleeper = await execute(
    py("import time\nprint('up', flush=True)\ntime.sleep(60)", { autoStart: true, collectOutput: true }),
    "sleeper",
  );
  await waitState(sleeper, ["running"], "sleeper");
  await sleep(300);
  eq((await http("POST", `/v1/jobs/${sleeper}/kill`)).status, 200, "sleeper: POST /kill status");
  await waitState(sleeper, ["killed"], "sleeper");
  const o2 = await output(sleeper, "sleeper");
  eq(o2.stdout, "up\n", "sleeper: stdout");
  eq(o2.exitCode, null, "sleeper: exitCode of a killed run");

  // done: an interpreted run.
  const hello = await execute(py("import sys\nprint('hi')\nprint('err', file=sys.stderr)\nsys.exit(2)", { autoStart: true, collectOutput: true }), "python");
  await waitState(hello, ["done"], "python");
  const o3 = await output(hello, "python");
  eq([o3.stdout, o3.stderr, o3.exitCode, o3.signal], ["hi\n", "err\n", 2, null], "python: RunResult");
  eq([o3.timedOut, o3.idleTimedOut, o3.truncated, o3.artifactsTruncated], [false, false, false, false], "python: flags");
  eq("compile" in o3, false, "python: a compile object without a compile step");

  // done: a compiled run, with its compile stage.
  const cOk = await execute(c('#include <stdio.h>\nint main(void) { puts("hi from c"); return 0; }\n', { autoStart: true, collectOutput: true }), "c");
  await waitState(cOk, ["done"], "c");
  const o4 = await output(cOk, "c");
  check(o4.compile, "c: no compile object", o4);
  eq([o4.stdout, o4.exitCode], ["hi from c\n", 0], "c: RunResult");
  eq(o4.compile.exitCode, 0, "c: compile.exitCode");

  // done: a compile error (the run stage does not execute).
  const cBad = await execute(c("int main(void) { return nope; }\n", { autoStart: true, collectOutput: true }), "c compile error");
  await waitState(cBad, ["done", "error"], "c compile error");
  const o5 = await output(cBad, "c compile error");
  check(o5.compile, "c compile error: no compile object", o5);
  check(o5.compile.exitCode !== 0 && o5.compile.exitCode !== null, "c compile error: compile.exitCode", o5.compile);
  check(o5.compile.output.includes("nope"), "c compile error: compile.output lacks the diagnostic", o5.compile);
  eq(o5.stdout, "", "c compile error: run stdout");
  if (!o5.compile.stderr.includes("nope")) {
    log("note: compile.stderr does not hold the compiler's diagnostics (they are in compile.stdout and compile.output)");
  }

  // Without collectOutput there is no RunResult.
  const r = await http("GET", `/v1/jobs/${early}x/output`);
  eq([r.status, r.json], [404, { error: `Job output not found: ${early}x` }], "GET /output of an unknown job");
  const nf = await http("GET", `/v1/jobs/${early}x`);
  eq([nf.status, nf.json], [404, { error: `Job not found: ${early}x` }], "GET /v1/jobs/{unknown}");

  log(`states seen: ${[...seenStates].join(", ")}`);
  for (const s of ["queued", "running", "done", "killed", "error"]) check(seenStates.has(s), `state ${s} was never observed`);
});
