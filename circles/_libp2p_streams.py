"""Request/response over the libp2p transport: one stream per request, varint-framed.

Both sides bound what they read (``max_request`` / ``max_response``) and how
long they wait. A raw stream handler that raises kills py-libp2p's host, so
the serving side contains every exception and resets the stream instead.
"""

from __future__ import annotations

import contextlib
from typing import Any

import trio

from ._libp2p_core import _Libp2pCore, logger
from ._transport import (
    DEFAULT_MAX_REQUEST,
    DEFAULT_MAX_RESPONSE,
    Handler,
    PeerId,
    RequestFailed,
    _bounded_request,
)

__all__ = ["HANDLER_TIMEOUT"]

#: Bound on one inbound request: read, handle, respond.
HANDLER_TIMEOUT = 30.0


class _Requests(_Libp2pCore):
    """Serve and send requests: the transport's request/response part."""

    def set_handler(
        self, protocol_id: str, handler: Handler | None, *, max_request: int = DEFAULT_MAX_REQUEST
    ) -> None:
        from libp2p.custom_types import TProtocol

        if handler is None:
            self._handlers.pop(protocol_id, None)
            with contextlib.suppress(Exception):
                self._host.remove_stream_handler(TProtocol(protocol_id))
            return
        self._handlers[protocol_id] = (handler, max_request)

        async def serve(stream: Any) -> None:
            await self._serve(protocol_id, stream)

        self._host.set_stream_handler(TProtocol(protocol_id), serve)

    async def _serve(self, protocol_id: str, stream: Any) -> None:
        from libp2p.utils.varint import (
            encode_varint_prefixed,
            read_varint_prefixed_bytes_limited,
        )

        # A raw stream handler that raises kills the host (basic_host.py
        # ~1554): everything here is contained, and the stream reset on error.
        try:
            entry = self._handlers.get(protocol_id)
            if entry is None:
                raise LookupError(protocol_id)
            handler, max_request = entry
            peer = PeerId(stream.muxed_conn.peer_id.to_base58())
            with trio.fail_after(HANDLER_TIMEOUT):
                request = await read_varint_prefixed_bytes_limited(stream, max_request)
                response = await handler(peer, request)
                if not isinstance(response, bytes):
                    raise TypeError(f"handler returned {type(response).__name__}, not bytes")
                await stream.write(encode_varint_prefixed(response))
                await stream.close()
        except trio.Cancelled:
            raise
        except Exception:
            self._counters.contained_errors += 1
            logger.debug("request handler for %s failed", protocol_id, exc_info=True)
            with contextlib.suppress(Exception):
                await stream.reset()

    async def request(
        self,
        peer: PeerId,
        protocol_id: str,
        data: bytes,
        *,
        timeout: float,
        max_response: int = DEFAULT_MAX_RESPONSE,
    ) -> bytes:
        return await _bounded_request(
            self._check_open,
            self._request,
            peer,
            protocol_id,
            data,
            timeout=timeout,
            max_response=max_response,
        )

    async def _request(
        self, peer: PeerId, protocol_id: str, data: bytes, max_response: int
    ) -> bytes:
        from libp2p.custom_types import TProtocol
        from libp2p.io.exceptions import MessageTooLarge
        from libp2p.peer.id import ID
        from libp2p.utils.varint import (
            encode_varint_prefixed,
            read_varint_prefixed_bytes_limited,
        )

        try:
            remote = ID.from_base58(peer)
        except Exception:
            raise RequestFailed(f"{peer!r} is not a peer id", reason="unreachable") from None
        try:
            stream = await self._host.new_stream(remote, [TProtocol(protocol_id)])
        except trio.Cancelled:
            raise
        except Exception as exc:
            connected = remote in self._host.get_connected_peers()
            raise RequestFailed(
                f"could not open {protocol_id} to {peer}: {exc}",
                reason="unsupported" if connected else "unreachable",
            ) from None
        try:
            await stream.write(encode_varint_prefixed(data))
            return await read_varint_prefixed_bytes_limited(stream, max_response)
        except trio.Cancelled:
            raise
        except MessageTooLarge:
            raise RequestFailed(
                f"{peer} answered over the {max_response}-byte limit", reason="oversize"
            ) from None
        except Exception as exc:
            raise RequestFailed(
                f"{peer} reset the {protocol_id} stream: {exc}", reason="reset"
            ) from None
        finally:
            with (
                trio.CancelScope(shield=True),
                trio.move_on_after(1),
                contextlib.suppress(Exception),
            ):
                await stream.reset()
