"""The daemon's end of the uplink socket: a plain object the audio loop polls, which never blocks it.

The daemon listens on a unix socket in its runtime directory; the uplink process connects. Only the
uplink's user may stay connected (`SO_PEERCRED`, checked at accept; others are closed and logged). One
uplink at a time: a new connection from that user replaces the old one (the uplink restarted, or the old
connection is stale).

Never blocking: every socket is non-blocking, reads take what has arrived (at most `max_read_per_poll`
bytes a poll), and sends go through a queue of at most `max_queue_bytes`. When the uplink is down, slow
or stalled, a message that does not fit is dropped and counted (`dropped`, `dropped_by_kind`, for the
daemon to ledger), never waited for. Audio is never kept for later: with no uplink it is dropped at once,
the queue is emptied when a connection ends, and once one chunk of an utterance is dropped the rest of
that utterance is dropped too and its AudioEnd says "dropped" (a stream with a hole in it is no use).

A connection that breaks the protocol (a broken frame, or half a frame left for `partial_timeout_s`) is
closed with one log line; a single bad message is dropped with one log line and the connection kept.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import socket
import stat
import struct
import time
from collections.abc import Callable
from pathlib import Path

from tallylight.errors import TallylightError
from tallylight.uplink import messages
from tallylight.uplink.framing import FrameError
from tallylight.uplink.messages import AudioChunk, AudioEnd, Message, MessageError, MessageReader

_LOG = logging.getLogger(__name__)
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class UplinkLinkError(TallylightError):
    """The uplink socket cannot be set up (its folder is missing, or its path is taken by something else)."""

    exit_code = 71  # EX_OSERR


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a connected unix socket, from the kernel."""
    return _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))


class _Peer:
    """One accepted uplink connection: its socket, its reader and its outbound queue."""

    def __init__(self, sock: socket.socket, pid: int, now: float) -> None:
        self.sock = sock
        self.pid = pid
        self.reader = MessageReader(messages.TO_DAEMON_KINDS)
        # (kind name, what is left of the frame, the utterance of an AudioChunk else "", its PCM bytes)
        self.queue: collections.deque[tuple[str, memoryview, str, int]] = collections.deque()
        self.queued_bytes = 0
        self.head_started = False  # the first frame in the queue is partly written to the socket
        self.last_progress = now


