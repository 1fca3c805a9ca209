//! Which node owns (delivers) a subscription: rendezvous (highest-random-weight) hashing of the
//! subscription id over the live members. Every node computes the same answer from the same
//! member set, and when a member leaves only the subscriptions it owned move.

use eventgate_raft_store::NodeId;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// The weight of `node` for `key`; the member with the highest weight owns the key. xxh3 is
/// fixed across platforms and releases, so mixed-version clusters agree.
fn weight(key: &str, node: NodeId) -> u64 {
    xxh3_64_with_seed(key.as_bytes(), node)
}

/// The owner of `key` among `live` members, or `None` when there is no live member.
pub fn owner_of(key: &str, live: impl IntoIterator<Item = NodeId>) -> Option<NodeId> {
    live.into_iter()
        .max_by_key(|node| (weight(key, *node), *node))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_member_computes_the_same_owner_whatever_the_order() {
        for i in 0..100 {
            let key = format!("sub-{i}");
            assert_eq!(owner_of(&key, [1, 2, 3]), owner_of(&key, [3, 1, 2]));
        }
        assert_eq!(owner_of("x", []), None);
    }

    #[test]
    fn load_is_spread_and_only_the_lost_members_keys_move() {
        let keys: Vec<String> = (0..3000).map(|i| format!("sub-{i}")).collect();
        let before: Vec<NodeId> = keys
            .iter()
            .map(|k| owner_of(k, [1, 2, 3]).unwrap())
            .collect();
        for node in 1..=3 {
            let share = before.iter().filter(|o| **o == node).count();
            assert!(
                (800..1200).contains(&share),
                "node {node} owns {share} of 3000"
            );
        }
        let after: Vec<NodeId> = keys.iter().map(|k| owner_of(k, [1, 3]).unwrap()).collect();
        for (b, a) in before.iter().zip(&after) {
            if *b != 2 {
                assert_eq!(a, b, "a key not owned by the lost member must not move");
            }
        }
    }
}
