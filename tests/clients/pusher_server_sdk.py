"""The official Pusher server SDK for Python (`pusher` 3.3.4) against Kiln:

1. its `authenticate(channel, socket_id)` gives byte for byte the `auth` that Kiln's
   /v1/channel-auth gives for the same socket id and channel (JSON and form bodies alike);
2. its `trigger` and `trigger_batch` against Kiln's /apps/{appId}/events and batch_events are
   accepted, and the events reach a pysher subscriber of a public channel; a request signed with
   the wrong secret is refused.

Environment: KILN_BASE, KILN_TOKEN, KILN_APP_KEY, KILN_APP_SECRET and KILN_APP_ID (numeric: the
python SDK refuses any other app id).
"""

import json
import logging
import queue
import sys
from urllib.parse import urlparse

import pusher
import pusher.errors
import pysher
import requests

from clientlib import Check, check, eq, env, log

BASE = env("KILN_BASE").rstrip("/")
TOKEN = env("KILN_TOKEN")
KEY = env("KILN_APP_KEY")
SECRET = env("KILN_APP_SECRET")
APP_ID = env("KILN_APP_ID")
AUTH = {"Authorization": f"Bearer {TOKEN}"}
URL = urlparse(BASE)


def sdk(secret=SECRET):
    return pusher.Pusher(app_id=APP_ID, key=KEY, secret=secret, host=URL.hostname, port=URL.port, ssl=False)


def channel_auth(socket_id, channel, form):
    body = {"socket_id": socket_id, "channel_name": channel}
    if form:
        r = requests.post(BASE + "/v1/channel-auth", data=body, headers=AUTH, timeout=10)
    else:
        r = requests.post(BASE + "/v1/channel-auth", json=body, headers=AUTH, timeout=10)
    return r.status_code, r.json()


def connect_pysher():
    client = pysher.Pusher(KEY, custom_host=URL.hostname, port=URL.port, secure=False, log_level=logging.WARNING)
    connected = queue.Queue()
    replies = queue.Queue()
    client.connection.bind("pusher:connection_established", lambda data: connected.put(data))
    # pysher creates the Channel only after sending the subscribe, so replies are caught here.
    deliver = client.connection.event_handler

    def handler(event_name, data, channel_name):
        if event_name in ("pusher_internal:subscription_succeeded", "pusher:subscription_error"):
            replies.put((channel_name, event_name))
        deliver(event_name, data, channel_name)

    client.connection.event_handler = handler
    client.connect()
    try:
        connected.get(timeout=10)
    except queue.Empty:
        check(False, f"pysher did not connect to {client.url}")
    log(f"pysher connected as socket {client.connection.socket_id}")
    return client, replies


def main():
    # 1. Channel auth: the SDK's signature and Kiln's are the same bytes.
    r = requests.post(
        BASE + "/v1/execute",
        json={"language": "python", "files": [{"name": "main.py", "content": "print(1)"}]},
        headers=AUTH,
        timeout=10,
    )
    eq(r.status_code, 202, f"POST /v1/execute ({r.text})")
    job = r.json()
    channel = job["channel"]
    client, replies = connect_pysher()
    for socket_id in ["1234.1234", "1.2", "98765432109876543.123456789012345678", client.connection.socket_id]:
        want = sdk().authenticate(channel=channel, socket_id=socket_id)
        check(set(want) == {"auth"}, f"the SDK gave more than auth: {want}")
        for form in (False, True):
            got = channel_auth(socket_id, channel, form)
            eq(got, (200, want), f"/v1/channel-auth ({'form' if form else 'JSON'}) for socket {socket_id}")
        log(f"auth for {socket_id} ✓ {want['auth']}")
    # Another key or secret signs differently: the match above is not a coincidence.
    other = pusher.Pusher(app_id=APP_ID, key=KEY, secret=SECRET + "x").authenticate(channel, "1.2")
    check(other != channel_auth("1.2", channel, False)[1], "a wrong secret gives the same auth")
    eq(channel_auth("1.2", "private-run-not-mine", False)[0], 403, "/v1/channel-auth for a job that is not ours")
    requests.post(BASE + f"/v1/jobs/{job['jobId']}/kill", headers=AUTH, timeout=10)

    # 2. Triggers through Kiln's HTTP events API reach a subscriber.
    events = queue.Queue()
    channels = ["kiln-public-a", "kiln-public-b"]
    for name in channels:
        ch = client.subscribe(name)
        ch.bind("greeting", lambda data, name=name: events.put((name, "greeting", data)))
        ch.bind("batched", lambda data, name=name: events.put((name, "batched", data)))
    subscribed = set()
    while subscribed != set(channels):
        try:
            got = replies.get(timeout=10)
        except queue.Empty:
            check(False, f"subscription replies: only {subscribed}")
        eq(got[1], "pusher_internal:subscription_succeeded", f"the reply to subscribe {got[0]}")
        subscribed.add(got[0])
    log(f"subscribed to {channels}")

    answer = sdk().trigger(channels, "greeting", {"hello": "world", "n": 1})
    log(f"trigger → {answer!r}")
    check(isinstance(answer, dict), f"trigger answered {answer!r}")
    received = {}
    for _ in channels:
        try:
            ch, name, data = events.get(timeout=10)
        except queue.Empty:
            check(False, f"the triggered event did not reach every channel: {received}")
        check(isinstance(data, str), f"event data is not a string: {data!r}")
        received[ch] = json.loads(data)
    eq(received, {c: {"hello": "world", "n": 1} for c in channels}, "the triggered event's data")
    log("trigger ✓")

    answer = sdk().trigger_batch([
        {"channel": "kiln-public-a", "name": "batched", "data": "plain text"},
        {"channel": "kiln-public-b", "name": "batched", "data": {"k": [1, 2]}},
    ])
    log(f"trigger_batch → {answer!r}")
    got = {}
    for _ in range(2):
        try:
            ch, name, data = events.get(timeout=10)
        except queue.Empty:
            check(False, f"batched events missing: {got}")
        got[ch] = data
    eq(got, {"kiln-public-a": "plain text", "kiln-public-b": json.dumps({"k": [1, 2]})},
       "the batched events' data (verbatim, as the SDK encoded it)")
    log("trigger_batch ✓")

    try:
        sdk(secret=SECRET + "x").trigger("kiln-public-a", "greeting", {"forged": True})
        check(False, "a trigger signed with the wrong secret was accepted")
    except pusher.errors.PusherBadAuth as e:
        log(f"wrong secret → PusherBadAuth ✓ ({e})")
    try:
        forged = events.get(timeout=0.5)
        check(False, f"a refused trigger was delivered: {forged}")
    except queue.Empty:
        pass
    client.disconnect(timeout=1)
    log("PASS")


if __name__ == "__main__":
    try:
        main()
    except Check as e:
        print(f"FAIL: {e}", file=sys.stderr)
        sys.exit(1)
