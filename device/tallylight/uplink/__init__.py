"""The uplink: the one part of tallylight with network access (issue 15), and its socket to the daemon.

Two sides, two processes (P6):
- the daemon's side, `messages`, `framing` and `link`: plain Python, no network library, imported by the
  audio daemon (which keeps `PrivateNetwork=yes`);
- the uplink's side, `tallylight uplink` (`server`, `noise`, `daemon_client`, `main`): an ESPHome native API
  server for Home Assistant, a separate process under its own user, which never touches the mic.
  Only these modules import aioesphomeapi, zeroconf or noiseprotocol.
"""
