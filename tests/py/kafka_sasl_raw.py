"""Hostile and malformed SASL exchanges against a SASL_SSL Kafka listener, in raw Kafka
frames over TLS (Python's ssl module, no Kafka client), each on a connection of its own:

* metadata_first: a Metadata request before authenticating: closed, no answer;
* unknown_mechanism: SaslHandshake GSSAPI: UNSUPPORTED_SASL_MECHANISM (33) with the
  enabled mechanisms, then closed;
* garbage_first: SCRAM-SHA-256, then SaslAuthenticate with bytes that are not a client-first
  message: SASL_AUTHENTICATION_FAILED (58) naming the problem, then closed;
* out_of_order: SaslAuthenticate before any handshake: ILLEGAL_SASL_STATE (34), then closed;
* wrong_password / unknown_user: a full SCRAM-SHA-256 exchange with a wrong password for
  USER and with a user that does not exist: both answer a server-first message of the same
  shape (salt, 4096 iterations) and fail with the same error and message;
* plain_wrong: PLAIN with a wrong password: 58, closed.

usage: kafka_sasl_raw.py HOST PORT CA USER
Prints one JSON document.
"""
import base64
import hashlib
import hmac
import json
import os
import socket
import ssl
import struct
import sys

host, port, ca, user = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
ctx.check_hostname = False


def connect():
    s = socket.create_connection((host, port), timeout=10)
    return ctx.wrap_socket(s)


def frame(api_key, version, corr, body):
    client_id = b"raw"
    header = struct.pack(">hhih", api_key, version, corr, len(client_id)) + client_id
    msg = header + body
    return struct.pack(">i", len(msg)) + msg


def recv_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            return None
        out += chunk
    return out


def recv_frame(s):
    """The response body after the correlation id, or None when the connection closed."""
    try:
        n = recv_exact(s, 4)
        if n is None:
            return None
        body = recv_exact(s, struct.unpack(">i", n)[0])
        return None if body is None else body[4:]
    except (ConnectionError, ssl.SSLError, socket.timeout):
        return None


def string(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def handshake(s, mechanism, corr=1):
    s.sendall(frame(17, 1, corr, string(mechanism)))
    body = recv_frame(s)
    err, count = struct.unpack(">hi", body[:6])
    mechs, at = [], 6
    for _ in range(count):
        (n,) = struct.unpack(">h", body[at : at + 2])
        mechs.append(body[at + 2 : at + 2 + n].decode())
        at += 2 + n
    return err, mechs


def authenticate(s, data, corr=2):
    s.sendall(frame(36, 0, corr, struct.pack(">i", len(data)) + data))
    body = recv_frame(s)
    if body is None:
        return None
    (err, n) = struct.unpack(">hh", body[:4])
    at = 4
    msg = None
    if n >= 0:
        msg = body[at : at + n].decode()
        at += n
    (blen,) = struct.unpack(">i", body[at : at + 4])
    return err, msg, body[at + 4 : at + 4 + blen]


def closed(s):
    return recv_frame(s) is None


report = {}

s = connect()
s.sendall(frame(3, 0, 1, struct.pack(">i", 0)))
report["metadata_first"] = {"closed_without_answer": recv_frame(s) is None}

s = connect()
err, mechs = handshake(s, "GSSAPI")
report["unknown_mechanism"] = {"error": err, "mechanisms": mechs, "closed": closed(s)}

s = connect()
handshake(s, "SCRAM-SHA-256")
err, msg, _ = authenticate(s, b"\xff\x00garbage")
report["garbage_first"] = {"error": err, "message": msg, "closed": closed(s)}

s = connect()
r = authenticate(s, b"n,,n=a,r=b")
report["out_of_order"] = {
    "error": None if r is None else r[0],
    "closed": closed(s),
}


def scram(name, password):
    s = connect()
    handshake(s, "SCRAM-SHA-256")
    cnonce = base64.b64encode(os.urandom(18)).decode()
    bare = f"n={name},r={cnonce}"
    err, _, first = authenticate(s, ("n,," + bare).encode())
    first = first.decode()
    fields = dict(f.split("=", 1) for f in first.split(","))
    salt = base64.b64decode(fields["s"])
    iterations = int(fields["i"])
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored = hashlib.sha256(client_key).digest()
    without = f"c=biws,r={fields['r']}"
    auth = f"{bare},{first},{without}".encode()
    sig = hmac.new(stored, auth, "sha256").digest()
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, sig))).decode()
    r = authenticate(s, f"{without},p={proof}".encode(), corr=3)
    return {
        "first_error": err,
        "salt_bytes": len(salt),
        "iterations": iterations,
        "nonce_extends_ours": fields["r"].startswith(cnonce),
        "error": None if r is None else r[0],
        "message": None if r is None else r[1],
        "closed": closed(s),
    }


report["wrong_password"] = scram(user, "not-the-password")
report["unknown_user"] = scram("nobody-" + os.urandom(4).hex(), "not-the-password")

s = connect()
handshake(s, "PLAIN")
err, msg, _ = authenticate(s, f"\0{user}\0not-the-password".encode())
report["plain_wrong"] = {"error": err, "message": msg, "closed": closed(s)}

print(json.dumps(report))
