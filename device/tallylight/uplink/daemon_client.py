"""The uplink's end of the daemon socket (asyncio): connects, reconnects, and bridges to the API server.

It is the server's `VoiceSink`: what Home Assistant says (timers, announcements, pipeline events, whether
it is connected) goes to the daemon as `messages` of the TO_DAEMON kinds, the only ones the daemon
accepts; what the daemon says (its gate state) goes to Home Assistant as read-only sensor states.

Never a queue that grows: when the daemon is not connected, or its socket is `max_buffer` bytes behind,
a message is dropped and counted. Text utterances need the conversation path (issue 15, text mode),
which is not built yet: each one is answered with a pipeline error "no_conversation_path", so the daemon
can say so instead of waiting. Audio mode is not built yet either: audio frames are dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from pathlib import Path

from tallylight.uplink import messages
from tallylight.uplink.framing import FrameError
from tallylight.uplink.messages import MessageError, MessageReader

_LOG = logging.getLogger(__name__)


class DaemonBridge:
    def __init__(self, path: Path, software: str, *, retry_s: float = 1.0, max_retry_s: float = 5.0,
                 announce_timeout_s: float = 60.0, max_buffer: int = 256 * 1024) -> None:
        self.path = Path(path)
        self.software = software
        self.server = None  # the ApiServer, set before run()
        self._retry_s = retry_s
        self._max_retry_s = max_retry_s
        self._announce_timeout_s = announce_timeout_s
        self._max_buffer = max_buffer
        self._writer: asyncio.StreamWriter | None = None
        self._announces: dict[str, asyncio.Future[bool]] = {}
        self._ids = itertools.count(1)
        self._link = (False, False)
        self.dropped = 0
        self.daemon_mode: str | None = None

    @property
    def connected(self) -> bool:
        return self._writer is not None

    # --- the connection ---

    async def run(self) -> None:
        """Keep a connection to the daemon until cancelled."""
        delay = self._retry_s
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(str(self.path))
            except OSError as e:
                _LOG.debug("daemon socket %s: %s; retrying in %g s", self.path, e.strerror, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_retry_s)
                continue
            delay = self._retry_s
            _LOG.info("connected to the daemon at %s", self.path)
            try:
                await self._serve(reader, writer)
            except OSError as e:  # ECONNRESET when the daemon closes with our bytes unread, and the like
                _LOG.warning("daemon socket: the connection broke (%s): reconnecting", e.strerror or e)
            finally:
                self._disconnected(writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self.send(messages.UplinkHello(self.software))
        self.send(messages.HomeAssistantLink(*self._link))
        inbound = MessageReader(messages.TO_UPLINK_KINDS)
        while data := await reader.read(65536):
            try:
                items = inbound.feed(data)
            except FrameError as e:
                _LOG.warning("daemon socket: the daemon broke the protocol: %s: reconnecting", e)
                return
            for item in items:
                if isinstance(item, MessageError):
                    _LOG.warning("daemon socket: dropped a message: %s", item)
                else:
                    self._handle(item)
        _LOG.warning("daemon socket: the daemon closed the connection: reconnecting")

    def _disconnected(self, writer: asyncio.StreamWriter) -> None:
        self._writer = None
        writer.close()
        if self.server is not None:
            self.server.set_gate_state(None)
        for fut in self._announces.values():
            if not fut.done():
                fut.set_result(False)
        self._announces.clear()

    def send(self, msg: messages.Message) -> bool:
        writer = self._writer
        if writer is None or writer.is_closing() or writer.transport.get_write_buffer_size() > self._max_buffer:
            self.dropped += 1
            return False
        writer.write(messages.encode(msg))
        return True

    def _handle(self, msg: messages.Message) -> None:
        if isinstance(msg, messages.Hello):
            self.daemon_mode = msg.mode
            _LOG.info("the daemon is %s (%s, %s mode)", msg.device_name, msg.software, msg.mode)
        elif isinstance(msg, messages.State):
            if self.server is not None:
                self.server.set_gate_state(msg.state)
        elif isinstance(msg, messages.AnnounceDone):
            fut = self._announces.pop(msg.announce_id, None)
            if fut is not None and not fut.done():
                fut.set_result(msg.played)
        elif isinstance(msg, messages.TimerAck):
            _LOG.info("timer %s: %s", msg.timer_id, msg.outcome)
        elif isinstance(msg, messages.TextUtterance):
            self.send(messages.PipelineEvent(msg.utterance_id, "error", "no_conversation_path",
                                             "this uplink cannot send text to Home Assistant yet"))
        elif isinstance(msg, messages.AudioChunk | messages.AudioEnd):
            self.dropped += 1
            _LOG.warning("daemon socket: dropped %s: audio mode is not built into this uplink", type(msg).__name__)

    # --- VoiceSink: from Home Assistant, towards the daemon ---

    def timer_event(self, event: messages.TimerEvent) -> None:
        self.send(event)

    def pipeline_event(self, event: messages.PipelineEvent) -> None:
        self.send(event)

    def home_assistant_link(self, connected: bool, encrypted: bool) -> None:
        self._link = (connected, encrypted)
        self.send(messages.HomeAssistantLink(connected, encrypted))

    async def announce(self, text: str) -> bool:
        announce_id = f"a{next(self._ids)}"
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._announces[announce_id] = fut
        if not self.send(messages.Announcement(announce_id, text, False)):
            self._announces.pop(announce_id, None)
            return False
        try:
            async with asyncio.timeout(self._announce_timeout_s):
                return await fut
        except TimeoutError:
            _LOG.warning("the daemon did not finish announcement %s within %g s", announce_id,
                         self._announce_timeout_s)
            return False
        finally:
            self._announces.pop(announce_id, None)


async def cancel_and_wait(task: asyncio.Task) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
