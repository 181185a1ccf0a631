"""The QR symbol every format carries: the payload in alphanumeric mode, error
correction M (ISO/IEC 18004), a quiet zone of at least 4 modules."""

from __future__ import annotations

from collections.abc import Sequence

import qrcode
from PIL import Image
from qrcode.util import MODE_ALPHA_NUM, QRData

QUIET_ZONE = 4  # modules, ISO/IEC 18004 minimum
ERROR_CORRECTION = qrcode.constants.ERROR_CORRECT_M


def qr_matrix(payload: str) -> list[list[bool]]:
    """Modules of the symbol (no quiet zone): alphanumeric mode, error correction M."""
    code = qrcode.QRCode(error_correction=ERROR_CORRECTION, border=0)
    code.add_data(QRData(payload, mode=MODE_ALPHA_NUM))
    code.make(fit=True)
    return code.modules


def qr_modules(payload: str) -> int:
    """Modules per side of the symbol the payload needs (version fit only, no matrix)."""
    code = qrcode.QRCode(error_correction=ERROR_CORRECTION, border=0)
    code.add_data(QRData(payload, mode=MODE_ALPHA_NUM))
    return 17 + 4 * code.best_fit()


def qr_image(matrix: Sequence[Sequence[bool]], module: int) -> Image.Image:
    """A mode "1" image of the symbol with its quiet zone, ``module`` pixels per module."""
    side = len(matrix) + 2 * QUIET_ZONE
    white, pad = b"\xff" * side, b"\xff" * QUIET_ZONE
    # One byte per module (0 black, 255 white), then one nearest-neighbour scale.
    rows = [white] * QUIET_ZONE
    rows += [pad + bytes(0 if dark else 255 for dark in row) + pad for row in matrix]
    rows += [white] * QUIET_ZONE
    small = Image.frombytes("L", (side, side), b"".join(rows)).convert("1")
    return small.resize((side * module, side * module), Image.Resampling.NEAREST)


def dark_runs(matrix: Sequence[Sequence[bool]]) -> list[tuple[int, int, int]]:
    """Horizontal runs of dark modules as (x, y, length): few shapes for SVG and PDF."""
    runs = []
    for y, row in enumerate(matrix):
        x, n = 0, len(row)
        while x < n:
            if row[x]:
                start = x
                while x < n and row[x]:
                    x += 1
                runs.append((start, y, x - start))
            else:
                x += 1
    return runs
