//! Stack references: spill keys and the stack hash.

use super::*;

#[test]
fn spill_keys_never_look_like_stack_map_ids() {
    for hash in [0, 1, u64::MAX, 0x8000_0000, 0xdead_beef_0000_0000] {
        let r = StackRef {
            id_plus_one: spill_key(hash),
            ..StackRef::default()
        };
        assert_eq!(r.location(), Some(StackLocation::Spill(r.id_plus_one)));
    }
    let id = StackRef {
        id_plus_one: 16_384,
        ..StackRef::default()
    };
    assert_eq!(id.location(), Some(StackLocation::Stacks(16_383)));
    assert_eq!(StackRef::default().location(), None);
}

#[test]
fn a_stack_hash_covers_every_frame_up_to_the_zero_fill() {
    let a = stack_hash(&[0x1000, 0x2000, 0, 0]);
    assert_eq!(a, stack_hash(&[0x1000, 0x2000]));
    assert_eq!(
        a,
        stack_hash(&[0x1000, 0x2000, 0, 0x3000]),
        "stops at the fill"
    );
    assert_ne!(a, stack_hash(&[0x2000, 0x1000]), "order matters");
    assert_ne!(a, stack_hash(&[0x1000, 0x2000, 0x3000]));
    assert_ne!(spill_key(a), spill_key(stack_hash(&[0x1000])));
}
