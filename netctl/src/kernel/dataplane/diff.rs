//! Two sets of entries, both in key order, compared in one walk: what the published-port
//! delta and every map's difference against the record are made of.

/// What turns `have` into `want`, both in key order, in one walk: the entries to remove
/// (with their values), and those to write (with the value they replace, if any).
#[allow(clippy::type_complexity)]
pub fn difference<'w, K: Ord + Copy + 'w, V: PartialEq + Copy + 'w>(
    have: impl Iterator<Item = (K, V)>,
    want: impl Iterator<Item = (&'w K, &'w V)>,
) -> (Vec<(K, V)>, Vec<(&'w K, &'w V, Option<V>)>) {
    let (mut gone, mut set) = (Vec::new(), Vec::new());
    let mut have = have.peekable();
    for (k, v) in want {
        while let Some((hk, hv)) = have.next_if(|(hk, _)| hk < k) {
            gone.push((hk, hv));
        }
        match have.next_if(|(hk, _)| hk == k) {
            Some((_, hv)) if hv == *v => {}
            old => set.push((k, v, old.map(|(_, hv)| hv))),
        }
    }
    gone.extend(have);
    (gone, set)
}

#[cfg(test)]
mod tests {
    use super::difference;
    use std::collections::BTreeMap;

    #[test]
    fn difference_walks_both_sides_once() {
        let have = [(1u32, 10u32), (2, 20), (4, 40), (6, 60), (9, 90)];
        let want: BTreeMap<u32, u32> = [(2, 20), (3, 30), (4, 41), (7, 70)].into();
        let (gone, set) = difference(have.into_iter(), want.iter());
        assert_eq!(gone, vec![(1, 10), (6, 60), (9, 90)]);
        let set: Vec<(u32, u32, Option<u32>)> =
            set.into_iter().map(|(k, v, o)| (*k, *v, o)).collect();
        assert_eq!(set, vec![(3, 30, None), (4, 41, Some(40)), (7, 70, None)]);
        let (gone, set) = difference(std::iter::empty(), want.iter());
        assert!(gone.is_empty());
        assert_eq!(set.len(), 4);
        let none = BTreeMap::<u32, u32>::new();
        let (gone, set) = difference(have.into_iter(), none.iter());
        assert_eq!(gone.len(), 5);
        assert!(set.is_empty());
    }
}
