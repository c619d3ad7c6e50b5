//! Where a picture lives in a cluster: rendezvous (highest random weight) hashing of picture
//! ids over the picture services' URLs, and the short ids under which a picture service signs
//! the pictures it owns (docs/scaling.md).
//!
//! The hash is FNV-1a followed by a 64-bit finalizer (splitmix64): fixed forever, so every
//! node of every version computes the same order, and well mixed, so similar ids and URLs still
//! spread evenly.

/// The order in which picture `picture` tries the services `urls`: indices into `urls`, best
/// first. Removing a service moves only the pictures it came first for; adding one takes
/// about `1/n` of every other service's pictures.
pub fn rendezvous<S: AsRef<str>>(picture: &str, urls: &[S]) -> Vec<usize> {
    let mut scored: Vec<(u64, usize)> = urls
        .iter()
        .enumerate()
        .map(|(i, url)| (score(url.as_ref(), picture), i))
        .collect();
    // Highest score first; a tie (never seen in practice) falls back to the list order.
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().map(|(_, i)| i).collect()
}

/// The id a picture service writes as the `owner` of the pictures it owns (as 16 hex digits,
/// `snapshot::owner_text`): the hash of its advertise URL, so that stored objects name no
/// internal host. Never 0 (0 means "nobody").
pub fn node_id(url: &str) -> u64 {
    mix(fnv1a(url.as_bytes(), FNV_OFFSET)).max(1)
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(bytes: &[u8], mut hash: u64) -> u64 {
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// The splitmix64 finalizer: every input bit flips about half of the output bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn score(url: &str, picture: &str) -> u64 {
    // The separator keeps ("ab", "c") and ("a", "bc") apart.
    let hash = fnv1a(url.as_bytes(), FNV_OFFSET);
    let hash = fnv1a(&[0], hash);
    mix(fnv1a(picture.as_bytes(), hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("ws://pps-{i}.pps:9090/bs"))
            .collect()
    }

    #[test]
    fn the_order_is_a_permutation_and_stable() {
        let urls = urls(5);
        let order = rendezvous("my-picture", &urls);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 1, 2, 3, 4]);
        // Fixed forever: a node of any version computes the same order and ids (these values
        // were computed once and pinned; changing them strands every stored picture's owner).
        assert_eq!(order, vec![4, 0, 2, 1, 3]);
        assert_eq!(node_id("ws://pps-0.pps:9090/bs"), 0x1fa5_41e3_3399_0d3e);
        assert_ne!(
            node_id("ws://pps-0.pps:9090/bs"),
            node_id("ws://pps-1.pps:9090/bs")
        );
    }

    #[test]
    fn pictures_spread_evenly_and_move_only_when_their_service_goes() {
        let three = urls(3);
        let mut first = [0usize; 3];
        let pictures: Vec<String> = (0..3000).map(|i| format!("picture-{i}")).collect();
        for picture in &pictures {
            first[rendezvous(picture, &three)[0]] += 1;
        }
        for count in first {
            assert!((800..=1200).contains(&count), "uneven spread: {first:?}");
        }
        // Without service 1, a picture goes to its next choice; the others stay where they are.
        let two = vec![three[0].clone(), three[2].clone()];
        for picture in &pictures {
            let before = rendezvous(picture, &three);
            let after: Vec<&String> = rendezvous(picture, &two).iter().map(|&i| &two[i]).collect();
            let expected: Vec<&String> = before
                .iter()
                .map(|&i| &three[i])
                .filter(|url| **url != three[1])
                .collect();
            assert_eq!(after, expected, "{picture}");
        }
    }
}
