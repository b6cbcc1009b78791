# Copyright: weltgewebe.ops developers
# GNU Affero General Public License v3.0+
"""Documentation fragment for the event modules: database, NATS and the data contract's names."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  dsn:
    description: libpq connection string of the (restored) database. May hold a password; never logged.
    type: str
    required: true
  nats_url:
    description: The NATS holding the domain stream (in a drill, the recovery site's own).
    type: str
    required: true
  outbox_table:
    description: The outbox table.
    type: str
    default: domain_outbox
  consumptions_table:
    description: Consumed event ids per consumer; lost events are excluded in C(<consumptions_table>_excluded).
    type: str
    default: domain_event_consumptions
  checkpoints_table:
    description: Stream checkpoints per projection.
    type: str
    default: projection_checkpoints
  stream:
    description: The JetStream stream.
    type: str
    default: WELTGEWEBE_DOMAIN
  subject_prefix:
    description: Events go to C(<subject_prefix>.<event_type>); the stream takes C(<subject_prefix>.domain.>).
    type: str
    default: weltgewebe
  msg_id_prefix:
    description: C(Nats-Msg-Id) is this prefix plus the outbox id.
    type: str
    default: domain-outbox-
requirements:
  - the weltgewebe_ops library of this collection (C(make venv)) with psycopg and nats-py on the managed host
"""
