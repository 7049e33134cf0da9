"""The /voucher QR image: the dialogs' ``QrPort`` with segno (imported only when a QR is drawn).

It encodes the insurance platform's payload exactly as given; it never adds to it or makes one.
"""

from __future__ import annotations

import io


class SegnoQr:
    def render(self, payload: str) -> bytes:
        import segno

        code = segno.make_qr(payload, error="m")
        out = io.BytesIO()
        code.save(out, kind="png", scale=8, border=4)
        return out.getvalue()
