# Copyright: weltgewebe.ops developers
# GNU Affero General Public License v3.0+
"""Documentation fragment: what every module of this collection adds to
ansible.builtin.action_common_attributes (check_mode, diff_mode, platform): the description of the
C(idempotent) attribute, whose support and details each module states, and the platform."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
attributes:
  platform:
    platforms: posix
  idempotent:
    description:
      - Whether a second run with the same options, right after the first, reports no change and
        changes nothing (outside check mode).
"""
