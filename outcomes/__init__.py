"""After the infusion (SPEC §16, issue 21): follow-up visits, computed CRS and ICANS
grades, outcomes linked to the batch.

So far only the grading rules (``outcomes.grading``) are here; the domain (visits,
records, reports, agreements, FHIR) is not installed yet, so it has no ``init_app``.
"""
