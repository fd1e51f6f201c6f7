"""The daemon's end of the uplink socket, against real unix sockets and real peers (threads and processes):
slow, garbage, stalling, disconnecting and wrong-user peers never block the poll or crash it."""

import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tallylight.uplink import framing, messages
from tallylight.uplink.link import UplinkLink, UplinkLinkError
from tallylight.uplink.messages import MessageReader

NOBODY = 65534
WAIT_S = 10.0


def poll_until(link: UplinkLink, done, timeout: float = WAIT_S) -> list[messages.Message]:
    """Poll as the audio loop will, until done(received) holds; fail after timeout seconds."""
    got: list[messages.Message] = []
    deadline = time.monotonic() + timeout
    while not done(got):
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s; received {got}")
        got += link.poll()
        time.sleep(0.002)
    return got


def connect(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(WAIT_S)
    s.connect(str(path))
    return s


def read_messages(sock: socket.socket, link: UplinkLink, done) -> list[messages.Message]:
    """Read as the uplink would, polling the link meanwhile (it sends only from poll and send)."""
    reader = MessageReader(messages.TO_UPLINK_KINDS)
    got: list[messages.Message] = []
    sock.setblocking(False)
    deadline = time.monotonic() + WAIT_S
    while not done(got):
        assert time.monotonic() < deadline, f"peer did not get what it waited for; got {len(got)} messages"
        link.poll()
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            time.sleep(0.002)
            continue
        assert data, "the link closed the connection"
        for item in reader.feed(data):
            assert isinstance(item, messages.Message), item
            got.append(item)
    return got


@pytest.fixture
def link(tmp_path):
    with UplinkLink(tmp_path / "uplink.sock", allowed_uid=os.getuid()) as link:
        yield link


def connected_peer(link: UplinkLink) -> socket.socket:
    peer = connect(link.path)
    poll_until(link, lambda _: link.connected)
    return peer


PEER_PROCESS = r"""
import socket, sys
from tallylight.uplink import messages
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(10); s.connect(sys.argv[1])
reader = messages.MessageReader(messages.TO_UPLINK_KINDS)
got = []
while not got:
    data = s.recv(65536)
    if not data:
        print("closed"); sys.exit(0)
    got += reader.feed(data)
print(repr(got[0]), flush=True)
s.sendall(messages.encode(messages.ReplyText("u1", "The kitchen light is on", False))
          + messages.encode(messages.TimerEvent("finished", "t1", "pasta", 600, 0, False)))
print("eof" if s.recv(1) == b"" else "data")
"""


def run_peer(path: Path, *prefix: str) -> subprocess.Popen:
    return subprocess.Popen([*prefix, sys.executable, "-c", PEER_PROCESS, str(path)], stdout=subprocess.PIPE,
                            text=True)


def test_a_peer_process_gets_the_hello_and_its_reply_and_timer_reach_the_daemon(link):
    child = run_peer(link.path)
    poll_until(link, lambda _: link.connected)
    assert link.send(messages.Hello("tallylight 0.1.0", "kitchen", "text"))
    got = poll_until(link, lambda got: len(got) == 2)
    assert got == [messages.ReplyText("u1", "The kitchen light is on", False),
                   messages.TimerEvent("finished", "t1", "pasta", 600, 0, False)]
    link.close()
    out, _ = child.communicate(timeout=WAIT_S)
    assert out.splitlines() == ["Hello(software='tallylight 0.1.0', device_name='kitchen', mode='text')", "eof"]
    assert (link.dropped, link.rejected, link.refused) == (0, 0, 0)


def test_with_no_uplink_sends_are_dropped_counted_and_never_delivered_later(link):
    assert not link.send(messages.State("capturing"))
    assert not link.send(messages.AudioChunk("u1", 0, b"\1\0" * 512))
    assert not link.send(messages.AudioChunk("u1", 1, b"\1\0" * 512))
    assert link.dropped == 3 and link.dropped_by_kind == {"State": 1, "AudioChunk": 2}
    peer = connected_peer(link)
    # The first thing a new uplink gets is what was sent after it came, never the old audio; the rest of
    # the utterance that lost chunks is dropped too and its end says so.
    assert not link.send(messages.AudioChunk("u1", 2, b"\1\0" * 512))
    assert link.send(messages.AudioEnd("u1", "vad_end"))
    assert link.send(messages.State("listening"))
    got = read_messages(peer, link, lambda got: len(got) == 2)
    assert got == [messages.AudioEnd("u1", "dropped"), messages.State("listening")]
    assert link.dropped == 4


def test_a_peer_that_never_reads_cannot_block_sends_and_gets_only_whole_frames_in_order(link):
    peer = connected_peer(link)
    chunk = b"\1\2" * 1024  # 2 KiB, a 64 ms block
    accepted = [link.send(messages.AudioChunk("u1", seq, chunk)) for seq in range(3000)]  # 6 MB, 3 minutes
    assert link.send(messages.AudioEnd("u1", "max_length"))
    assert link.queued_bytes <= 128 * 1024
    assert accepted[0] and not accepted[-1] and link.dropped == accepted.count(False) > 0
    # Once one chunk is dropped the rest of the utterance is: what arrives is a whole prefix, then the end.
    first_drop = accepted.index(False)
    assert not any(accepted[first_drop:])
    assert link.connected
    got = read_messages(peer, link, lambda got: got and isinstance(got[-1], messages.AudioEnd))
    assert [m.seq for m in got[:-1]] == list(range(first_drop))
    assert got[-1] == messages.AudioEnd("u1", "dropped")
    # The next utterance, sent at a pace the peer keeps up with, arrives whole.
    for seq in range(5):
        assert link.send(messages.AudioChunk("u2", seq, chunk))
    assert link.send(messages.AudioEnd("u2", "vad_end"))
    got = read_messages(peer, link, lambda got: got and isinstance(got[-1], messages.AudioEnd))
    assert [m.seq for m in got[:-1]] == list(range(5)) and got[-1] == messages.AudioEnd("u2", "vad_end")


GARBAGE_PROCESS = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.settimeout(10); s.connect(sys.argv[1])
s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(range(256)) * 100)
print("closed" if s.recv(1) == b"" else "open")
"""


def test_a_garbage_peer_is_closed_with_one_log_line_and_the_next_peer_is_served(link, caplog):
    caplog.set_level(logging.INFO, logger="tallylight.uplink.link")
    child = subprocess.Popen([sys.executable, "-c", GARBAGE_PROCESS, str(link.path)], stdout=subprocess.PIPE,
                             text=True)
    poll_until(link, lambda _: link.rejected == 1)
    assert child.communicate(timeout=WAIT_S)[0].strip() == "closed"
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == ["uplink socket: the uplink broke the protocol: bad frame magic b'GE' (expected b'TL'): "
                        "the peer does not speak this protocol: connection closed"]
    assert not any(r.exc_info for r in caplog.records)
    peer = connected_peer(link)
    assert link.send(messages.State("muted"))
    assert read_messages(peer, link, lambda got: got) == [messages.State("muted")]


def test_bad_messages_are_dropped_with_a_reason_and_the_connection_is_kept(link, caplog):
    peer = connected_peer(link)
    unknown = framing.encode_frame(200, b"{}")
    wrong_way = messages.encode(messages.AudioChunk("u1", 0, b"\0\0"))  # the uplink may never send audio in
    peer.sendall(unknown + wrong_way + messages.encode(messages.ReplyText("u1", "ok", False)))
    got = poll_until(link, lambda got: got)
    assert got == [messages.ReplyText("u1", "ok", False)]
    assert link.rejected == 2 and link.connected
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == ["uplink socket: dropped a message: unknown message kind 200",
                        "uplink socket: dropped a message: AudioChunk may not be sent this way (to_uplink only)"]


def test_half_a_frame_then_silence_costs_one_poll_nothing_and_the_connection_after_the_timeout(tmp_path, caplog):
    now = [100.0]
    with UplinkLink(tmp_path / "u.sock", os.getuid(), partial_timeout_s=5.0, clock=lambda: now[0]) as link:
        peer = connected_peer(link)
        peer.sendall(messages.encode(messages.ReplyText("u1", "hello", False))[:7])
        poll_until(link, lambda _: link._peer.reader.partial)
        now[0] += 4.9
        assert link.poll() == [] and link.connected
        now[0] += 0.2
        assert link.poll() == [] and not link.connected
        assert peer.recv(1) == b""
        assert "the uplink sent part of a frame and then nothing for 5 s: connection closed" in caplog.text


def test_a_peer_that_disconnects_is_noticed_and_what_was_queued_for_it_is_counted_dropped(link):
    peer = connected_peer(link)
    seq = 0
    while link.send(messages.AudioChunk("u1", seq, b"\0" * 2048)):  # the peer reads nothing: the queue fills
        seq += 1
    queued_frames = len(link._peer.queue)
    assert queued_frames > 0
    dropped_before = link.dropped
    peer.close()
    poll_until(link, lambda _: not link.connected)
    assert link.dropped == dropped_before + queued_frames
    assert not link.send(messages.State("listening"))
    peer = connected_peer(link)
    assert link.send(messages.State("listening"))
    assert read_messages(peer, link, lambda got: got) == [messages.State("listening")]


def test_a_new_connection_replaces_a_stale_one(link):
    old = connected_peer(link)
    new = connect(link.path)
    poll_until(link, lambda _: link.connections == 2)
    assert old.recv(1) == b""
    assert link.send(messages.State("muted"))
    assert read_messages(new, link, lambda got: got) == [messages.State("muted")]


@pytest.fixture
def open_dir():
    # The socket's folder must be reachable by the other user; pytest's tmp_path is root-only.
    d = Path(tempfile.mkdtemp(prefix="tl-uplink-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d)


needs_root = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                                reason="runs a peer as another user: needs root and setpriv")
AS_NOBODY = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")


@needs_root
@pytest.mark.parametrize("allowed, expect", [(0, "refused"), (NOBODY, "served")])
def test_only_the_uplinks_uid_is_served(open_dir, caplog, allowed, expect):
    # The same peer process as uid 65534 is refused when the link allows uid 0 and served when it allows 65534.
    with UplinkLink(open_dir / "u.sock", allowed_uid=allowed, mode=0o666) as link:
        child = run_peer(link.path, *AS_NOBODY)
        if expect == "refused":
            poll_until(link, lambda _: link.refused == 1)
            assert child.communicate(timeout=WAIT_S)[0].strip() == "closed"
            assert f"refused a connection from uid {NOBODY} (pid {child.pid}): only uid 0 may connect" in caplog.text
            assert not link.connected
        else:
            poll_until(link, lambda _: link.connected)
            link.send(messages.State("muted"))
            assert poll_until(link, lambda got: len(got) == 2)[0] == messages.ReplyText("u1", "The kitchen light is on", False)
            link.close()
            assert child.communicate(timeout=WAIT_S)[0].splitlines() == ["State(state='muted')", "eof"]
            assert link.refused == 0


@needs_root
def test_by_default_the_socket_file_itself_keeps_other_users_out(open_dir):
    with UplinkLink(open_dir / "u.sock", allowed_uid=0) as link:
        assert (link.path.stat().st_mode & 0o777) == 0o660
        r = subprocess.run([*AS_NOBODY, sys.executable, "-c",
                            "import socket, sys\ns = socket.socket(socket.AF_UNIX)\n"
                            "try:\n    s.connect(sys.argv[1])\nexcept PermissionError:\n    print('EACCES')",
                            str(link.path)], capture_output=True, text=True, timeout=WAIT_S)
        assert r.stdout.strip() == "EACCES"


def test_socket_path_problems_are_one_line_errors(tmp_path):
    with pytest.raises(UplinkLinkError, match="folder .* does not exist"):
        UplinkLink(tmp_path / "missing" / "u.sock", 0).open()
    (tmp_path / "file").write_text("not a socket")
    with pytest.raises(UplinkLinkError, match="exists and is not a socket: remove it"):
        UplinkLink(tmp_path / "file", 0).open()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(tmp_path / "stale.sock"))
    stale.close()  # a socket file left behind by a daemon that died
    link = UplinkLink(tmp_path / "stale.sock", os.getuid())
    link.open()
    connected_peer(link)
    link.close()
    link.close()
    assert not (tmp_path / "stale.sock").exists()


def test_the_daemons_side_imports_no_network_library():
    code = ("import sys; import tallylight.uplink.link, tallylight.uplink.messages, tallylight.uplink.framing; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'aioesphomeapi', 'zeroconf', 'aiohttp', "
            "'noise', 'google', 'asyncio', 'ssl', 'http', 'urllib3', 'requests'}))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout.strip(), r.stderr) == (0, "[]", "")
