//! Standard base64 (with padding), for the opaque strings Slack builds from it: history cursors
//! (`bmV4dF90czo...` = `next_ts:...`) and `event_context`. Small enough not to need a crate.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub(crate) fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `None` for anything that is not canonical padded base64.
pub(crate) fn decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for (index, chunk) in bytes.chunks(4).enumerate() {
        let last = index + 1 == bytes.len() / 4;
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            let v = ALPHABET.iter().position(|&a| a == c)?;
            n = (n << 6) | v as u32;
        }
        n <<= 6 * pad as u32;
        let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&decoded[..3 - pad]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_slacks_documented_history_cursor() {
        assert_eq!(
            encode(b"next_ts:1512085861000543"),
            "bmV4dF90czoxNTEyMDg1ODYxMDAwNTQz"
        );
        assert_eq!(
            decode("bmV4dF90czoxNTEyMDg1ODYxMDAwNTQz").as_deref(),
            Some(&b"next_ts:1512085861000543"[..])
        );
    }

    #[test]
    fn round_trips_every_padding_length_and_rejects_garbage() {
        for text in ["", "a", "ab", "abc", "abcd"] {
            assert_eq!(
                decode(&encode(text.as_bytes())).as_deref(),
                Some(text.as_bytes())
            );
        }
        assert_eq!(encode(b"ab"), "YWI=");
        assert!(decode("YWI").is_none());
        assert!(decode("Y=I=").is_none());
        assert!(decode("YW!=").is_none());
    }
}
