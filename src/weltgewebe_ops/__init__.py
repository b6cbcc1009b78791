"""weltgewebe.ops: the Weltgewebe runbook (onboarding and the DR drill) as a library.

The Ansible modules in ``plugins/modules`` are thin wrappers around this package; PostgreSQL's
archive hook and the sandbox's services call it through the ``wgops`` command.
"""

__version__ = "0.1.0"
