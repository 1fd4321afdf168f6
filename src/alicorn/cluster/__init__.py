"""Scale-out: builds, scans and rebuild rounds as Celery tasks over a shared database.

The embedded default (one local worker, SQLite) and the cluster (Celery workers on several
hosts, PostgreSQL, Redis or RabbitMQ) run the same work through the same code
(:func:`alicorn.worker.run.run_build`); which one runs is configuration only
(:mod:`alicorn.cluster.config`).  The database is the single source of truth: a broker message
only says "look at build X", and whoever takes it claims the build with one conditional UPDATE.
"""
