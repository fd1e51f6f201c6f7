"""The daemon <-> uplink socket protocol: round trips, strict rejection with a reason, bounds, and the rule
that nothing the uplink can send asks for a capture or an upload.

Property tests run derandomized (the same examples on every run and machine).
"""

import dataclasses
import json
import re
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tallylight.uplink import framing, messages
from tallylight.uplink.framing import FrameError, FrameSplitter, ProtocolError
from tallylight.uplink.messages import MessageError, MessageReader

PROPS = settings(derandomize=True, database=None, max_examples=300, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow])
ALL_KINDS = frozenset(messages.KINDS)


def strategy_for(check) -> st.SearchStrategy:
    if isinstance(check, messages._Text):
        alphabet = st.characters(blacklist_categories=("Cs", "Cc"))
        return st.text(alphabet, min_size=0 if check.empty_ok else 1, max_size=check.max_chars)
    if isinstance(check, messages._Id):
        return st.from_regex(messages._ID, fullmatch=True)
    if isinstance(check, messages._Choice):
        return st.sampled_from(check.values)
    if isinstance(check, messages._Int):
        return st.integers(check.lo, check.hi)
    if isinstance(check, messages._Flag):
        return st.booleans()
    if isinstance(check, messages._Names):
        word = st.text(st.characters(whitelist_categories=("Ll", "Lo")), min_size=1, max_size=8)
        name = st.lists(word, min_size=1, max_size=messages.MAX_EXPOSED_NAME_WORDS).map(" ".join).filter(
            lambda n: len(n) <= messages.MAX_EXPOSED_NAME_CHARS and messages._EXPOSED_NAME.fullmatch(n)
            and n == n.lower())
        return st.lists(name, max_size=12, unique=True).map(tuple)
    if isinstance(check, messages._Pcm):
        return st.binary(max_size=messages.MAX_PCM_BYTES // 2).map(lambda b: b + b)  # even lengths
    raise AssertionError(f"no strategy for {check!r}")


def message_strategy(cls) -> st.SearchStrategy:
    return st.builds(cls, **{f.name: strategy_for(f.metadata["check"]) for f in dataclasses.fields(cls)})


any_message = st.one_of(*(message_strategy(cls) for cls in messages.KINDS.values()))


def frame(kind: int, meta: bytes, data: bytes = b"", version: int = framing.VERSION) -> bytes:
    return framing.HEADER.pack(framing.MAGIC, version, kind, len(meta), len(data)) + meta + data


def meta_of(obj) -> bytes:
    return json.dumps(obj).encode()


def only(reader: MessageReader, data: bytes):
    out = reader.feed(data)
    assert len(out) == 1, out
    return out[0]


@PROPS
@given(msgs=st.lists(any_message, min_size=1, max_size=8), cuts=st.lists(st.integers(0, 200_000), max_size=10))
def test_any_messages_round_trip_whatever_the_read_sizes(msgs, cuts):
    stream = b"".join(messages.encode(m) for m in msgs)
    pieces, last = [], 0
    for cut in sorted(c % (len(stream) + 1) for c in cuts):
        pieces.append(stream[last:cut])
        last = cut
    pieces.append(stream[last:])
    reader = MessageReader(ALL_KINDS)
    got = [m for piece in pieces for m in reader.feed(piece)]
    assert got == msgs
    assert not reader.partial and reader.rejected == 0


@PROPS
@given(data=st.binary(max_size=4096))
def test_arbitrary_bytes_raise_nothing_but_the_protocol_error(data):
    reader = MessageReader(ALL_KINDS)
    try:
        for item in reader.feed(data):
            assert isinstance(item, messages.Message | MessageError)
    except ProtocolError:
        pass
    assert reader.buffered <= framing.MAX_FRAME_BYTES


@PROPS
@given(kind=st.integers(0, 255), meta=st.binary(max_size=300), data=st.binary(max_size=300))
def test_arbitrary_bodies_in_valid_frames_are_dropped_with_a_reason_and_the_stream_goes_on(kind, meta, data):
    reader = MessageReader(ALL_KINDS)
    out = reader.feed(frame(kind, meta, data) + messages.encode(messages.State("muted")))
    assert len(out) == 2 and out[1] == messages.State("muted")
    assert isinstance(out[0], messages.Message | MessageError)
    if isinstance(out[0], MessageError):
        assert str(out[0]) and reader.rejected == 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=10)


