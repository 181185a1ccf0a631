"""Request and response schemas of the schedule API (marshmallow)."""

from __future__ import annotations
