"""Talks to a WebSocket echo server in a Kiln sandbox through the port proxy, as any WebSocket
client would. argv: URL TOKEN. Prints the echoes, one per line."""
import sys

import websocket

url, token = sys.argv[1], sys.argv[2]
ws = websocket.create_connection(url, header=[f"Authorization: Bearer {token}"], timeout=20)
for msg in ["hello", "through the proxy", "x" * 70000]:
    ws.send(msg)
    back = ws.recv()
    print(back if len(back) < 100 else f"{len(back)} bytes")
ws.close()
