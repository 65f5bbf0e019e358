//! What the shared CA watch decides (pure): whether a master has a node waiting on the
//! CA, and which nodes a new CA listing concerns. One listing per master per interval
//! replaces a poll per waiting node: a node is reconciled when its certname's entry
//! changes (a CSR arrives or is replaced, autosign signs it, it is cleaned), not on a
//! timer of its own.

use std::collections::{BTreeMap, BTreeSet};

use crate::certificate::CertState;
use crate::instance::{tags, Instance, InstanceState};
use crate::observation::{CaListing as Listing, MasterObservation};

/// The certnames of the master's live (pending or running) instances, with the
/// `namespace/name` of the node each was launched for.
pub fn live_certnames<'a>(
    instances: impl IntoIterator<Item = &'a Instance>,
) -> BTreeMap<String, String> {
    instances
        .into_iter()
        .filter(|i| matches!(i.state, InstanceState::Pending | InstanceState::Running))
        .filter_map(|i| {
            Some((
                i.tags.get(tags::CERTNAME)?.clone(),
                i.tags.get(tags::NODE)?.clone(),
            ))
        })
        .collect()
}

impl MasterObservation {
    /// Does a live instance's certname still wait on the CA (no signed certificate in
    /// the listing)? An unknown listing counts as waiting: only a listing can tell.
    pub fn awaits_signing(&self) -> bool {
        let certnames = live_certnames(&self.instances);
        match &self.certificates {
            None => !certnames.is_empty(),
            Some(listing) => certnames.keys().any(|c| {
                listing
                    .get(c)
                    .is_none_or(|info| info.state != CertState::Signed)
            }),
        }
    }
}

/// What a node's pass reads of a CA entry: its state and its key.
fn entry(listing: &Listing, certname: &str) -> Option<(CertState, Option<String>)> {
    listing
        .get(certname)
        .map(|i| (i.state, i.fingerprint.clone()))
}

/// The nodes (`namespace/name`) whose certname's entry differs between two listings of
/// the master's CA, among the certnames of its live instances. An unknown listing before
/// (the CA could not be listed) differs wherever the new one holds an entry: those nodes
/// waited on per-certname reads.
pub fn changed_nodes(
    before: Option<&Listing>,
    after: &Listing,
    certnames: &BTreeMap<String, String>,
) -> BTreeSet<String> {
    certnames
        .iter()
        .filter(|(certname, _)| match before {
            Some(before) => entry(before, certname) != entry(after, certname),
            None => after.contains_key(*certname),
        })
        .map(|(_, node)| node.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certificate::CertificateInfo;
    use crate::record::RecordListing;

    fn instance(id: &str, certname: &str, node: &str, state: InstanceState) -> Instance {
        let mut i = Instance {
            id: id.into(),
            state,
            tags: Default::default(),
            private_ip: None,
            public_ip: None,
            zone: None,
            launch_time: None,
            image_id: None,
            instance_type: None,
            subnet_id: None,
            security_group_ids: vec![],
            http_tokens: None,
        };
        i.tags.insert(tags::CERTNAME.into(), certname.into());
        i.tags.insert(tags::NODE.into(), node.into());
        i
    }

    fn info(name: &str, state: CertState, fingerprint: &str) -> CertificateInfo {
        CertificateInfo {
            name: name.into(),
            state,
            fingerprint: Some(fingerprint.into()),
            dns_alt_names: vec![],
            subject_alt_names: vec![],
            authorization_extensions: Default::default(),
            not_before: None,
            not_after: None,
            serial: None,
        }
    }

    fn listing(entries: &[CertificateInfo]) -> Listing {
        entries
            .iter()
            .map(|e| (e.name.clone(), e.clone()))
            .collect()
    }

    fn observation(instances: Vec<Instance>, listing: Option<Listing>) -> MasterObservation {
        MasterObservation {
            instances: instances.into(),
            records: RecordListing::default(),
            certificates: listing,
        }
    }

    #[test]
    fn a_master_awaits_signing_while_a_live_certname_is_not_signed() {
        let live = vec![
            instance("i-1", "a-1", "ns/a", InstanceState::Running),
            instance("i-2", "b-1", "ns/b", InstanceState::Terminated),
        ];
        let signed = listing(&[info("a-1", CertState::Signed, "F1")]);
        assert!(!observation(live.clone(), Some(signed)).awaits_signing());
        let requested = listing(&[info("a-1", CertState::Requested, "C1")]);
        assert!(observation(live.clone(), Some(requested)).awaits_signing());
        assert!(
            observation(live.clone(), Some(Listing::new())).awaits_signing(),
            "no CSR yet"
        );
        assert!(
            observation(live.clone(), None).awaits_signing(),
            "unknown is not signed"
        );
        assert!(
            !observation(live[1..].to_vec(), None).awaits_signing(),
            "a terminated instance waits for nothing"
        );
    }

    #[test]
    fn only_the_nodes_whose_entry_changed_are_named() {
        let certnames = live_certnames(&[
            instance("i-1", "a-1", "ns/a", InstanceState::Running),
            instance("i-2", "b-1", "ns/b", InstanceState::Pending),
            instance("i-3", "c-1", "ns/c", InstanceState::Running),
            instance("i-4", "d-1", "ns/d", InstanceState::Terminated),
        ]);
        let before = listing(&[
            info("b-1", CertState::Requested, "C1"),
            info("c-1", CertState::Signed, "F1"),
        ]);
        let after = listing(&[
            // a: a new CSR; b: a new key in place of its CSR; c: unchanged; d: not live.
            info("a-1", CertState::Requested, "C2"),
            info("b-1", CertState::Requested, "C3"),
            info("c-1", CertState::Signed, "F1"),
            info("d-1", CertState::Requested, "C4"),
            info("stranger", CertState::Requested, "C5"),
        ]);
        let woken: Vec<_> = changed_nodes(Some(&before), &after, &certnames)
            .into_iter()
            .collect();
        assert_eq!(woken, ["ns/a", "ns/b"]);
        assert!(changed_nodes(Some(&after), &after, &certnames).is_empty());

        // Signed by autosign, or cleaned: the entry changed too.
        let signed = listing(&[info("b-1", CertState::Signed, "F2")]);
        let woken: Vec<_> = changed_nodes(Some(&before), &signed, &certnames)
            .into_iter()
            .collect();
        assert_eq!(woken, ["ns/b", "ns/c"], "b signed, c cleaned");

        // After an unknown listing, every live certname the CA holds is news.
        let woken: Vec<_> = changed_nodes(None, &after, &certnames)
            .into_iter()
            .collect();
        assert_eq!(woken, ["ns/a", "ns/b", "ns/c"]);
    }
}
