"""PartBody: a part's bytes, sent by the S3 client without being copied.

A bytearray subclass, so botocore takes it as it takes a bytearray: a blob it
signs with one SHA-256 call, resends as it is on a retry, and sends without
"Expect: 100-continue" (a file-object body waits a round trip for the
server's "100 Continue"). aiohttp would write a bytearray body in one call,
first sliced to its Content-Length (a copy) and then, on Python 3.11, sliced
and copied again into the transport's buffer for all the socket does not take
at once. A PartBody is written in 64 KiB views instead, each after the
transport has drained the one before, so at most a view's worth is copied.
"""

from __future__ import annotations

import warnings

from aiohttp import payload
from aiohttp.abc import AbstractStreamWriter

VIEW_SIZE = 64 * 1024  # aiohttp drains its writer beyond this many bytes


class PartBody(bytearray):
    __slots__ = ()


class _PartPayload(payload.BytesPayload):
    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        # No `with`: the transport may still hold a slice when this returns.
        view = memoryview(self._value)
        end = len(view) if content_length is None else min(content_length, len(view))
        for start in range(0, end, VIEW_SIZE):
            await writer.write(view[start : min(start + VIEW_SIZE, end)])


# The exact type only: no other body changes how aiohttp sends it.
payload.register_payload(_PartPayload, PartBody)

# aiohttp advises a BytesIO for a body over 1 MiB, lest one write hold the
# event loop: a PartBody is written in views, and a BytesIO is copied.
warnings.filterwarnings(
    "ignore", "Sending a large body directly", ResourceWarning, "aiohttp.payload"
)
