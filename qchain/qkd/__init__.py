"""The QKD key layer: one-time keys from a key manager, key pools, authenticated frames.

- `errors`: the typed errors (key-source failures, frame rejections).
- `source`: the key-source interface (ETSI GS QKD 014 terms) and `Key`.
- `client`: the ETSI GS QKD 014 HTTP client (`ETSIClient`), with mutual TLS and retries.
- `keymanager`: the link model of the simulated key manager (rates, pool cap, faults).
- `kms`: the simulated key manager as an HTTP server, with its admin endpoint;
  `kms_config`: its TOML config and behaviour switches; `kms_cli`: `qchain kms`,
  `qchain kms certs` and `qchain kms probe`; `certs`: the devnet's TLS material.
- `probe`: the compatibility probe of a vendor KME (`qchain kms probe`).
- `simsource`: the in-process simulated key source (deterministic, seeded).
- `pool`: send and receive key pools per directed link.
- `frame`: the authenticated frame, `LinkSender` and `LinkReceiver`.
- `endpoint`: `QKDEndpoint`, one node's links wired together.
- `clock` (real and virtual clocks), `lease` (crash-safe counters), `testing` (helpers).

See README.md beside this file for the API the node transport uses.
"""
