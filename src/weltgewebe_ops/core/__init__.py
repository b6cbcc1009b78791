"""What every runbook step shares: ``settings`` (typed settings), ``s3`` (the client and the
archive's object layout), ``pg`` (PostgreSQL processes), ``procs`` (background services, free
ports), ``progress`` (progress files and lines), ``files`` (private and atomic files),
``diskspace`` (naming a full disk).

Nothing is imported here: ``wgops wal-fetch`` starts once per WAL file and loads only what it uses.
"""
