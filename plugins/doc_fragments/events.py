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
      - Names of the data contract where they differ from Weltgewebe's; each left out keeps Weltgewebe's (its
        default below). An unknown name fails the module.
    type: dict
    default: {}
    suboptions:
      accounts_table:
        description: The accounts table. Default C(domain_accounts).
        type: str
      nodes_table:
        description: The Knoten table. Default C(domain_nodes).
        type: str
      edges_table:
        description: The Fäden table. Default C(domain_edges).
        type: str
      conversations_table:
        description: A Knoten's conversations (the sandbox writes their events). Default C(domain_conversations).
        type: str
      messages_table:
        description: The conversations' messages (the sandbox's schema writes their events). Default C(domain_messages).
        type: str
      outbox_table:
        description: The outbox. Default C(domain_outbox).
        type: str
      consumptions_table:
        description: The receipts. Default C(domain_event_consumptions).
        type: str
      projection_state_table:
        description: The API's cache version. Default C(domain_projection_state).
        type: str
      migrations_table:
        description: sqlx's record of applied migrations. Default C(_sqlx_migrations).
        type: str
      receipts_consumer:
        description: The durable consumer that writes the receipts. Default C(weltgewebe-api-domain-receipts-v1).
        type: str
      faden_view:
        description: The runbook's example read model. Default C(faden_view).
        type: str
      tool_schema:
        description: This tool's own schema on the recovery database (checkpoints, quarantine). Default C(wgops).
        type: str
      stream:
        description: The JetStream stream. Default C(WELTGEWEBE_DOMAIN).
        type: str
      subject_prefix:
        description: Events go to C(<subject_prefix>.<event_type>). Default C(weltgewebe).
        type: str
      msg_id_prefix:
        description: C(Nats-Msg-Id) is it plus the outbox id. Default C(domain-outbox-).
        type: str
      duplicate_window_seconds:
        description: The stream's duplicate window. Default C(120).
        type: int
requirements:
  - the weltgewebe_ops library of this collection (C(make venv)) with psycopg and nats-py on the managed host
"""
