"""`chem-persistence dashboard`: one web app for an operator.

Our own page (backlog, parked flows and their dead letters, sweeps, events stored per second,
with ``dlq retry`` / ``dlq discard`` behind a confirmation), rq-dashboard mounted under
``/rq``, basic auth on every page but ``GET /healthz``, served by waitress.

The modules, one job each: ``settings`` (the environment), ``command`` (the subcommand's
arguments and the check that the ``dashboard`` extra is installed: imports no web library),
``auth`` (basic auth), ``csrf`` (signed form tokens), ``rate`` (events stored per second),
``data`` (what the page shows, from ``worker.status``), ``views`` (our pages), ``rqmount``
(rq-dashboard, with the JSON serializer and its workers view fixed), ``app`` (the Flask app),
``server`` (waitress, signals, start-up errors).
"""
