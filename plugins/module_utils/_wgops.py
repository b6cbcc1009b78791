# Copyright: weltgewebe.ops developers
# GNU Affero General Public License v3.0+
"""Ansible glue shared by the weltgewebe.ops modules: the library import guard, the common S3
argument spec (see the doc fragment weltgewebe.ops.s3) and turning parameters into a location."""

from __future__ import annotations

import traceback

from ansible.module_utils.basic import AnsibleModule, env_fallback, missing_required_lib

LIBRARY_IMPORT_ERROR = None
try:
    import weltgewebe_ops  # noqa: F401 - availability check
except ImportError:
    LIBRARY_IMPORT_ERROR = traceback.format_exc()


class WgopsModule(AnsibleModule):
    """AnsibleModule for this collection's modules: fails with the install hint, before anything else
    runs, when the weltgewebe_ops library is missing on the managed host."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        ensure_library(self)


def ensure_library(module) -> None:
    """Fail with the install hint when the weltgewebe_ops library is missing on the managed host."""
    if LIBRARY_IMPORT_ERROR:
        module.fail_json(
            msg=missing_required_lib(
                "weltgewebe-ops (the library of this collection)",
                reason="run `make venv` and use its Python as ansible_python_interpreter",
            ),
            exception=LIBRARY_IMPORT_ERROR,
        )


# Environment variables each S3 option falls back to, first match wins (the doc fragment
# weltgewebe.ops.s3 lists them): credentials never need to be on a command line that `ps` shows.
S3_ENV_FALLBACKS = {
    "s3_endpoint_url": ["WGOPS_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"],
    "s3_bucket": ["WGOPS_S3_BUCKET"],
    "s3_prefix": ["WGOPS_S3_PREFIX"],
    "s3_region": ["AWS_REGION", "AWS_DEFAULT_REGION"],
    "s3_access_key": ["WGOPS_S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"],
    "s3_secret_key": ["WGOPS_S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"],
}


def s3_argument_spec() -> dict:
    spec = {
        "s3_endpoint_url": {"type": "str", "default": ""},
        "s3_bucket": {"type": "str", "required": True},
        "s3_prefix": {"type": "str", "default": "weltgewebe/pg-primary"},
        "s3_region": {"type": "str", "default": "us-east-1"},
        "s3_access_key": {"type": "str", "required": True, "no_log": True},
        "s3_secret_key": {"type": "str", "required": True, "no_log": True},
    }
    for name, variables in S3_ENV_FALLBACKS.items():
        spec[name]["fallback"] = (env_fallback, variables)
    return spec


def s3_location(params: dict, kms_key_id: str = ""):
    from weltgewebe_ops.core.settings import S3Location

    return S3Location(
        endpoint_url=params["s3_endpoint_url"],
        bucket=params["s3_bucket"],
        access_key=params["s3_access_key"],
        secret_key=params["s3_secret_key"],
        region=params["s3_region"],
        prefix=params["s3_prefix"],
        kms_key_id=kms_key_id,
    )


def s3_error_message(exc) -> str:
    """One line for an S3 failure, with the fix for the usual ones (never the credentials)."""
    from weltgewebe_ops.core.s3 import error_message

    return error_message(exc)


# ContractNames' fields (the library's settings; a unit test keeps the two the same): declared, so
# ansible-doc lists them and Ansible refuses an unknown one by name; None = Weltgewebe's default
CONTRACT_NAME_OPTIONS = {
    name: {"type": "int" if name == "duplicate_window_seconds" else "str"}
    for name in (
        "accounts_table", "nodes_table", "edges_table", "conversations_table", "messages_table", "outbox_table",
        "consumptions_table", "projection_state_table", "migrations_table", "receipts_consumer", "faden_view",
        "tool_schema", "stream", "subject_prefix", "msg_id_prefix", "duplicate_window_seconds",
    )
}  # fmt: skip


def events_argument_spec() -> dict:
    """dsn (secret), nats_url and the contract's names, as documented by the fragment weltgewebe.ops.events."""
    return {
        "dsn": {"type": "str", "required": True, "no_log": True},
        "nats_url": {"type": "str", "required": True},
        "names": {"type": "dict", "default": {}, "options": CONTRACT_NAME_OPTIONS},
    }


def progress_argument_spec() -> dict:
    """progress_file, as documented by the fragment weltgewebe.ops.progress."""
    return {"progress_file": {"type": "path", "default": ""}}


def progress_file(module):
    """The ProgressFile O(progress_file) names (its directory made), or None."""
    from pathlib import Path

    from weltgewebe_ops.core.progress import ProgressFile

    if not module.params["progress_file"]:
        return None
    path = Path(module.params["progress_file"])
    path.parent.mkdir(parents=True, exist_ok=True)
    return ProgressFile(path)


def contract_names(module):
    """ContractNames from O(names) (defaults for what it leaves out); an unknown name fails the module."""
    from weltgewebe_ops.core.settings import ContractNames, SettingsError, settings_part

    try:
        given = {name: value for name, value in (module.params["names"] or {}).items() if value is not None}
        return settings_part(ContractNames, given, "names")
    except (SettingsError, TypeError) as exc:
        module.fail_json(msg=f"{exc} (known names: {', '.join(ContractNames.__dataclass_fields__)})")


class RestoreInterrupted(BaseException):
    """SIGTERM during a restore: Ctrl-C on the playbook, or Ansible ending an async job."""


def raise_on_sigterm() -> None:
    """Turn SIGTERM into ``RestoreInterrupted``, so a restore stops its PostgreSQL, marks its
    directory incomplete and removes its credentials on the way out."""
    import signal

    def interrupted(_signum, _frame):
        raise RestoreInterrupted()

    signal.signal(signal.SIGTERM, interrupted)


def interrupted_message(data_dir, marker_name: str) -> str:
    """What an interrupted restore left, for the module's failure."""
    marker = data_dir / marker_name
    left = f"{data_dir} is marked incomplete ({marker}): remove it" if marker.exists() else "nothing was left"
    return f"the restore was interrupted (SIGTERM); PostgreSQL was stopped; {left}"
