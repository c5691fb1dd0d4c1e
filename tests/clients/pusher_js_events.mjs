// pusher-js 8 (its Node build) as the code-runner React hook uses it: subscribe to
// private-run-<jobId> (authorised by a form-urlencoded POST to /v1/channel-auth), wait for
// subscription_succeeded, POST /start, and follow the job's events. Their order must be the
// contract's, and every contract event's data must pass the contract's (strict) zod validators.

import { OutputChunkEventSchema, ResultEventSchema, StageEventSchema } from "@teovilla/code-runner-contract";
import { check, connectPusher, conforms, eq, http, log, run, show, subscribe, waitFor } from "./lib.mjs";

const SCHEMAS = {
  stage: StageEventSchema,
  stdout: OutputChunkEventSchema,
  stderr: OutputChunkEventSchema,
  compile_output: OutputChunkEventSchema,
  result: ResultEventSchema,
};
const PHASES = ["queued", "compiling", "running"];

// Checks the events of one job and returns its output by stream.
function checkEvents(events, what) {
  log(`${what}: ${events.map((e) => (e.name === "stage" ? `stage(${e.data.phase})` : e.name)).join(" ")}`);
  check(events.length > 0, `${what}: no events`);
  for (const [i, e] of events.entries()) {
    check(
      e.data !== null && typeof e.data === "object",
      `${what}: event #${i} ${e.name} data is not a JSON object (pusher-js parses the data string)`,
      e.data,
    );
    if (e.name === "usage") continue; // Kiln's own event, not in the contract.
    const schema = SCHEMAS[e.name];
    check(schema, `${what}: event #${i} has a name the contract does not know: ${e.name}`, e);
    conforms(schema, e.data, `${what}: event #${i} ${e.name}`);
  }
  const names = events.map((e) => e.name);
  eq(names[0], "stage", `${what}: the first event`);
  eq(names.filter((n) => n === "result").length, 1, `${what}: number of result events`);
  eq(names.at(-1), "result", `${what}: the last event`);
  eq(names.filter((n) => n === "usage").length, 1, `${what}: number of usage events`);
  eq(names.at(-2), "usage", `${what}: the event just before result`);

  // Stages move forward; compile output only while compiling, run output only while running.
  let phase = -1;
  const seqs = {};
  const output = { stdout: "", stderr: "", compile_output: "" };
  for (const e of events.slice(0, -2)) {
    if (e.name === "stage") {
      const p = PHASES.indexOf(e.data.phase);
      check(p > phase, `${what}: stage ${e.data.phase} after stage ${PHASES[phase]}`, names);
      phase = p;
      continue;
    }
    check(e.name in output, `${what}: ${e.name} between the stages and usage`, names);
    const want = e.name === "compile_output" ? "compiling" : "running";
    eq(PHASES[phase], want, `${what}: the phase during a ${e.name} event`);
    const next = seqs[e.name] ?? 0;
    eq(e.data.seq, next, `${what}: ${e.name} seq (per stream, from 0, in order)`);
    seqs[e.name] = next + 1;
    check(Buffer.byteLength(e.data.chunk) <= 8192, `${what}: a ${e.name} chunk over 8 KiB`, e.data.chunk.length);
    output[e.name] += e.data.chunk;
  }
  eq(PHASES[phase], "running", `${what}: the last stage before the result`);
  return { output, result: events.at(-1).data };
}

async function followJob(pusher, request, what) {
  const r = await http("POST", "/v1/execute", { body: request });
  eq(r.status, 202, `${what}: POST /v1/execute status (${r.text})`);
  const { jobId, channel } = r.json;
  const { events } = await subscribe(pusher, channel);
  const start = await http("POST", `/v1/jobs/${jobId}/start`);
  eq([start.status, start.json], [202, { ok: true }], `${what}: POST /start`);
  await waitFor(events, "result");
  pusher.unsubscribe(channel);
  return checkEvents(events, what);
}

run(async () => {
  const pusher = await connectPusher();

  // Python: stdout in several chunks (over 8 KiB), and stderr.
  const big = "x".repeat(20000);
  const py = await followJob(
    pusher,
    {
      language: "python",
      files: [
        {
          name: "main.py",
          content: `import sys\nprint('hello from kiln', flush=True)\nprint('${big}', flush=True)\nprint('oops', file=sys.stderr)\n`,
        },
      ],
    },
    "python",
  );
  eq(py.output.stdout, `hello from kiln\n${big}\n`, "python: stdout reassembled by seq");
  eq(py.output.stderr, "oops\n", "python: stderr");
  eq(py.result.exitCode, 0, "python: result.exitCode");
  eq([py.result.signal, py.result.timedOut, py.result.idleTimedOut, py.result.truncated], [null, false, false, false], "python: result flags");

  // C: a warning makes compile_output; then the run, which exits 3.
  const c = await followJob(
    pusher,
    {
      language: "c",
      files: [{ name: "main.c", content: '#include <stdio.h>\nint main(void) { int unused; puts("hi from c"); return 3; }\n' }],
    },
    "c",
  );
  check(c.output.compile_output.includes("unused"), "c: compile_output lacks the warning", c.output);
  eq(c.output.stdout, "hi from c\n", "c: stdout");
  eq(c.result.exitCode, 3, "c: result.exitCode");

  // A private channel of no job of ours is refused, and the socket stays usable.
  const refused = await subscribe(pusher, "private-run-not-a-job").then(
    () => null,
    (e) => e,
  );
  check(refused, "subscribing to private-run-not-a-job succeeded");
  log(`private-run-not-a-job refused: ${show(refused.message)}`);
  eq(pusher.connection.state, "connected", "the connection after a refused subscription");
  pusher.disconnect();
});
