"""The rules of the schedule domain, re-exported from their modules."""

from __future__ import annotations
