// The reference SDK, @teovilla/code-runner-sdk-node 0.4.0, on Kiln's blobs and artifacts:
// executeFiles with binary files over its 256 KiB inline threshold (uploaded to the blob store
// by check, PUT to the presigned URL, finalize, then sent as {name, ref}), blobs.upload of a
// missing and then a present blob (no second PUT), and getOutput of a job whose files come back
// as artifacts, fetched by their URLs without a token. Every request and answer of the contract
// is checked against its strict zod schemas, and every artifact event too.
//
// Extra environment: KILN_TOKEN_B, a second token of the same server.

import { createHash } from "node:crypto";
import { CodeRunnerClient, ValidationError } from "@teovilla/code-runner-sdk-node";
import {
  ArtifactSchema,
  BlobCheckRequestSchema,
  BlobCheckResponseSchema,
  BlobFinalizeRequestSchema,
  BlobFinalizeResponseSchema,
  ExecuteRequestSchema,
  ExecuteResponseSchema,
  ResultEventSchema,
  RunResultSchema,
} from "@teovilla/code-runner-contract";
import {
  BASE,
  TOKEN,
  check,
  conforms,
  connectPusher,
  env,
  eq,
  log,
  run,
  sleep,
  subscribe,
  waitFor,
} from "./lib.mjs";

const TOKEN_B = env("KILN_TOKEN_B");

// Every request the SDK makes, with the JSON bodies both ways (checked against the contract).
const seen = [];
const realFetch = globalThis.fetch;
globalThis.fetch = async (url, init = {}) => {
  const entry = { method: init.method ?? "GET", url: String(url), bytes: 0 };
  if (typeof init.body === "string") entry.request = JSON.parse(init.body);
  else if (init.body) entry.bytes = init.body.byteLength;
  const res = await realFetch(url, init);
  if ((res.headers.get("content-type") ?? "").includes("application/json")) {
    entry.status = res.status;
    entry.answer = await res.clone().json();
  }
  seen.push(entry);
  return res;
};

const SCHEMAS = {
  "POST /v1/blobs/check": [BlobCheckRequestSchema, BlobCheckResponseSchema],
  "POST /v1/blobs/finalize": [BlobFinalizeRequestSchema, BlobFinalizeResponseSchema],
  "POST /v1/execute": [ExecuteRequestSchema, ExecuteResponseSchema],
};

// Checks the contract's bodies of the requests seen since `from`; returns them.
function contractCalls(from) {
  const calls = seen.slice(from);
  for (const c of calls) {
    const path = c.url.startsWith(BASE) ? new URL(c.url).pathname : c.url;
    const schemas = SCHEMAS[`${c.method} ${path}`];
    if (!schemas || c.status >= 400) continue;
    conforms(schemas[0], c.request, `${c.method} ${path} request`);
    conforms(schemas[1], c.answer, `${c.method} ${path} answer`);
  }
  return calls.map((c) => ({ ...c, path: c.url.startsWith(BASE) ? new URL(c.url).pathname : c.url }));
}

// Deterministic pseudo-random bytes.
function bytes(n, seed) {
  const out = Buffer.alloc(n);
  let block = createHash("sha256").update(seed).digest();
  for (let at = 0; at < n; at += block.length) {
    block.copy(out, at, 0, Math.min(block.length, n - at));
    block = createHash("sha256").update(block).digest();
  }
  return out;
}

const sha256 = (b) => createHash("sha256").update(b).digest("hex");

const client = new CodeRunnerClient({ baseUrl: BASE, token: TOKEN });
const clientB = new CodeRunnerClient({ baseUrl: BASE, token: TOKEN_B });

// Starts a queued job and waits for its end; its RunResult (validated).
async function runToOutput(c, jobId) {
  await c.start(jobId);
  const end = Date.now() + 60000;
  for (;;) {
    const st = await c.getJob(jobId);
    if (["done", "error", "killed"].includes(st.state)) break;
    check(Date.now() < end, `job ${jobId} did not end`, st);
    await sleep(50);
  }
  return conforms(RunResultSchema, await c.getOutput(jobId), "getOutput()");
}

async function executeFilesWithLargeBinaries() {
  const big = bytes(300 * 1024, "big");
  const huge = bytes(5 * 1024 * 1024, "huge");
  const program = [
    "import hashlib",
    "for name in ('big.bin', 'huge.bin'):",
    "    print(hashlib.sha256(open(name, 'rb').read()).hexdigest())",
  ].join("\n");
  const from = seen.length;
  const job = await client.executeFiles({
    language: "python",
    files: [
      { name: "main.py", content: program },
      { name: "big.bin", data: big },
      { name: "huge.bin", data: huge },
    ],
    collectOutput: true,
  });
  const calls = contractCalls(from);
  const puts = calls.filter((c) => c.method === "PUT");
  eq(puts.map((p) => p.bytes), [big.length, huge.length], "executeFiles PUT each large file once");
  check(puts.every((p) => !p.url.includes(TOKEN)), "an upload URL carries the token", puts);
  const execute = calls.find((c) => c.path === "/v1/execute");
  eq(
    execute.request.files.slice(1),
    [
      { name: "big.bin", ref: `sha256:${sha256(big)}` },
      { name: "huge.bin", ref: `sha256:${sha256(huge)}` },
    ],
    "executeFiles sends the large files by ref",
  );
  eq(
    calls.map((c) => `${c.method} ${c.path.startsWith("/v1/blobs/sha256:") ? "/v1/blobs/<hash>" : c.path}`),
    [
      "POST /v1/blobs/check", "PUT /v1/blobs/<hash>", "POST /v1/blobs/finalize",
      "POST /v1/blobs/check", "PUT /v1/blobs/<hash>", "POST /v1/blobs/finalize",
      "POST /v1/execute",
    ],
    "executeFiles' calls",
  );
  const out = await runToOutput(client, job.jobId);
  eq(out.stdout, `${sha256(big)}\n${sha256(huge)}\n`, "the program's hashes of its ref files");
  eq(out.artifacts, [], "inputs are not artifacts");
  log(`executeFiles: 300 KiB and 5 MiB by ref, hashes match (job ${job.jobId})`);
  return `sha256:${sha256(big)}`;
}