@PROPS
@given(cls=st.sampled_from(list(messages.KINDS.values())), data=st.data())
def test_json_objects_with_the_right_keys_and_any_values_decode_only_if_every_field_is_valid(cls, data):
    names = [f.name for f in dataclasses.fields(cls) if f.metadata["check"].json]
    obj = {n: data.draw(json_values | strategy_for(f.metadata["check"]), label=n)
           for n, f in zip(names, [f for f in dataclasses.fields(cls) if f.metadata["check"].json], strict=True)}
    has_pcm = any(not f.metadata["check"].json for f in dataclasses.fields(cls))
    out = only(MessageReader(ALL_KINDS), frame(cls.KIND, meta_of(obj), b"\0\0" if has_pcm else b""))
    if isinstance(out, messages.Message):
        # Accepted only if it is exactly what was sent, and it survives a second trip.
        # (compared as JSON: a list of names arrives as a tuple)
        assert json.loads(json.dumps({n: getattr(out, n) for n in names})) == json.loads(json.dumps(obj))
        assert only(MessageReader(ALL_KINDS), messages.encode(out)) == out
    else:
        assert isinstance(out, MessageError)


def worst_names(c) -> tuple:
    # As many one-character names of 4-byte letters as the cap allows: the most JSON quotes and commas.
    letters = [chr(0x20000 + i) for i in range(c.max_items)]
    return tuple(letters[:min(c.max_items, c.max_bytes // 4)])


def test_the_largest_possible_message_of_every_kind_fits_its_frame():
    # 4-byte UTF-8 characters are the worst case for the JSON part (ensure_ascii=False).
    for cls in messages.KINDS.values():
        values = {}
        for f in dataclasses.fields(cls):
            c = f.metadata["check"]
            values[f.name] = {messages._Text: lambda c: "\U0001f600" * c.max_chars,
                              messages._Id: lambda c: "x" * messages.MAX_ID_CHARS,
                              messages._Choice: lambda c: max(c.values, key=len),
                              messages._Int: lambda c: c.hi, messages._Flag: lambda c: True,
                              messages._Pcm: lambda c: b"\1" * messages.MAX_PCM_BYTES,
                              messages._Names: worst_names}[type(c)](c)
        msg = cls(**values)
        assert only(MessageReader(ALL_KINDS), messages.encode(msg)) == msg


@pytest.mark.parametrize("make, reason", [
    (lambda: messages.State("asleep"), "must be one of muted, listening, capturing, uploading"),
    (lambda: messages.TextUtterance("u1", ""), "is empty"),
    (lambda: messages.TextUtterance("u1", "x" * 2001), "2001 characters, over the cap of 2000"),
    (lambda: messages.TextUtterance("u1", "turn on\nERROR forged log line"), "control character U+000A"),
    (lambda: messages.TextUtterance("a b", "hi"), "must be 1-64 of"),
    (lambda: messages.AudioChunk("u1", -1, b""), "outside 0..2147483647"),
    (lambda: messages.AudioChunk("u1", 0, b"\0" * 3), "odd number of bytes"),
    (lambda: messages.AudioChunk("u1", 0, b"\0" * 32770), "over the cap of 32768"),
    (lambda: messages.TimerEvent("finished", "t", "", True, 0, False), "must be an integer, not bool"),
    (lambda: messages.AnnounceDone("a", 1), "must be true or false, not int"),
    (lambda: messages.ExposedNames(("porch lamp\n",), ()), "is not 1-6 lowercase words"),
    (lambda: messages.ExposedNames(("Porch Lamp",), ()), "is not 1-6 lowercase words"),
    (lambda: messages.ExposedNames(("lamp 2",), ()), "is not 1-6 lowercase words"),
    (lambda: messages.ExposedNames(("a b c d e f g",), ()), "is not 1-6 lowercase words"),
    (lambda: messages.ExposedNames(("x" * 61,), ()), "61 characters, over the cap of 60"),
    (lambda: messages.ExposedNames(tuple(f"lamp {chr(97 + i % 26) * (1 + i // 26)}" for i in range(201)), ()),
     "201 names, over the cap of 200"),
    (lambda: messages.ExposedNames(tuple("x" * 40 + " " + chr(97 + i % 26) * (1 + i // 26) for i in range(200)), ()),
     "over the cap of 6000"),
    (lambda: messages.ExposedNames(("fan", "fan"), ()), "holds a name twice"),
    (lambda: messages.ExposedNames(["fan"], ()), "must be a list of names, not list"),
])
def test_a_message_out_of_bounds_cannot_even_be_made(make, reason):
    with pytest.raises(MessageError, match=re.escape(reason)):
        make()


STATE = messages.State.KIND
REPLY_AUDIO = messages.ReplyAudio.KIND


@pytest.mark.parametrize("raw, reason", [
    (frame(99, b"{}"), "unknown message kind 99"),
    (frame(STATE, b'{"state":"muted","state":"listening"}'), "duplicate key 'state'"),
    (frame(STATE, b'{"state":"muted","extra":1}'), "unexpected ['extra']"),
    (frame(STATE, b"{}"), "missing ['state']"),
    (frame(STATE, b'["muted"]'), "must be a JSON object, not list"),
    (frame(STATE, b'{"state":"mu'), "meta is not JSON"),
    (frame(STATE, b"\xff\xfe"), "meta is not UTF-8"),
    (frame(STATE, b"[" * 5000 + b"]" * 5000), "meta is not JSON"),
    (frame(STATE, b'{"state":"muted"}', b"\0\0"), "State carries no data, but 2 bytes came"),
    (frame(messages.TimerEvent.KIND, meta_of({"event": "started", "timer_id": "t", "name": "", "total_s": 0,
                                              "left_s": 1.5, "active": True})), "left_s must be an integer, not float"),
    (frame(messages.TimerEvent.KIND, b'{"event":"started","timer_id":"t","name":"","total_s":NaN,"left_s":0,'
                                     b'"active":true}'), "NaN is not a number here"),
    (frame(REPLY_AUDIO, meta_of({"speech_id": "s", "seq": 0}), b"\0"), "odd number of bytes"),
    (frame(messages.ReplyText.KIND, meta_of({"utterance_id": "u", "text": "\ud800", "with_audio": False})),
     "control character U+D800"),
])
def test_a_bad_frame_is_dropped_with_its_reason_and_the_next_one_still_arrives(raw, reason):
    reader = MessageReader(ALL_KINDS)
    out = reader.feed(raw + messages.encode(messages.State("listening")))
    assert isinstance(out[0], MessageError) and reason in str(out[0]), out
    assert out[1:] == [messages.State("listening")] and reader.rejected == 1



@pytest.mark.parametrize("raw, reason", [
    (b"GET / HTTP/1.1\r\n\r\n", "bad frame magic b'GE'"),
    (frame(STATE, b'{"state":"muted"}', version=2), "frame version 2, this side speaks 1"),
    (framing.HEADER.pack(b"TL", 1, STATE, framing.MAX_META_BYTES + 1, 0), "meta_len 16385 is over"),
    (framing.HEADER.pack(b"TL", 1, REPLY_AUDIO, 10, framing.MAX_DATA_BYTES + 1), "data_len 32769 is over"),
])
def test_a_broken_stream_raises_frame_error_at_the_header_before_buffering_a_body(raw, reason):
    reader = MessageReader(ALL_KINDS)
    with pytest.raises(FrameError, match=re.escape(reason)):
        reader.feed(raw)
    assert reader.buffered == 0
    with pytest.raises(FrameError):  # and stays broken: there is no trustworthy boundary any more
        reader.feed(messages.encode(messages.State("muted")))


def test_a_partial_frame_is_held_within_one_frame_and_completes_later():
    msg = messages.ReplyAudio("s1", 7, b"\x01\x02" * (messages.MAX_PCM_BYTES // 2))
    raw = messages.encode(msg)
    assert len(raw) <= framing.MAX_FRAME_BYTES
    splitter = FrameSplitter()
    for i in range(0, len(raw) - 1, 1000):
        assert splitter.feed(raw[i:min(i + 1000, len(raw) - 1)]) == []
        assert splitter.buffered <= framing.MAX_FRAME_BYTES
    assert splitter.partial
    reader_frames = splitter.feed(raw[-1:] + raw[:5])  # the end of one frame and the start of the next
    assert len(reader_frames) == 1 and splitter.buffered == 5
    assert messages.decode(reader_frames[0], ALL_KINDS) == msg


def test_each_side_accepts_only_its_own_direction():
    to_daemon = MessageReader(messages.TO_DAEMON_KINDS)
    out = to_daemon.feed(messages.encode(messages.AudioChunk("u1", 0, b"")))
    assert isinstance(out[0], MessageError) and "AudioChunk may not be sent this way (to_uplink only)" in str(out[0])
    to_uplink = MessageReader(messages.TO_UPLINK_KINDS)
    out = to_uplink.feed(messages.encode(messages.Announcement("a1", "hello", False)))
    assert isinstance(out[0], MessageError) and "to_daemon only" in str(out[0])
    assert messages.TO_DAEMON_KINDS.isdisjoint(messages.TO_UPLINK_KINDS)
    assert messages.TO_DAEMON_KINDS | messages.TO_UPLINK_KINDS == ALL_KINDS


# The whole of what the uplink can say to the daemon. Adding a kind or a field here is a privacy review:
# none may ask the daemon to listen, capture, upload, unmute or change mode.
UPLINK_VOCABULARY = {
    "UplinkHello": ["software"],
    # `audio`: in audio mode (the local config's), whether Home Assistant can take a stream now; without it the
    # daemon recognizes the utterance itself. It starts nothing: only the local wake word does.
    "HomeAssistantLink": ["connected", "encrypted", "audio"],
    "ReplyText": ["utterance_id", "text", "with_audio"],
    "ReplyAudio": ["speech_id", "seq", "pcm"],
    "ReplyAudioEnd": ["speech_id"],
    "Announcement": ["announce_id", "text", "with_audio"],
    "TimerEvent": ["event", "timer_id", "name", "total_s", "left_s", "active"],
    "PipelineEvent": ["utterance_id", "event", "code", "message"],
    "ExposedNames": ["names", "areas"],  # words for the grammar: they only ever add sentences to hear
    # After the daemon's own AudioEnd: its stream has gone on. It can only let the upload light go off sooner
    # (never before the daemon's last byte was written); a stray one is ignored.
    "AudioSent": ["utterance_id", "forwarded"],
}
FORBIDDEN_WORDS = ("listen", "capture", "upload", "unmute", "mute", "mode", "conversation", "wake", "record", "mic")


def test_nothing_the_uplink_can_send_names_a_capture_an_upload_or_a_mode():
    vocabulary = {messages.KINDS[k].__name__: [f.name for f in dataclasses.fields(messages.KINDS[k])]
                  for k in sorted(messages.TO_DAEMON_KINDS)}
    assert vocabulary == UPLINK_VOCABULARY
    for k in messages.TO_DAEMON_KINDS:
        for f in dataclasses.fields(messages.KINDS[k]):
            check = f.metadata["check"]
            words = [f.name] + list(getattr(check, "values", ()))
            for word in words:
                assert not any(bad in word for bad in FORBIDDEN_WORDS), (messages.KINDS[k].__name__, word)


def test_header_layout_is_what_the_docstring_says():
    raw = messages.encode(messages.State("muted"))
    magic, version, kind, meta_len, data_len = struct.unpack(">2sBBHI", raw[:10])
    assert (magic, version, kind, data_len) == (b"TL", 1, STATE, 0)
    assert json.loads(raw[10:10 + meta_len]) == {"state": "muted"}
