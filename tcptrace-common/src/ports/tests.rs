//! The port lists and the rule both sides apply.

extern crate std;
use std::vec::Vec;

use proptest::prelude::*;

use super::*;
use crate::{
    AF_INET, AF_INET6,
    config::{Config, FAMILY_V4, FAMILY_V6, accepts},
};

/// [`MAX_PORTS`] as a port number.
fn max() -> u16 {
    u16::try_from(MAX_PORTS).unwrap()
}

fn list(ports: &[u16]) -> PortList {
    PortList::new(ports).unwrap()
}

#[test]
fn a_list_keeps_each_port_once_in_order() {
    assert_eq!(list(&[]), PortList::ANY);
    let l = list(&[443, 80, 443, 8080, 80]);
    assert_eq!((l.len, l.as_slice()), (3, &[443, 80, 8080][..]));
    // MAX_PORTS distinct ports fit, repeats do not count against the limit.
    let full: Vec<u16> = (1..=max()).collect();
    let mut repeated = full.clone();
    repeated.extend(&full);
    assert_eq!(list(&repeated).as_slice(), &full[..]);
    let mut over = full;
    over.push(9999);
    assert_eq!(PortList::new(&over), Err(TooManyPorts));
}

#[test]
fn an_empty_list_lets_every_port_through() {
    for (a, b) in [(0, 0), (1, 65535), (80, 80)] {
        assert!(matches(&PortList::ANY, a, b));
    }
}

#[test]
fn a_list_lets_through_its_ports_and_no_other() {
    let l = list(&[80, 443]);
    assert!(matches(&l, 80, 80));
    assert!(matches(&l, 443, 443));
    assert!(matches(&l, 5000, 443), "either end");
    assert!(matches(&l, 80, 5000), "either end");
    assert!(!matches(&l, 81, 81));
    assert!(!matches(&l, 0, 0), "unused entries are not ports");
    // The last of MAX_PORTS entries is compared too.
    let full: Vec<u16> = (1..=max()).collect();
    assert!(matches(&list(&full), max(), max()));
}

#[test]
fn the_three_lists_and_the_families_all_apply() {
    let c = Config {
        families: FAMILY_V4,
        ports: PortLists {
            port: list(&[80, 81]),
            lport: list(&[80, 81, 82]),
            rport: PortList::ANY,
        },
        ..Config::default()
    };
    assert!(c.accepts(AF_INET, 80, 5000));
    assert!(c.accepts(AF_INET, 81, 80), "--port by the remote end");
    assert!(!c.accepts(AF_INET6, 80, 5000), "IPv4 only");
    assert!(!c.accepts(AF_INET, 82, 5000), "82 is no --port");
    assert!(!c.accepts(AF_INET, 5000, 80), "5000 is no --lport");
    assert!(!c.accepts(0, 80, 80), "not an IP family");
    let remote = Config {
        families: FAMILY_V4 | FAMILY_V6,
        ports: PortLists {
            rport: list(&[443, 8443]),
            ..PortLists::ANY
        },
        ..Config::default()
    };
    assert!(remote.accepts(AF_INET6, 5000, 8443));
    assert!(
        !remote.accepts(AF_INET6, 443, 5000),
        "443 local, not remote"
    );
}

/// A list as a garbled `CONFIG` could hold it: any count, any entries.
fn any_list() -> impl Strategy<Value = PortList> {
    (0u16..=max() + 2, any::<[u16; MAX_PORTS]>()).prop_map(|(len, ports)| PortList { len, ports })
}

/// A list of few distinct ports, so that tested ports hit it often.
fn small_list() -> impl Strategy<Value = PortList> {
    proptest::collection::vec(0u16..16, 0..=MAX_PORTS)
        .prop_map(|v| PortList::new(&v).expect("at most MAX_PORTS"))
}

/// The rule as the documentation states it, on slices.
fn spec(list: &PortList, a: u16, b: u16) -> bool {
    let used = list.as_slice();
    used.is_empty() || used.contains(&a) || used.contains(&b)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// `matches` is "empty, or one of the used entries is a or b", for any
    /// count and entries, and reads the same through `ReadPorts` (the
    /// kernel's way) as through the list itself.
    #[test]
    fn matches_is_membership_in_the_used_entries(
        l in prop_oneof![any_list(), small_list()], a in 0u16..20, b in 0u16..20,
    ) {
        let read = ReadPorts { count: || l.len, port: |i| l.ports[i] };
        prop_assert_eq!(matches(&l, a, b), spec(&l, a, b));
        prop_assert_eq!(matches(&read, a, b), spec(&l, a, b));
    }

    /// `new` keeps exactly the distinct ports, refusing more than MAX_PORTS.
    #[test]
    fn new_keeps_the_distinct_ports(v in proptest::collection::vec(0u16..24, 0..20)) {
        let mut distinct: Vec<u16> = Vec::new();
        for p in &v {
            if !distinct.contains(p) {
                distinct.push(*p);
            }
        }
        match PortList::new(&v) {
            Ok(l) => prop_assert_eq!(l.as_slice(), &distinct[..]),
            Err(TooManyPorts) => prop_assert!(distinct.len() > MAX_PORTS),
        }
    }

    /// `accepts` is the conjunction of the family and the three lists.
    #[test]
    fn accepts_is_every_filter_at_once(
        families in 0u32..4, family in prop_oneof![Just(AF_INET), Just(AF_INET6), Just(0u16)],
        (p, lp, rp) in (small_list(), small_list(), small_list()),
        lport in 0u16..16, rport in 0u16..16,
    ) {
        let bit = match family {
            AF_INET => Some(FAMILY_V4),
            AF_INET6 => Some(FAMILY_V6),
            _ => None,
        };
        let want = bit.is_some_and(|b| families == 0 || families & b != 0)
            && spec(&p, lport, rport)
            && spec(&lp, lport, lport)
            && spec(&rp, rport, rport);
        prop_assert_eq!(accepts(families, &p, &lp, &rp, family, lport, rport), want);
    }
}
