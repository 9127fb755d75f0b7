#!/usr/bin/env python3
"""A counting HTTP/1.1 proxy for the benchmark: sits between a registry and its S3 or
DynamoDB endpoint on 127.0.0.1 and counts the requests that pass, by operation.

    count-proxy.py LISTEN_PORT UPSTREAM_PORT

Requests are forwarded unchanged (the Host header included, so SigV4 signatures still
verify upstream). Two paths belong to the proxy itself:
    GET  /__berth_counts   the counts since the last reset, as JSON {"operation": n}
    POST /__berth_reset    sets every count to zero
An operation is the DynamoDB action (from X-Amz-Target) or the S3 method with the S3
sub-resource it names (uploads, uploadId, partNumber, ...).
"""

import http.client
import json
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "expect",
}
S3_SUBRESOURCES = ("uploads", "uploadId", "partNumber", "list-type", "delete", "tagging")

counts = Counter()
counts_lock = threading.Lock()
upstream_port = 0
local = threading.local()


def operation(method, path, headers):
    target = headers.get("X-Amz-Target")
    if target:
        return "dynamodb:" + target.rsplit(".", 1)[-1]
    query = parse_qs(urlsplit(path).query, keep_blank_values=True)
    named = [name for name in S3_SUBRESOURCES if name in query]
    return "s3:" + method + ("?" + "&".join(named) if named else "")


def upstream():
    connection = getattr(local, "connection", None)
    if connection is None:
        connection = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=120)
        local.connection = connection
    return connection


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(body)
                body += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def own(self):
        if self.path == "/__berth_counts" and self.command == "GET":
            with counts_lock:
                body = json.dumps(dict(sorted(counts.items()))).encode()
        elif self.path == "/__berth_reset" and self.command == "POST":
            with counts_lock:
                counts.clear()
            body = b"{}"
        else:
            return False
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        return True

    def forward(self):
        if self.own():
            return
        body = self.read_body()
        with counts_lock:
            counts[operation(self.command, self.path, self.headers)] += 1
        for attempt in (1, 2):
            connection = upstream()
            try:
                connection.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in self.headers.items():
                    if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                        connection.putheader(name, value)
                if body or self.command in ("PUT", "POST", "PATCH"):
                    connection.putheader("Content-Length", str(len(body)))
                connection.endheaders(body or None)
                response = connection.getresponse()
                payload = response.read()
                break
            except (http.client.HTTPException, ConnectionError):
                connection.close()
                local.connection = None
                if attempt == 2:
                    raise
        self.send_response_only(response.status, response.reason)
        for name, value in response.getheaders():
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        if self.command != "HEAD" or response.getheader("Content-Length") is None:
            self.send_header("Content-Length", str(len(payload)))
        else:
            self.send_header("Content-Length", response.getheader("Content-Length"))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = do_PATCH = forward


def main():
    global upstream_port
    listen_port, upstream_port = int(sys.argv[1]), int(sys.argv[2])
    server = ThreadingHTTPServer(("127.0.0.1", listen_port), Handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
