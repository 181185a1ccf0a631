"""HTTP API of the processes domain (SPEC §7): parse, authorise, call services, dump."""

from __future__ import annotations

from typing import Any

from flask import g
from flask_smorest import Blueprint

from gmp_mes.http import db_session, roles_required
from processes import services
from processes.models import ProcessVersion
from processes.schemas import ApproveInSchema, ProcessDetailSchema, ProcessSchema

blp = Blueprint("processes_api", __name__, url_prefix="/api/v1",
                description="Process definitions (master batch records) and their QA approval")


@blp.route("/processes", methods=["GET"])
@blp.response(200, ProcessSchema(many=True))
@roles_required()
def list_processes() -> list[ProcessVersion]:
    """Process versions with their approval state."""
    return services.list_processes(db_session())


@blp.route("/processes/<code>/versions/<int:version>", methods=["GET"])
@blp.response(200, ProcessDetailSchema)
@roles_required()
def get_process(code: str, version: int) -> ProcessVersion:
    """One process version with its full definition."""
    return services.get_process_version(db_session(), code, version)


@blp.route("/processes/<code>/versions/<int:version>/approve", methods=["POST"])
@blp.arguments(ApproveInSchema)
@blp.response(200, ProcessSchema)
@roles_required("qa")
def approve_process(body: dict[str, Any], code: str, version: int) -> ProcessVersion:
    """QA approves a process version (signature meaning `approved`)."""
    return services.approve_process(db_session(), code, version, user_id=g.user.id,
                                    signature=body["signature"])
