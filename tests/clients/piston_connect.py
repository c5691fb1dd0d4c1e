"""Piston's interactive WebSocket (`/api/v2/connect`) against Kiln, with websocket-client: a
python program fed stdin line by line and then killed, a C program's compile and run stages,
and the protocol's close codes for misuse. Env: KILN_BASE, KILN_TOKEN. Exits non-zero on the
first mismatch."""
import json
import os

import websocket

URL = os.environ["KILN_BASE"].replace("http://", "ws://") + "/api/v2/connect"
TOKEN = os.environ["KILN_TOKEN"]


def connect(bare=True):
    auth = TOKEN if bare else f"Bearer {TOKEN}"
    return websocket.create_connection(URL, header=[f"Authorization: {auth}"], timeout=20)


def recv(ws):
    """The next message, or {"close": code} when the server closes."""
    op, data = ws.recv_data(control_frame=True)
    if op == websocket.ABNF.OPCODE_CLOSE:
        return {"close": int.from_bytes(data[:2], "big")}
    assert op == websocket.ABNF.OPCODE_TEXT, (op, data)
    msg = json.loads(data)
    print("<-", msg)
    return msg


def send(ws, msg):
    print("->", msg)
    ws.send(json.dumps(msg))


def until_data(ws, needle):
    """Reads messages until stdout has shown `needle`; returns the other messages seen."""
    seen, out = [], ""
    while needle not in out:
        msg = recv(ws)
        assert "close" not in msg, (msg, out)
        if msg.get("type") == "data":
            assert msg["stream"] == "stdout", msg
            out += msg["data"]
        else:
            seen.append(msg)
    return seen


def init(language, content, **extra):
    return {"type": "init", "language": language, "version": "*", "files": [{"content": content}],
            "args": [], "run_timeout": 20000, **extra}


# At the end of its stdin it waits, so only the kill ends it.
PROGRAM = ("import sys, time\nprint('ready')\nwhile True:\n    line = sys.stdin.readline()\n"
           "    if not line:\n        time.sleep(60)\n    print('got', line.strip())\n")

# Interactive stdin, then a kill.
ws = connect()
send(ws, init("python", PROGRAM))
runtime = recv(ws)
assert runtime["type"] == "runtime" and runtime["language"] == "python" and runtime["version"], runtime
seen = until_data(ws, "ready\n")
assert {"type": "stage", "stage": "run"} in seen, seen
for word in ["one", "two"]:
    send(ws, {"type": "data", "stream": "stdin", "data": word + "\n"})
    until_data(ws, f"got {word}\n")
send(ws, {"type": "kill"})
msg = recv(ws)
while msg.get("type") == "data":
    msg = recv(ws)
assert msg["type"] == "exit" and msg["stage"] == "run", msg
assert msg["signal"] == "SIGKILL" and msg["code"] is None, msg
assert recv(ws) == {"close": 4999}

# A signal that ends a process ends the job the same way (Bearer works too).
ws = connect(bare=False)
send(ws, init("python", PROGRAM))
assert recv(ws)["type"] == "runtime"
until_data(ws, "ready\n")
send(ws, {"type": "signal", "signal": "SIGTERM"})
msg = recv(ws)
assert msg["type"] == "exit" and msg["signal"] == "SIGKILL", msg
assert recv(ws) == {"close": 4999}

# A compiled program: its compile stage, then its run, to a clean exit.
ws = connect()
send(ws, init("c", '#include <stdio.h>\nint main(void) { char s[64]; if (fgets(s, sizeof s, stdin)) printf("c %s", s); return 0; }\n'))
assert recv(ws)["type"] == "runtime"
assert recv(ws) == {"type": "stage", "stage": "compile"}
msg = recv(ws)
while msg.get("type") == "data":
    msg = recv(ws)
assert msg == {"type": "exit", "stage": "compile", "code": 0, "signal": None}, msg
assert recv(ws) == {"type": "stage", "stage": "run"}
send(ws, {"type": "data", "stream": "stdin", "data": "hi\n"})
until_data(ws, "c hi\n")
assert recv(ws) == {"type": "exit", "stage": "run", "code": 0, "signal": None}
assert recv(ws) == {"close": 4999}

# A compile error: the compiler's exit, its diagnostics as stderr.
ws = connect()
send(ws, init("c", "int main( {\n"))
assert recv(ws)["type"] == "runtime"
assert recv(ws) == {"type": "stage", "stage": "compile"}
msg, err = recv(ws), ""
while msg.get("type") == "data":
    assert msg["stream"] == "stderr", msg
    err += msg["data"]
    msg = recv(ws)
assert "error" in err, err
assert msg["type"] == "exit" and msg["stage"] == "compile" and msg["code"] != 0, msg
assert recv(ws) == {"close": 4999}

# Misuse, and its close codes.
ws = connect()
assert recv(ws) == {"close": 4001}, "no init within a second"
ws = connect()
send(ws, {"type": "data", "stream": "stdin", "data": "x"})
assert recv(ws) == {"close": 4003}
ws = connect()
send(ws, init("cobol", "x"))
msg = recv(ws)
assert msg == {"type": "error", "message": "cobol-* runtime is unknown"}, msg
assert recv(ws) == {"close": 4002}
for bad, code in [
    ({"type": "init", "language": "python", "version": "*", "files": []}, 4000),
    ({"type": "data", "stream": "stdout", "data": "x"}, 4004),
    ({"type": "signal", "signal": "SIGNOPE"}, 4005),
]:
    ws = connect()
    send(ws, init("python", PROGRAM))
    assert recv(ws)["type"] == "runtime"
    send(ws, bad)
    msg = recv(ws)
    while "close" not in msg:
        msg = recv(ws)
    assert msg == {"close": code}, (bad, msg)
print("ok")
