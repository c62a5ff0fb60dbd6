"""chem-persistence: queue-driven, order-preserving, exactly-once ingestion of workflow events.

The installed packages live under this one name, so that they cannot collide with the
engine's own modules: ``chem_persistence.domain`` (the pure domain), ``.eventlog``
(PostgreSQL), ``.producer`` (what the engine calls) and ``.worker`` (the sweep worker and the
``chem-persistence`` command). In the repository they are the top-level folders of the same
names; this folder links to them (ARCHITECTURE.md, "Layout").
"""
