"""pysher 1.0.8 (Pusher protocol 6) against Kiln's embedded Pusher endpoint: connect to
ws://HOST:PORT/app/<key>, subscribe to private-run-<jobId> with pysher's own auth_endpoint
support (a form POST to /v1/channel-auth with the bearer header), POST /start, and receive the
job's stage, stdout, usage and result events in order.

Environment: KILN_BASE, KILN_TOKEN, KILN_APP_KEY (see lib.mjs).
"""

import json
import logging
import queue
import sys
import time
from urllib.parse import urlparse

import pysher
import requests

from clientlib import Check, check, eq, env, log

BASE = env("KILN_BASE").rstrip("/")
TOKEN = env("KILN_TOKEN")
KEY = env("KILN_APP_KEY")
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def api(method, path, body=None):
    r = requests.request(method, BASE + path, json=body, headers=AUTH, timeout=10)
    try:
        return r.status_code, r.json()
    except ValueError:
        return r.status_code, r.text


def connect():
    url = urlparse(BASE)
    client = pysher.Pusher(
        KEY,
        custom_host=url.hostname,
        port=url.port,
        secure=False,
        auth_endpoint=BASE + "/v1/channel-auth",
        auth_endpoint_headers=AUTH,
        log_level=logging.WARNING,
    )
    connected = queue.Queue()
    client.connection.bind("pusher:connection_established", lambda data: connected.put(data))
    client.connect()
    try:
        data = connected.get(timeout=10)
    except queue.Empty:
        check(False, f"pysher did not connect to {client.url} (state {client.connection.state})")
    # pysher itself json.loads this data, so it must be a JSON *string*.
    check(isinstance(data, str), f"connection_established data is not a string: {data!r}")
    established = json.loads(data)
    check(established.get("activity_timeout"), f"no activity_timeout: {established}")
    log(f"pysher connected to {client.url} as socket {client.connection.socket_id}")
    return client


def watch_subscriptions(client):
    """A queue of (channel, outcome) for every subscription reply.

    pysher sends pusher:subscribe before it creates (and returns) the Channel that callbacks are
    bound on, so a fast server's subscription_succeeded can be dispatched to no one. The replies
    are therefore caught where the connection hands channel events to the client.
    """
    replies = queue.Queue()
    deliver = client.connection.event_handler

    def handler(event_name, data, channel_name):
        if event_name in ("pusher_internal:subscription_succeeded", "pusher:subscription_error"):
            replies.put((channel_name, event_name, data))
        deliver(event_name, data, channel_name)

    client.connection.event_handler = handler
    return replies


def subscribe(client, replies, channel_name):
    """Subscribes; returns a queue of (event name, raw data) in arrival order."""
    events = queue.Queue()
    channel = client.subscribe(channel_name)
    for name in ["stage", "stdout", "stderr", "compile_output", "usage", "result"]:
        channel.bind(name, lambda data, name=name: events.put((name, data)))
    try:
        got = replies.get(timeout=10)
    except queue.Empty:
        check(False, f"no subscription_succeeded for {channel_name}")
    eq(got[:2], (channel_name, "pusher_internal:subscription_succeeded"), f"the reply to subscribe ({got})")
    log(f"subscribed to {channel_name}")
    return events


def main():
    client = connect()
    replies = watch_subscriptions(client)
    code = "import sys\nprint('hello from pysher')\nprint(sys.stdin.readline().strip()[::-1])\n"
    status, job = api("POST", "/v1/execute", {
        "language": "python",
        "files": [{"name": "main.py", "content": code}],
    })
    eq(status, 202, f"POST /v1/execute ({job})")
    eq(job["channel"], "private-run-" + job["jobId"], "the channel")
    events = subscribe(client, replies, job["channel"])

    eq(api("POST", f"/v1/jobs/{job['jobId']}/start"), (202, {"ok": True}), "POST /start")
    eq(api("POST", f"/v1/jobs/{job['jobId']}/stdin", {"chunk": "rehsyp\n"}), (200, {"ok": True}), "stdin")
    eq(api("POST", f"/v1/jobs/{job['jobId']}/stdin/close")[0], 200, "stdin/close")

    got = []
    deadline = time.monotonic() + 30
    while not got or got[-1][0] != "result":
        left = deadline - time.monotonic()
        check(left > 0, f"no result within 30 s; got {got}")
        try:
            got.append(events.get(timeout=left))
        except queue.Empty:
            pass
    time.sleep(0.3)  # nothing may follow the result
    while not events.empty():
        got.append(events.get_nowait())
    log("events: " + " ".join(name for name, _ in got))

    parsed = []
    for name, data in got:
        # Pusher app events carry data as a JSON-encoded string; pysher passes it on raw.
        check(isinstance(data, str), f"{name} data is not a string: {data!r}")
        parsed.append((name, json.loads(data)))
    names = [n for n, _ in parsed]
    eq(names[0], "stage", "the first event")
    eq(names[-2:], ["usage", "result"], "the last two events")
    eq(names.count("result"), 1, "result events")
    first_out = names.index("stdout")
    check(all(n == "stage" for n in names[:first_out]), f"output before the stages end: {names}")
    check(all(n == "stdout" for n in names[first_out:-2]), f"not only stdout between stage and usage: {names}")
    stage = [d for n, d in parsed if n == "stage"]
    eq(stage[-1], {"phase": "running"}, "the last stage")
    chunks = [d for n, d in parsed if n == "stdout"]
    for d in chunks:
        eq(sorted(d), ["chunk", "seq"], "stdout event fields")
    eq([d["seq"] for d in chunks], list(range(len(chunks))), "stdout seqs")
    eq("".join(d["chunk"] for d in chunks), "hello from pysher\npysher\n", "stdout")
    result = parsed[-1][1]
    eq(sorted(result), sorted(["exitCode", "signal", "timedOut", "idleTimedOut", "truncated", "durationMs"]),
       "result fields")
    eq(result["exitCode"], 0, "result.exitCode")
    eq([result["signal"], result["timedOut"], result["idleTimedOut"], result["truncated"]],
       [None, False, False, False], "result flags")
    check(isinstance(result["durationMs"], int) and result["durationMs"] >= 0, f"durationMs: {result}")
    # websocket-client's reader thread can miss the close when another thread closes the socket
    # (it then sleeps in select); it is a daemon thread, so the wait is bounded, not needed.
    client.disconnect(timeout=1)
    log("PASS")


if __name__ == "__main__":
    try:
        main()
    except Check as e:
        print(f"FAIL: {e}", file=sys.stderr)
        sys.exit(1)
