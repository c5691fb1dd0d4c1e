"""Drives a Kiln sandbox terminal over its WebSocket as a browser terminal would: types a command,
reads its output, resizes, and exits. argv: URL TOKEN. Prints one JSON line of what it saw."""
import json
import sys
import time

import websocket


def main():
    url, token = sys.argv[1], sys.argv[2]
    ws = websocket.create_connection(url, header=[f"Authorization: Bearer {token}"], timeout=20)
    seen = {"outputs": []}
    screen = b""

    def until(needle):
        """Reads until the screen shows `needle`, or (None) until the process's exit message."""
        nonlocal screen
        deadline = time.time() + 15
        while needle is None or needle not in screen:
            if time.time() > deadline:
                raise SystemExit(f"never saw {needle!r}; screen: {screen[-400:]!r}")
            op, data = ws.recv_data()
            if op == websocket.ABNF.OPCODE_BINARY:
                screen += data
            elif op == websocket.ABNF.OPCODE_TEXT:
                msg = json.loads(data)
                if msg.get("type") == "exit":
                    seen["exit"] = msg
                    if needle is None:
                        return
                    raise SystemExit(f"exited before {needle!r}: {msg}")
            elif op == websocket.ABNF.OPCODE_CLOSE:
                raise SystemExit(f"closed before {needle!r}; screen: {screen[-400:]!r}")

    ws.send_binary(b"echo typed-$((6*7))\r")
    until(b"typed-42")
    ws.send_binary(b"stty size; tty\r")
    until(b"24 80")
    until(b"/dev/pts/")
    ws.send(json.dumps({"type": "resize", "rows": 40, "cols": 132}))
    time.sleep(0.2)
    ws.send(json.dumps({"type": "input", "data": "stty size\r"}))
    until(b"40 132")
    ws.send_binary(b"exit 5\r")
    until(None)
    seen["screen"] = screen.decode("utf-8", "replace")
    print(json.dumps(seen))


main()
