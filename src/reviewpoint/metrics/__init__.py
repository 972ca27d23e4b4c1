"""Prometheus metrics: what they count (`registry`), where the counts come from
(`middleware` for HTTP, `observer` for exports, the admission gate and the
audit trail), how they add up across worker processes (`multiprocess`), and
the `/metrics` route (`router`).
"""
