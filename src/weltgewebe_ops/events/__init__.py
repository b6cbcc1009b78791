"""The event pipeline after a restore: the outbox, the stream and the read models.

``relay``        the outbox relay: ``domain_outbox`` rows -> NATS JetStream
``envelope``     the message body Weltgewebe's relay publishes
``natsio``       NATS JetStream helpers
``audit``        the event-log audit after a point-in-time restore, and its remedy
``projector``    JetStream -> the projections in PostgreSQL (rebuild or catch up)
``projections``  the projections, declared as data
``handlers``     applying a batch of messages to one projection
``quarantine``   events a projection could not apply
``bookkeeping``  this tool's own schema (``wgops``) on a recovery database
"""
