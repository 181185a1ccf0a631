"""Label rules: signing and checking payloads, print control (record, reprint, void,
replace), the outbox of networked printers, label setup.

Other domains call only the names re-exported here (DEVELOPING.md). What a label prints
(the item, its patient, its site) comes from the ``gmp_mes.registry.label_subjects``
seam, which identity provides: labels never imports identity. The rooms:
``signing`` (keys, online and offline checks), ``records`` (printed copies),
``printing`` (print control, sheets, previews), ``outbox`` (networked printers),
``jobs`` (stale printer jobs), ``voids`` (void, replace), ``setup`` (stock, printers),
``assets`` (labels of material lots and equipment, SPEC §11: the caller describes the
subject in an ``AssetLabel`` and locks its own row; labels never imports materials or
equipment).

Print control (SPEC §4). Every printed copy carries its own serial in the signed
payload (``GMP1:...:<expiry>:<serial>:<signature>``), one ``label_print`` row per
copy, so copies can be told apart by what they encode:
- the first print of an item is the original (its copies numbered 1..N); any later
  print is a reprint (``reprint=true`` with a reason, marked REPRINT on the label);
  asking for a second original is refused (409 ``already_printed``);
- voiding a copy voids that copy only: its payload fails every online check from
  then on, the item's other copies stay valid. ``replace`` voids a damaged copy and
  prints its replacement (a new serial) in one transaction. Voids and replacements
  are for users of the item's current site and QA (403 ``wrong_site``);
- labels printed before serials carry the 6-field payload, the same on all copies
  of that print: they keep verifying until voided, and voiding one voids all of its
  identical copies (they cannot be told apart);
- printing a label whose content differs from earlier labels of the item (e.g. a
  corrected expiry) voids those earlier labels ("superseded"), so one container
  never has two valid labels that say different things.
"""

from __future__ import annotations

from labels.payload import (
    ASSET_KIND_CODES,
    ASSET_KINDS,
    InvalidLabel,
    LabelPayload,
    normalise_scan,
    sign,
)
from labels.services.assets import (
    AssetLabel,
    AssetLabelRecord,
    asset_labels_of,
    asset_preview_payload,
    preview_asset_label,
    print_asset_label,
)
from labels.services.jobs import print_jobs_of_item, sweep_job, sweep_print_jobs
from labels.services.outbox import (
    PrinterDidNotTakeIt,
    PrintJob,
    finish_print_job,
    print_refusal,
    queue_print_job,
    send_print_job,
    send_zpl,
)
from labels.services.printing import (
    MAX_COPIES,
    MAX_SERIAL_SHOWN,
    MAX_SHEET_ITEMS,
    MEDIA_TYPES,
    PrintedLabel,
    PrintRequest,
    preview_label,
    preview_payload,
    print_label,
    print_sheet,
)
from labels.services.records import (
    LabelRecord,
    items_of_batch,
    labels_of_item,
    new_label_id,
    printable_id,
    wristband_of,
)
from labels.services.setup import (
    LABEL_KINDS,
    PRINTER_TIMEOUT,
    add_printer,
    printer_timeout,
    printers_of,
    set_stock,
    stale_after,
    stock_for,
    stocks_of,
)
from labels.services.signing import (
    PayloadCheck,
    SigningKeyUnavailable,
    check_payload,
    key_path,
    keyring,
    payload_digest,
    payload_for_item,
    set_default_key_path,
    sign_payload,
    signing_key_ids,
    unknown_signing_keys,
    verify_offline,
)
from labels.services.voids import WrongSite, replace_label, void_label

__all__ = [
    "ASSET_KINDS",
    "ASSET_KIND_CODES",
    "LABEL_KINDS",
    "MAX_COPIES",
    "MAX_SERIAL_SHOWN",
    "MAX_SHEET_ITEMS",
    "MEDIA_TYPES",
    "PRINTER_TIMEOUT",
    "AssetLabel",
    "AssetLabelRecord",
    "InvalidLabel",
    "LabelPayload",
    "LabelRecord",
    "PayloadCheck",
    "PrintJob",
    "PrintRequest",
    "PrintedLabel",
    "PrinterDidNotTakeIt",
    "SigningKeyUnavailable",
    "WrongSite",
    "add_printer",
    "asset_labels_of",
    "asset_preview_payload",
    "check_payload",
    "finish_print_job",
    "items_of_batch",
    "key_path",
    "keyring",
    "labels_of_item",
    "new_label_id",
    "normalise_scan",
    "payload_digest",
    "payload_for_item",
    "preview_asset_label",
    "preview_label",
    "preview_payload",
    "print_asset_label",
    "print_jobs_of_item",
    "print_label",
    "print_refusal",
    "print_sheet",
    "printable_id",
    "printer_timeout",
    "printers_of",
    "queue_print_job",
    "replace_label",
    "send_print_job",
    "send_zpl",
    "set_default_key_path",
    "set_stock",
    "sign",
    "sign_payload",
    "signing_key_ids",
    "stale_after",
    "stock_for",
    "stocks_of",
    "sweep_job",
    "sweep_print_jobs",
    "unknown_signing_keys",
    "verify_offline",
    "void_label",
    "wristband_of",
]
