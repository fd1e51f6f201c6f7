"""The ESPHome native API's two framings, server side, as pure steps: bytes in, packets and bytes out.

Plaintext: `0x00 | varuint length | varuint type | payload`.
Noise (`Noise_NNpsk0_25519_ChaChaPoly_SHA256`, the API's encryption): frames `0x01 | u16 length | body`.
The client's first frame (empty) is its hello; the server answers with its own (chosen protocol 0x01, its
name and MAC), the client sends `0x00 | handshake`, the server answers `0x00 | handshake` or
`0x01 | "Handshake MAC failure"` (a wrong key) and closes. After that each body is one encrypted
`u16 type | u16 length | payload`.

Both codecs cap what they buffer at one frame (65535 bytes of payload, as ESPHome and aioesphomeapi do),
and raise `ApiFrameError` for anything malformed: the server then closes the connection with one log line.
`feed` returns (packets, bytes to write, close after writing). Nothing here reads a socket.
"""

from __future__ import annotations

import logging

from tallylight.uplink.framing import ProtocolError

_LOG = logging.getLogger(__name__)

MAX_PAYLOAD = 65535
NOISE_PROTOCOL = b"Noise_NNpsk0_25519_ChaChaPoly_SHA256"
_PROLOGUE = b"NoiseAPIInit"
_MAX_VARUINT_BYTES = 4  # 28 bits: far above any length or type the protocol uses

Packet = tuple[int, bytes]


class ApiFrameError(ProtocolError):
    """An API client sent bytes that are not a frame of the protocol this server speaks."""


def _varuint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varuint(buf: bytes | bytearray, pos: int) -> tuple[int, int] | None:
    """(value, next position), or None when the buffer ends inside the varuint."""
    result = 0
    for i in range(_MAX_VARUINT_BYTES):
        if pos + i >= len(buf):
            return None
        byte = buf[pos + i]
        result |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return result, pos + i + 1
    raise ApiFrameError(f"a varuint longer than {_MAX_VARUINT_BYTES} bytes")


def encode_plaintext(packets: list[Packet]) -> bytes:
    return b"".join(b"\0" + _varuint(len(data)) + _varuint(type_) + data for type_, data in packets)


class PlaintextCodec:
    encrypted = False

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> tuple[list[Packet], bytes, bool]:
        self._buf += data
        packets: list[Packet] = []
        while self._buf:
            if self._buf[0] != 0x00:
                raise ApiFrameError(f"plaintext frame starts with 0x{self._buf[0]:02x}, not 0x00")
            length = _read_varuint(self._buf, 1)
            if length is None:
                break
            if length[0] > MAX_PAYLOAD:
                raise ApiFrameError(f"frame length {length[0]} is over {MAX_PAYLOAD}")
            type_ = _read_varuint(self._buf, length[1])
            if type_ is None:
                break
            end = type_[1] + length[0]
            if len(self._buf) < end:
                break
            packets.append((type_[0], bytes(self._buf[type_[1]:end])))
            del self._buf[:end]
        return packets, b"", False

    def encode(self, packets: list[Packet]) -> bytes:
        return encode_plaintext(packets)


def _noise_frame(body: bytes) -> bytes:
    return b"\x01" + len(body).to_bytes(2, "big") + body


class NoiseCodec:
    """The responder's side of the API's Noise handshake, then its encrypted frames."""

    encrypted = True

    def __init__(self, psk: bytes, name: str, mac: str) -> None:
        if len(psk) != 32:
            raise ValueError("the Noise PSK must be 32 bytes")
        self._psk = psk
        self._server_hello = b"\x01" + name.encode() + b"\0" + mac.encode() + b"\0"
        self._buf = bytearray()
        self._state = "hello"
        self._noise = None
        self.failed_handshake = False

    def _frames(self) -> list[bytes]:
        frames = []
        while len(self._buf) >= 3:
            if self._buf[0] != 0x01:
                if self._buf[0] == 0x00 and self._state == "hello":
                    raise ApiFrameError("the client speaks plaintext, but this device requires encryption")
                raise ApiFrameError(f"noise frame starts with 0x{self._buf[0]:02x}, not 0x01")
            end = 3 + int.from_bytes(self._buf[1:3], "big")
            if len(self._buf) < end:
                break
            frames.append(bytes(self._buf[3:end]))
            del self._buf[:end]
        return frames

    def feed(self, data: bytes) -> tuple[list[Packet], bytes, bool]:
        self._buf += data
        packets: list[Packet] = []
        out = bytearray()
        for body in self._frames():
            if self._state == "hello":
                self._start(body)
                out += _noise_frame(self._server_hello)
                self._state = "handshake"
            elif self._state == "handshake":
                reply, ok = self._handshake(body)
                out += _noise_frame(reply)
                if not ok:
                    self._state = "closed"
                    return packets, bytes(out), True
                self._state = "ready"
            elif self._state == "ready":
                packets.append(self._decrypt(body))
            else:
                break
        return packets, bytes(out), False

    def _start(self, client_hello: bytes) -> None:
        from noise.connection import NoiseConnection

        noise = NoiseConnection.from_name(NOISE_PROTOCOL)
        noise.set_as_responder()
        noise.set_psks(psk=self._psk)
        # Both sides bind the client's hello frame into the handshake, as ESPHome does.
        noise.set_prologue(_PROLOGUE + len(client_hello).to_bytes(2, "big") + client_hello)
        noise.start_handshake()
        self._noise = noise

    def _handshake(self, body: bytes) -> tuple[bytes, bool]:
        if not body or body[0] != 0x00:
            raise ApiFrameError("noise handshake frame does not start with 0x00")
        try:
            self._noise.read_message(body[1:])
            return b"\x00" + bytes(self._noise.write_message()), True
        except Exception as e:  # noqa: BLE001 - the noise library raises assorted types for a bad handshake
            # A wrong key fails the AEAD tag; say so in the words ESPHome uses, which the client maps to
            # "invalid encryption key".
            _LOG.debug("noise handshake failed: %s", type(e).__name__)
            self.failed_handshake = True
            return b"\x01Handshake MAC failure", False

    def _decrypt(self, body: bytes) -> Packet:
        try:
            plain = bytes(self._noise.decrypt(body))
        except Exception as e:  # noqa: BLE001 - InvalidTag and the library's own errors alike
            raise ApiFrameError(f"a frame did not decrypt ({type(e).__name__})") from None
        if len(plain) < 4:
            raise ApiFrameError(f"a decrypted frame of {len(plain)} bytes is too short")
        if int.from_bytes(plain[2:4], "big") != len(plain) - 4:
            raise ApiFrameError("a decrypted frame's length field does not match its size")
        return int.from_bytes(plain[0:2], "big"), plain[4:]

    def encode(self, packets: list[Packet]) -> bytes:
        if self._state != "ready":
            raise ApiFrameError("cannot send before the noise handshake is done")
        out = bytearray()
        for type_, data in packets:
            plain = type_.to_bytes(2, "big") + len(data).to_bytes(2, "big") + data
            out += _noise_frame(bytes(self._noise.encrypt(plain)))
        return bytes(out)


def plaintext_refusal() -> bytes:
    """What an encryption-only server sends a plaintext client: a noise frame's first byte, which the client
    reports as "connection requires encryption" (Home Assistant then asks the owner for the key)."""
    return b"\x01\x00\x00"


def encryption_refusal() -> bytes:
    """What a plaintext server sends a noise client: a plaintext frame (an empty DisconnectRequest), which the
    client reports as "the device is using plaintext protocol"."""
    return encode_plaintext([(5, b"")])
