//! The canonical encoding (docs/TRANSACTIONS.md): MessagePack restricted to integers in the
//! 64-bit range, byte strings, text, booleans, nil and arrays; structs are arrays of their
//! fields in order; every integer, length and header takes its shortest form.
//!
//! `rmp`'s `write_uint`, `write_sint`, `write_str_len`, `write_bin_len` and
//! `write_array_len` each choose the shortest form of their value, which is exactly the
//! canonical rule; non-negative integers always go through `write_uint` (positive fixint
//! or uint 8/16/32/64, never a signed form), negative ones through `write_sint`.

/// A canonical value: what a transaction's `args` is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Nil,
    Bool(bool),
    /// A non-negative integer (0 ..= 2^64 - 1).
    UInt(u64),
    /// A negative integer (-2^63 ..= -1); a non-negative `Int` encodes as `UInt`.
    Int(i64),
    Bytes(Vec<u8>),
    Text(String),
    Array(Vec<Value>),
}

/// Appends the canonical encoding of `v` to `out`.
pub fn encode_into(v: &Value, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail: the results are infallible in practice.
    match v {
        Value::Nil => rmp::encode::write_nil(out).expect("write to Vec"),
        Value::Bool(b) => rmp::encode::write_bool(out, *b).expect("write to Vec"),
        Value::UInt(n) => {
            rmp::encode::write_uint(out, *n).expect("write to Vec");
        }
        Value::Int(n) if *n >= 0 => {
            rmp::encode::write_uint(out, *n as u64).expect("write to Vec");
        }
        Value::Int(n) => {
            rmp::encode::write_sint(out, *n).expect("write to Vec");
        }
        Value::Bytes(b) => rmp::encode::write_bin(out, b).expect("write to Vec"),
        Value::Text(s) => rmp::encode::write_str(out, s).expect("write to Vec"),
        Value::Array(items) => {
            rmp::encode::write_array_len(out, len_u32(items.len())).expect("write to Vec");
            for item in items {
                encode_into(item, out);
            }
        }
    }
}

/// The canonical encoding of `v`.
pub fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(v, &mut out);
    out
}

fn len_u32(n: usize) -> u32 {
    u32::try_from(n).expect("array longer than 2^32 - 1 items")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hx(v: &Value) -> String {
        hex::encode(encode(v))
    }

    // The edges of docs/TRANSACTIONS.md section 11, against the tables of its section 3.
    #[test]
    fn integers_take_their_shortest_form() {
        assert_eq!(hx(&Value::UInt(0)), "00");
        assert_eq!(hx(&Value::UInt(127)), "7f");
        assert_eq!(hx(&Value::UInt(128)), "cc80");
        assert_eq!(hx(&Value::UInt(255)), "ccff");
        assert_eq!(hx(&Value::UInt(65535)), "cdffff");
        assert_eq!(hx(&Value::UInt(u32::MAX as u64)), "ceffffffff");
        assert_eq!(hx(&Value::UInt(256)), "cd0100");
        assert_eq!(hx(&Value::UInt(65536)), "ce00010000");
        assert_eq!(hx(&Value::UInt(1 << 32)), "cf0000000100000000");
        assert_eq!(hx(&Value::UInt(u64::MAX)), "cfffffffffffffffff");
        assert_eq!(hx(&Value::Int(5)), "05");
        assert_eq!(hx(&Value::Int(200)), "ccc8");
        assert_eq!(hx(&Value::Int(-1)), "ff");
        assert_eq!(hx(&Value::Int(-32)), "e0");
        assert_eq!(hx(&Value::Int(-33)), "d0df");
        assert_eq!(hx(&Value::Int(-128)), "d080");
        assert_eq!(hx(&Value::Int(-129)), "d1ff7f");
        assert_eq!(hx(&Value::Int(-32769)), "d2ffff7fff");
        assert_eq!(hx(&Value::Int(i64::MIN)), "d38000000000000000");
    }

    #[test]
    fn lengths_take_their_shortest_form() {
        assert_eq!(
            hx(&Value::Text("a".repeat(31))),
            format!("bf{}", "61".repeat(31))
        );
        assert_eq!(
            hx(&Value::Text("a".repeat(32))),
            format!("d920{}", "61".repeat(32))
        );
        assert_eq!(hx(&Value::Text("a".repeat(255)))[..4], *"d9ff");
        assert_eq!(hx(&Value::Text("a".repeat(256)))[..6], *"da0100");
        assert_eq!(hx(&Value::Text("café".into())), "a5636166c3a9");
        assert_eq!(hx(&Value::Bytes(vec![])), "c400");
        assert_eq!(hx(&Value::Bytes(vec![0; 255]))[..4], *"c4ff");
        assert_eq!(hx(&Value::Bytes(vec![0; 256]))[..6], *"c50100");
        assert_eq!(hx(&Value::Array(vec![Value::Nil; 15]))[..2], *"9f");
        assert_eq!(hx(&Value::Array(vec![Value::Nil; 16]))[..6], *"dc0010");
        assert_eq!(hx(&Value::Bool(true)), "c3");
        assert_eq!(hx(&Value::Bool(false)), "c2");
        assert_eq!(hx(&Value::Nil), "c0");
    }
}
