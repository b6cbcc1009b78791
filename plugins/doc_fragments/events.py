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
  names:
    description:
      - Names of the data contract where they differ from Weltgewebe's (the defaults), as a mapping.
      - C(accounts_table) (domain_accounts), C(nodes_table) (domain_nodes), C(edges_table)
        (domain_edges), C(conversations_table) (domain_conversations) and C(messages_table)
        (domain_messages) (the sandbox's schema writes their events), C(outbox_table) (domain_outbox),
        C(consumptions_table) (domain_event_consumptions, the receipts), C(projection_state_table)
        (domain_projection_state), C(migrations_table) (_sqlx_migrations), C(receipts_consumer)
        (weltgewebe-api-domain-receipts-v1), C(faden_view) (faden_view), C(tool_schema) (wgops,
        this tool's bookkeeping on the recovery database - checkpoints, quarantine, excluded ids),
        C(stream) (WELTGEWEBE_DOMAIN), C(subject_prefix) (weltgewebe; events go to
        C(<subject_prefix>.<event_type>)), C(msg_id_prefix) (domain-outbox-; C(Nats-Msg-Id) is it
        plus the outbox id), C(duplicate_window_seconds) (120).
      - An unknown name fails the module and lists the known ones.
    type: dict
    default: {}
requirements:
  - the weltgewebe_ops library of this collection (C(make venv)) with psycopg and nats-py on the managed host
"""