async function uploadMissingThenPresent() {
  const buf = bytes(64 * 1024, "upload");
  let from = seen.length;
  const first = await client.blobs.upload(buf);
  eq(first, { ref: `sha256:${sha256(buf)}` }, "blobs.upload() answer");
  let calls = contractCalls(from);
  eq(calls.filter((c) => c.method === "PUT").length, 1, "the first upload PUTs the bytes");
  from = seen.length;
  const again = await client.blobs.upload(buf);
  eq(again, first, "the second blobs.upload() answer");
  calls = contractCalls(from);
  eq(calls.map((c) => `${c.method} ${c.path}`), ["POST /v1/blobs/check"], "the second upload only checks");
  eq(calls[0].answer.present, [first.ref], "the blob is present");
  const checked = conforms(BlobCheckResponseSchema, await client.blobs.check([first.ref]), "blobs.check()");
  eq(checked, { missing: [], present: [first.ref] }, "blobs.check() of a held blob");
  log("blobs.upload: a missing blob PUT once, a present one not again");
  return first.ref;
}

// Writes plot.png (a real PNG) and data/out.csv, prints their hashes, and leaves main.py alone.
const WRITER = String.raw`
import hashlib, os, struct, zlib
def chunk(kind, data):
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
rows = b''.join(b'\x00' + bytes((x * 5 + y * 11) % 256 for x in range(32 * 3)) for y in range(32))
png = b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', 32, 32, 8, 2, 0, 0, 0)) \
    + chunk(b'IDAT', zlib.compress(rows)) + chunk(b'IEND', b'')
open('plot.png', 'wb').write(png)
os.makedirs('data', exist_ok=True)
open('data/out.csv', 'w').write('x,y\n1,1\n2,4\n3,9\n')
for name in ('plot.png', 'data/out.csv'):
    print(name, hashlib.sha256(open(name, 'rb').read()).hexdigest())
`;

async function artifactsByUrl() {
  const job = conforms(
    ExecuteResponseSchema,
    await client.execute({
      language: "python",
      files: [{ name: "main.py", content: WRITER }],
      collectOutput: true,
    }),
    "execute()",
  );
  const pusher = await connectPusher();
  const { events } = await subscribe(pusher, job.channel);
  const out = await runToOutput(client, job.jobId);
  await waitFor(events, "result");
  pusher.disconnect();
  const names = events.map((e) => e.name);
  const artifactEvents = events.filter((e) => e.name === "artifact").map((e) => conforms(ArtifactSchema, e.data, "artifact event"));
  conforms(ResultEventSchema, events.find((e) => e.name === "result").data, "result event");
  eq(artifactEvents.map((a) => a.name), ["data/out.csv", "plot.png"], "artifact events");
  check(names.lastIndexOf("artifact") < names.indexOf("result"), "artifact events come before result", names);

  const printed = Object.fromEntries(out.stdout.trim().split("\n").map((l) => l.split(" ")));
  eq(out.artifacts.map((a) => [a.name, a.mimeType]), [["data/out.csv", "text/csv"], ["plot.png", "image/png"]], "RunResult.artifacts");
  eq(out.artifactsTruncated, false, "artifactsTruncated");
  for (const a of out.artifacts) {
    // No Authorization header: the URL is the right.
    const res = await realFetch(a.url);
    check(res.status === 200, `GET ${a.url} without a token answered ${res.status}`);
    eq(res.headers.get("content-type"), a.mimeType, `${a.name}'s content type`);
    const body = Buffer.from(await res.arrayBuffer());
    eq(body.length, a.bytes, `${a.name}'s size`);
    eq(sha256(body), printed[a.name], `${a.name}'s bytes`);
    // The same file's URL with another name is refused.
    const altered = await realFetch(a.url.replace(encodeURIComponent(a.name.split("/").pop()), "other.bin"));
    eq(altered.status, 403, `an altered URL of ${a.name}`);
  }
  log(`getOutput: plot.png and data/out.csv fetched by URL, exact bytes (job ${job.jobId})`);
}

async function otherTokensSeeNothing(refOfA) {
  const checked = conforms(BlobCheckResponseSchema, await clientB.blobs.check([refOfA]), "blobs.check() by another token");
  eq(checked.present, [], "another token's check of the first token's blob");
  eq(checked.missing.map((m) => m.hash), [refOfA], "it is missing for the other token");
  let refused;
  try {
    await clientB.execute({
      language: "python",
      files: [{ name: "main.py", content: "print(1)" }, { name: "x.bin", ref: refOfA }],
    });
  } catch (e) {
    refused = e;
  }
  check(refused instanceof ValidationError, "a ref to another token's blob was not a ValidationError", refused);
  eq(refused.body?.details?.[0]?.path, "files.1.ref", "the refusal names the file");
  log(`another token: ${refOfA.slice(0, 20)}… missing, its ref refused (${refused.body.details[0].message})`);
}

run(async () => {
  const ref = await executeFilesWithLargeBinaries();
  await uploadMissingThenPresent();
  await artifactsByUrl();
  await otherTokensSeeNothing(ref);
  // Under the 90 s that crates/kiln/tests/all/clients.rs gives a script, so a hang ends here,
  // with a message.
}, 85000);
