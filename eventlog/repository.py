"""PgFlowRepository: read a flow from PostgreSQL and replay it with the in-memory rules."""

from __future__ import annotations

from uuid import UUID

from chem_persistence.domain.definition import FlowDefinition
from chem_persistence.domain.replay import FlowInstance, InMemoryFlowRepository
from chem_persistence.eventlog.store import PgEventStore


class PgFlowRepository:
    def __init__(self, store: PgEventStore) -> None:
        self.store = store

    def load(self, flow_id: UUID, definition: FlowDefinition) -> FlowInstance:
        return InMemoryFlowRepository.load(flow_id, self.store.list(flow_id), definition)
