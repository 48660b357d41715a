//! The few calls of the node API this client makes (see `node/openapi.yaml`): the chain
//! id from `GET /v1/status`, the next nonce from `GET /v1/accounts/{address}`, and
//! `POST /v1/txs?wait=commit` with the canonical bytes (`application/msgpack`). Errors
//! come back as problem+json; they are reported with their `type`, `title` and `detail`.

use std::time::Duration;

use serde_json::Value as Json;

/// A node's API, e.g. `http://127.0.0.1:8545`.
pub struct Node {
    base: String,
    agent: ureq::Agent,
}

/// What `POST /v1/txs?wait=commit` answered for a committed transaction.
#[derive(Debug)]
pub struct Committed {
    pub tx_hash: String,
    pub height: u64,
    pub index: u64,
    pub ok: bool,
    pub code: String,
    pub message: String,
}

impl Node {
    pub fn new(base: &str, timeout: Duration) -> Node {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout(timeout)
            .build();
        Node {
            base: base.trim_end_matches('/').to_string(),
            agent,
        }
    }

    fn call(&self, req: ureq::Request, body: Option<&[u8]>) -> Result<Json, String> {
        let url = req.url().to_string();
        let result = match body {
            Some(b) => req.set("Content-Type", "application/msgpack").send_bytes(b),
            None => req.call(),
        };
        match result {
            Ok(resp) => read_json(resp, &url),
            Err(ureq::Error::Status(code, resp)) => Err(problem(code, resp, &url)),
            Err(e) => Err(e.to_string()),
        }
    }

    fn get(&self, path: &str) -> Result<Json, String> {
        self.call(self.agent.get(&format!("{}{path}", self.base)), None)
    }

    /// The chain id the node serves.
    pub fn chain_id(&self) -> Result<String, String> {
        let doc = self.get("/v1/status")?;
        doc.get("chain_id")
            .and_then(Json::as_str)
            .map(str::to_string)
            .ok_or_else(|| "GET /v1/status: no chain_id in the answer".to_string())
    }

    /// The nonce the account's next transaction must carry: `pending_nonce` when the node
    /// counts its mempool, else the committed `nonce`.
    pub fn next_nonce(&self, address: &[u8]) -> Result<u64, String> {
        let doc = self.get(&format!("/v1/accounts/{}", hex::encode(address)))?;
        doc.get("pending_nonce")
            .and_then(Json::as_u64)
            .or_else(|| doc.get("nonce").and_then(Json::as_u64))
            .ok_or_else(|| "GET /v1/accounts: no nonce in the answer".to_string())
    }

    /// Submits canonical transaction bytes and waits up to `wait_s` seconds for the commit.
    pub fn submit_and_wait(&self, tx: &[u8], wait_s: u64) -> Result<Committed, String> {
        let url = format!("{}/v1/txs?wait=commit&timeout={wait_s}", self.base);
        let doc = self.call(self.agent.post(&url), Some(tx))?;
        committed(&doc)
    }
}

fn committed(doc: &Json) -> Result<Committed, String> {
    let status = doc.get("status").and_then(Json::as_str).unwrap_or("");
    if status != "committed" {
        return Err(format!("transaction status is {status:?}, not committed"));
    }
    let text = |d: &Json, k: &str| d.get(k).and_then(Json::as_str).unwrap_or("").to_string();
    let receipt = doc
        .get("receipt")
        .ok_or("a committed transaction without a receipt")?;
    Ok(Committed {
        tx_hash: text(doc, "tx_hash"),
        height: doc
            .get("height")
            .and_then(Json::as_u64)
            .ok_or("no height")?,
        index: doc.get("index").and_then(Json::as_u64).ok_or("no index")?,
        ok: receipt.get("ok").and_then(Json::as_bool).unwrap_or(false),
        code: text(receipt, "code"),
        message: text(receipt, "message"),
    })
}

fn read_json(resp: ureq::Response, url: &str) -> Result<Json, String> {
    let text = resp
        .into_string()
        .map_err(|e| format!("{url}: cannot read the answer: {e}"))?;
    serde_json::from_str(&text).map_err(|e| format!("{url}: the answer is not JSON: {e}"))
}

fn problem(code: u16, resp: ureq::Response, url: &str) -> String {
    let text = resp.into_string().unwrap_or_default();
    match serde_json::from_str::<Json>(&text) {
        Ok(doc) => {
            let field = |k: &str| doc.get(k).and_then(Json::as_str).unwrap_or("").to_string();
            format!(
                "{url}: {code} {}: {} ({})",
                field("title"),
                field("detail"),
                field("type")
            )
        }
        Err(_) => format!(
            "{url}: HTTP {code}: {}",
            text.chars().take(200).collect::<String>()
        ),
    }
}
