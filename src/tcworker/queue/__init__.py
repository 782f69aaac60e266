"""Queue side of tcworker: clients, reclaiming, cancellation watchers, artifact uploads."""
