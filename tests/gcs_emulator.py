"""A real GCS protocol server on loopback for `gs://` tests: `gcp-storage-emulator` (PyPI) plus a TLS proxy.

Clients and how each is pointed at the emulator:
- TensorStore (orbax's array writes) and any `google-cloud-storage`/`gcsfs` client: their documented settings,
  `TENSORSTORE_GCS_HTTP_URL` and `STORAGE_EMULATOR_HOST`.
- TensorFlow's own GCS filesystem (`tf.io.gfile`, `tf.data`, TensorBoard summaries, and `etils.epath`, which uses
  it) has no endpoint setting: its URLs are fixed to https://www.googleapis.com. It does honour libcurl's
  `https_proxy` and `CURL_CA_BUNDLE`, and `GOOGLE_AUTH_TOKEN_FOR_TESTING` for credentials, so its requests reach
  the emulator through a CONNECT proxy on loopback that terminates TLS with a certificate of a throw-away CA and
  forwards each request over plain HTTP (`python tests/gcs_emulator.py proxy ...` runs it and prints its port).

`python tests/gcs_emulator.py emulator ...` starts the emulator with two fixes of its request reading:
- TensorFlow's resumable uploads send both `Transfer-Encoding: chunked` and `Content-Length`; the emulator obeys
  Content-Length and stores the chunk framing, where HTTP (RFC 9112, 6.3) says chunked wins.
- An empty media upload (how TensorFlow makes a "folder/" marker) ends in `len(None)` and a dropped connection.
- Media downloads lack the `x-goog-generation` header, which TensorStore reads (OCDBT checkpoints need it).
- No `storageLayout` endpoint: TensorFlow asks it (hierarchical namespace or not) before renaming a folder.
- Listings ignore `startOffset`/`endOffset`: TensorStore lists a key range that way before it deletes it
  (`delete_existing`), so it would delete every object in the bucket.
"""

from __future__ import annotations

import contextlib
import datetime
import http.client
import http.server
import pathlib
import socket
import socketserver
import ssl
import subprocess
import sys
import time
import urllib.parse
import urllib.request

