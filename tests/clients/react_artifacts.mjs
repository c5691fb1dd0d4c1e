// The seed's browser SDK, @teovilla/code-runner-react 0.4.2, against Kiln in a DOM (jsdom):
// a component under <CodeRunnerProvider> uses useCodeRunnerJob for a collectOutput job that
// writes plot.png and data/out.csv, starts the job once its channel is subscribed, and renders
// the stdout, the result and one item per artifact the hook collected from the `artifact`
// events. Each artifact must pass the contract's schema and its URL must give its bytes.
//
// jsdom only provides the DOM: under Node the hook's `import Pusher from "pusher-js"` resolves to
// pusher-js's "main", its Node build, which brings its own WebSocket and XMLHttpRequest, so the
// provider's authEndpoint POST (with authHeaders) to /v1/channel-auth needs no browser globals.

import { JSDOM } from "jsdom";
import { createHash } from "node:crypto";
import { CodeRunnerClient } from "@teovilla/code-runner-sdk-node";
import { ArtifactSchema, ResultEventSchema } from "@teovilla/code-runner-contract";
import { APP_KEY, BASE, TOKEN, check, conforms, eq, log, run, sleep } from "./lib.mjs";

const dom = new JSDOM("<!doctype html><html><body><div id=root></div></body></html>", {
  url: "http://localhost/",
});
globalThis.window = dom.window;
globalThis.document = dom.window.document;
globalThis.navigator = dom.window.navigator;
globalThis.HTMLElement = dom.window.HTMLElement;
globalThis.IS_REACT_ACT_ENVIRONMENT = false;

const React = (await import("react")).default;
const { createRoot } = await import("react-dom/client");
const { CodeRunnerProvider, useCodeRunnerJob } = await import("@teovilla/code-runner-react");
const h = React.createElement;

const client = new CodeRunnerClient({ baseUrl: BASE, token: TOKEN });
const { hostname, port } = new URL(BASE);

const WRITER = String.raw`
import os, struct, zlib
def chunk(kind, data):
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
rows = b''.join(b'\x00' + bytes((x + y) % 256 for x in range(8 * 3)) for y in range(8))
open('plot.png', 'wb').write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', 8, 8, 8, 2, 0, 0, 0))
    + chunk(b'IDAT', zlib.compress(rows)) + chunk(b'IEND', b''))
os.makedirs('data', exist_ok=True)
open('data/out.csv', 'w').write('a,b\n1,2\n')
print('wrote 2 files')
`;

// What the component saw at its last render.
const latest = {};

function Job({ jobId }) {
  const job = useCodeRunnerJob({
    jobId,
    onSubscribed: () => client.start(jobId),
  });
  Object.assign(latest, job);
  return h(
    "section",
    null,
    h("p", { id: "status" }, job.status),
    h("pre", { id: "stdout" }, job.stdout),
    h("ul", { id: "artifacts" }, job.artifacts.map((a) => h("li", { key: a.url, "data-mime": a.mimeType }, a.name))),
  );
}

run(async () => {
  const job = await client.execute({
    language: "python",
    files: [{ name: "main.py", content: WRITER }],
    collectOutput: true,
  });
  const root = createRoot(document.getElementById("root"));
  root.render(
    h(
      CodeRunnerProvider,
      {
        appKey: APP_KEY,
        host: hostname,
        port: Number(port),
        useTLS: false,
        cluster: "",
        authEndpoint: `${BASE}/v1/channel-auth`,
        authHeaders: { Authorization: `Bearer ${TOKEN}` },
      },
      h(Job, { jobId: job.jobId }),
    ),
  );
  const end = Date.now() + 60000;
  while (!(latest.status === "done" && latest.artifacts?.length === 2)) {
    check(Date.now() < end, "the hook did not reach done with two artifacts", {
      status: latest.status,
      stdout: latest.stdout,
      artifacts: latest.artifacts,
    });
    await sleep(50);
  }
  // Give a stray third artifact event the time to arrive (there must be none).
  await sleep(300);
  conforms(ResultEventSchema, latest.result, "the hook's result");
  eq(latest.result.exitCode, 0, "exit code");
  eq(latest.stdout, "wrote 2 files\n", "the hook's stdout");
  const artifacts = latest.artifacts.map((a) => conforms(ArtifactSchema, a, "an artifact event"));
  eq(artifacts.map((a) => a.name), ["data/out.csv", "plot.png"], "the hook's artifacts");
  const items = [...document.querySelectorAll("#artifacts li")].map((li) => [li.textContent, li.dataset.mime]);
  eq(items, [["data/out.csv", "text/csv"], ["plot.png", "image/png"]], "the rendered artifacts");
  eq(document.getElementById("status").textContent, "done", "the rendered status");
  for (const a of artifacts) {
    const res = await fetch(a.url);
    eq(res.status, 200, `GET ${a.name} by its URL`);
    const body = Buffer.from(await res.arrayBuffer());
    eq(body.length, a.bytes, `${a.name}'s size`);
    if (a.name === "plot.png") eq([...body.subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47], "plot.png's signature");
    log(`${a.name}: ${a.mimeType}, ${a.bytes} bytes, sha256 ${createHash("sha256").update(body).digest("hex").slice(0, 16)}…`);
  }
  root.unmount();
  log(`useCodeRunnerJob rendered ${items.length} artifacts of job ${job.jobId}`);
}, 80000);
