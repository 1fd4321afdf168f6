"""The HTTP API and the web pages (``alicorn serve``): builds, provenance, logs, advisories,
events, modules and the transparency log, with tokens and roles for whatever writes.

``app.create_app`` assembles the FastAPI application: ``api`` (JSON under ``/api/v1``, its
OpenAPI document at ``/api/v1/openapi.json``), ``pages`` (server-rendered HTML), ``auth``
(tokens, roles, the principal of a request), ``audit`` (every write, allowed or refused),
``ratelimit`` (submissions), ``queries`` (the read side both of them share).
"""
