# Copyright: weltgewebe.ops developers
# GNU Affero General Public License v3.0+
"""Filter ``weltgewebe.ops.scram_sha_256``: a PostgreSQL role's password as the SCRAM-SHA-256
verifier PostgreSQL stores (``pg_authid.rolpassword``), so a role is created with the verifier and
the password itself never reaches the database host, a command line or a log.

The salt is derived from the role and the password (HMAC-SHA-256), so the same password gives the
same verifier: comparing it with ``pg_authid`` tells whether the role is as wanted (idempotence)
without setting it again. Passwords are printable ASCII (PostgreSQL SASLprep-normalizes others,
which this does not do).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from ansible.errors import AnsibleFilterError

ITERATIONS = 4096  # PostgreSQL's default scram_iterations


def scram_sha_256(password: str, role: str, iterations: int = ITERATIONS) -> str:
    """``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`` (RFC 5802/7677, as PostgreSQL stores it)."""
    password, role = str(password), str(role)
    if not password or not all(" " <= ch <= "~" for ch in password):
        raise AnsibleFilterError("scram_sha_256: the password must be non-empty printable ASCII")
    salt = hmac.new(b"weltgewebe.ops scram salt", f"{role}\0{password}".encode(), hashlib.sha256).digest()[:16]
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, int(iterations))
    stored_key = hashlib.sha256(hmac.new(salted, b"Client Key", hashlib.sha256).digest()).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${int(iterations)}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


class FilterModule:
    def filters(self):
        return {"scram_sha_256": scram_sha_256}
