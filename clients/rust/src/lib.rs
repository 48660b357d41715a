//! qchain-anchor: a client of the qchain API written from `docs/TRANSACTIONS.md` alone.
//! It encodes, signs and hashes transactions itself (`codec`, `tx`), reads and creates
//! Ed25519 and ML-DSA-65 keys (`key`) and talks to a node over HTTP (`api`).

pub mod api;
pub mod codec;
pub mod key;
pub mod tx;
