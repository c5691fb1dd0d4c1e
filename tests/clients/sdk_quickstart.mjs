// The reference server SDK, @teovilla/code-runner-sdk-node 0.4.0, against Kiln unchanged: its
// README quickstart (execute, subscribe, start, stdin, close) with pusher-js as the subscriber,
// then each of its typed errors.
//
// Extra environment: KILN_BASE_SMALL, a server started with `--capacity 1 --queue-depth 1`.

import {
  CodeRunnerClient,
  CodeRunnerError,
  CapacityError,
  NotFoundError,
  RateLimitError,
  UnauthorizedError,
  ValidationError,
} from "@teovilla/code-runner-sdk-node";
import {
  BASE,
  TOKEN,
  check,
  connectPusher,
  env,
  eq,
  log,
  run,
  show,
  sleep,
  subscribe,
  waitFor,
  waitSseEvent,
} from "./lib.mjs";

const client = new CodeRunnerClient({ baseUrl: BASE, token: TOKEN });

// Calls `fn`, which must throw an instance of `Type`; returns the error.
async function throws(Type, what, fn) {
  let value;
  try {
    value = await fn();
  } catch (e) {
    check(
      e instanceof Type,
      `${what}: expected ${Type.name}, got ${e?.name}`,
      { message: e?.message, status: e?.status, body: e?.body },
    );
    check(e instanceof CodeRunnerError, `${what}: ${e.name} is not a CodeRunnerError`);
    log(`${what} → ${e.name} (${e.status}): ${e.message}`);
    return e;
  }
  return check(false, `${what}: expected ${Type.name}, but the call succeeded`, value);
}

const hello = { language: "python", files: [{ name: "main.py", content: "name = input(); print('hi', name)" }] };

async function quickstart() {
  const langs = await client.listLanguages();
  check(Array.isArray(langs), "listLanguages() is not an array", langs);
  const python = langs.find((l) => l.language === "python");
  check(python, "listLanguages() has no python", langs);
  log(`listLanguages(): ${langs.length} languages; python ${python.version} aliases ${python.aliases}`);

  const job = await client.execute(hello);
  log("execute() →", show(job));
  check(typeof job.jobId === "string" && job.jobId.length > 0, "execute() gave no jobId", job);
  eq(job.channel, `private-run-${job.jobId}`, "execute().channel");
  eq(job.status, "queued", "execute().status");

  const pusher = await connectPusher();
  const { events } = await subscribe(pusher, job.channel);

  await client.start(job.jobId);
  log("start() ok");
  await client.sendStdin(job.jobId, "world\n");
  log("sendStdin() ok");
  await client.closeStdin(job.jobId);
  log("closeStdin() ok");

  await waitFor(events, "result");
  log("events:", events.map((e) => e.name).join(" "));
  const stdout = events
    .filter((e) => e.name === "stdout")
    .sort((a, b) => a.data.seq - b.data.seq)
    .map((e) => e.data.chunk)
    .join("");
  check(stdout.includes("hi world"), "stdout does not contain 'hi world'", stdout, events);
  const results = events.filter((e) => e.name === "result");
  eq(results.length, 1, "number of result events");
  eq(results[0].data.exitCode, 0, "result.exitCode");

  // The state is recorded just after the result is published.
  let st;
  for (let i = 0; i < 100; i++) {
    st = await client.getJob(job.jobId);
    if (st.state !== "running" && st.state !== "starting") break;
    await sleep(50);
  }
  log("getJob() →", show(st));
  eq(st.state, "done", "getJob().state");
  eq(st.jobId, job.jobId, "getJob().jobId");
  const st2 = await client.getStatus(job.jobId);
  eq(st2.state, "done", "getStatus().state");
  pusher.disconnect();
}

async function typedErrors() {
  const bad = new CodeRunnerClient({ baseUrl: BASE, token: "not-the-token" });
  await throws(UnauthorizedError, "listLanguages() with a bad token", () => bad.listLanguages());
  await throws(UnauthorizedError, "execute() with a bad token", () => bad.execute(hello));
  const nf = await throws(NotFoundError, 'getJob("nope")', () => client.getJob("nope"));
  eq(nf.message, "Job not found: nope", "NotFoundError message");
  const empty = await throws(ValidationError, "execute() with files: []", () =>
    client.execute({ language: "python", files: [] }),
  );
  eq(empty.body?.error, "Validation error", "files: [] error");
  check(Array.isArray(empty.body?.details) && empty.body.details.length > 0, "files: [] has no details", empty.body);
  const up = await throws(ValidationError, "execute() with a ../x file", () =>
    client.execute({ language: "python", files: [{ name: "../x", content: "print(1)" }] }),
  );
  eq(up.body?.details?.[0]?.path, "files.0.name", "../x error path");
  await throws(ValidationError, "execute() with an unknown language", () =>
    client.execute({ language: "cobol", files: [{ name: "a", content: "1" }] }),
  );
}

async function stdinCap() {
  // Jobs do not drain stdin before their start, so two 40 KiB chunks go over the 64 KiB cap.
  const job = await client.execute({
    language: "python",
    files: [{ name: "main.py", content: "import sys\nsys.stdin.read()" }],
  });
  const chunk = "y".repeat(40 << 10);
  await client.sendStdin(job.jobId, chunk);
  const e = await throws(RateLimitError, "a second 40 KiB stdin chunk before start", () =>
    client.sendStdin(job.jobId, chunk),
  );
  eq(e.capBytes, 65536, "RateLimitError.capBytes");
  await client.kill(job.jobId);
}

async function capacity() {
  const small = new CodeRunnerClient({ baseUrl: env("KILN_BASE_SMALL"), token: TOKEN });
  const wait = { language: "python", files: [{ name: "main.py", content: "import sys\nsys.stdin.read()" }] };
  const first = await small.execute(wait);
  // The one worker claims the first job (its `stage queued` is published then), so the queue
  // holds one more, and the third is refused.
  await waitSseEvent(first.jobId, "stage", { base: env("KILN_BASE_SMALL") });
  const second = await small.execute(wait);
  const e = await throws(CapacityError, "a third execute() on a --capacity 1 --queue-depth 1 server", () =>
    small.execute(wait),
  );
  eq(e.retryAfterMs, 1000, "CapacityError.retryAfterMs");
  check(/^Executor at capacity/.test(e.message), "CapacityError message", e.message);
  await small.kill(first.jobId);
  await small.kill(second.jobId);
}

run(async () => {
  await quickstart();
  await typedErrors();
  await stdinCap();
  await capacity();
});
