"""A TCP bulk transfer with a checksum on both ends, run inside test namespaces.

python -m tests.integration.tunnel.tcp_transfer receive PORT       -> prints "listening", then "<bytes> <sha256>"
python -m tests.integration.tunnel.tcp_transfer send HOST PORT SIZE -> prints "<bytes> <sha256>"
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys

CHUNK = 1 << 20


def receive(port: int) -> None:
    with socket.create_server(("0.0.0.0", port)) as server:
        print("listening", flush=True)
        connection, _ = server.accept()
        digest = hashlib.sha256()
        total = 0
        buffer = bytearray(CHUNK)
        with connection:
            while length := connection.recv_into(buffer):
                digest.update(memoryview(buffer)[:length])
                total += length
    print(total, digest.hexdigest(), flush=True)


def send(host: str, port: int, size: int) -> None:
    digest = hashlib.sha256()
    # Fresh random bytes per chunk: a repeated block could hide reordered or duplicated segments.
    with socket.create_connection((host, port), timeout=30) as connection:
        sent = 0
        while sent < size:
            chunk = os.urandom(min(CHUNK, size - sent))
            connection.sendall(chunk)
            digest.update(chunk)
            sent += len(chunk)
    print(sent, digest.hexdigest(), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "receive":
        receive(int(sys.argv[2]))
    else:
        send(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
