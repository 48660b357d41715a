"""qchain core library: data types, canonical codec, hashing, Merkle trees, signatures,
storage and configuration. It imports nothing from `consensus`, `contracts`, `node` or
`devnet`."""

__version__ = "0.1.0"
