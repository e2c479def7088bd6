//! Property tests of the decoders: arbitrary bytes from a ring and arbitrary
//! per-CPU log records decode to an event or a typed error, never a panic.

use proptest::prelude::*;
use tcptrace_common::cpulog::{LogRecord, state_event};

use super::*;

/// Bytes that start with a known record kind about as often as not, of
/// every length around the records' sizes.
fn ring_record() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![0u32..6, any::<u32>()],
        proptest::collection::vec(any::<u8>(), 0..160),
    )
        .prop_map(|(kind, mut bytes)| {
            if bytes.len() >= 4 {
                bytes[..4].copy_from_slice(&kind.to_ne_bytes());
            }
            bytes
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_ring_bytes_decode_or_give_a_typed_error(bytes in ring_record()) {
        match decode(&bytes) {
            Ok(_) => prop_assert!(bytes.len() >= size_of::<Header>()),
            Err(DecodeError::Truncated { need, got, .. }) => {
                prop_assert!(got < need && got == bytes.len());
            }
            Err(_) => {}
        }
    }

    #[test]
    fn any_log_record_decodes_or_gives_a_typed_error(
        bytes in any::<[u8; 64]>(),
        comm: [u8; 16],
    ) {
        // SAFETY: LogRecord is 64 bytes of plain integers, valid for any bits.
        let r: LogRecord = unsafe { bytes.as_ptr().cast::<LogRecord>().read_unaligned() };
        let _ = decode_state(&state_event(&r, comm));
    }
}
