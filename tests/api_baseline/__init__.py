"""Snapshots of the API contract (issue 16): the OpenAPI document and a way to record and
compare the answers of the API tests before and after a refactor."""
