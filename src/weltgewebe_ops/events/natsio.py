"""NATS JetStream helpers shared by the relay, the projector and the sandbox."""

from __future__ import annotations

import asyncio
import contextlib
import sys

from ..core.settings import ContractNames


async def _say_error(exc: Exception) -> None:
    """The client's errors (a refused reconnect while the server is away) as one line each, not
    the library's default traceback per try; the caller judges by its own outcome."""
    print(f"nats: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)


async def connect(url: str):
    import nats

    return await nats.connect(
        url,
        connect_timeout=3,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        pending_size=64 * 1024 * 1024,
        allow_reconnect=True,
        error_cb=_say_error,
    )


async def ensure_stream(url: str, names: ContractNames, max_age_seconds: float = 30 * 24 * 3600) -> bool:
    """Create the domain stream when missing; True when it was created."""
    from nats.js.api import StreamConfig
    from nats.js.errors import NotFoundError

    nc = await connect(url)
    try:
        js = nc.jetstream()
        try:
            await js.stream_info(names.stream)
            return False
        except NotFoundError:
            await js.add_stream(
                StreamConfig(
                    name=names.stream,
                    subjects=[names.stream_subjects],
                    duplicate_window=float(names.duplicate_window_seconds),
                    max_age=max_age_seconds,
                )
            )
            return True
    finally:
        await nc.close()


async def stream_state(url: str, names: ContractNames) -> dict:
    nc = await connect(url)
    try:
        info = await nc.jetstream().stream_info(names.stream)
        return {
            "messages": info.state.messages,
            "first_seq": info.state.first_seq,
            "last_seq": info.state.last_seq,
            "duplicate_window_seconds": info.config.duplicate_window,
            "subjects": info.config.subjects,
        }
    finally:
        await nc.close()


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
