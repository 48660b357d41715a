//! `qchain-anchor`: anchor a document's SHA-256 digest with qchain's notary contract.
//!
//! Reads (or with `--create-key`, creates) a key file (Ed25519 or ML-DSA-65), asks the node for the
//! chain id and the account's next nonce, builds and signs the `notary.anchor`
//! transaction, submits its canonical bytes and waits for the commit, then prints the
//! transaction hash and the height.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use qchain_anchor::api::Node;
use qchain_anchor::key;
use qchain_anchor::tx::{anchor_args, anchor_tx};
use sha2::{Digest, Sha256};

const USAGE: &str = "\
usage: qchain-anchor --node URL --key FILE [--scheme S] [--create-key]
                     (--file PATH | --digest HEX [--algorithm sha256|sm3])
                     [--title TEXT] [--category TEXT]
                     [--metadata-hex HEX] [--chain-id ID] [--expiry-height N]
                     [--wait SECONDS] [--json]
       qchain-anchor --key FILE --create-key [--scheme S]   (create a key, print its address)

Anchors the SHA-256 digest of a document (notary.anchor) and waits for the commit.
--key FILE     a 32-byte seed (raw or 64 hex digits) or a qchain JSON key file
--scheme S     ed25519 (default) or ml-dsa-65: the scheme of a bare seed and of
               a key --create-key creates (a JSON key file names its own)
--create-key   create FILE with a new random key if it does not exist
--file PATH    the document: its SHA-256 is anchored, titled with its name by default
--digest HEX   a digest computed elsewhere (64 hex digits), SHA-256 unless
               --algorithm sm3 says it is an SM3 digest
--chain-id ID  default: the node's (GET /v1/status)
--wait S       seconds to wait for the commit (default 30)
--json         print the outcome as one JSON object";

const WITH_VALUE: &[&str] = &[
    "--node",
    "--key",
    "--scheme",
    "--file",
    "--digest",
    "--algorithm",
    "--title",
    "--category",
    "--metadata-hex",
    "--chain-id",
    "--expiry-height",
    "--wait",
];

#[derive(Default)]
struct Args {
    node: Option<String>,
    key: Option<PathBuf>,
    scheme: String,
    create_key: bool,
    file: Option<PathBuf>,
    digest: Option<String>,
    algorithm: String,
    title: Option<String>,
    category: String,
    metadata_hex: String,
    chain_id: Option<String>,
    expiry_height: u64,
    wait_s: u64,
    json: bool,
}

fn parse_args(argv: &[String]) -> Result<Args, String> {
    let mut a = Args {
        category: "document".into(),
        algorithm: "sha256".into(),
        scheme: "ed25519".into(),
        wait_s: 30,
        ..Args::default()
    };
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        if flag == "--create-key" {
            a.create_key = true;
            continue;
        }
        if flag == "--json" {
            a.json = true;
            continue;
        }
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        if !WITH_VALUE.contains(&flag.as_str()) {
            return Err(format!("unknown argument {flag}"));
        }
        let v = it.next().ok_or(format!("{flag} needs a value"))?.clone();
        let number = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: not a number: {v}"))
        };
        match flag.as_str() {
            "--node" => a.node = Some(v),
            "--key" => a.key = Some(PathBuf::from(v)),
            "--scheme" => a.scheme = v,
            "--file" => a.file = Some(PathBuf::from(v)),
            "--digest" => a.digest = Some(v),
            "--algorithm" => a.algorithm = v,
            "--title" => a.title = Some(v),
            "--category" => a.category = v,
            "--metadata-hex" => a.metadata_hex = v,
            "--chain-id" => a.chain_id = Some(v),
            "--expiry-height" => a.expiry_height = number(&v)?,
            "--wait" => a.wait_s = number(&v)?,
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    Ok(a)
}

/// The digest to anchor and the default title.
fn digest_and_title(a: &Args) -> Result<([u8; 32], String), String> {
    match (&a.file, &a.digest) {
        (Some(_), None) if a.algorithm != "sha256" => {
            Err("--file anchors the file's SHA-256: --algorithm is for --digest".into())
        }
        (Some(path), None) => {
            let data =
                std::fs::read(path).map_err(|e| format!("--file {}: {e}", path.display()))?;
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            Ok((
                Sha256::digest(&data).into(),
                name.unwrap_or_else(|| "document".into()),
            ))
        }
        (None, Some(text)) => {
            let raw = hex::decode(text.trim()).map_err(|e| format!("--digest: not hex: {e}"))?;
            let d: [u8; 32] = raw
                .try_into()
                .map_err(|r: Vec<u8>| format!("--digest: {} bytes, expected 32", r.len()))?;
            Ok((d, format!("{} {}", a.algorithm, hex::encode(d))))
        }
        _ => Err("give exactly one of --file and --digest".into()),
    }
}

fn run(a: &Args) -> Result<(), String> {
    let key_path = a.key.as_ref().ok_or("--key is required")?;
    let signing_key = if a.create_key && !key_path.exists() {
        key::create(key_path, &a.scheme)?
    } else {
        key::load(key_path, &a.scheme)?
    };
    let address = signing_key.address();
    let Some(node_url) = &a.node else {
        if a.create_key {
            println!("address {}", hex::encode(address));
            return Ok(());
        }
        return Err("--node is required".into());
    };
    let (digest, default_title) = digest_and_title(a)?;
    let metadata =
        hex::decode(&a.metadata_hex).map_err(|e| format!("--metadata-hex: not hex: {e}"))?;
    let title = a.title.clone().unwrap_or(default_title);
    let node = Node::new(node_url, Duration::from_secs(a.wait_s + 15));
    let chain_id = match &a.chain_id {
        Some(c) => c.clone(),
        None => node.chain_id()?,
    };
    let nonce = node.next_nonce(&address).map_err(|e| {
        if e.contains(": 404 ") {
            format!("{e}\n(the key's address {} is not a member of the chain: an admin registers it first)", hex::encode(address))
        } else {
            e
        }
    })?;
    let args = anchor_args(&digest, &a.algorithm, &title, &a.category, &metadata);
    let tx = anchor_tx(&signing_key, &chain_id, nonce, args, a.expiry_height);
    let tx_hash = hex::encode(tx.hash());
    let done = node.submit_and_wait(&tx.encode(), a.wait_s)?;
    if done.tx_hash != tx_hash {
        return Err(format!(
            "the node names hash {}, this client computed {tx_hash}",
            done.tx_hash
        ));
    }
    if a.json {
        let doc = serde_json::json!({
            "tx_hash": tx_hash, "height": done.height, "index": done.index,
            "ok": done.ok, "code": done.code, "digest": hex::encode(digest),
            "algorithm": a.algorithm,
            "sender": hex::encode(address), "nonce": nonce, "chain_id": chain_id,
        });
        println!("{doc}");
    } else {
        println!("tx_hash {tx_hash}");
        println!("height {}", done.height);
        println!(
            "digest {} {} from {} (nonce {nonce})",
            a.algorithm,
            hex::encode(digest),
            hex::encode(address)
        );
    }
    if !done.ok {
        return Err(format!(
            "committed but failed: {} {}",
            done.code, done.message
        ));
    }
    Ok(())
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&argv) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("qchain-anchor: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qchain-anchor: {e}");
            ExitCode::FAILURE
        }
    }
}
