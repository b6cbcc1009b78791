"""Projections declared as data: what a declaration yields and how a wrong one is refused."""

from __future__ import annotations

import pytest

from weltgewebe_ops.core.settings import ContractNames
from weltgewebe_ops.events.projections import DECLARED, Projection


def test_the_declared_projections_take_the_contracts_names():
    names = ContractNames(receipts_consumer="consumer-v2", faden_view="fv")
    receipts = Projection.declared("receipts", names)
    assert receipts.name == "consumer-v2" and receipts.reset == "" and not receipts.table
    assert receipts.handler_for("domain.edge.created") == "domain.*"
    assert receipts.handler_for("domain.conversation.created") == "domain.*"
    faden = Projection.declared("faden_view", names)
    assert (faden.name, faden.table) == ("fv", "fv")
    assert faden.handler_for("domain.edge.deleted") == "domain.edge.deleted"
    assert faden.handler_for("domain.node.created") is None
    state = Projection.declared("projection_state", names)
    assert state.handlers == {} and "version = version + 1" in state.finish
    assert set(DECLARED) == {"receipts", "projection_state", "faden_view"}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"handlers": {"domain.*": "SELECT {nope}"}}, "placeholder in its SQL is unknown"),
        ({"handlers": {"domain.*": "SELECT * FROM {table}"}}, "only with a table"),
        ({"handlers": {}, "colour": "red"}, "unknown keys colour"),
    ],
)
def test_a_wrong_declaration_is_refused_by_name(spec, message):
    with pytest.raises(ValueError, match=message):
        Projection.declared("mine", ContractNames(), spec)


def test_an_unknown_projection_lists_the_declared_ones():
    with pytest.raises(ValueError, match="declared are receipts, projection_state, faden_view"):
        Projection.declared("nope", ContractNames())
