"""A WebSocket echo server and a header echo on one port, stdlib only: the program the port
proxy tests run inside a sandbox. argv: PORT."""
import base64, hashlib, json, socket, struct, sys, threading
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
def read_exact(c, n):
    b = b""
    while len(b) < n:
        part = c.recv(n - len(b))
        if not part: raise EOFError
        b += part
    return b
def serve(c):
    head = b""
    while b"\r\n\r\n" not in head: head += c.recv(4096)
    lines = head.decode().split("\r\n")
    headers = {l.split(":", 1)[0].strip().lower(): l.split(":", 1)[1].strip() for l in lines[1:] if ":" in l}
    if "sec-websocket-key" not in headers:
        body = json.dumps({"path": lines[0].split(" ")[1], "headers": headers}).encode()
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        return c.close()
    accept = base64.b64encode(hashlib.sha1((headers["sec-websocket-key"] + GUID).encode()).digest()).decode()
    c.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n" % accept).encode())
    try:
        while True:
            b0, b1 = read_exact(c, 2)
            n = b1 & 127
            if n == 126: n = struct.unpack(">H", read_exact(c, 2))[0]
            elif n == 127: n = struct.unpack(">Q", read_exact(c, 8))[0]
            mask = read_exact(c, 4)
            data = bytes(x ^ mask[i % 4] for i, x in enumerate(read_exact(c, n)))
            if b0 & 15 == 8: return c.close()
            head = bytes([0x80 | (b0 & 15)])
            if len(data) < 126: head += bytes([len(data)])
            elif len(data) < 65536: head += bytes([126]) + struct.pack(">H", len(data))
            else: head += bytes([127]) + struct.pack(">Q", len(data))
            c.sendall(head + data)
    except EOFError:
        c.close()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(16)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