BUCKET = "textchem-test"
_HOP_BY_HOP = {"server", "date", "connection", "keep-alive", "proxy-connection", "proxy-authorization", "transfer-encoding", "upgrade", "host"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_certificates(folder: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path, pathlib.Path]:
    """(CA certificate, server certificate, server key) for Google's storage host names, made here."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    validity = (now - datetime.timedelta(days=1), now + datetime.timedelta(days=7))

    def certificate(subject, issuer, public_key, signing_key, extensions):
        builder = x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
        builder = builder.serial_number(x509.random_serial_number()).not_valid_before(validity[0]).not_valid_after(validity[1])
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(signing_key, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "textchem test CA")])
    ca = certificate(ca_name, ca_name, ca_key.public_key(), ca_key, [(x509.BasicConstraints(ca=True, path_length=None), True)])
    hosts = ["www.googleapis.com", "storage.googleapis.com", "oauth2.googleapis.com"]
    server = certificate(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]), ca_name, server_key.public_key(), ca_key,
        [(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), False),
         (x509.BasicConstraints(ca=False, path_length=None), True)],
    )
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return paths


class _ForwardingHandler(http.server.BaseHTTPRequestHandler):
    """CONNECT: answer, then speak TLS on the same socket; every request: forward to the emulator as plain HTTP."""

    protocol_version = "HTTP/1.1"
    emulator: str = ""
    tls: ssl.SSLContext | None = None

    def log_message(self, *args):  # quiet: the test output is for the test
        pass

    def do_CONNECT(self):
        self.send_response(200, "Connection Established")
        self.end_headers()
        self.wfile.flush()
        self.connection = self.tls.wrap_socket(self.connection, server_side=True)
        self.rfile = self.connection.makefile("rb")
        self.wfile = socketserver._SocketWriter(self.connection)
        self.close_connection = False

    def _body(self) -> bytes | None:
        if (self.headers.get("Transfer-Encoding") or "").lower() != "chunked":
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else None
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline().strip():  # trailers
            pass
        return b"".join(chunks)

    def _forward(self):
        body = self._body()
        url = urllib.parse.urlsplit(self.path)
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        # The emulator builds resumable-upload URLs from Host: naming the proxy keeps those uploads on HTTP/1.1
        # here (the emulator speaks 1.0 and never answers `Expect: 100-continue`: curl would wait 1 s each).
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers["Host"] = "{}:{}".format(*self.server.server_address[:2])
        upstream = http.client.HTTPConnection(self.emulator, timeout=60)
        try:
            upstream.request(self.command, path, body=body, headers=headers)
            response = upstream.getresponse()
            data = response.read()
        finally:
            upstream.close()
        self.send_response(response.status, response.reason)
        for key, value in response.getheaders():
            if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _forward


def serve_proxy(emulator: str, certificate: str, key: str) -> None:
    """Serves on a port the system picks, and prints it. A port picked beforehand may be taken by the time the
    proxy binds it: a full run once saw its CONNECT answered with 501 (not by this proxy) and failed a test."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate, key)
    handler = type("Handler", (_ForwardingHandler,), {"emulator": emulator, "tls": context})
    http.server.ThreadingHTTPServer.daemon_threads = True
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


def serve_emulator(args: list[str]) -> None:
    from gcp_storage_emulator import __main__ as emulator
    from gcp_storage_emulator import server
    from gcp_storage_emulator.handlers import objects

    import types

    read_raw_data, media_upload, download, ls = server._read_raw_data, objects._media_upload, objects.download, objects.ls

    def read_raw_data_chunked_first(request_handler):
        if (request_handler.headers.get("Transfer-Encoding") or "").lower() == "chunked":
            del request_handler.headers["Content-Length"]
        return read_raw_data(request_handler)

    def media_upload_of_empty_objects_too(request, response, storage):
        if request.data is None:
            request._data = b""
        return media_upload(request, response, storage)

    def download_with_generation(request, response, storage, *args, **kwargs):
        with contextlib.suppress(Exception):  # a missing object: `download` answers 404
            stored = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
            response["x-goog-generation"], response["x-goog-metageneration"] = stored["generation"], stored["metageneration"]
        return download(request, response, storage, *args, **kwargs)

    def ls_within_offsets(request, response, storage, *args, **kwargs):
        start, end = (request.query.get(key, [None])[0] for key in ("startOffset", "endOffset"))

        def within(*list_args, **list_kwargs):
            files, prefixes = storage.get_file_list(*list_args, **list_kwargs)
            keep = lambda name: (start is None or name >= start) and (end is None or name < end)  # noqa: E731
            return [f for f in files if keep(f["name"])], [p for p in prefixes if keep(p)]

        return ls(request, response, types.SimpleNamespace(get_file_list=within), *args, **kwargs)

    def storage_layout(request, response, storage, *args, **kwargs):
        name = request.params["bucket_name"]
        response.json({"kind": "storage#storageLayout", "bucket": name, "location": "US", "locationType": "multi-region",
                       "hierarchicalNamespace": {"enabled": False}})  # fmt: skip

    server._read_raw_data, objects._media_upload = read_raw_data_chunked_first, media_upload_of_empty_objects_too
    layout_route = (r"^{}/b/(?P<bucket_name>[-.\w]+)/storageLayout$".format(server.settings.API_ENDPOINT), {server.GET: storage_layout})
    server.HANDLERS = (layout_route, *server.HANDLERS)
    fixed = {download: download_with_generation, ls: ls_within_offsets}
    objects.download, objects.ls = fixed[download], fixed[ls]
    for _, methods in server.HANDLERS:
        methods.update({method: fixed[handler] for method, handler in methods.items() if handler in fixed})
    emulator.main(args)


def _wait_for(port: int, process: subprocess.Popen, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before it answered")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not answer on 127.0.0.1:{port} within {timeout} s")


@contextlib.contextmanager
def running(folder: pathlib.Path):
    """Starts the emulator (with bucket `BUCKET`) and the proxy; yields the environment clients need."""
    emulator_port = free_port()
    ca, certificate, key = write_certificates(folder)
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    processes = [subprocess.Popen(
        [sys.executable, __file__, "emulator", "start", "--host=127.0.0.1", f"--port={emulator_port}",
         "--in-memory", f"--default-bucket={BUCKET}", "--quiet"], **quiet)]
    try:
        _wait_for(emulator_port, processes[0], "gcp-storage-emulator")
        processes.append(subprocess.Popen([sys.executable, __file__, "proxy", f"127.0.0.1:{emulator_port}", str(certificate),
                                           str(key)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))  # fmt: skip
        announced = processes[1].stdout.readline().strip()  # its port once it listens; nothing if it died
        if not announced.isdigit():
            raise RuntimeError(f"the TLS proxy exited with {processes[1].wait()} before it listened")
        proxy_port = int(announced)
        proxy, emulator = f"http://127.0.0.1:{proxy_port}", f"http://127.0.0.1:{emulator_port}"
        yield {
            "https_proxy": proxy, "HTTPS_PROXY": proxy, "no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost",
            "CURL_CA_BUNDLE": str(ca), "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator",
            "TENSORSTORE_GCS_HTTP_URL": emulator, "STORAGE_EMULATOR_HOST": emulator,
            "GCS_RETRY_CONFIG_MAX_RETRIES": "2", "NO_GCE_CHECK": "True",  # google-auth: no metadata-server probe
        }
    finally:
        for process in processes:
            process.kill()
            process.wait()


def list_objects(env: dict[str, str], prefix: str = "") -> list[str]:
    """Object names in `BUCKET`, asked of the emulator directly (not through the clients under test)."""
    import json

    query = urllib.parse.urlencode({"prefix": prefix}) if prefix else ""
    url = f"{env['STORAGE_EMULATOR_HOST']}/storage/v1/b/{BUCKET}/o?{query}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=30) as response:
        return sorted(item["name"] for item in json.load(response).get("items", []))


if __name__ == "__main__":
    if sys.argv[1] == "emulator":
        serve_emulator(sys.argv[2:])
    else:
        serve_proxy(sys.argv[2], sys.argv[3], sys.argv[4])
