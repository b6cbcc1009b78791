"""A small, persistent KMS on loopback for the sandbox's SSE-KMS (AWS KMS JSON protocol).

Why: SeaweedFS's built-in ``local`` KMS provider makes a new master key at every start and keeps
it in memory only, so every object encrypted before a restart of S3 becomes unreadable: a sandbox
that cannot survive ``sandbox-down``/``sandbox-up`` is no model of production. SeaweedFS's ``aws``
provider talks the AWS KMS protocol to any endpoint; this server answers ``GenerateDataKey``,
``Decrypt`` and ``DescribeKey`` with AES-256-GCM envelope encryption and keeps its master key in
``<state>/kms/keys.json`` (mode 0600). It is a sandbox part, not a production KMS.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"WGK1"


class KmsError(Exception):
    def __init__(self, kind: str, message: str, status: int = 400):
        super().__init__(message)
        self.kind, self.status = kind, status


class KeyStore:
    def __init__(self, path: Path, alias: str, region: str = "us-east-1"):
        self.path = path
        if not path.exists():
            key_id = str(uuid.uuid4())
            data = {
                "keys": {key_id: {"material": base64.b64encode(secrets.token_bytes(32)).decode(), "aliases": [alias]}}
            }
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(data, fh)
        self.data = json.loads(path.read_text())
        self.region = region

    def resolve(self, key: str) -> str:
        key = key.rsplit("key/", 1)[-1] if key.startswith("arn:") and "key/" in key else key
        key = key.rsplit(":", 1)[-1] if key.startswith("arn:") else key
        for key_id, entry in self.data["keys"].items():
            if key == key_id or key in entry["aliases"]:
                return key_id
        raise KmsError("NotFoundException", f"Key '{key}' does not exist")

    def arn(self, key_id: str) -> str:
        return f"arn:aws:kms:{self.region}:000000000000:key/{key_id}"

    def material(self, key_id: str) -> bytes:
        return base64.b64decode(self.data["keys"][key_id]["material"])


def _aad(context: dict | None) -> bytes | None:
    return json.dumps(context, sort_keys=True, separators=(",", ":")).encode() if context else None


def encrypt(store: KeyStore, key_id: str, plaintext: bytes, context: dict | None) -> bytes:
    nonce = secrets.token_bytes(12)
    sealed = AESGCM(store.material(key_id)).encrypt(nonce, plaintext, _aad(context))
    return MAGIC + key_id.encode() + nonce + sealed


def decrypt(store: KeyStore, blob: bytes, context: dict | None) -> tuple[str, bytes]:
    if not blob.startswith(MAGIC) or len(blob) < len(MAGIC) + 36 + 12 + 16:
        raise KmsError("InvalidCiphertextException", "ciphertext was not made by this KMS")
    key_id = blob[4:40].decode(errors="replace")
    if key_id not in store.data["keys"]:
        raise KmsError("NotFoundException", f"Key '{key_id}' does not exist")
    try:
        return key_id, AESGCM(store.material(key_id)).decrypt(blob[40:52], blob[52:], _aad(context))
    except Exception as exc:
        raise KmsError("InvalidCiphertextException", "ciphertext or encryption context does not match") from exc


def handle(store: KeyStore, target: str, body: dict) -> dict:
    action = target.split(".")[-1]
    if action == "GenerateDataKey":
        key_id = store.resolve(body.get("KeyId", ""))
        size = int(body.get("NumberOfBytes") or (32 if body.get("KeySpec", "AES_256") == "AES_256" else 16))
        plaintext = secrets.token_bytes(size)
        blob = encrypt(store, key_id, plaintext, body.get("EncryptionContext"))
        return {
            "KeyId": store.arn(key_id),
            "Plaintext": base64.b64encode(plaintext).decode(),
            "CiphertextBlob": base64.b64encode(blob).decode(),
        }
    if action == "Decrypt":
        key_id, plaintext = decrypt(
            store, base64.b64decode(body.get("CiphertextBlob", "")), body.get("EncryptionContext")
        )
        return {
            "KeyId": store.arn(key_id),
            "Plaintext": base64.b64encode(plaintext).decode(),
            "EncryptionAlgorithm": "SYMMETRIC_DEFAULT",
        }
    if action == "DescribeKey":
        key_id = store.resolve(body.get("KeyId", ""))
        return {
            "KeyMetadata": {
                "KeyId": key_id,
                "Arn": store.arn(key_id),
                "Enabled": True,
                "KeyState": "Enabled",
                "KeyUsage": "ENCRYPT_DECRYPT",
                "Origin": "AWS_KMS",
                "Description": "weltgewebe.ops sandbox key",
            }
        }
    raise KmsError("UnsupportedOperationException", f"{action} is not supported by the sandbox KMS")


def serve(port: int, key_file: Path, alias: str, access_key: str, describe_only_key: str = "") -> None:
    """``access_key`` may do everything (SeaweedFS uses it); ``describe_only_key`` (the archive's
    read-only identity) only DescribeKey, as a key policy granting kms:DescribeKey would allow."""
    store = KeyStore(key_file, alias)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt, *args):
            pass

        def do_POST(self):
            try:
                authorization = self.headers.get("Authorization", "")
                target = self.headers.get("X-Amz-Target", "")
                full = not access_key or f"Credential={access_key}/" in authorization
                describe = describe_only_key and f"Credential={describe_only_key}/" in authorization
                if not (full or (describe and target.endswith(".DescribeKey"))):
                    raise KmsError("AccessDeniedException", "unknown access key, or not allowed this action", 400)
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                status, reply = 200, handle(store, target, body)
            except KmsError as exc:
                status, reply = exc.status, {"__type": exc.kind, "message": str(exc)}
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"kms: listening on http://127.0.0.1:{port}, keys in {key_file}", flush=True)
    server.serve_forever()