class UplinkLink:
    def __init__(self, path: Path, allowed_uid: int, *, mode: int = 0o660, max_queue_bytes: int = 128 * 1024,
                 max_read_per_poll: int = 256 * 1024, partial_timeout_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path = Path(path)
        self.allowed_uid = allowed_uid
        self._mode = mode
        self._max_queue_bytes = max_queue_bytes
        self._max_read = max_read_per_poll
        self._partial_timeout_s = partial_timeout_s
        self._clock = clock
        self._listener: socket.socket | None = None
        self._peer: _Peer | None = None
        self._open_streams: set[str] = set()  # utterances with chunks sent and no AudioEnd yet
        self._broken_streams: set[str] = set()  # utterances that lost a chunk: the rest of each is dropped
        self.dropped = 0
        self.dropped_by_kind: collections.Counter[str] = collections.Counter()
        self.refused = 0  # connections from another user
        self.rejected = 0  # messages dropped as malformed, and connections closed for a broken stream
        self.connections = 0

    # --- set-up and tear-down ---

    def open(self) -> None:
        if self._listener is not None:
            return
        if not self.path.parent.is_dir():
            raise UplinkLinkError(f"the uplink socket's folder {self.path.parent} does not exist "
                                  "(systemd's RuntimeDirectory= makes it; create it or set another path)")
        try:
            st = self.path.lstat()
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(st.st_mode):
                raise UplinkLinkError(f"{self.path} exists and is not a socket: remove it or set another path")
            self.path.unlink()  # left by a daemon that did not stop cleanly
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            # Created with no permissions at all, then opened to the mode asked for: no window in which
            # another user could connect before the chmod.
            old_umask = os.umask(0o777)
            try:
                sock.bind(str(self.path))
            finally:
                os.umask(old_umask)
            os.chmod(self.path, self._mode)
            sock.listen(4)
        except OSError as e:
            sock.close()
            raise UplinkLinkError(f"cannot listen on {self.path}: {e.strerror}") from None
        self._listener = sock
        _LOG.info("uplink socket listening on %s (uid %d only)", self.path, self.allowed_uid)

    def close(self) -> None:
        """Safe to call twice."""
        self._drop_peer(None)
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> UplinkLink:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- state ---

    @property
    def connected(self) -> bool:
        return self._peer is not None

    @property
    def queued_bytes(self) -> int:
        return self._peer.queued_bytes if self._peer else 0

    # --- outbound ---

    def send(self, msg: Message) -> bool:
        """Queue a message for the uplink and push what the socket takes now. False if it was dropped."""
        if isinstance(msg, AudioChunk) and msg.utterance_id in self._broken_streams:
            return self._count_drop(msg)
        if isinstance(msg, AudioEnd):
            self._open_streams.discard(msg.utterance_id)
            if msg.utterance_id in self._broken_streams:
                self._broken_streams.discard(msg.utterance_id)
                msg = AudioEnd(msg.utterance_id, "dropped")
        peer = self._peer
        if peer is None:
            return self._count_drop(msg)
        frame = messages.encode(msg)
        if peer.queued_bytes + len(frame) > self._max_queue_bytes:
            return self._count_drop(msg)
        audio = (msg.utterance_id, len(msg.pcm)) if isinstance(msg, AudioChunk) else ("", 0)
        peer.queue.append((type(msg).__name__, memoryview(frame), *audio))
        peer.queued_bytes += len(frame)
        if isinstance(msg, AudioChunk):
            self._open_streams.add(msg.utterance_id)
        self._flush()
        return True

    def discard_audio(self, utterance_id: str) -> int:
        """Take back the chunks of an utterance still waiting in the queue (a mute, or an uplink that never
        confirmed): they must not leave once the upload light is off. Returns the PCM bytes taken back. A chunk
        already half written cannot be finished later, so then the connection is closed rather than send its rest."""
        peer = self._peer
        if peer is None:
            return 0
        if peer.queue and peer.head_started and peer.queue[0][2] == utterance_id:
            self._drop_peer("an audio stream was cut off halfway through a chunk")  # its rest never goes
            return 0  # whatever was queued went down with the connection, and was never sent
        taken = 0
        kept: collections.deque[tuple[str, memoryview, str, int]] = collections.deque()
        for item in peer.queue:
            if item[2] == utterance_id:
                taken += item[3]
                peer.queued_bytes -= len(item[1])
            else:
                kept.append(item)
        peer.queue = kept
        return taken

    def _count_drop(self, msg: Message) -> bool:
        self.dropped += 1
        self.dropped_by_kind[type(msg).__name__] += 1
        if isinstance(msg, AudioChunk):
            if len(self._broken_streams) >= 16:
                # The daemon ends every stream it starts; this only bounds the set if it ever did not.
                self._broken_streams.clear()
            self._broken_streams.add(msg.utterance_id)
            self._open_streams.discard(msg.utterance_id)
        return False

    def _flush(self) -> None:
        peer = self._peer
        while peer is not None and peer.queue:
            name, view, uid, pcm_bytes = peer.queue[0]
            try:
                n = peer.sock.send(view, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self._drop_peer(f"the uplink connection broke while sending ({e.strerror})")
                return
            peer.queued_bytes -= n
            if n == len(view):
                peer.queue.popleft()
                peer.head_started = False
            else:
                peer.head_started = True
                # A frame half sent stays first in the queue: the peer never sees a torn frame.
                peer.queue[0] = (name, view[n:], uid, pcm_bytes)
                return

    # --- the poll ---

    def poll(self) -> list[Message]:
        """Accept, read, send what is queued; return the messages that arrived. Never blocks."""
        self._accept()
        inbound = self._read()
        self._flush()
        self._check_stall()
        return inbound

    def _accept(self) -> None:
        if self._listener is None:
            return
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                _LOG.warning("uplink socket: accept failed (%s)", e.strerror)
                return
            try:
                pid, uid, _gid = peer_credentials(sock)
            except OSError as e:
                _LOG.warning("uplink socket: no peer credentials (%s): connection closed", e.strerror)
                sock.close()
                self.refused += 1
                continue
            if uid != self.allowed_uid:
                _LOG.warning("uplink socket: refused a connection from uid %d (pid %d): only uid %d may connect",
                             uid, pid, self.allowed_uid)
                sock.close()
                self.refused += 1
                continue
            sock.setblocking(False)
            if self._peer is not None:
                self._drop_peer("a new uplink connection replaces the old one")
            self._peer = _Peer(sock, pid, self._clock())
            self.connections += 1
            _LOG.info("uplink connected (pid %d)", pid)

    def _read(self) -> list[Message]:
        out: list[Message] = []
        peer = self._peer
        budget = self._max_read  # a flooding uplink cannot keep the audio loop here
        while peer is not None and peer is self._peer and budget > 0:
            try:
                data = peer.sock.recv(min(65536, budget))
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                self._drop_peer(f"the uplink connection broke while reading ({e.strerror})")
                break
            if not data:
                self._drop_peer("the uplink closed its connection")
                break
            budget -= len(data)
            peer.last_progress = self._clock()
            try:
                items = peer.reader.feed(data)
            except FrameError as e:
                self.rejected += 1
                self._drop_peer(f"the uplink broke the protocol: {e}")
                break
            for item in items:
                if isinstance(item, MessageError):
                    self.rejected += 1
                    _LOG.warning("uplink socket: dropped a message: %s", item)
                else:
                    out.append(item)
        return out

    def _check_stall(self) -> None:
        peer = self._peer
        if peer is not None and peer.reader.partial and self._clock() - peer.last_progress > self._partial_timeout_s:
            self.rejected += 1
            self._drop_peer(f"the uplink sent part of a frame and then nothing for {self._partial_timeout_s:g} s")

    def _drop_peer(self, why: str | None) -> None:
        peer = self._peer
        if peer is None:
            return
        self._peer = None
        if why:
            _LOG.warning("uplink socket: %s: connection closed", why)
        for name, *_ in peer.queue:
            self.dropped += 1
            self.dropped_by_kind[name] += 1
        # Whatever audio was on its way is gone with the connection: the rest of those utterances goes too.
        self._broken_streams |= self._open_streams
        self._open_streams.clear()
        peer.sock.close()
