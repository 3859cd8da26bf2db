# Types of the cffi extension _build.py builds from csrc/headscan_api.h.
# cdata values are opaque to mypy; the functions keep their C signatures.
from typing import Any

class _Lib:
    HS_GET: int
    HS_POST: int
    HS_UPGRADE: int
    HS_ORIGIN: int
    HS_PROTOCOL: int
    HS_AUTHORIZATION: int
    HS_QUERY: int
    HS_CONNECTION: int
    HS_EXTENSIONS: int
    HS_TEXT: int
    def hs_scan(self, data: bytes, length: int, max_line: int, max_section: int,
                max_headers: int, out: Any, blob: Any, blob_cap: int) -> int: ...
    def hs_whole(self, data: bytes, length: int, policy: Any, out: Any, blob: Any,
                 blob_cap: int) -> int: ...
    def hs_absorb_pongs(self, data: bytes, length: int, aligned: Any) -> int: ...

lib: _Lib
ffi: Any
