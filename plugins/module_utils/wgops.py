# Copyright: weltgewebe.ops developers
# GNU Affero General Public License v3.0+
"""Ansible glue shared by the weltgewebe.ops modules: importing the library on the managed host."""

from __future__ import annotations

import traceback

from ansible.module_utils.basic import missing_required_lib

LIBRARY_IMPORT_ERROR = None
try:
    import weltgewebe_ops  # noqa: F401 - availability check
except ImportError:
    LIBRARY_IMPORT_ERROR = traceback.format_exc()


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
