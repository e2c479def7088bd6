//! Names of the kernel's `enum sk_rst_reason` values, as the running kernel
//! spells them in `tcp_send_reset`'s format (they change between kernels).

use std::collections::HashMap;

/// Names of `enum sk_rst_reason` values, from the running kernel.
#[derive(Clone, Debug, Default)]
pub struct ResetReasons(HashMap<u32, String>);

impl ResetReasons {
    #[must_use]
    pub fn from_pairs(pairs: Vec<(u64, String)>) -> Self {
        Self(
            pairs
                .into_iter()
                .filter_map(|(v, n)| Some((u32::try_from(v).ok()?, n)))
                .collect(),
        )
    }

    /// The kernel's name for `reason`, or `UNKNOWN(n)`.
    #[must_use]
    pub fn name(&self, reason: u32) -> String {
        self.get(reason)
            .map_or_else(|| format!("UNKNOWN({reason})"), str::to_owned)
    }

    /// The kernel's name for `reason`, if it has one; no allocation.
    #[must_use]
    pub fn get(&self, reason: u32) -> Option<&str> {
        self.0.get(&reason).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_reason_is_printed_with_its_number() {
        let r = ResetReasons::from_pairs(vec![(14, "TCP_STATE".into())]);
        assert_eq!(r.name(14), "TCP_STATE");
        assert_eq!(r.name(99), "UNKNOWN(99)");
    }
}
