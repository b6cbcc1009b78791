"""WAL archiving of production (role pg_archive) and what the drill's preflight reads of it.

``push``        ``wgops wal-push``, PostgreSQL's archive_command
``stream``      streaming archiving: pg_receivewal on a slot, chunks to S3
``fetch``       ``wgops wal-fetch``, PostgreSQL's restore_command during a restore
``basebackup``  base backups into S3
``archiver``    production's archiving around a server: scheduled base backups, health as
                metrics, retention
``bucket``      the bucket's protection (versioning, Object Lock, SSE-KMS)
``coverage``    the instant at which the archive provably held all WAL of its source
``preflight``   what the archive holds and whether it can be trusted (``backup_info``)
``compliance``  each object encrypted and locked long enough
``names``       WAL file names and LSNs

Nothing is imported here: ``wgops wal-fetch`` starts once per WAL file and loads only what it uses.
"""
