"""weltgewebe.ops: the Weltgewebe runbook (onboarding and the DR drill) as a library.

The Ansible modules in ``plugins/modules`` are thin wrappers around this package; PostgreSQL's
archive hook and the sandbox's services call it through the ``wgops`` command (``cli``).

One package per runbook step:

``archive``   WAL archiving of production and the archive's preflight (push, fetch, stream, base
              backups, the bucket's protection, coverage, retention and health)
``restore``   a restore to a point in time, from this archive, a dump, Barman Cloud or pgBackRest
``events``    the outbox relay, the event-log audit, the projector and its projections
``drill``     the drill's record, disaster, checks, objectives, report, history and schedule
``appstack``  the application's own Compose stack against the restored database
``sandbox``   the embedded miniature of production (its API, workload, contract and KMS)
``core``      what they share: settings, S3, PostgreSQL processes, services, progress, files
"""

__version__ = "0.2.0"
