"""The HTTP edge of a label, for the views of any domain that prints one (items here;
material lots and equipment in the materials and equipment domains, SPEC §11):

    @blp.route("/lots/<lot_id>/label", methods=["GET"])
    @blp.arguments(labels.http.LabelQuerySchema, location="query", unknown=RAISE)
    @blp.doc(responses=labels.http.LABEL_RESPONSES)
    @roles_required("operator", "qc", "qa")
    @writes
    def lot_label(query, lot_id):
        request, preview = labels.http.label_request(query)
        ...lock the lot, build an AssetLabel...
        if preview:
            return labels.http.label_file(services.preview_asset_label(s, subject, request))
        printed = services.print_asset_label(s, subject, request, user_id=g.user.id)
        commit_unit_of_work()  # the print is recorded; render with no lock held
        return labels.http.label_file(printed)

A misspelt option (``reprnt=true``) must not silently print an original: parse the query
with ``unknown=RAISE`` (422). ``AssetLabelSchema`` dumps ``services.asset_labels_of``."""

from __future__ import annotations

from collections.abc import Mapping

from flask import Response

from labels.models import LabelPrint
from labels.schemas import AssetLabelSchema, LabelQuerySchema
from labels.services import MEDIA_TYPES, PrintedLabel, PrintRequest

__all__ = ["LABEL_RESPONSES", "AssetLabelSchema", "LabelQuerySchema", "label_file",
           "label_request"]

# The OpenAPI answer of a label view (``@blp.doc(responses=LABEL_RESPONSES)``).
LABEL_RESPONSES: dict[str, dict[str, object]] = {
    "200": {
        "description": "the label; the print is recorded (reprint=true with a reason for "
        "reprints; preview=true: a marked preview that records nothing and never verifies)",
        "content": {media_type: {} for media_type in MEDIA_TYPES.values()},
    },
    "409": {"description": "already printed: print again as a reprint with a reason "
                           "(already_printed); no original yet (not_printed); the label "
                           "does not fit the site's stock (label_does_not_fit)"},
}

# Opened in the browser (PDF for its print dialog, issue 15); ZPL is a download.
_INLINE = frozenset({MEDIA_TYPES["png"], MEDIA_TYPES["svg"], MEDIA_TYPES["pdf"]})


def label_request(query: Mapping[str, object]) -> tuple[PrintRequest, bool]:
    """The print request and whether a preview is asked, from a query loaded with
    :class:`LabelQuerySchema` (``format``, ``copies``, ``dpi``, ``reprint``, ``reason``,
    ``workstation``, ``preview``)."""
    reason, workstation = query.get("reason"), query.get("workstation")
    copies, dpi = query.get("copies", 1), query.get("dpi", 203)
    request = PrintRequest(
        format=str(query.get("format", "png")),
        workstation=workstation if isinstance(workstation, str) else None,
        copies=copies if isinstance(copies, int) else 1,
        reprint=query.get("reprint") is True,
        reason=reason if isinstance(reason, str) else None,
        dpi=dpi if isinstance(dpi, int) else 203,
    )
    return request, query.get("preview") is True


def label_file(printed: PrintedLabel, *, inline: bool | None = None) -> Response:
    """The label file as the answer: its media type, ``Content-Disposition`` (``inline``
    None: PNG, SVG and PDF open in the browser, ZPL is a download; True or False forces
    it), ``X-Label-Id`` (the recorded copies, comma-separated; empty for a preview),
    ``X-Replaced-Label-Id`` (the copies a replacement voided) and ``no-store``."""
    if inline is None:
        inline = printed.media_type in _INLINE
    response = Response(printed.content, mimetype=printed.media_type)
    response.headers["Content-Disposition"] = (
        f'{"inline" if inline else "attachment"}; filename="{printed.filename}"')
    response.headers["X-Label-Id"] = ",".join(label.label_id for label in printed.labels)
    replaced = [label.replaces for label in printed.labels
                if isinstance(label, LabelPrint) and label.replaces]
    if replaced:
        response.headers["X-Replaced-Label-Id"] = ",".join(replaced)
    response.headers["Cache-Control"] = "no-store"
    return response
